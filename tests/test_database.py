"""The database: migrations through `promptapi db`, the schema guard at start, persistence across
restarts, and the `keys` / `admin-token` commands against a running server on the same database."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from promptapi.config import Settings
from tests.conftest import ADMIN_TOKEN, ECHO, Server
from tests.helpers import eventually, query

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "prompts",
    "prompt_versions",
    "api_keys",
    "call_records",
    "meta",
    "revision",
    "prompt_labels",
    "audit_log",
}
REVISION_LINE = re.compile(r"current: (\S+)\s+head: (\S+)")
ADMIN_TOKEN_RE = re.compile(r"pa_[A-Za-z0-9_-]{20,}")


def clean_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTAPI_", "OPENAI_"))}
    env["PROMPTAPI_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_cli(
    *args: str, database_url: str, cwd: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptapi", *args],
        env=clean_env(database_url, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def revision_of(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert result.returncode == 0, result.stdout + result.stderr
    found = REVISION_LINE.search(result.stdout)
    assert found, result.stdout
    return found.group(1), found.group(2)


def tables(database_url: str) -> set[str]:
    if database_url.startswith("sqlite:///"):
        rows = query(database_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = query(
            database_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        )
    return {row[0] for row in rows}


def assert_no_drift(database_url: str) -> None:
    """`alembic check` finds nothing to migrate between the models and the database."""
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        env=clean_env(database_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def bearer(server: Server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def new_key(server: Server, name: str = "k") -> dict[str, Any]:
    response = server.admin.post("/admin/v1/keys", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def call_echo(server: Server, key: str, text: str = "hi") -> int:
    with bearer(server, key) as client:
        return client.post("/v1/prompts/echo", json={"text": text}).status_code


# -- migrations ---------------------------------------------------------------------------


def test_db_upgrade_current_downgrade_and_upgrade_again(make_server, database_url, tmp_path):
    upgraded = run_cli("db", "upgrade", database_url=database_url, cwd=tmp_path)
    current, head = revision_of(upgraded)
    assert current == head != "none"
    assert tables(database_url) >= TABLES | {"alembic_version"}
    assert revision_of(run_cli("db", "current", database_url=database_url, cwd=tmp_path)) == (
        head,
        head,
    )

    assert_no_drift(database_url)

    down = run_cli("db", "downgrade", "base", database_url=database_url, cwd=tmp_path)
    assert revision_of(down) == ("none", head)
    assert not (tables(database_url) & TABLES), tables(database_url)
    assert revision_of(run_cli("db", "current", database_url=database_url, cwd=tmp_path)) == (
        "none",
        head,
    )

    again = run_cli("db", "upgrade", "head", database_url=database_url, cwd=tmp_path)
    assert revision_of(again) == (head, head)
    assert tables(database_url) >= TABLES
    assert_no_drift(database_url)

    # The re-created schema is complete: a server that may not migrate starts and works on it.
    server = make_server(auto_migrate=False)
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    assert call_echo(server, new_key(server)["key"]) == 200


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_server_without_auto_migrate_refuses_an_empty_database(tmp_path, caplog):
    db = tmp_path / "empty.db"
    db.touch()
    settings = Settings(
        database_url=f"sqlite:///{db}",
        prompts_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        auto_migrate=False,
        refresh_interval=0.2,
    )
    server = Server(settings)
    try:
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    assert "promptapi db upgrade" in caplog.text
    # It did not migrate behind the operator's back.
    assert not (tables(f"sqlite:///{db}") & TABLES)


def test_serve_command_without_auto_migrate_exits_with_upgrade_hint(tmp_path):
    db = tmp_path / "empty.db"
    db.touch()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli(
        "serve",
        "--port",
        str(port),
        database_url=f"sqlite:///{db}",
        cwd=tmp_path,
        PROMPTAPI_AUTO_MIGRATE="false",
        PROMPTAPI_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    assert result.returncode != 0
    assert "promptapi db upgrade" in result.stderr
    assert not (tables(f"sqlite:///{db}") & TABLES)


# -- persistence --------------------------------------------------------------------------


def test_prompts_and_keys_survive_a_restart(make_server, database_url, fake):
    first = make_server()
    assert first.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    kept = new_key(first, "kept")
    revoked = new_key(first, "revoked")
    assert call_echo(first, kept["key"]) == 200
    assert call_echo(first, revoked["key"]) == 200
    assert first.admin.delete(f"/admin/v1/keys/{revoked['id']}").status_code == 200
    assert call_echo(first, revoked["key"]) == 401
    first.stop()

    second = make_server()
    detail = second.admin.get("/admin/v1/prompts/echo")
    assert detail.status_code == 200, detail.text
    assert [v["version"] for v in detail.json()["versions"]] == [1]
    assert call_echo(second, kept["key"], "after restart") == 200
    assert call_echo(second, revoked["key"]) == 401
    assert fake.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "Repeat: after restart"}
    ]
    keys = {k["id"]: k for k in second.admin.get("/admin/v1/keys").json()["keys"]}
    assert keys[kept["id"]]["revoked_at"] is None
    assert keys[revoked["id"]]["revoked_at"] is not None
    # The first server's call records were flushed at shutdown and are still in the database.
    second.stop()
    rows = query(
        database_url,
        "SELECT key_id, status FROM call_records WHERE prompt_name = 'echo' ORDER BY created_at",
    )
    assert sorted(rows) == sorted(
        [
            (kept["id"], 200),
            (revoked["id"], 200),
            (kept["id"], 200),
        ]
    )


def test_call_log_lists_calls_recorded_before_a_restart(make_server, fake):
    first = make_server()
    assert first.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    key = new_key(first)
    for i in range(3):
        assert call_echo(first, key["key"], f"call {i}") == 200
    first.stop()

    second = make_server()
    listed = second.admin.get("/admin/v1/calls", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    calls = listed.json()["calls"]
    assert len(calls) == 3
    assert {(c["prompt_name"], c["prompt_version"], c["key_id"], c["status"]) for c in calls} == {
        ("echo", 1, key["id"], 200)
    }
    filtered = second.admin.get("/admin/v1/calls", params={"key_id": key["id"], "status": 200})
    assert filtered.status_code == 200, filtered.text
    assert len(filtered.json()["calls"]) == 3


# -- the keys command ---------------------------------------------------------------------


def test_cli_keys_create_and_revoke_reach_a_running_server(
    make_server, database_url, tmp_path, fake
):
    server = make_server(refresh_interval=0.2)
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201

    created = run_cli("keys", "create", "from-cli", database_url=database_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = orjson.loads(created.stdout)
    assert key["name"] == "from-cli"
    assert key["key"].startswith("pk_")
    assert key["revoked_at"] is None
    eventually(lambda: call_echo(server, key["key"]) == 200, what="the CLI-created key working")

    listed = run_cli("keys", "list", database_url=database_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert key["id"] in [k["id"] for k in orjson.loads(listed.stdout)]
    assert key["key"] not in listed.stdout

    revoked = run_cli("keys", "revoke", key["id"], database_url=database_url, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert orjson.loads(revoked.stdout)["revoked_at"] is not None
    eventually(lambda: call_echo(server, key["key"]) == 401, what="the revoked key failing")
    time.sleep(0.5)
    assert call_echo(server, key["key"]) == 401


# -- admin token bootstrap ----------------------------------------------------------------


def admin_status(server: Server, token: str) -> int:
    with bearer(server, token) as client:
        return client.get("/admin/v1/prompts").status_code


def test_generated_admin_token_is_printed_once_and_can_be_reset(
    make_server, database_url, tmp_path, capfd, caplog
):
    capfd.readouterr()
    first = make_server(admin_token=None)
    printed = ADMIN_TOKEN_RE.findall(capfd.readouterr().err)
    assert len(printed) == 1, printed
    token = printed[0]
    assert admin_status(first, token) == 200
    assert admin_status(first, ADMIN_TOKEN) == 401
    first.stop()

    second = make_server(admin_token=None)
    assert ADMIN_TOKEN_RE.findall(capfd.readouterr().err) == []
    assert admin_status(second, token) == 200

    reset = run_cli("admin-token", "reset", database_url=database_url, cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    new_token = reset.stdout.strip()
    assert ADMIN_TOKEN_RE.fullmatch(new_token), reset.stdout
    assert new_token != token
    eventually(lambda: admin_status(second, new_token) == 200, what="the new admin token working")
    eventually(lambda: admin_status(second, token) == 401, what="the old admin token failing")
    assert token not in caplog.text and new_token not in caplog.text


def test_admin_token_reset_refuses_when_the_token_comes_from_the_environment(tmp_path):
    result = run_cli(
        "admin-token",
        "reset",
        database_url=f"sqlite:///{tmp_path / 'promptapi.db'}",
        cwd=tmp_path,
        PROMPTAPI_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert "PROMPTAPI_ADMIN_TOKEN" in result.stderr
