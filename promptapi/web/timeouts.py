"""Slow clients: time limits on reading a request's headers and its body.

uvicorn has no header-read limit of its own: `timeout_keep_alive` only runs between requests
on a connection that has already answered one, so a client that opens a connection and
trickles header bytes (or sends none) holds it for ever. Two limits close that:

- **Headers** (`PROMPTAPI_HEADER_TIMEOUT`): `HTTPProtocol`, a uvicorn protocol subclass, starts
  a timer when a connection is ready for a request (opened, or its previous response sent) and
  stops it when the request's headers are complete. When it fires, a connection that sent part
  of a request gets a bare 408 and is closed; one that sent nothing is closed.
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
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from promptapi.errors import RequestTimeout

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # httptools is optional for uvicorn; h11 always ships with it
    _Base = H11Protocol  # type: ignore[assignment,misc]

DEFAULT_HEADER_TIMEOUT = 10.0


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


_timeouts: weakref.WeakKeyDictionary[Config, float] = weakref.WeakKeyDictionary()


def header_timeout(config: Config) -> float:
    """The header timeout of the promptapi app this uvicorn config serves (its settings), found
    once per config: the app may be wrapped by uvicorn's own middleware."""
    found = _timeouts.get(config)
    if found is None:
        found = DEFAULT_HEADER_TIMEOUT
        app: Any = config.loaded_app
        for _ in range(16):
            gateway = getattr(getattr(app, "state", None), "gateway", None)
            if gateway is not None:
                found = float(gateway.settings.header_timeout)
                break
            app = getattr(app, "app", None)
            if app is None:
                break
        _timeouts[config] = found
    return found


_408 = b"".join(
    (
        b"HTTP/1.1 408 Request Timeout\r\n",
        b"content-type: application/problem+json\r\n",
        b"connection: close\r\n",
        b"content-length: %d\r\n\r\n",
    )
)


def _timeout_answer() -> bytes:
    error = RequestTimeout("The request headers were not received in time.")
    body = orjson.dumps(error.problem())
    return _408 % len(body) + body


class _HeaderDeadline:
    """The header timer of one connection, for either protocol class."""

    __slots__ = ("handle", "partial", "timeout")

    def __init__(self, timeout: float) -> None:
        self.handle: asyncio.TimerHandle | None = None
        self.partial = False
        self.timeout = timeout

    def arm(self, protocol: Any) -> None:
        self.disarm()
        self.partial = False
        if self.timeout > 0:
            self.handle = protocol.loop.call_later(self.timeout, self.fire, protocol)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def fire(self, protocol: Any) -> None:
        self.handle = None
        transport = protocol.transport
        if transport.is_closing():
            return
        cycle = protocol.cycle
        if self.partial and (cycle is None or cycle.response_complete):
            transport.write(_timeout_answer())
        transport.close()


if _Base is H11Protocol:

    class HTTPProtocol(H11Protocol):
        pass  # pragma: no cover (only without httptools)

else:

    class HTTPProtocol(_Base):  # type: ignore[no-redef,valid-type,misc]
        """uvicorn's httptools protocol with a deadline for each request's headers."""

        def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self.header_deadline = _HeaderDeadline(header_timeout(config))

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.header_deadline.arm(self)

        def connection_lost(self, exc: Exception | None) -> None:
            self.header_deadline.disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.header_deadline.handle is not None:
                self.header_deadline.partial = True
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self.header_deadline.disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            if not self.pipeline and not self.transport.is_closing():
                self.header_deadline.arm(self)
            super().on_response_complete()


class H11HTTPProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_deadline = _HeaderDeadline(header_timeout(config))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.header_deadline.arm(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.header_deadline.disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.header_deadline.handle is not None:
            self.header_deadline.partial = True
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if self.header_deadline.handle is not None and cycle and not cycle.response_complete:
            self.header_deadline.disarm()  # a request started: its headers are complete

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self.header_deadline.arm(self)
        super().on_response_complete()


if _Base is H11Protocol:
    HTTPProtocol = H11HTTPProtocol  # type: ignore[misc]

# What `promptapi serve` hands uvicorn (a string, so --workers N can import it in each worker).
PROTOCOL = "promptapi.web.timeouts:HTTPProtocol"
