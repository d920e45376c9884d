"""The HTTP plumbing every provider adapter shares, so each adapter only maps bodies.

The client is aiohttp: measured on this workload it sustains several times the request rate of
httpx's default transport and does not collapse at hundreds of open connections (see bench/ and
the README). It stays behind this seam.

One pooled session per model alias, with the alias's timeouts: `total` is the call's deadline,
so a provider trickling one byte a second still hits it (a per-read timeout alone would not).
Errors are mapped the same way for every provider: the provider's error body is read (bounded)
only to log its *type* (never its message, which may echo a key), and the HTTP status decides
which of our errors the caller gets.

Redirects are never followed (`allow_redirects=False` on every request): a provider answering
3xx would otherwise receive our key and the rendered prompt at an address nobody configured.
A 3xx becomes `UpstreamRedirect` (502, `upstream_redirect`); its Location is neither followed,
logged nor echoed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from promptapi.errors import (
    DeadlineExceeded,
    PromptAPIError,
    UpstreamError,
    UpstreamRedirect,
)
from promptapi.providers.base import ModelConfig, retry_after, status_error, unreachable

log = logging.getLogger("promptapi.providers")

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
# What reading an answer of the wrong shape raises (a JSON parser's error, a missing key, ...).
NOT_AN_ANSWER = (
    orjson.JSONDecodeError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What may be logged about a provider's error body, and whether it says the key is bad."""

    summary: str
    auth: bool = False


ErrorDescriber = Callable[[Any], ErrorInfo]


def safe(value: Any) -> str:
    """A provider-chosen token (error type, status, reason), cut down so it cannot carry a
    secret or a message into a log line."""
    return _UNSAFE.sub("?", str(value))[:64]


def describe_openai_error(data: Any) -> ErrorInfo:
    """OpenAI (and Azure): {"error": {"type", "code", "message", "param"}}."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return ErrorInfo("type=unknown")
    return ErrorInfo(f"type={safe(error.get('type'))} code={safe(error.get('code'))}")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: bytes


class SSEParser:
    """Server-sent events from bytes as they arrive. Lines, events and multi-byte UTF-8
    characters may be split anywhere across reads; data is kept as bytes until an event is
    whole, so nothing is decoded half-way."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._pending.append(chunk[start:end])
            line = b"".join(self._pending)
            self._pending.clear()
            self._line(line, events)
            start = end + 1
        if start < len(chunk):
            self._pending.append(chunk[start:])
        return events

    def close(self) -> list[SSEEvent]:
        """At the end of the body: an event still missing its blank line is dispatched."""
        events: list[SSEEvent] = []
        if self._pending:
            self._line(b"".join(self._pending), events)
            self._pending.clear()
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                events.append(SSEEvent(self._event or "message", b"\n".join(self._data)))
            self._event = ""
            self._data = []
            return
        if line.startswith(b":"):
            return  # a comment (keep-alive)
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


class HTTPClient:
    """A pooled aiohttp session for one model alias, and the status/transport error mapping."""

    def __init__(
        self, config: ModelConfig, describe_error: ErrorDescriber = describe_openai_error
    ) -> None:
        self.alias = config.alias
        self.describe_error = describe_error
        self._session: aiohttp.ClientSession | None = None
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

    async def post(self, url: str, payload: bytes, headers: dict[str, str]) -> bytes:
        """POST and return the 200 body (at most MAX_RESPONSE_BYTES), or raise our error."""
        try:
            async with self.session.post(
                url, data=payload, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    await self.raise_for_status(resp)
                return await read_limited(resp)
        except PromptAPIError:
            raise
        except Exception as exc:
            raise transport_error(exc, self.alias) from None

    async def events(
        self, url: str, payload: bytes, headers: dict[str, str]
    ) -> AsyncIterator[SSEEvent]:
        """POST and yield the server-sent events of the 200 body as they arrive."""
        try:
            async with self.session.post(
                url, data=payload, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    await self.raise_for_status(resp)
                parser = SSEParser()
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise UpstreamError("The provider's answer is too large.")
                    for event in parser.feed(chunk):
                        yield event
                for event in parser.close():
                    yield event
        except PromptAPIError:
            raise
        except Exception as exc:
            raise transport_error(exc, self.alias) from None

    async def raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        if 300 <= resp.status < 400:
            log.warning("provider redirect refused: alias=%s status=%s", self.alias, resp.status)
            error = UpstreamRedirect(
                f"The provider for model alias {self.alias!r} answered with a redirect "
                f"(HTTP {resp.status}); redirects are not followed."
            )
            error.upstream_status = resp.status
            raise error
        raw = await read_limited(resp, MAX_ERROR_BYTES, strict=False)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        info = self.describe_error(data)
        log.warning("provider error: alias=%s status=%s %s", self.alias, resp.status, info.summary)
        raise status_error(self.alias, resp.status, retry_after(resp.headers), auth=info.auth)


async def read_limited(
    resp: aiohttp.ClientResponse, limit: int | None = None, *, strict: bool = True
) -> bytes:
    """The body, at most `limit` (default MAX_RESPONSE_BYTES) bytes: past it, an error
    (strict) or the first `limit`."""
    if limit is None:
        limit = MAX_RESPONSE_BYTES
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


def transport_error(exc: Exception, alias: str) -> PromptAPIError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        log.warning("provider unreachable: alias=%s connect timeout", alias)
        return unreachable(alias, "did not accept a connection in time")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return DeadlineExceeded(
            f"The provider for model alias {alias!r} did not answer within its deadline."
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        log.warning("provider unreachable: alias=%s %s", alias, type(exc).__name__)
        return unreachable(alias)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamError(f"The provider for model alias {alias!r} closed the connection early.")
    log.warning("provider transport error: alias=%s %s", alias, type(exc).__name__)
    return UpstreamError(
        f"The provider for model alias {alias!r} could not be reached ({type(exc).__name__})."
    )


def malformed(alias: str, what: str) -> UpstreamError:
    return UpstreamError(f"The provider for model alias {alias!r} sent {what}.")


def declined(detail: str, reason: str) -> UpstreamError:
    """A 502 for an answer the model gave but that is not one (a refusal, a block): the
    deployment worked, so the router must not count it as a fault."""
    error = UpstreamError(detail, reason=reason)
    error.upstream_status = 200
    return error


def join_system(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """Split off every system message (joined, in order) from the conversation, and merge
    consecutive turns of the same role: APIs with a top-level system prompt want the rest to
    alternate. They also want at least one turn, so a prompt of system messages only is sent
    as one user turn."""
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            system.append(content)
        elif turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n\n" + content}
        else:
            turns.append({"role": role, "content": content})
    if not turns:
        return "", [{"role": "user", "content": "\n\n".join(system)}]
    return "\n\n".join(system), turns


def stop_list(value: Any) -> Any:
    """OpenAI's `stop` (a string or a list) as the list other APIs want."""
    return [value] if isinstance(value, str) else value
