"""Anthropic Messages (POST /v1/messages).

System messages become the top-level `system`; `max_tokens` is required, so it comes from the
prompt's params, else the alias's params, else DEFAULT_MAX_TOKENS. The current Messages API has
no sampling parameters (`temperature`, `top_p`, `top_k`): they are dropped. Structured output is
a forced tool call: the tool's `input_schema` is the prompt's output schema, and the tool_use
block's `input` is the answer (serialised to JSON text). A schema that is not an object is
wrapped as the one property `value` of an object, since tool inputs must be objects. A forced
tool call does not work with thinking: `conflicts` reports that combination at registration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from promptapi.errors import PromptAPIError, ProviderUnavailable, UpstreamAuthError, UpstreamError
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

ANTHROPIC_VERSION = "2026-10-21"  # the official SDK's; an alias's api_version overrides it
DEFAULT_MAX_TOKENS = 1024
WRAPPED = "value"
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
# OpenAI-style params and sampling params the current Messages API refuses; anything else
# unknown is passed through as a native Messages parameter (metadata, thinking, ...).
_DROPPED = {
    "temperature",
    "top_p",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "response_format",
    "stream_options",
    "parallel_tool_calls",
    "user",
}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
}
_AUTH_TYPES = {"authentication_error", "permission_error"}


def describe_error(data: Any) -> ErrorInfo:
    """{"type": "error", "error": {"type": "overloaded_error", "message": ...}}."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return ErrorInfo("type=unknown")
    kind = error.get("type")
    return ErrorInfo(f"type={safe(kind)}", auth=kind in _AUTH_TYPES)


def _wrapped(schema: dict[str, Any] | None) -> bool:
    """Tool inputs must be objects: any other output schema is wrapped as {"value": ...}."""
    return schema is not None and schema.get("type") != "object"


def _tool_schema(schema: dict[str, Any]) -> dict[str, Any]:
    if not _wrapped(schema):
        return schema
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {WRAPPED: {k: v for k, v in schema.items() if k != "$defs"}},
        "required": [WRAPPED],
    }
    if "$defs" in schema:
        wrapped["$defs"] = schema["$defs"]
    return wrapped


def conflicts(
    config: ModelConfig, params: dict[str, Any], output_schema: dict[str, Any] | None
) -> list[tuple[str, str]]:
    """What the Messages API would refuse for a prompt (its params and output schema) on this
    alias: (JSON pointer into the definition, message) pairs. Thinking is set on the alias."""
    merged = {**config.params, **params}
    thinking = merged.get("thinking")
    thinking = thinking if isinstance(thinking, dict) else {}
    found: list[tuple[str, str]] = []
    forced_tool = output_schema is not None and config.structured_output == "json_schema"
    if thinking.get("type", "disabled") != "disabled" and forced_tool:
        found.append(
            (
                "/output_schema",
                f"model alias {config.alias!r} (anthropic) thinks, and it answers an output "
                "schema with a forced tool call, which does not work with thinking: use an "
                "alias without thinking, or one with structured_output: json_object or none",
            )
        )
    budget = thinking.get("budget_tokens")
    max_tokens = DEFAULT_MAX_TOKENS
    for key, value in merged.items():
        if key in ("max_tokens", "max_completion_tokens"):
            max_tokens = value  # the last one wins, as in the body
    if isinstance(budget, int) and isinstance(max_tokens, int) and budget >= max_tokens:
        where = "/params/max_tokens" if "max_tokens" in params else "/model"
        found.append(
            (
                where,
                f"model alias {config.alias!r} (anthropic) has thinking.budget_tokens {budget}, "
                f"which must be less than max_tokens ({max_tokens})",
            )
        )
    return found


class AnthropicProvider:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        base = (config.base_url or "https://api.anthropic.com").rstrip("/").removesuffix("/v1")
        self.url = f"{base}/v1/messages"
        self.headers = {
            "Content-Type": "application/json",
            "anthropic-version": config.api_version or ANTHROPIC_VERSION,
            **config.headers,
        }
        if config.api_key:
            self.headers["x-api-key"] = config.api_key
        self.http = HTTPClient(config, describe_error)

    async def aclose(self) -> None:
        await self.http.aclose()

    def tool_name(self, request: CompletionRequest) -> str | None:
        """The forced tool's name when the answer comes as a tool call, else None."""
        if request.output_schema is None or self.config.structured_output != "json_schema":
            return None
        return _TOOL_NAME.sub("_", request.schema_name)[:64] or "output"

    def body(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        system, turns = join_system(request.messages)
        params = {**self.config.params, **request.params}
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": DEFAULT_MAX_TOKENS,
            "messages": turns,
        }
        if system:
            body["system"] = system
        for key, value in params.items():
            if key in ("max_tokens", "max_completion_tokens"):
                body["max_tokens"] = value
            elif key == "stop":
                body["stop_sequences"] = stop_list(value)
            elif key not in _DROPPED:
                body[key] = value
        name = self.tool_name(request)
        if name is not None and request.output_schema is not None:
            body["tools"] = [
                {
                    "name": name,
                    "description": "Give the answer by calling this tool with it as the input.",
                    "input_schema": _tool_schema(request.output_schema),
                }
            ]
            body["tool_choice"] = {"type": "tool", "name": name}
        if stream:
            body["stream"] = True
        return body

    async def complete(self, request: CompletionRequest) -> Completion:
        raw = await self.http.post(self.url, orjson.dumps(self.body(request)), self.headers)
        return self.parse(raw, request)

    def parse(self, raw: bytes, request: CompletionRequest) -> Completion:
        try:
            data = orjson.loads(raw)
            blocks = data["content"]
            stop_reason = data.get("stop_reason")
            text = self._answer(blocks, request)
            if stop_reason == "refusal" and not text:
                raise declined("The model refused to answer.", "refusal")
            usage = data.get("usage") or {}
            return Completion(
                text=text,
                model=data.get("model") or self.config.model,
                input_tokens=int(usage.get("input_tokens") or 0),
                output_tokens=int(usage.get("output_tokens") or 0),
                finish_reason=_FINISH.get(stop_reason, stop_reason),
            )
        except PromptAPIError:
            raise
        except NOT_AN_ANSWER:
            raise malformed(self.config.alias, "an answer that is not a message") from None

    def _answer(self, blocks: list[dict[str, Any]], request: CompletionRequest) -> str:
        name = self.tool_name(request)
        if name is not None:
            for block in blocks:
                if block["type"] == "tool_use" and block.get("name") == name:
                    value = block["input"]
                    if _wrapped(request.output_schema):
                        value = value[WRAPPED]
                    return orjson.dumps(value).decode()
        return "".join(block["text"] for block in blocks if block["type"] == "text")

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        payload = orjson.dumps(self.body(request, stream=True))
        tool = self.tool_name(request)
        deltas = self._deltas(payload, tool)
        if tool is None or not _wrapped(request.output_schema):
            async for delta in deltas:
                yield delta
            return
        # A wrapped value is only whole once the tool input is: gather it, then send it once.
        parts: list[str] = []
        final = StreamDelta()
        async for delta in deltas:
            parts.append(delta.text)
            if delta.output_tokens is not None:
                final = delta
        try:
            value = orjson.loads("".join(parts))
        except orjson.JSONDecodeError:
            raise malformed(self.config.alias, "a tool call that is not JSON") from None
        if isinstance(value, dict):
            value = value.get(WRAPPED)
        yield StreamDelta(text=orjson.dumps(value).decode(), model=final.model)
        yield final

    async def _deltas(self, payload: bytes, tool: str | None) -> AsyncIterator[StreamDelta]:
        """The answer's pieces (text, or the forced tool's input JSON), then one delta with the
        usage and finish reason."""
        input_tokens = 0
        model: str | None = None
        answering: set[int] = set()
        async for event in self.http.events(self.url, payload, self.headers):
            data = self._event(event.data)
            kind = data.get("type")
            if kind == "message_start":
                message = data.get("message") or {}
                model = message.get("model")
                input_tokens = int((message.get("usage") or {}).get("input_tokens") or 0)
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == ("text" if tool is None else "tool_use"):
                    answering.add(data.get("index", 0))
                    if block.get("text"):
                        yield StreamDelta(text=block["text"], model=model)
            elif kind == "content_block_delta" and data.get("index", 0) in answering:
                delta = data.get("delta") or {}
                piece = delta.get("text") if tool is None else delta.get("partial_json")
                if piece:
                    yield StreamDelta(text=piece, model=model)
            elif kind == "message_delta":
                usage = data.get("usage") or {}
                reason = (data.get("delta") or {}).get("stop_reason")
                yield StreamDelta(
                    model=model,
                    input_tokens=int(usage.get("input_tokens") or input_tokens),
                    output_tokens=int(usage.get("output_tokens") or 0),
                    finish_reason=_FINISH.get(reason, reason),
                )
            elif kind == "message_stop":
                return
            elif kind == "error":
                raise self._stream_error(data)
        raise malformed(self.config.alias, "a stream that ended before message_stop")

    def _event(self, data: bytes) -> dict[str, Any]:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed(self.config.alias, "a malformed stream event") from None
        if not isinstance(event, dict):
            raise malformed(self.config.alias, "a malformed stream event")
        return event

    def _stream_error(self, data: dict[str, Any]) -> PromptAPIError:
        info = describe_error(data)
        alias = self.config.alias
        log.warning("provider stream error: alias=%s %s", alias, info.summary)
        error = data.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        if kind in ("overloaded_error", "rate_limit_error"):
            unavailable = ProviderUnavailable(
                f"The provider for model alias {alias!r} is overloaded ({info.summary})."
            )
            unavailable.retryable = True  # the router retries only before the first delta
            return unavailable
        if info.auth:
            return UpstreamAuthError(
                f"The provider for model alias {alias!r} refused the configured credential."
            )
        return UpstreamError(f"The provider for model alias {alias!r} failed ({info.summary}).")
