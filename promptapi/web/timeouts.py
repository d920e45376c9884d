"""Slow clients: limits on reading a request's headers and its body.

uvicorn has no header-read limit of its own: `timeout_keep_alive` only runs between requests
on a connection that has already answered one, so a client that opens a connection and
trickles header bytes (or sends none) holds it for ever; and its httptools parser keeps header
bytes without bound (h11's `h11_max_incomplete_event_size` bounds only that protocol). So:

- **Headers** (`PROMPTAPI_HEADER_TIMEOUT`, `PROMPTAPI_MAX_HEADER_BYTES`): `HTTPProtocol`, a
  uvicorn protocol subclass, gives a connection that long, from when it is ready for a request
  (opened, or its previous answer sent), to complete the request's headers, and that many
  bytes for them. Past the time, a connection that sent part of a request gets a bare 408
  problem and is closed, one that sent nothing is just closed; past the size, a 431.
- **Body** (`PROMPTAPI_BODY_TIMEOUT`): `BodyTimeoutMiddleware` (pure ASGI) gives each request
  that long, from the first time reading its body has to wait, to deliver all of it. Past it,
  reading the body raises `RequestTimeout`: a 408 problem with `Connection: close`.

Both are measured from a fixed start, so trickling a byte at a time does not reset them.
"""

from __future__ import annotations

import asyncio
import types
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from promptapi.errors import HeadersTooLarge, PromptAPIError, RequestTimeout

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # httptools is optional for uvicorn; h11 always ships with it
    _Base = H11Protocol  # type: ignore[assignment,misc]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


class BodyDeadline:
    """`receive`, bounded: the whole body must arrive within `timeout` seconds of the first
    time reading it had to wait.

    The usual body is already buffered when the app asks for it, and the server's `receive`
    then returns without suspending; that case is taken without a clock read or a timer (a
    timer per request costs several µs on the hot path). Only a `receive` that has to wait is
    finished under `asyncio.timeout_at`."""

    __slots__ = ("deadline", "done", "receive", "timeout")

    def __init__(self, receive: Receive, timeout: float) -> None:
        self.receive = receive
        self.timeout = timeout
        self.deadline: float | None = None
        self.done = False

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        pending = self.receive()
        try:
            waiting = pending.send(None)  # type: ignore[attr-defined]
        except StopIteration as returned:
            message: Message = returned.value
        else:
            if self.deadline is None:
                self.deadline = asyncio.get_running_loop().time() + self.timeout
            try:
                async with asyncio.timeout_at(self.deadline):
                    message = await _resume(pending, waiting)
            except TimeoutError:
                self.done = True
                raise RequestTimeout(
                    "The request body was not received in time.",
                    headers={"Connection": "close"},
                ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message


@types.coroutine
def _resume(coroutine: Any, waiting: Any) -> Generator[Any, Any, Any]:
    """`await coroutine` for a coroutine already started by hand, whose first `send` gave
    `waiting`: hands what it waits on to the event loop and what comes back to it."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as exc:  # CancelledError from the timeout, or the task
            try:
                waiting = coroutine.throw(exc)
            except StopIteration as returned:
                return returned.value
        else:
            try:
                waiting = coroutine.send(sent)
            except StopIteration as returned:
                return returned.value


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout <= 0:
            await self.app(scope, receive, send)
            return
        await self.app(scope, BodyDeadline(receive, self.timeout), send)


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    timeout: float = DEFAULT_HEADER_TIMEOUT
    max_bytes: int = DEFAULT_MAX_HEADER_BYTES


_limits: weakref.WeakKeyDictionary[Config, HeaderLimits] = weakref.WeakKeyDictionary()


def header_limits(config: Config) -> HeaderLimits:
    """The header limits of the promptapi app this uvicorn config serves (from its settings),
    found once per config: the app may be wrapped in uvicorn's own middleware."""
    found = _limits.get(config)
    if found is None:
        found = HeaderLimits()
        app: Any = config.loaded_app
        for _ in range(16):
            gateway = getattr(getattr(app, "state", None), "gateway", None)
            if gateway is not None:
                settings = gateway.settings
                found = HeaderLimits(settings.header_timeout, settings.max_header_bytes)
                break
            app = getattr(app, "app", None)
            if app is None:
                break
        _limits[config] = found
    return found


def _answer(error: PromptAPIError, reason: bytes) -> bytes:
    body = orjson.dumps(error.problem())
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (error.status, reason),
            b"content-type: application/problem+json\r\n",
            b"connection: close\r\n",
            b"content-length: %d\r\n\r\n" % len(body),
            body,
        )
    )


class _HeaderGuard:
    """The header limits of one connection, for either protocol class.

    One timer per connection at most: `ready` only moves the deadline, and the timer, when it
    fires early, re-arms itself for the current one (no timer set and cancelled per request)."""

    __slots__ = ("deadline", "handle", "limits", "pending", "size")

    def __init__(self, limits: HeaderLimits) -> None:
        self.limits = limits
        self.handle: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.pending = False
        self.size = 0

    def ready(self, protocol: Any) -> None:
        """The connection waits for a request's headers from now."""
        self.pending = True
        self.size = 0
        if self.limits.timeout > 0:
            self.deadline = protocol.loop.time() + self.limits.timeout
            if self.handle is None:
                self.handle = protocol.loop.call_at(self.deadline, self.fire, protocol)

    def complete(self) -> None:
        self.pending = False

    def received(self, protocol: Any, size: int) -> None:
        """`size` bytes arrived and the headers are still incomplete."""
        self.size += size
        if 0 < self.limits.max_bytes < self.size:
            self.pending = False
            self.refuse(protocol, HeadersTooLarge(), b"Request Header Fields Too Large")

    def fire(self, protocol: Any) -> None:
        self.handle = None
        if not self.pending or protocol.transport.is_closing():
            return
        if protocol.loop.time() < self.deadline:
            self.handle = protocol.loop.call_at(self.deadline, self.fire, protocol)
            return
        self.pending = False
        if self.size:
            error = RequestTimeout("The request headers were not received in time.")
            self.refuse(protocol, error, b"Request Timeout")
        else:  # nothing was asked, so nothing is answered
            protocol.transport.close()

    def refuse(self, protocol: Any, error: PromptAPIError, reason: bytes) -> None:
        transport = protocol.transport
        cycle = protocol.cycle
        if cycle is None or cycle.response_complete:  # never inside another answer
            transport.write(_answer(error, reason))
        transport.close()

    def close(self) -> None:
        self.pending = False
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Guarded:
    """What both protocol classes add to uvicorn's (mixed in before it)."""

    header_guard: _HeaderGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self.header_guard = _HeaderGuard(header_limits(self.config))  # type: ignore[attr-defined]
        self.header_guard.ready(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.header_guard.close()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        guard = self.header_guard
        if guard.pending and not self.transport.is_closing():  # type: ignore[attr-defined]
            guard.received(self, len(data))


class H11HTTPProtocol(_Guarded, H11Protocol):
    """uvicorn's h11 protocol with header limits."""

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.header_guard.complete()  # a request started: its headers are complete

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self.header_guard.ready(self)
        super().on_response_complete()


if _Base is H11Protocol:
    HTTPProtocol: type[asyncio.Protocol] = H11HTTPProtocol  # pragma: no cover
else:

    class _HttpToolsHTTPProtocol(_Guarded, _Base):  # type: ignore[valid-type,misc]
        """uvicorn's httptools protocol with header limits."""

        def on_headers_complete(self) -> None:
            self.header_guard.complete()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            if not self.pipeline and not self.transport.is_closing():
                self.header_guard.ready(self)
            super().on_response_complete()

    HTTPProtocol = _HttpToolsHTTPProtocol

# What `promptapi serve` hands uvicorn (a string, so --workers N can import it in each worker).
PROTOCOL = "promptapi.web.timeouts:HTTPProtocol"
