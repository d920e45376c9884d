"""Assertions and queries shared by the test modules."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, Server

PROBLEM_JSON = "application/problem+json"
SECRETS = (UPSTREAM_KEY, "sk-secret-in-upstream-message")
# The fields of every answer envelope (a plain call, and the `done` event of a stream).
ENVELOPE_FIELDS = frozenset(
    {
        "id",
        "prompt",
        "model",
        "output",
        "usage",
        "cached",
        "mock",
        "latency_ms",
        "deployment",
        "attempts",
    }
)


def settle(response: httpx.Response) -> None:
    """After a 500, let the server thread finish logging its traceback before the test fails:
    on CPython 3.11 two threads formatting tracebacks at once can crash pytest with
    "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905)."""
    if response.status_code == 500:
        time.sleep(0.3)


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """An RFC 9457 problem with this status (and code), its request id matching the header,
    and never a secret in it."""
    settle(response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["title"]
    if code is not None:
        assert body["code"] == code, body
        assert body["type"] == f"/problems/{code}"
    for secret in SECRETS:
        assert secret not in response.text
    return body


def error_paths(body: dict) -> set[str]:
    return {error["path"] for error in body["errors"]}


def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one read query straight against the database, bypassing promptapi."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]

    import asyncpg

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


def eventually(check: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not hold within {timeout} s")
        time.sleep(0.05)


ROOT = Path(__file__).resolve().parent.parent
# For tests whose subject does not depend on the database: run them on SQLite only.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def serve_examples(make_server: Callable[..., Server], tmp_path: Path) -> Server:
    """A server holding a copy of the example prompts in `prompts/`, with the mock provider as
    its `default` model (so every call answers schema-valid output)."""
    prompts = tmp_path / "example-prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    server = make_server(prompts_dir=prompts, openai_base_url=None, openai_api_key=None)
    assert server.client.get("/readyz").json()["prompts"] == 4
    return server
