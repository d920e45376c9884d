"""Fixtures: a fake OpenAI upstream on loopback, databases (SQLite and PostgreSQL), and a real
promptapi server on a loopback socket, driven through HTTP."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from promptapi.app import create_app
from promptapi.config import Settings
from promptapi.web.timeouts import PROTOCOL
from tests.fake_providers import FakeAnthropic, FakeGemini
from tests.fakes import FakeOpenAI

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
UPSTREAM_KEY = "sk-test-upstream-secret-key"
PG_URL = os.environ.get(
    "PROMPTAPI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_SERVICES = os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get(
    "PROMPTAPI_REQUIRE_SERVICES", ""
).lower() in ("1", "true")


def _pg_problem() -> str | None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = _pg_problem()
    if problem is not None:
        message = (
            f"PostgreSQL is not reachable at {PG_URL} ({problem}); start it or point "
            "PROMPTAPI_TEST_POSTGRES_URL at one"
        )
        if REQUIRE_SERVICES:
            pytest.fail(message + " (CI / PROMPTAPI_REQUIRE_SERVICES forbid skipping)")
        pytest.skip(message)
    return PG_URL


def _pg_execute(admin_url: str, *statements: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _pg_url(admin_url: str, database: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def postgres_template(postgres_admin_url: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from."""
    from promptapi.store import Store

    name = f"promptapi_tpl_{os.getpid()}"
    _pg_execute(postgres_admin_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")

    async def migrate() -> None:
        store = Store(_pg_url(postgres_admin_url, name))
        await store.upgrade()
        await store.aclose()

    asyncio.run(migrate())
    yield name
    _pg_execute(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, postgres_admin_url: str) -> Iterator[str]:
    template = request.getfixturevalue("postgres_template")
    name = f"promptapi_t_{secrets.token_hex(6)}"
    _pg_execute(postgres_admin_url, f"CREATE DATABASE {name} TEMPLATE {template}")
    yield _pg_url(postgres_admin_url, name)
    _pg_execute(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'promptapi.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(upstream: FakeOpenAI) -> Iterator[FakeOpenAI]:
    upstream.reset()
    yield upstream
    assert not upstream.violations, f"OpenAI contract violations: {upstream.violations}"


@pytest.fixture(scope="session")
def anthropic_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def anthropic(anthropic_upstream: FakeAnthropic) -> Iterator[FakeAnthropic]:
    anthropic_upstream.reset()
    yield anthropic_upstream
    assert not anthropic_upstream.violations, (
        f"Anthropic contract violations: {anthropic_upstream.violations}"
    )


@pytest.fixture(scope="session")
def gemini_upstream() -> Iterator[FakeGemini]:
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture
def gemini(gemini_upstream: FakeGemini) -> Iterator[FakeGemini]:
    gemini_upstream.reset()
    yield gemini_upstream
    assert not gemini_upstream.violations, (
        f"Gemini contract violations: {gemini_upstream.violations}"
    )


@pytest.fixture(scope="session")
def upstream_b() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_b(upstream_b: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """A second fake upstream on another port: another deployment or another alias."""
    upstream_b.reset()
    yield upstream_b
    assert not upstream_b.violations, f"OpenAI contract violations: {upstream_b.violations}"


class Server:
    """A promptapi server on a loopback port, run by uvicorn in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            http=PROTOCOL,  # as `promptapi serve` runs it
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._sock = sock
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.admin = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    def start(self) -> Server:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("promptapi failed to start (see the log above)")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(30)
        self.client.close()
        self.admin.close()
        self._sock.close()

    def consumer(self, name: str = "test") -> httpx.Client:
        """A client holding a fresh consumer API key."""
        response = self.admin.post("/admin/v1/keys", json={"name": name})
        assert response.status_code == 201, response.text
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"Bearer {response.json()['key']}"},
        )


@pytest.fixture
def make_server(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(**overrides: Any) -> Server:
        prompts_dir = tmp_path / "prompts"
        prompts_dir.mkdir(exist_ok=True)
        values: dict[str, Any] = {
            "database_url": database_url,
            "prompts_dir": prompts_dir,
            "admin_token": ADMIN_TOKEN,
            "openai_base_url": upstream.base_url,
            "openai_api_key": UPSTREAM_KEY,
            "refresh_interval": 0.2,
            "record_flush_interval": 0.05,
            # Tests send many wrong credentials on purpose; the throttle has its own tests.
            "auth_failure_limit": 100_000,
        }
        values.update(overrides)
        server = Server(Settings(**values)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server], fake: FakeOpenAI) -> Server:
    return make_server()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    consumer = server.consumer()
    yield consumer
    consumer.close()


SENTIMENT: dict[str, Any] = {
    "name": "sentiment",
    "description": "Sentiment of a text.",
    "model": "default",
    "params": {"temperature": 0, "max_tokens": 50},
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 1000}},
        "required": ["text"],
        "additionalProperties": False,
    },
    "output_schema": {
        "type": "object",
        "properties": {
            "label": {"enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["label", "score"],
        "additionalProperties": False,
    },
    "messages": [
        {"role": "system", "content": "Classify the sentiment. Answer as JSON."},
        {"role": "user", "content": "{{ text }}"},
    ],
}

ECHO: dict[str, Any] = {
    "name": "echo",
    "description": "Says the text back.",
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    },
    "messages": [{"role": "user", "content": "Repeat: {{ text }}"}],
}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell a failed test (the
    browser tests save a screenshot then)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
