"""OpenAI chat completions, every server that speaks it (vLLM, Ollama, llama.cpp, ...), and
Azure OpenAI (the same bodies at a deployment URL)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson

from promptapi.errors import PromptAPIError
from promptapi.providers.base import Completion, CompletionRequest, ModelConfig, StreamDelta
from promptapi.providers.http import NOT_AN_ANSWER, HTTPClient, declined, malformed

_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]")
AZURE_API_VERSION = "2024-10-21"
_MAX_TOKENS = ("max_tokens", "max_completion_tokens")


class OpenAIProvider:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.url = self.endpoint()
        self.headers = {"Content-Type": "application/json", **config.headers}
        self.headers.update(self.auth_headers())
        self.http = HTTPClient(config)

    def endpoint(self) -> str:
        base = (self.config.base_url or "https://api.openai.com/v1").rstrip("/")
        return f"{base}/chat/completions"

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def aclose(self) -> None:
        await self.http.aclose()

    def body(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.model, "messages": request.messages}
        for key, value in {**self.config.params, **request.params}.items():
            if key in _MAX_TOKENS:
                # The current API takes max_completion_tokens (reasoning models refuse the
                # deprecated max_tokens); older compatible servers know only max_tokens.
                body[self.config.max_tokens_field] = value
            else:
                body[key] = value
        if request.output_schema is not None:
            mode = self.config.structured_output
            if mode == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": _SCHEMA_NAME.sub("_", request.schema_name)[:64] or "output",
                        "schema": request.output_schema,
                        "strict": False,
                    },
                }
            elif mode == "json_object":
                body["response_format"] = {"type": "json_object"}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, request: CompletionRequest) -> Completion:
        raw = await self.http.post(self.url, orjson.dumps(self.body(request)), self.headers)
        return self.parse(raw)

    def parse(self, raw: bytes) -> Completion:
        try:
            data = orjson.loads(raw)
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content")
            if text is None:
                refusal = message.get("refusal")
                if refusal:
                    raise declined("The model refused to answer.", "refusal")
                text = ""
            usage = data.get("usage") or {}
            return Completion(
                text=text,
                model=data.get("model") or self.config.model,
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason=choice.get("finish_reason"),
            )
        except PromptAPIError:
            raise
        except NOT_AN_ANSWER:
            raise malformed(self.config.alias, "an answer that is not a chat completion") from None

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        payload = orjson.dumps(self.body(request, stream=True))
        finished = False
        async for event in self.http.events(self.url, payload, self.headers):
            if event.data == b"[DONE]":
                return
            delta = self._parse_chunk(event.data)
            finished = finished or delta.finish_reason is not None
            yield delta
        # Some compatible servers omit [DONE]; a stream that never finished was cut.
        if not finished:
            raise malformed(self.config.alias, "a stream that ended before it finished")

    def _parse_chunk(self, data: bytes) -> StreamDelta:
        try:
            chunk = orjson.loads(data)
            delta = StreamDelta(model=chunk.get("model"))
            choices = chunk.get("choices") or []
            if choices:
                delta.text = (choices[0].get("delta") or {}).get("content") or ""
                delta.finish_reason = choices[0].get("finish_reason")
            usage = chunk.get("usage")
            if usage:
                delta.input_tokens = int(usage.get("prompt_tokens") or 0)
                delta.output_tokens = int(usage.get("completion_tokens") or 0)
            return delta
        except NOT_AN_ANSWER:
            raise malformed(self.config.alias, "a malformed stream chunk") from None


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: `base_url` is the resource endpoint (https://NAME.openai.azure.com), the
    deployment names the model, `api-version` is a query parameter and the key goes in
    `api-key`."""

    def endpoint(self) -> str:
        if not self.config.base_url:
            raise ValueError("azure needs base_url: the resource endpoint")
        base = self.config.base_url.rstrip("/")
        deployment = quote(self.config.deployment or self.config.model, safe="")
        version = quote(self.config.api_version or AZURE_API_VERSION, safe="")
        return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"api-key": key} if key else {}
