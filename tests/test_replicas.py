"""Several replicas on one database: started together on a new database (migrations take
turns), and a key or prompt created through one replica working on every other one at once."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from promptapi import gateway as gateway_module
from promptapi.config import Settings
from promptapi.store import Store
from tests.conftest import ADMIN_TOKEN, ECHO, Server, _pg_execute, _pg_url
from tests.helpers import query
from tests.test_database import clean_env
from tests.test_files import EXAMPLES_DIR

REPLICAS = 4
STOPS = 10
CANCELS = 40
ROUNDS = 20
FLOOD_RATE = 20  # bad-key requests a second


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"promptapi_new_{secrets.token_hex(6)}"
    _pg_execute(admin_url, f"CREATE DATABASE {name}")
    yield _pg_url(admin_url, name)
    _pg_execute(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_replicas_started_together_on_a_new_database_all_come_up(new_database, tmp_path):
    ports = [free_port() for _ in range(REPLICAS)]
    env = clean_env(
        new_database,
        PROMPTAPI_ADMIN_TOKEN=ADMIN_TOKEN,
        PROMPTAPI_PROMPTS_DIR=str(EXAMPLES_DIR),  # the start-up sync races too
    )
    replicas = [
        subprocess.Popen(
            [sys.executable, "-m", "promptapi", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    try:
        up: set[int] = set()
        deadline = time.monotonic() + 90
        while len(up) < REPLICAS and time.monotonic() < deadline:
            for port, replica in zip(ports, replicas, strict=True):
                if port in up:
                    continue
                if replica.poll() is not None:
                    output = replica.communicate()[1]
                    pytest.fail(f"a replica exited with {replica.returncode}:\n{output}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        up.add(port)
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        assert len(up) == REPLICAS, f"{REPLICAS - len(up)} replicas did not come up within 90 s"
        for port in ports:
            listed = httpx.get(
                f"http://127.0.0.1:{port}/admin/v1/prompts",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=10,
            )
            assert listed.status_code == 200
            assert len(listed.json()["prompts"]) == len(list(EXAMPLES_DIR.glob("*/*.yaml")))
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.terminate()
        errors = [replica.communicate(timeout=30)[1] for replica in replicas]
    assert not any("Traceback" in e for e in errors), "\n".join(errors)
    assert len(query(new_database, "SELECT version_num FROM alembic_version")) == 1
    stored = query(new_database, "SELECT count(*) FROM prompt_versions")[0][0]
    assert stored == len(list(EXAMPLES_DIR.glob("*/*.yaml")))


def test_a_stopped_server_leaves_no_sqlite_lock_behind(tmp_path):
    """A server stopping while its refresh loop is mid-transaction used to leave that connection
    open with its write lock, and the next process (a CLI command) failed with "database is
    locked". Refreshing every millisecond puts the loop mid-transaction at almost every stop."""
    url = f"sqlite:///{tmp_path / 'promptapi.db'}"
    (tmp_path / "prompts").mkdir()
    settings = Settings(
        database_url=url,
        prompts_dir=tmp_path / "prompts",
        admin_token=ADMIN_TOKEN,
        refresh_interval=0.001,
    )
    for _ in range(STOPS):
        server = Server(settings).start()
        time.sleep(0.05)
        server.stop()
        with contextlib.closing(
            sqlite3.connect(tmp_path / "promptapi.db", timeout=2, isolation_level=None)
        ) as conn:
            conn.execute("BEGIN IMMEDIATE")  # "database is locked" after 2 s if a lock leaked
            conn.execute("COMMIT")


def test_keys_and_prompts_made_on_one_replica_work_on_another_at_once(make_server, fake):
    """Create on A, call B at once: never a 404 or 401, not even right after B checked for
    changes, nor while bad keys flood B (each of which also makes B check)."""
    a = make_server(refresh_interval=0.2)
    b = make_server(refresh_interval=0.2)
    stop = threading.Event()
    flooded: list[int] = []

    def flood() -> None:
        with httpx.Client(base_url=b.url, timeout=10) as bad:
            for i in range(FLOOD_RATE * 60):  # bounded: at most a minute
                if stop.is_set():
                    return
                headers = {"Authorization": f"Bearer pk_bad_{i}"}
                flooded.append(bad.post("/v1/prompts/echo", json={}, headers=headers).status_code)
                time.sleep(1 / FLOOD_RATE)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        with httpx.Client(base_url=b.url, timeout=10) as on_b:
            for round_ in range(ROUNDS):
                # B has just checked for changes (a miss makes it check) when A writes.
                on_b.post("/v1/prompts/echo", headers={"Authorization": "Bearer pk_just_now"})
                key = a.admin.post("/admin/v1/keys", json={"name": f"k{round_}"})
                name = f"made-on-a-{round_}"
                made = a.admin.post("/admin/v1/prompts", json={**ECHO, "name": name})
                assert (key.status_code, made.status_code) == (201, 201)
                answer = on_b.post(
                    f"/v1/prompts/{name}",
                    json={"text": "now"},
                    headers={"Authorization": f"Bearer {key.json()['key']}"},
                )
                assert answer.status_code == 200, (round_, answer.text)
                assert answer.json()["prompt"]["name"] == name
    finally:
        stop.set()
        flooder.join(10)
    assert flooded and set(flooded) == {401}


def test_database_work_cancelled_midway_leaves_no_sqlite_lock_behind(tmp_path):
    """A caller cancelled in the middle of a transaction (a client that went away, a task
    stopped at shutdown) used to tear the SQLite connection down under its driver thread,
    leaving it open with its write lock: every later writer then failed with "database is
    locked". The work now runs to its end whoever stops waiting for it."""
    path = tmp_path / "promptapi.db"

    async def cancel_midway(delay: float) -> None:
        store = Store(f"sqlite:///{path}")
        if delay == 0:
            await store.upgrade()

        async def busy() -> None:
            for _ in range(10_000):
                await store.revision()
                await store.lifecycles()
                await store.active_keys()

        task = asyncio.create_task(busy())
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.aclose()

    asyncio.run(cancel_midway(0))
    for i in range(CANCELS):
        asyncio.run(cancel_midway(0.005 + 0.002 * i))
        with contextlib.closing(sqlite3.connect(path, timeout=1, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")  # "database is locked" if a lock leaked
            conn.execute("COMMIT")


def test_a_miss_while_the_database_hangs_is_answered_from_memory_in_bounded_time(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(gateway_module, "MISS_REFRESH_WAIT", 0.5)
    path = tmp_path / "promptapi.db"
    (tmp_path / "prompts").mkdir()
    settings = Settings(
        database_url=f"sqlite:///{path}",
        prompts_dir=tmp_path / "prompts",
        admin_token=ADMIN_TOKEN,
        refresh_interval=3600,
    )
    server = Server(settings).start()
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")  # every refresh now waits for this lock
            started = time.monotonic()
            answer = server.client.post("/v1/prompts/echo", headers={"Authorization": "Bearer x"})
            assert answer.status_code == 401
            assert time.monotonic() - started < 3  # not the 30 s the refresh waits for the lock
            holder.execute("COMMIT")
    finally:
        server.stop()
