"""OpenAI chat completions, and every server that speaks it (vLLM, Ollama, llama.cpp, ...).

The HTTP client is aiohttp: measured on this workload it sustains several times the request
rate of httpx's default transport and does not collapse at hundreds of open connections
(see bench/ and the README). It stays behind this seam.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from promptapi.errors import (
    DeadlineExceeded,
    PromptAPIError,
    ProviderUnavailable,
    UpstreamAuthError,
    UpstreamError,
)
from promptapi.providers.base import Completion, CompletionRequest, ModelConfig, StreamDelta

log = logging.getLogger("promptapi.providers")

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class OpenAIProvider:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        base = (config.base_url or "https://api.openai.com/v1").rstrip("/")
        self.url = f"{base}/chat/completions"
        self.headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            self.headers["Authorization"] = f"Bearer {config.api_key}"
        self._session: aiohttp.ClientSession | None = None
        # total is the call's deadline: a provider trickling one byte a second still hits it.
        self._timeout = aiohttp.ClientTimeout(
            total=config.timeouts.deadline,
            connect=config.timeouts.connect,
            sock_read=config.timeouts.read,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                json_serialize=lambda v: orjson.dumps(v).decode(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def body(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.model, "messages": request.messages}
        for key, value in {**self.config.params, **request.params}.items():
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
        payload = orjson.dumps(self.body(request))
        try:
            async with self.session.post(self.url, data=payload, headers=self.headers) as resp:
                if resp.status != 200:
                    await self._raise_for_status(resp)
                raw = await _read_limited(resp)
        except PromptAPIError:
            raise
        except Exception as exc:
            raise _transport_error(exc, self.config.alias) from None
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
                    raise UpstreamError("The model refused to answer.", reason="refusal")
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
        except (
            orjson.JSONDecodeError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            ValueError,
        ):
            raise UpstreamError(
                f"The provider for model alias {self.config.alias!r} sent an answer that is not a "
                "chat completion."
            ) from None

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        payload = orjson.dumps(self.body(request, stream=True))
        try:
            async with self.session.post(self.url, data=payload, headers=self.headers) as resp:
                if resp.status != 200:
                    await self._raise_for_status(resp)
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    delta = self._parse_chunk(data)
                    if delta is not None:
                        yield delta
        except PromptAPIError:
            raise
        except Exception as exc:
            raise _transport_error(exc, self.config.alias) from None

    def _parse_chunk(self, data: bytes) -> StreamDelta | None:
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
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise UpstreamError(
                f"The provider for model alias {self.config.alias!r} sent a malformed stream chunk."
            ) from None

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        status = resp.status
        detail = _error_summary(await _read_limited(resp, 64 * 1024, strict=False))
        alias = self.config.alias
        log.warning("provider error: alias=%s status=%s %s", alias, status, detail)
        if status in (401, 403):
            raise UpstreamAuthError(
                f"The provider for model alias {alias!r} refused the configured credential "
                f"(HTTP {status})."
            )
        if status == 429:
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            raise ProviderUnavailable(
                f"The provider for model alias {alias!r} is rate-limiting us (HTTP 429).",
                headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
            )
        if status >= 500:
            raise UpstreamError(f"The provider for model alias {alias!r} failed (HTTP {status}).")
        raise UpstreamError(
            f"The provider for model alias {alias!r} refused the request (HTTP {status})."
        )


async def _read_limited(
    resp: aiohttp.ClientResponse, limit: int = MAX_RESPONSE_BYTES, *, strict: bool = True
) -> bytes:
    length = resp.content_length
    if length is not None and length > limit and strict:
        raise UpstreamError("The provider's answer is too large.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            if strict:
                raise UpstreamError("The provider's answer is too large.")
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _error_summary(raw: bytes) -> str:
    """The provider's error type and code, for the log. Never the message: it may echo a key."""
    try:
        error = orjson.loads(raw).get("error") or {}
        return f"type={error.get('type')!s:.64} code={error.get('code')!s:.64}"
    except Exception:
        return "type=unknown"


def _retry_after(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, min(3600, int(float(value))))
    except ValueError:
        return None


def _transport_error(exc: Exception, alias: str) -> PromptAPIError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return DeadlineExceeded(
            f"The provider for model alias {alias!r} did not answer within its deadline."
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        log.warning("provider unreachable: alias=%s %s", alias, type(exc).__name__)
        return ProviderUnavailable(f"The provider for model alias {alias!r} is unreachable.")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamError(f"The provider for model alias {alias!r} closed the connection early.")
    log.warning("provider transport error: alias=%s %s", alias, type(exc).__name__)
    return UpstreamError(
        f"The provider for model alias {alias!r} could not be reached ({type(exc).__name__})."
    )
