"""A newcomer's mistakes, each explained in one line with the right exit status: settings,
database URLs, missing folders and files, the port, the models file, and the start-up log."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ECHO, UPSTREAM_KEY, Server
from tests.fakes import FakeOpenAI
from tests.helpers import assert_problem

KEY_LOOKING = "sk-proj-Abc123dEf456gHi789jKl012mNo345"


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m promptapi ARGS` with only the given PROMPTAPI_* / OPENAI_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTAPI_", "OPENAI_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "promptapi", *args],
        env=clean,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The error line: the last line on stderr (a command that opened the database says which
    one first), with no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    return lines[-1]


# -- settings --------------------------------------------------------------------------------

BAD_SETTINGS = [
    (
        "PROMPTAPI_REFRESH_INTERVAL",
        "0",
        "must be greater than 0 and at most 3600 seconds, got 0.0",
    ),
    (
        "PROMPTAPI_REFRESH_INTERVAL",
        "-1",
        "must be greater than 0 and at most 3600 seconds, got -1.0",
    ),
    ("PROMPTAPI_REFRESH_INTERVAL", "nan", "must be a finite number, got nan"),
    ("PROMPTAPI_WORKERS", "0", "must be at least 1 and at most 256, got 0"),
    ("PROMPTAPI_WORKERS", "two", "must be a whole number, got 'two'"),
    ("PROMPTAPI_LOG_LEVEL", "bogus", "must be one of debug, info, warning, error, not 'bogus'"),
    ("PROMPTAPI_PORT", "70000", "must be at least 1 and at most 65535, got 70000"),
    ("PROMPTAPI_PORT", "0", "must be at least 1 and at most 65535, got 0"),
    ("PROMPTAPI_HOST", " ", "must not be empty"),
    ("PROMPTAPI_MAX_BODY_BYTES", "0", "must be at least 1 and at most 1.07374e+09 bytes, got 0"),
    ("PROMPTAPI_RECORD_BATCH_SIZE", "0", "must be at least 1 and at most 100000, got 0"),
    (
        "PROMPTAPI_RECORD_FLUSH_INTERVAL",
        "0",
        "must be greater than 0 and at most 3600 seconds, got 0.0",
    ),
    (
        "PROMPTAPI_STREAM_HEARTBEAT",
        "-5",
        "must be at least 0 and at most 3600 seconds (0 turns heartbeats off), got -5.0",
    ),
    ("PROMPTAPI_DEFAULT_STATE", "retired", "must be one of draft, published, not 'retired'"),
    ("PROMPTAPI_CATALOG", "private", "must be one of public, off, not 'private'"),
    ("PROMPTAPI_ALLOW_ANONYMOUS", "maybe", "must be true or false, got 'maybe'"),
    ("PROMPTAPI_AUTO_MIGRATE", "2", "must be true or false, got '2'"),
    ("PROMPTAPI_SYNC_ON_START", "y", "must be true or false, got 'y'"),
    ("PROMPTAPI_ACCESS_LOG", "x", "must be true or false, got 'x'"),
    (
        "PROMPTAPI_ADMIN_TOKEN",
        "short",
        "must be at least 16 characters long (or unset, to have one generated)",
    ),
    ("PROMPTAPI_DEFAULT_MODEL", " ", "must not be empty"),
    (
        "PROMPTAPI_FORWARDED_ALLOW_IPS",
        ",",
        "must list proxy addresses separated by commas (or * for any), or be unset",
    ),
    (
        "OPENAI_BASE_URL",
        "localhost:11434/v1",
        "must start with http:// or https:// and name a host, like https://api.openai.com/v1 "
        "or http://localhost:11434/v1",
    ),
    (
        "PROMPTAPI_DATABASE_URL",
        "mysql://app:hunter2@db/app",
        "uses mysql://, which promptapi does not support; use SQLite "
        "(sqlite:///path/to/file.db) or PostgreSQL (postgresql://user:password@host/database)",
    ),
    (
        "PROMPTAPI_DATABASE_URL",
        "postgresql://app:hunter2@db:port/app",
        "cannot be parsed: its port is not a number (percent-encode any : / @ # ? in the "
        "password); set it like postgresql://user:password@host:5432/database",
    ),
    (
        "PROMPTAPI_DATABASE_URL",
        "promptapi.db",
        "is not a database URL; set it like sqlite:///path/to/file.db or "
        "postgresql://user:password@host:5432/database",
    ),
    (
        "PROMPTAPI_DATABASE_URL",
        "postgresql://app:hunter2@db:5432",
        "names no database; set it like postgresql://user:password@host:5432/database",
    ),
]


@pytest.mark.parametrize(("variable", "value", "problem"), BAD_SETTINGS)
def test_a_bad_setting_stops_every_command_with_one_line(
    tmp_path: Path, variable: str, value: str, problem: str
) -> None:
    result = run("keys", "list", cwd=tmp_path, **{variable: value})
    assert result.stderr == f"promptapi: {variable} {problem}\n"
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "promptapi.db").exists()


def test_serve_checks_its_options_like_the_settings(tmp_path: Path) -> None:
    result = run("serve", "--workers", "0", cwd=tmp_path)
    assert (
        one_line(result, 2)
        == "promptapi: PROMPTAPI_WORKERS must be at least 1 and at most 256, got 0"
    )
    assert not (tmp_path / "promptapi.db").exists()


# -- databases -------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_database_that_does_not_exist(tmp_path: Path, postgres_admin_url: str) -> None:
    url = postgres_admin_url.rsplit("/", 1)[0] + "/promptapi_no_such_db"
    result = run("db", "upgrade", cwd=tmp_path, PROMPTAPI_DATABASE_URL=url)
    assert one_line(result, 2) == (
        "promptapi: cannot open PostgreSQL 127.0.0.1:5432/promptapi_no_such_db: the database "
        "'promptapi_no_such_db' does not exist; create it (createdb promptapi_no_such_db) or fix "
        "PROMPTAPI_DATABASE_URL"
    )


@pytest.mark.postgres
def test_an_unknown_role(tmp_path: Path, postgres_admin_url: str) -> None:
    url = "postgresql://nobody_here:pw-not-shown@127.0.0.1:5432/promptapi"
    result = run("db", "upgrade", cwd=tmp_path, PROMPTAPI_DATABASE_URL=url)
    assert one_line(result, 2) == (
        "promptapi: cannot open PostgreSQL 127.0.0.1:5432/promptapi: the role 'nobody_here' does "
        "not exist; create it (CREATE ROLE nobody_here LOGIN) or name an existing user in "
        "PROMPTAPI_DATABASE_URL"
    )
    assert "pw-not-shown" not in result.stderr


def test_an_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://app:pw-not-shown@127.0.0.1:{port}/promptapi"
    result = run("db", "upgrade", cwd=tmp_path, PROMPTAPI_DATABASE_URL=url)
    assert one_line(result, 2) == (
        f"promptapi: cannot reach PostgreSQL 127.0.0.1:{port}/promptapi: is PostgreSQL running "
        "there? Start it or fix PROMPTAPI_DATABASE_URL"
    )
    assert "pw-not-shown" not in result.stderr


def test_a_sqlite_file_in_a_missing_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/promptapi.db"
    result = run("db", "upgrade", cwd=tmp_path, PROMPTAPI_DATABASE_URL=url)
    assert one_line(result, 2) == (
        f"promptapi: cannot open SQLite {tmp_path}/missing/promptapi.db: the folder "
        f"{tmp_path}/missing does not exist or is not writable; create it or fix "
        "PROMPTAPI_DATABASE_URL"
    )


@pytest.mark.postgres
def test_the_maintenance_database_gets_a_warning(tmp_path: Path, postgres_admin_url: str) -> None:
    url = postgres_admin_url.rsplit("/", 1)[0] + "/postgres"
    result = run("db", "current", cwd=tmp_path, PROMPTAPI_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "promptapi: database: PostgreSQL 127.0.0.1:5432/postgres",
        "promptapi: warning: PROMPTAPI_DATABASE_URL points at 'postgres', the PostgreSQL "
        "server's maintenance database; give promptapi a database of its own (createdb "
        "promptapi) and name it in the URL",
    ]


def test_commands_say_which_database_they_use(tmp_path: Path) -> None:
    result = run("keys", "create", "billing", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"promptapi: database: SQLite {tmp_path / 'promptapi.db'}"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("db", "current"),
        ("keys", "list"),
        ("diff", "greet", "1", "2"),
        ("export", "out"),
        ("openapi",),
        ("sync", "--dry-run"),
        ("test", "--db"),
    ],
)
def test_read_only_commands_do_not_create_a_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "prompts").mkdir()
    result = run(*args, cwd=tmp_path)
    assert one_line(result, 2) == (
        f"promptapi: no database at {tmp_path / 'promptapi.db'} "
        "(PROMPTAPI_DATABASE_URL=sqlite:///./promptapi.db); run this where the server runs, "
        "point PROMPTAPI_DATABASE_URL at its database, or create one with `promptapi db upgrade`"
    )
    assert not (tmp_path / "promptapi.db").exists()


def test_test_without_db_opens_no_database(tmp_path: Path) -> None:
    prompts = Path(__file__).resolve().parent.parent / "prompts"
    result = run("test", "--model", "mock", "--dir", str(prompts), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "promptapi.db").exists()
    assert "database" not in result.stderr


# -- files -----------------------------------------------------------------------------------

SEVERAL_PROBLEMS = """\
name: Bad Name
version: 1
messages: []
"""
UNREADABLE = "name: broken\nversion: 1\nmessages: [\n"


def test_sync_of_a_missing_folder(tmp_path: Path) -> None:
    result = run("sync", "--dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert one_line(result, 2) == (
        f"promptapi: the prompts folder {tmp_path / 'nowhere'} does not exist; create it or fix --dir"
    )
    assert not (tmp_path / "promptapi.db").exists()
    default = run("sync", cwd=tmp_path, PROMPTAPI_PROMPTS_DIR=str(tmp_path / "gone"))
    assert one_line(default, 2) == (
        f"promptapi: the prompts folder {tmp_path / 'gone'} does not exist; create it or fix "
        "PROMPTAPI_PROMPTS_DIR"
    )


def test_test_name_on_an_invalid_file_reports_its_problems(tmp_path: Path) -> None:
    for folder, text in (("badname", SEVERAL_PROBLEMS), ("broken", UNREADABLE)):
        (tmp_path / "prompts" / folder).mkdir(parents=True)
        (tmp_path / "prompts" / folder / "1.yaml").write_text(text)
    several = run("test", "badname", "--model", "mock", cwd=tmp_path)
    assert several.returncode == 1, several.stderr
    assert several.stderr.splitlines() == [
        "prompts/badname/1.yaml: /input_schema: 'input_schema' is required",
        "prompts/badname/1.yaml: /messages: [] should be non-empty",
        "prompts/badname/1.yaml: /name: 'Bad Name' does not match "
        "'^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'",
    ]
    assert "FAIL" in several.stdout
    broken = run("test", "broken", "--model", "mock", cwd=tmp_path)
    assert broken.returncode == 1, broken.stderr
    assert broken.stderr.startswith("prompts/broken/1.yaml: invalid YAML at line 4"), broken.stderr


UNDEFINED = """\
name: undefined
version: 1
description: Uses three fields its input does not have.
input_schema: {type: object, properties: {a: {type: string, maxLength: 5}}, required: [a]}
messages:
  - role: user
    content: "{{ a }} {{ foo }} {{ bar }} {{ baz }}"
"""


def test_lint_and_sync_name_every_undefined_variable(tmp_path: Path) -> None:
    (tmp_path / "prompts" / "undefined").mkdir(parents=True)
    (tmp_path / "prompts" / "undefined" / "1.yaml").write_text(UNDEFINED)
    problem = (
        "/messages/0/content: [definition] 'bar', 'baz', 'foo' are undefined when rendered with "
        "a sample input with every field (error)"
    )
    lint = run("lint", "prompts", cwd=tmp_path)
    assert lint.returncode == 1
    assert f"prompts/undefined/1.yaml: {problem}" in lint.stdout.splitlines()
    sync = run("sync", cwd=tmp_path)
    assert sync.returncode == 1
    assert f"             {problem}" in sync.stderr.splitlines()


def test_the_start_up_log_names_every_problem_of_a_file(
    make_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "prompts" / "bad").mkdir(parents=True)
    (tmp_path / "prompts" / "bad" / "1.yaml").write_text(SEVERAL_PROBLEMS)
    with caplog.at_level("ERROR", logger="promptapi"):
        make_server()
    lines = [r.getMessage() for r in caplog.records if "prompt file" in r.getMessage()]
    assert lines == [
        f"prompt file {tmp_path / 'prompts' / 'bad' / '1.yaml'}: The prompt definition has 3 "
        "problems.; /input_schema: 'input_schema' is required; /messages: [] should be "
        "non-empty; /name: 'Bad Name' does not match '^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'"
    ]


# -- models and providers --------------------------------------------------------------------


def test_an_api_key_in_api_key_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        f"models:\n  default:\n    provider: openai\n    api_key_env: {KEY_LOOKING}\n"
    )
    result = run("test", "--model", "mock", cwd=tmp_path, PROMPTAPI_MODELS_FILE="models.yaml")
    assert one_line(result, 2) == (
        "promptapi: models.yaml: models.default.api_key_env must be the NAME of an environment "
        "variable that holds the key (like OPENAI_API_KEY), and this value looks like a key "
        "itself (not shown); put the key in an env var and name that variable here"
    )
    assert KEY_LOOKING not in result.stderr + result.stdout


def test_a_base_url_without_a_scheme_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        "models:\n  local:\n    provider: openai\n    base_url: localhost:11434/v1\n"
    )
    result = run("test", "--model", "mock", cwd=tmp_path, PROMPTAPI_MODELS_FILE="models.yaml")
    assert one_line(result, 2) == (
        "promptapi: models.yaml: models.local.base_url must start with http:// or https:// and "
        "name a host, like https://api.openai.com/v1 or http://localhost:11434/v1"
    )


# -- serve -----------------------------------------------------------------------------------


def test_serve_warns_about_a_missing_folder_and_the_maintenance_database(tmp_path: Path) -> None:
    """The summary's warnings (serve would migrate into the maintenance database, so this
    checks the summary without starting it; nothing connects to the database here)."""
    import asyncio

    from promptapi import startup
    from promptapi.config import Settings
    from promptapi.gateway import Gateway

    settings = Settings(
        database_url="postgresql://app:pw@127.0.0.1:5432/postgres",
        prompts_dir=tmp_path / "nowhere",
        port=8123,
    )
    gateway = Gateway(settings)
    lines = startup.summary(settings, gateway.providers.models, startup_report())
    asyncio.run(gateway.store.aclose())
    warnings = [line for level, line in lines if level == logging.WARNING]
    assert warnings == [
        "PROMPTAPI_DATABASE_URL points at 'postgres', the PostgreSQL server's maintenance "
        "database; give promptapi a database of its own (createdb promptapi) and name it in the "
        "URL",
        f"prompt files: the folder {tmp_path / 'nowhere'} does not exist, nothing was synced "
        "(create it or set PROMPTAPI_PROMPTS_DIR)",
    ]


def startup_report() -> Any:
    from promptapi.gateway import SyncReport

    return SyncReport()


def test_the_port_is_checked_before_the_database(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port), cwd=tmp_path)
    assert one_line(result, 2) == (
        f"promptapi: cannot listen on 127.0.0.1:{port}: the port is in use; stop the other "
        "server or pick another port (--port or PROMPTAPI_PORT)"
    )
    assert not (tmp_path / "promptapi.db").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_start_up_summary(tmp_path: Path, fake: FakeOpenAI) -> None:
    prompts = tmp_path / "prompts"
    (prompts / "echo").mkdir(parents=True)
    (prompts / "echo" / "1.yaml").write_text(
        "name: echo\nversion: 1\ndescription: Echo.\n"
        "input_schema: {type: object, properties: {text: {type: string, maxLength: 9}}, "
        "required: [text], additionalProperties: false}\n"
        "messages: [{role: user, content: '{{ text }}'}]\n"
    )
    port = _free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTAPI_", "OPENAI_"))}
    env.update(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY=UPSTREAM_KEY)
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "promptapi", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Application startup complete" not in log.read_text():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait(30)
    summary = [
        line.split(" promptapi [-] ", 1)[1]
        for line in log.read_text().splitlines()
        if " INFO promptapi [-] " in line and "migrating" not in line
    ]
    assert summary == [
        f"promptapi 0.1.0: database SQLite {tmp_path / 'promptapi.db'}",
        f"model alias default -> openai gpt-4o-mini at {fake.base_url}, key from $OPENAI_API_KEY",
        "model alias mock -> mock (canned answers from the prompt's examples)",
        f"prompt files: 1 created, 0 unchanged, 0 with errors, from {prompts}",
        f"catalog http://127.0.0.1:{port}/",
        f"API docs http://127.0.0.1:{port}/docs, OpenAPI http://127.0.0.1:{port}/openapi.json",
    ]
    assert UPSTREAM_KEY not in log.read_text()


# -- smaller ones ----------------------------------------------------------------------------


def test_keys_create_refuses_an_empty_name(tmp_path: Path) -> None:
    for name in ("", "   ", "k" * 201, "bad\x01name"):
        result = run("keys", "create", name, cwd=tmp_path)
        assert result.stderr == (
            "promptapi: a key needs a name of 1 to 200 characters without control characters, "
            "e.g. billing-service\n"
        )
        assert result.returncode == 2
    assert not (tmp_path / "promptapi.db").exists()


def test_diff_on_an_unknown_prompt_names_the_prompt(tmp_path: Path) -> None:
    assert run("db", "upgrade", cwd=tmp_path).returncode == 0
    result = run("diff", "nope", "1", "2", cwd=tmp_path)
    assert one_line(result, 1) == "promptapi: no prompt named 'nope' in the database"


def test_publish_answers_with_the_policy_warnings(server: Server) -> None:
    draft = {**ECHO, "state": "draft", "description": ""}
    assert server.admin.post("/admin/v1/prompts", json=draft).status_code == 201
    published = server.admin.post("/admin/v1/prompts/echo/versions/1/publish")
    assert published.status_code == 200, published.text
    rules = sorted(w["rule"] for w in published.json()["warnings"])
    assert rules == ["bounded-strings", "description", "examples", "max-tokens"]
    # Other transitions answer as before.
    deprecated = server.admin.post("/admin/v1/prompts/echo/versions/1/deprecate")
    assert "warnings" not in deprecated.json()


def test_a_retire_refused_by_a_label_does_not_offer_retire(server: Server) -> None:
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    moved = server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 1})
    assert moved.status_code == 200, moved.text
    refused = assert_problem(
        server.admin.post("/admin/v1/prompts/echo/versions/1/retire"), 409, "transition_refused"
    )
    assert refused["labels"] == ["production"]
    assert refused["allowed"] == ["deprecate"]


def test_a_bad_key_request_has_a_title_about_the_request(server: Server) -> None:
    problem = assert_problem(server.admin.post("/admin/v1/keys", json={"name": ""}), 422)
    assert problem["code"] == "request_invalid"
    assert problem["title"] == "The request body is not valid for this operation"
    assert [e["path"] for e in problem["errors"]] == ["/name"]
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    label = server.admin.put("/admin/v1/prompts/echo/labels/x", json={"version": "one"})
    assert assert_problem(label, 422, "request_invalid")["errors"][0]["path"] == "/version"
    # A caller's input that fails the prompt's schema keeps its own problem type.
    with server.consumer() as client:
        assert_problem(client.post("/v1/prompts/echo", json={}), 422, "input_invalid")


def test_an_admin_sync_of_a_missing_folder_says_so(make_server: Any, tmp_path: Path) -> None:
    server = make_server(prompts_dir=tmp_path / "nowhere", sync_on_start=False)
    report = server.admin.post("/admin/v1/sync")
    assert report.status_code == 200, report.text
    assert report.json()["errors"] == [
        {
            "file": str(tmp_path / "nowhere"),
            "detail": f"The prompts folder {tmp_path / 'nowhere'} does not exist; create it or "
            "set PROMPTAPI_PROMPTS_DIR.",
        }
    ]
