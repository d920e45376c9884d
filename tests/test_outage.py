"""PostgreSQL going away: every admin route that needs the database answers 503
`database_unavailable` with Retry-After, consumer calls keep working from memory, and the admin
API recovers by itself when the database is back.

The server reaches PostgreSQL through a TCP proxy on loopback that the test cuts (every open
connection closed, new ones refused) and restores on the same port."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import ECHO
from tests.helpers import assert_problem, eventually

postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


class TCPProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coroutine) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    def start(self) -> TCPProxy:
        self._run(self._listen())
        return self

    def cut(self) -> None:
        self._run(self._cut())

    def restore(self) -> None:
        self._run(self._listen())

    def stop(self) -> None:
        self._run(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def proxied(database_url: str):
    parts = urlsplit(database_url)
    proxy = TCPProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    netloc = (
        f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    )
    yield proxy, urlunsplit(parts._replace(netloc=netloc))
    proxy.stop()


NEEDS_THE_DATABASE = [
    ("GET", "/admin/v1/keys", None),
    ("POST", "/admin/v1/keys", {"name": "during-outage"}),
    ("GET", "/admin/v1/calls", None),
    ("GET", "/admin/v1/audit", None),
    ("POST", "/admin/v1/prompts", {**ECHO, "description": "version 2"}),
    ("POST", "/admin/v1/prompts/echo/versions/1/deprecate", None),
    ("PUT", "/admin/v1/prompts/echo/labels/live", {"version": 1}),
]


@postgres_only
def test_admin_routes_answer_503_while_postgres_is_down_and_recover(make_server, fake, proxied):
    proxy, url = proxied
    server = make_server(database_url=url, db_retry_after=7)
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    consumer = server.consumer()
    assert consumer.post("/v1/prompts/echo", json={"text": "before"}).status_code == 200

    proxy.cut()
    for method, path, body in NEEDS_THE_DATABASE:
        response = server.admin.request(method, path, json=body)
        problem = assert_problem(response, 503, "database_unavailable")
        assert response.headers["retry-after"] == "7", (method, path)
        assert str(proxy.port) not in response.text and "postgres" not in problem["detail"]
    # Consumers are served from memory all along.
    for index in range(3):
        response = consumer.post("/v1/prompts/echo", json={"text": f"during {index}"})
        assert response.status_code == 200, response.text
    assert consumer.get("/v1/prompts").status_code == 200

    proxy.restore()
    eventually(
        lambda: server.admin.get("/admin/v1/keys").status_code == 200,
        timeout=10,
        what="the admin API answering again",
    )
    for method, path, body in NEEDS_THE_DATABASE:
        response = server.admin.request(method, path, json=body)
        assert response.status_code in (200, 201), (method, path, response.text)
    # The calls served during the outage were kept and written once it was over.
    eventually(
        lambda: len(server.admin.get("/admin/v1/calls").json()["calls"]) == 4,
        timeout=10,
        what="the calls served during the outage being recorded",
    )
    consumer.close()
