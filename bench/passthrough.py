"""Minimal pass-through gateway: the baseline promptapi is compared against.

It does the least a prompt gateway must do -- parse the JSON body, render a
jinja2 template compiled once, call the chat completions upstream and wrap the
answer -- using the HTTP client chosen by ``BENCH_CLIENT``:

* ``httpx``          -- ``httpx.AsyncClient`` with its default (httpcore) transport
* ``httpx-aiohttp``  -- ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``
* ``aiohttp``        -- ``aiohttp.ClientSession`` with ``TCPConnector(limit=0)``

The aiohttp pools are unbounded. httpx keeps its own default pool limits (100
connections, 20 kept alive) unless ``BENCH_HTTPX_POOL=unbounded``: httpcore's
pool gets slower as more connections stay open, so on this workload the
unbounded pool is several times *slower* at 64 connections and completes next
to nothing at 256 (see encode/httpx#3215). ``UPSTREAM_URL`` is the full chat
completions URL. With ``?stream=true`` (aiohttp only) it relays a streamed answer as
server-sent events, the baseline of ``bench/stream.py``.
Run it with uvicorn, e.g.::

    BENCH_CLIENT=aiohttp UPSTREAM_URL=http://127.0.0.1:8081/v1/chat/completions \\
        .venv/bin/python -m uvicorn passthrough:app --app-dir bench \\
        --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import httpx
import jinja2
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CLIENTS = ("httpx", "httpx-aiohttp", "aiohttp")
MODEL = "gpt-4o-mini"
UPSTREAM_API_KEY = "bench-key"
TIMEOUT_S = 30.0

TEMPLATE = jinja2.Environment(autoescape=False).from_string("Classify the sentiment of: {{ text }}")
HTTPX_POOLS = {
    "default": httpx.Limits(max_connections=100, max_keepalive_connections=20),
    "unbounded": httpx.Limits(max_connections=None, max_keepalive_connections=None),
}
UPSTREAM_HEADERS = {
    "Authorization": f"Bearer {UPSTREAM_API_KEY}",
    "Content-Type": "application/json",
}


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer 200."""


class Upstream(Protocol):
    async def complete(self, payload: bytes) -> bytes:
        """POST ``payload`` and return the raw body of a 200 response."""
        ...

    async def aclose(self) -> None: ...


class HttpxUpstream:
    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self._url = url
        self._client = client

    async def complete(self, payload: bytes) -> bytes:
        try:
            response = await self._client.post(self._url, content=payload, headers=UPSTREAM_HEADERS)
        except httpx.HTTPError as exc:
            raise UpstreamError(repr(exc)) from exc
        if response.status_code != 200:
            raise UpstreamError(f"upstream answered {response.status_code}")
        return response.content

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpUpstream:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def complete(self, payload: bytes) -> bytes:
        try:
            async with self.session.post(
                self.url, data=payload, headers=UPSTREAM_HEADERS
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(repr(exc)) from exc
        if response.status != 200:
            raise UpstreamError(f"upstream answered {response.status}")
        return body

    async def aclose(self) -> None:
        await self.session.close()


def _aiohttp_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
    )


def make_upstream(client: str, url: str) -> Upstream:
    """Build the upstream caller; must run inside the event loop (lifespan)."""
    if client == "httpx":
        pool = os.environ.get("BENCH_HTTPX_POOL", "default")
        if pool not in HTTPX_POOLS:
            raise ValueError(f"BENCH_HTTPX_POOL must be one of {', '.join(HTTPX_POOLS)}")
        limits = HTTPX_POOLS[pool]
        return HttpxUpstream(
            url, httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S, trust_env=False)
        )
    if client == "httpx-aiohttp":
        # AiohttpTransport ignores httpx.Limits(max_connections=None) and falls back
        # to aiohttp's default limit of 100, so hand it an unbounded session.
        transport = AiohttpTransport(client=_aiohttp_session())
        return HttpxUpstream(
            url, httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S, trust_env=False)
        )
    if client == "aiohttp":
        return AiohttpUpstream(url, _aiohttp_session())
    raise ValueError(f"BENCH_CLIENT must be one of {', '.join(CLIENTS)}, not {client!r}")


def _settings() -> tuple[str, str]:
    client = os.environ.get("BENCH_CLIENT", "")
    if client not in CLIENTS:
        raise RuntimeError(f"BENCH_CLIENT must be one of {', '.join(CLIENTS)}, got {client!r}")
    url = os.environ.get("UPSTREAM_URL", "")
    if not url:
        raise RuntimeError("UPSTREAM_URL is not set")
    return client, url


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    client, url = _settings()
    upstream = make_upstream(client, url)
    app.state.upstream = upstream
    try:
        yield
    finally:
        await upstream.aclose()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def stream_prompt(text: str, upstream: Upstream) -> Response:
    """``?stream=true`` (aiohttp only): relay the upstream's chunks as server-sent events, one
    ``event: delta`` per piece of text and an ``event: done`` with the whole output."""
    if not isinstance(upstream, AiohttpUpstream):
        return _error(400, "streaming needs BENCH_CLIENT=aiohttp")
    payload = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": TEMPLATE.render(text=text)}],
            "stream": True,
        }
    ).encode()

    async def events() -> AsyncIterator[bytes]:
        parts: list[str] = []
        async with upstream.session.post(
            upstream.url, data=payload, headers=UPSTREAM_HEADERS
        ) as response:
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                for choice in json.loads(line[6:]).get("choices", []):
                    piece = choice["delta"].get("content")
                    if piece:
                        parts.append(piece)
                        yield (
                            b"event: delta\ndata: " + json.dumps({"text": piece}).encode() + b"\n\n"
                        )
        yield b"event: done\ndata: " + json.dumps({"output": "".join(parts)}).encode() + b"\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def run_prompt(request: Request) -> Response:
    try:
        data: Any = json.loads(await request.body())
    except ValueError:
        return _error(400, "body is not JSON")
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str):
        return _error(422, "field 'text' (string) is required")

    upstream: Upstream = request.app.state.upstream
    if request.query_params.get("stream") == "true":
        return await stream_prompt(text, upstream)
    payload = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": TEMPLATE.render(text=text)}]}
    ).encode()
    try:
        raw = await upstream.complete(payload)
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except UpstreamError as exc:
        return _error(502, str(exc))
    except (ValueError, LookupError, TypeError):
        return _error(502, "malformed upstream response")
    return JSONResponse({"output": content})


app = Starlette(
    routes=[Route("/v1/prompts/bench", run_prompt, methods=["POST"])], lifespan=lifespan
)
