"""Google Gemini (generateContent and streamGenerateContent?alt=sse).

The key travels in the `x-goog-api-key` header, never in the URL, so it cannot end up in an
access log. System messages become `systemInstruction`; the assistant role is `model`.
Structured output uses `responseMimeType: application/json` with `responseJsonSchema`, which
takes JSON Schema but only a documented subset of keywords: the schema is cut down to that
subset (promptapi still checks the answer against the full schema).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson

from promptapi.errors import PromptAPIError, UpstreamError
from promptapi.providers.base import Completion, CompletionRequest, ModelConfig, StreamDelta
from promptapi.providers.http import (
    NOT_AN_ANSWER,
    ErrorInfo,
    HTTPClient,
    declined,
    join_system,
    malformed,
    safe,
    stop_list,
)

log = logging.getLogger("promptapi.providers")

GEMINI_API_VERSION = "v1beta"
# OpenAI-style params → generationConfig fields.
_RENAMED = {
    "max_tokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "stop": "stopSequences",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "seed": "seed",
}
# Request fields that sit beside generationConfig rather than in it.
_TOP_LEVEL = {"safetySettings", "cachedContent", "toolConfig", "tools", "labels"}
# OpenAI-style params with no equivalent; anything else is a native generationConfig field.
_DROPPED = {
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "response_format",
    "stream_options",
    "parallel_tool_calls",
    "user",
}
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
_WITHHELD = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
}
# The keywords responseJsonSchema accepts (Gemini API reference, GenerationConfig).
_SCHEMA_KEYWORDS = {
    "$id",
    "$defs",
    "$ref",
    "$anchor",
    "type",
    "format",
    "title",
    "description",
    "enum",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "anyOf",
    "oneOf",
    "properties",
    "additionalProperties",
    "required",
    "propertyOrdering",
}
_AUTH_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "ACCESS_TOKEN_EXPIRED"}
_AUTH_STATUSES = {"UNAUTHENTICATED", "PERMISSION_DENIED"}


def describe_error(data: Any) -> ErrorInfo:
    """{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": ..., "details": [...]}}.
    A bad key is a 400 whose details carry reason API_KEY_INVALID."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return ErrorInfo("status=unknown")
    status = error.get("status")
    details = error.get("details")
    reasons = [
        d.get("reason")
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and d.get("reason")
    ]
    summary = f"status={safe(status)}"
    if reasons:
        summary += f" reason={safe(reasons[0])}"
    auth = status in _AUTH_STATUSES or any(r in _AUTH_REASONS for r in reasons)
    return ErrorInfo(summary, auth=auth)


def response_json_schema(schema: Any) -> Any:
    """A JSON Schema cut down to the keywords responseJsonSchema supports: `const` becomes a
    one-value `enum`, `definitions` becomes `$defs`, enums other than of strings and numbers are
    dropped, a `$ref` keeps no siblings but `$` keywords, unsupported keywords are dropped."""
    if isinstance(schema, bool) or not isinstance(schema, dict):
        return schema
    source = dict(schema)
    if "const" in source and "enum" not in source:
        source["enum"] = [source["const"]]
    if "definitions" in source and "$defs" not in source:
        source["$defs"] = source["definitions"]
    out: dict[str, Any] = {}
    for key, value in source.items():
        if key not in _SCHEMA_KEYWORDS:
            continue
        if "$ref" in source and not key.startswith("$"):
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: response_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = response_json_schema(value)
        elif key in ("prefixItems", "anyOf", "oneOf"):
            out[key] = [response_json_schema(sub) for sub in value]
        elif key == "enum":
            if all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
                out[key] = value
        elif key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/definitions/", "#/$defs/")
        else:
            out[key] = value
    return out


# The OpenAPI 3.0 subset of responseSchema (Gemini API reference, Schema), kept as they are.
_OPENAPI_KEPT = {
    "title",
    "description",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
    "required",
    "propertyOrdering",
    "default",
    "example",
}
_OPENAPI_FORMATS = {"enum", "date-time"}  # the only formats the Gemini API takes
_MAX_REF_DEPTH = 8


def response_schema(schema: Any) -> dict[str, Any]:
    """A JSON Schema as the OpenAPI 3.0 subset `responseSchema` takes (for models without
    responseJsonSchema): local `$ref`s are inlined (a cycle is cut after a few levels),
    `type` is upper-case, `null` becomes `nullable`, `const` and string `enum`s become
    `format: enum`, `oneOf` becomes `anyOf`, and everything else is dropped."""
    if not isinstance(schema, dict):
        return {}
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _openapi(schema, defs, 0)


def _openapi(schema: Any, defs: dict[str, Any], depth: int) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        local = ref.startswith(("#/$defs/", "#/definitions/"))
        if not local or name not in defs or depth >= _MAX_REF_DEPTH:
            return {}
        return _openapi(defs[name], defs, depth + 1)
    out: dict[str, Any] = {key: schema[key] for key in _OPENAPI_KEPT if key in schema}
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if isinstance(values, list) and None in values:
        types.append("null")
        values = [v for v in values if v is not None]
    alternatives = [
        _openapi(sub, defs, depth) for sub in schema.get("anyOf", []) + schema.get("oneOf", [])
    ]
    if any(alt.get("type") == "NULL" for alt in alternatives):
        types.append("null")
        alternatives = [alt for alt in alternatives if alt.get("type") != "NULL"]
    if "null" in types:
        out["nullable"] = True
    named = [t.upper() for t in types if t != "null"]
    if len(named) == 1:
        out["type"] = named[0]
    elif named:
        alternatives += [{"type": t} for t in named]
    elif "null" in types and not alternatives:
        out["type"] = "NULL"
    if alternatives:
        out["anyOf"] = alternatives
    if values and all(isinstance(v, str) for v in values):
        out.update(type="STRING", format="enum", enum=values)
    elif schema.get("format") in _OPENAPI_FORMATS:
        out["format"] = schema["format"]
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {
            name: _openapi(sub, defs, depth) for name, sub in schema["properties"].items()
        }
    if isinstance(schema.get("items"), dict):
        out["items"] = _openapi(schema["items"], defs, depth)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        out = {**_openapi(all_of[0], defs, depth), **out}
    return out


class GeminiProvider:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        version = config.api_version or GEMINI_API_VERSION
        base = (config.base_url or "https://generativelanguage.googleapis.com").rstrip("/")
        base = base.removesuffix(f"/{version}")
        model = quote(config.model.removeprefix("models/"), safe="")
        self.url = f"{base}/{version}/models/{model}:generateContent"
        self.stream_url = f"{base}/{version}/models/{model}:streamGenerateContent?alt=sse"
        self.headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            self.headers["x-goog-api-key"] = config.api_key
        self.http = HTTPClient(config, describe_error)

    async def aclose(self) -> None:
        await self.http.aclose()

    def body(self, request: CompletionRequest) -> dict[str, Any]:
        system, turns = join_system(request.messages)
        body: dict[str, Any] = {
            "contents": [
                {
                    "role": "model" if turn["role"] == "assistant" else "user",
                    "parts": [{"text": turn["content"]}],
                }
                for turn in turns
            ]
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config: dict[str, Any] = {}
        for key, value in {**self.config.params, **request.params}.items():
            if key in _RENAMED:
                config[_RENAMED[key]] = stop_list(value) if key == "stop" else value
            elif key in _TOP_LEVEL:
                body[key] = value
            elif key not in _DROPPED:
                config[key] = value
        mode = self.config.structured_output
        if request.output_schema is not None and mode != "none":
            config["responseMimeType"] = "application/json"
            if mode == "json_schema":
                config["responseJsonSchema"] = response_json_schema(request.output_schema)
            elif mode == "response_schema":
                config["responseSchema"] = response_schema(request.output_schema)
        if config:
            body["generationConfig"] = config
        return body

    async def complete(self, request: CompletionRequest) -> Completion:
        raw = await self.http.post(self.url, orjson.dumps(self.body(request)), self.headers)
        try:
            data = orjson.loads(raw)
            self._check_blocked(data)
            candidate = data["candidates"][0]
            text = self._text(candidate)
            reason = candidate.get("finishReason")
            if not text and reason in _WITHHELD:
                raise self._blocked("withheld the answer", reason)
            input_tokens, output_tokens = _usage(data)
            return Completion(
                text=text,
                model=data.get("modelVersion") or self.config.model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                finish_reason=_finish(reason),
            )
        except PromptAPIError:
            raise
        except NOT_AN_ANSWER:
            raise malformed(self.config.alias, "an answer that is not generated content") from None

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        payload = orjson.dumps(self.body(request))
        model: str | None = None
        usage: tuple[int, int] | None = None
        reason: str | None = None
        seen_text = False
        async for event in self.http.events(self.stream_url, payload, self.headers):
            try:
                data = orjson.loads(event.data)
                self._check_blocked(data)
                model = data.get("modelVersion") or model
                if data.get("usageMetadata"):
                    usage = _usage(data)
                candidates = data.get("candidates") or []
                text = self._text(candidates[0]) if candidates else ""
                if candidates and candidates[0].get("finishReason"):
                    reason = candidates[0]["finishReason"]
            except PromptAPIError:
                raise
            except NOT_AN_ANSWER:
                raise malformed(self.config.alias, "a malformed stream chunk") from None
            if text:
                seen_text = True
                yield StreamDelta(text=text, model=model)
        if reason is None:
            raise malformed(self.config.alias, "a stream that ended without a finish reason")
        if not seen_text and reason in _WITHHELD:
            raise self._blocked("withheld the answer", reason)
        input_tokens, output_tokens = usage or (0, 0)
        yield StreamDelta(
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=_finish(reason),
        )

    @staticmethod
    def _text(candidate: dict[str, Any]) -> str:
        parts = (candidate.get("content") or {}).get("parts") or []
        return "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))

    def _check_blocked(self, data: dict[str, Any]) -> None:
        reason = (data.get("promptFeedback") or {}).get("blockReason")
        if reason:
            raise self._blocked("blocked the prompt", reason)

    def _blocked(self, what: str, reason: str) -> UpstreamError:
        alias, reason = self.config.alias, safe(reason)
        log.warning("provider %s: alias=%s reason=%s", what, alias, reason)
        return declined(f"The provider for model alias {alias!r} {what} ({reason}).", "blocked")


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    """Input and output tokens; thinking tokens are billed as output, so they count as output."""
    usage = data.get("usageMetadata") or {}
    output = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
    return int(usage.get("promptTokenCount") or 0), output


def _finish(reason: str | None) -> str | None:
    if reason is None:
        return None
    if reason in _WITHHELD:
        return "content_filter"
    return _FINISH.get(reason, reason.lower())
