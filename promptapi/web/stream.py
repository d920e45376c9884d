"""Server-sent events: a streamed call's answer, sent piece by piece as the provider writes it.

The wire format (documented in the README, "Streaming"):

    event: delta            one per piece of answer text, in order
    data: {"text": "..."}

    event: done             the last event of a call that succeeded: the whole envelope
    data: {"id": ..., "prompt": ..., "model": ..., "output": ..., "usage": ..., ...}

    event: error            the last event of a call that failed after the first byte
    data: {"type": ..., "title": ..., "status": ..., "detail": ..., ...}

    : ping                  a comment after `stream_heartbeat` seconds of silence

Pure ASGI, no buffering: every event is one `http.response.body` message, sent as soon as the
gateway yields it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send

from promptapi.errors import MalformedRequest, PromptAPIError
from promptapi.web.errors import log_error, problem
from promptapi.web.http import dumps

log = logging.getLogger("promptapi.web")

EVENT_STREAM = "text/event-stream"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PING = b": ping\n\n"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def wanted(accept: str | None, query_string: bytes) -> bool:
    """Stream when `?stream=true`, or when Accept names text/event-stream (and `?stream` does
    not say false)."""
    if query_string:
        for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            if key != "stream":
                continue
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise MalformedRequest(
                "Query parameter 'stream' must be true or false.",
                errors=[{"path": "?stream", "message": "expected true or false"}],
            )
    if accept is None or EVENT_STREAM not in accept:
        return False
    for item in accept.split(","):
        media, _, params = item.partition(";")
        if media.strip().lower() == EVENT_STREAM:
            return _quality(params) > 0
    return False


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 1.0
    return 1.0


def event(name: bytes, data: Any) -> bytes:
    return b"".join((b"event: ", name, b"\ndata: ", dumps(data), b"\n\n"))


def delta_event(text: str) -> bytes:
    return b"".join((b'event: delta\ndata: {"text":', orjson.dumps(text), b"}\n\n"))


async def respond(
    scope: Scope,
    receive: Receive,
    send: Send,
    events: AsyncGenerator[Any, None],
    *,
    heartbeat: float,
    headers: Callable[[Any], list[tuple[bytes, bytes]]] | None = None,
) -> None:
    """Answer with `events` as server-sent events: the first is what is being served (for
    `headers(served)`, extra response headers), then text pieces, then the envelope.

    Whatever fails before the first piece of text raises from here, so the app's error
    handlers answer with a plain problem+json response. A caller that disconnects cancels the
    stream at once: the gateway closes the upstream request and records the call as 499."""
    pump = asyncio.ensure_future(_pump(scope, send, events, headers, heartbeat))
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not pump.done():
            pump.cancel()
        await asyncio.gather(pump, watcher, return_exceptions=True)
    if not pump.cancelled():
        pump.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Writer:
    """Sends body messages one at a time (the heartbeat shares the connection) and notes when
    the caller last heard from us."""

    __slots__ = ("last", "lock", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.lock = asyncio.Lock()
        self.last = time.monotonic()

    async def write(self, data: bytes) -> None:
        async with self.lock:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
        self.last = time.monotonic()

    async def heartbeat(self, interval: float) -> None:
        while True:
            wait = self.last + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                await self.write(PING)


async def _pump(
    scope: Scope,
    send: Send,
    events: AsyncGenerator[Any, None],
    headers: Callable[[Any], list[tuple[bytes, bytes]]] | None,
    heartbeat: float,
) -> None:
    async with contextlib.aclosing(events):
        served = await anext(events)
        item = await anext(events)
        extra = headers(served) if headers is not None else []
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS + extra})
        writer = _Writer(send)
        beat = asyncio.ensure_future(writer.heartbeat(heartbeat)) if heartbeat > 0 else None
        try:
            while isinstance(item, str):
                await writer.write(delta_event(item))
                item = await anext(events)
            await writer.write(event(b"done", item))
        except PromptAPIError as exc:
            log_error(scope["method"], scope["path"], exc)
            await writer.write(_error_event(scope, exc))
        except Exception:
            log.exception("streamed call failed on %s %s", scope["method"], scope["path"])
            await writer.write(_error_event(scope, PromptAPIError()))
        finally:
            if beat is not None:
                beat.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _error_event(scope: Scope, exc: PromptAPIError) -> bytes:
    return event(b"error", problem(exc, scope["path"], scope["state"]["request_id"]))
