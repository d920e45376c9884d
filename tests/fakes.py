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

from tests import contract


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


async def write_split(
    response: web.StreamResponse, wire: bytes, trickle: float | None = None
) -> web.StreamResponse:
    """Write in small pieces so multi-byte characters and lines are split across reads (or
    one byte every `trickle` seconds)."""
    step = 7 if trickle is None else 1
    for start in range(0, len(wire), step):
        await response.write(wire[start : start + step])
        await asyncio.sleep(trickle or 0)
    await response.write_eof()
    return response


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
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
        behaviour = self.script.popleft() if self.script else self.default
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if body.get("stream") and behaviour.status == 200 and behaviour.body is None:
            return await self._stream(request, behaviour)
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

    async def _stream(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = [chunk({"role": "assistant", "content": ""}, model=behaviour.model)]
        for piece in behaviour.stream_chunks or [behaviour.content or ""]:
            events.append(chunk({"content": piece}, model=behaviour.model))
        events.append(chunk({}, model=behaviour.model, finish="stop"))
        usage = {
            "prompt_tokens": behaviour.usage[0],
            "completion_tokens": behaviour.usage[1],
            "total_tokens": sum(behaviour.usage),
        }
        events.append(chunk({}, model=behaviour.model, usage=usage))
        wire = b""
        for event in events:
            self.violations.extend(
                f"chunk {v}" for v in contract.problems("CreateChatCompletionStreamResponse", event)
            )
            wire += b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"
        wire += b"data: [DONE]\n\n"
        if behaviour.cut_stream_after is not None:
            await response.write(wire[: behaviour.cut_stream_after])
            assert request.transport is not None
            request.transport.close()
            return response
        return await write_split(response, wire, behaviour.trickle)

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
