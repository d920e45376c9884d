"""A caller who hangs up on a plain (non-streamed) call cancels the upstream request, and the
call is recorded as 499; streamed calls: test_stream.py."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ECHO
from tests.helpers import eventually, sqlite_only
from tests.test_invoke import wait_for_calls


class SilentUpstream:
    """An upstream on loopback that reads each request and never answers; it notes when each
    request arrived and when the client closed its connection."""

    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.closed: list[float] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        self.arrived.append(time.monotonic())
        try:
            await asyncio.wait_for(reader.read(1), timeout=30)  # b"" when the client hangs up
        finally:
            self.closed.append(time.monotonic())
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def start(self) -> SilentUpstream:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def silent() -> Iterator[SilentUpstream]:
    upstream = SilentUpstream().start()
    yield upstream
    upstream.stop()


def send_call(port: int, path: str, key: str, body: dict[str, Any]) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


@pytest.mark.parametrize(
    "path", ["/v1/prompts/echo", "/v1/prompts/echo/versions/1", "/v1/prompts/echo?label=live"]
)
def test_hanging_up_cancels_the_upstream_request_and_records_499(make_server, silent, path):
    server = make_server(openai_base_url=silent.base_url)
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    assert server.admin.put("/admin/v1/prompts/echo/labels/live", json={"version": 1}).is_success
    with server.consumer() as consumer:
        key = consumer.headers["authorization"].removeprefix("Bearer ")
    sock = send_call(server.port, path, key, {"text": "hi"})
    eventually(lambda: len(silent.arrived) == 1, what="the upstream request arriving")
    sock.close()
    hung_up = time.monotonic()
    eventually(lambda: len(silent.closed) == 1, timeout=2, what="the upstream request closing")
    assert silent.closed[0] - hung_up < 1
    calls = wait_for_calls(server.admin, lambda found: len(found) >= 1, prompt="echo")
    assert [(c["status"], c["error_code"]) for c in calls] == [(499, "client_closed")]


@sqlite_only
def test_a_caller_who_stays_gets_the_answer(server, client, fake):
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    for _ in range(3):  # and the connection stays usable
        response = client.post("/v1/prompts/echo", json={"text": "hi"})
        assert response.status_code == 200, response.text
    calls = wait_for_calls(server.admin, lambda found: len(found) >= 3, prompt="echo")
    assert [c["status"] for c in calls] == [200, 200, 200]
