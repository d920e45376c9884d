"""A fake OpenAI-compatible upstream on a loopback socket, with scripted behaviours.

It speaks the real wire protocol: every request body is checked against the official
CreateChatCompletionRequest schema and every answer it builds against
CreateChatCompletionResponse / CreateChatCompletionStreamResponse (see contract.py); any
violation is kept in `violations` and the tests assert there are none.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests import contract, sdk_contract


@dataclass
class Behaviour:
    """What the fake does for one request. Defaults: answer 200 with `content`."""

    content: str | None = "ok"
    status: int = 200
    body: bytes | None = None  # raw body instead of a chat completion
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float | None = None  # seconds between bytes of the body
    drop: bool = False  # close the connection without answering
    stream_chunks: list[str] | None = None
    chunk_delay: float = 0.0  # seconds before each streamed content chunk
    cut_after: int | None = None  # stop the stream after this many content chunks...
    cut_cleanly: bool = False  # ...by ending the response without [DONE] (else drop the socket)
    usage: tuple[int, int] = (11, 7)
    model: str = "gpt-4o-mini-2024-07-18"
    cut_stream_after: int | None = None  # close the connection after this many stream bytes


def completion(content: str, *, model: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        },
    }


def chunk(
    delta: dict[str, Any], *, model: str, finish: str | None = None, usage: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


async def write_pieces(
    response: web.StreamResponse, wire: bytes, trickle: float | None = None
) -> None:
    """Write in small pieces so multi-byte characters and lines are split across reads (or
    one byte every `trickle` seconds)."""
    step = 7 if trickle is None else 1
    for start in range(0, len(wire), step):
        await response.write(wire[start : start + step])
        await asyncio.sleep(trickle or 0)


async def write_split(
    response: web.StreamResponse, wire: bytes, trickle: float | None = None
) -> web.StreamResponse:
    """`write_pieces`, then the end of the body."""
    await write_pieces(response, wire, trickle)
    await response.write_eof()
    return response


class _Cut(Exception):
    """The behaviour's byte budget for a stream is spent; the connection was dropped."""


class _StreamWriter:
    """Writes a stream in pieces (or trickled), and drops the connection once
    `cut_stream_after` bytes are out."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, behaviour: Behaviour
    ) -> None:
        self.request = request
        self.response = response
        self.trickle = behaviour.trickle
        self.budget = behaviour.cut_stream_after
        self.sent = 0

    def drop(self) -> None:
        assert self.request.transport is not None
        self.request.transport.close()

    async def write(self, wire: bytes) -> None:
        if self.budget is not None and self.sent + len(wire) >= self.budget:
            await self.response.write(wire[: self.budget - self.sent])
            self.drop()
            raise _Cut
        await write_pieces(self.response, wire, self.trickle)
        self.sent += len(wire)


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        # One entry per request for a stream: outcome (not streamed, running, complete, cut,
        # client_gone), content chunks sent, and time.monotonic() stamps of its start, first
        # content chunk and end.
        self.streams: list[dict[str, Any]] = []
        self.script: deque[Behaviour] = deque()
        self.default = Behaviour()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *behaviours: Behaviour) -> FakeOpenAI:
        self.script.extend(behaviours)
        return self

    def reset(self) -> None:
        self.requests.clear()
        self.violations.clear()
        self.streams.clear()
        self.script.clear()
        self.default = Behaviour()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_unparseable": raw.decode(errors="replace")}
        self.requests.append(
            {
                "body": body,
                "headers": dict(request.headers),
                "path": request.path,
                "query": dict(request.query),
            }
        )
        self.violations.extend(
            f"request {v}" for v in contract.problems("CreateChatCompletionRequest", body)
        )
        self.violations.extend(sdk_contract.request_problems("openai", body))
        behaviour = self.script.popleft() if self.script else self.default
        # Made on arrival, so a straggler from an earlier test never lands in a later one's list.
        entry: dict[str, Any] = {
            "outcome": "not streamed",
            "started": time.monotonic(),
            "first_content": None,
            "finished": None,
            "sent": 0,  # content chunks written so far
        }
        if body.get("stream"):
            self.streams.append(entry)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if body.get("stream") and behaviour.status == 200 and behaviour.body is None:
            return await self._stream(request, behaviour, entry)
        if behaviour.body is not None:
            payload = behaviour.body
        elif behaviour.status != 200:
            payload = json.dumps(
                {
                    "error": {
                        "message": "fake failure sk-secret-in-upstream-message",
                        "type": "server_error",
                        "code": None,
                        "param": None,
                    }
                }
            ).encode()
        else:
            answer = completion(
                behaviour.content or "", model=behaviour.model, usage=behaviour.usage
            )
            self.violations.extend(
                f"response {v}" for v in contract.problems("CreateChatCompletionResponse", answer)
            )
            self.violations.extend(sdk_contract.answer_problems("openai", "answer", answer))
            payload = json.dumps(answer).encode()
        return await self.send(request, behaviour, payload)

    async def send(
        self, request: web.Request, behaviour: Behaviour, payload: bytes
    ) -> web.StreamResponse:
        """A JSON body with the behaviour's status and headers, at once or trickled."""
        if behaviour.trickle is None:
            return web.Response(
                body=payload,
                status=behaviour.status,
                headers=behaviour.headers,
                content_type="application/json",
            )
        response = web.StreamResponse(
            status=behaviour.status,
            headers={**behaviour.headers, "Content-Type": "application/json"},
        )
        await response.prepare(request)
        for byte in payload:
            await response.write(bytes([byte]))
            await asyncio.sleep(behaviour.trickle)
        await response.write_eof()
        return response

    async def _stream(
        self, request: web.Request, behaviour: Behaviour, entry: dict[str, Any]
    ) -> web.StreamResponse:
        entry["outcome"] = "running"
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        model = behaviour.model
        usage = {
            "prompt_tokens": behaviour.usage[0],
            "completion_tokens": behaviour.usage[1],
            "total_tokens": sum(behaviour.usage),
        }
        out = _StreamWriter(request, response, behaviour)
        try:
            await response.prepare(request)
            await self._send_event(out, chunk({"role": "assistant", "content": ""}, model=model))
            for index, piece in enumerate(behaviour.stream_chunks or [behaviour.content or ""]):
                if index == behaviour.cut_after:
                    entry["outcome"] = "cut"
                    if behaviour.cut_cleanly:
                        await response.write_eof()
                    else:
                        out.drop()
                    return response
                if behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await self._send_event(out, chunk({"content": piece}, model=model))
                entry["sent"] += 1
                if entry["first_content"] is None:
                    entry["first_content"] = time.monotonic()
            await self._send_event(out, chunk({}, model=model, finish="stop"))
            await self._send_event(out, chunk({}, model=model, usage=usage))
            await out.write(b"data: [DONE]\n\n")
            await response.write_eof()
            entry["outcome"] = "complete"
        except _Cut:
            entry["outcome"] = "cut"
        except ConnectionResetError:
            entry["outcome"] = "client_gone"
        finally:
            entry["finished"] = time.monotonic()
        return response

    async def _send_event(self, out: _StreamWriter, event: dict[str, Any]) -> None:
        self.violations.extend(
            f"chunk {v}" for v in contract.problems("CreateChatCompletionStreamResponse", event)
        )
        self.violations.extend(sdk_contract.answer_problems("openai", "chunk", event))
        await out.write(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._handle)

    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            self.add_routes(app)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
