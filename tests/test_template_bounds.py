"""Templates and sample inputs cannot make the server spend unbounded work (issue 9, items 1-2):
registration checks run in a limited worker process, and every render is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptapi import isolation, prompts
from promptapi.prompts import content_digest, digest
from promptapi.sandbox import Limits
from tests.conftest import Server
from tests.helpers import assert_problem, sqlite_only
from tests.hostile import rss_mb, while_responsive

pytestmark = sqlite_only


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    """The limits are per process: leave the defaults behind for the next tests."""
    yield
    isolation.configure(isolation.CheckLimits(), Limits())
    prompts.set_render_limits(Limits())


TEXT_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "maxLength": 100000}},
}


def definition(content: str, schema: dict[str, Any] | None = None, name: str = "hostile") -> dict:
    return {
        "name": name,
        "input_schema": schema or TEXT_SCHEMA,
        "messages": [{"role": "user", "content": content}],
    }


def register(server: Server, body: dict) -> httpx.Response:
    return while_responsive(server, lambda: server.admin.post("/admin/v1/prompts", json=body))


# Each reproduction of item 1 of the issue, and variants of the same classes.
EXPENSIVE_TEMPLATES = [
    "{{ 9**(9**9) }}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{{ '%999999999d'|format(1) }}",
    "{{ text|center(10**9) }}",
    "{{ 'a'*10**8 }}",
    "{{ {}|tojson(indent=10**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%.*f' % (10**9, 1) }}",
    "{{ '{:>999999999}'.format(text) }}",
    "{{ '{0:{1}}'.format(text, 10**9) }}",
    "{{ text.ljust(10**9) }}",
    "{{ text.zfill(10**9) }}",
    "{{ ('\\t' ~ text).expandtabs(10**9) }}",
    "{{ text|indent(10**9) }}",
    "{{ ('x'*100000)|replace('', text*100) }}",
    "{{ (['y'*1000]*1000)|join(text*1000) }}",
    "{{ [text*1000]*100000 }}",
    "{{ (range(10)|list)*10**9 }}",
    "{{ 'ab'.translate({97: 'x'*10**7}) }}",
    "{{ (1).to_bytes(10**9, 'big') }}",
    "{{ 5|round(-10**9) }}",
    "{{ [1]|batch(10**9, 'x')|list }}",
    "{{ range(10)|slice(10**9)|list }}",
    "{% set ns = namespace(s=text) %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}"
    "{% endfor %}{{ ns.n }}",
    "{% set a = [text*100] * 10 %}{% set b = [a,a,a,a,a,a,a,a,a,a] %}"
    "{% set c = [b,b,b,b,b,b,b,b,b,b] %}{% set d = [c,c,c,c,c,c,c,c,c,c] %}{{ d }}",
    "{% macro f(n) %}{{ f(n + 1) }}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
    "{% for x in [1, 2] recursive %}{{ loop([1, 2]) }}{% endfor %}",
    "{% set ns = namespace(d=0) %}{% block b %}{% set ns.d = ns.d + 1 %}{% if ns.d < 10**6 %}"
    "{{ self.b() }}{{ self.b() }}{% endif %}{% endblock %}",
    "{% set ns = namespace(x=range(99999)|list) %}{% for i in range(40) %}"
    "{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|pprint }}",
    "{{ (range(99999)|list)|tojson(indent=99) }}",
    "{% for i in range(99999) %}{{ text * 1000 }}{% endfor %}",
    "{% macro m() %}{% for i in range(99999) %}{{ caller() }}{% endfor %}{% endmacro %}"
    "{% call m() %}{{ 'z' * 100000 }}{% endcall %}",
    "{% set x %}{% for i in range(99999) %}{{ 'q' * 1000 }}{% endfor %}{% endset %}{{ x|length }}",
    "{{ range(99999)|map('string')|map('center', 99999)|join }}",
    "{{ ('%s' * 100000) % ((text * 1000,) * 100000) }}",
    "{{ [(range(99999)|list)] * 99999 == [(range(99999)|list)] * 99999 }}",
]


@pytest.mark.parametrize("content", EXPENSIVE_TEMPLATES)
def test_an_expensive_template_is_refused_quickly_naming_the_bound(
    server: Server, content: str
) -> None:
    started = time.monotonic()
    body = assert_problem(register(server, definition(content)), 422, "definition_invalid")
    assert time.monotonic() - started < 5
    [error] = body["errors"]
    assert error["path"] == "/messages/0/content"
    assert "PROMPTAPI_RENDER_" in error["message"], error


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string", "minLength": 1_000_000_000}},
        },
        {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {
                    "type": "array",
                    "minItems": 3000,
                    "items": {
                        "type": "array",
                        "minItems": 3000,
                        "items": {"type": "array", "minItems": 3000, "items": {"type": "string"}},
                    },
                }
            },
        },
        {
            "$defs": {
                "node": {
                    "type": "object",
                    "required": ["a", "b", "c"],
                    "minProperties": 100000,
                    "properties": {k: {"$ref": "#/$defs/node"} for k in "abc"},
                }
            },
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"$ref": "#/$defs/node"}},
        },
    ],
    ids=["minLength-1e9", "minItems-3000-three-deep", "recursive-ref"],
)
def test_huge_schema_minimums_make_small_samples(server: Server, schema: dict) -> None:
    started = time.monotonic()
    response = register(server, definition("{{ text }} {{ input|tojson }}", schema))
    assert response.status_code == 201, response.text
    assert time.monotonic() - started < 5


def test_a_large_valid_input_hits_a_render_bound_at_call_time(server: Server) -> None:
    schema = {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
    }
    content = "{% for a in items %}{% for b in items %}{{ a }}{% endfor %}{% endfor %}"
    response = server.admin.post("/admin/v1/prompts", json=definition(content, schema, "pairs"))
    assert response.status_code == 201, response.text
    with server.consumer() as consumer:
        small = consumer.post("/v1/prompts/pairs", json={"items": [1, 2, 3]})
        assert small.status_code == 200, small.text
        response = while_responsive(
            server, lambda: consumer.post("/v1/prompts/pairs", json={"items": list(range(2000))})
        )
    body = assert_problem(response, 422, "render_limit")
    # 4 million iterations: the iteration count stops it, or the clock on a slow machine
    assert body["limit"] in ("PROMPTAPI_RENDER_MAX_ITERATIONS", "PROMPTAPI_RENDER_TIMEOUT")
    assert body["limit"] in body["detail"]


@pytest.mark.parametrize(
    ("content", "value", "limit"),
    [
        ("{{ text * count }}", 10**9, "PROMPTAPI_RENDER_MAX_OUTPUT"),
        ("{{ text|center(count) }}", 10**9, "PROMPTAPI_RENDER_MAX_OUTPUT"),
        ("{{ text|indent(count) }}", 10**6, "PROMPTAPI_RENDER_MAX_OUTPUT"),
        ("{{ '%*d' % (count, 1) }}", 10**9, "PROMPTAPI_RENDER_MAX_OUTPUT"),
        ("{{ count ** count }}", 10**6, "PROMPTAPI_RENDER_MAX_OUTPUT"),
        ("{{ text|wordwrap(1, wrapstring='x' * count) }}", 1000, "PROMPTAPI_RENDER_MAX_OUTPUT"),
        ("{% for i in range(count) %}{{ text }}{% endfor %}", 99999, "PROMPTAPI_RENDER_MAX_OUTPUT"),
    ],
)
def test_a_valid_number_in_the_input_cannot_blow_up_a_render(
    server: Server, content: str, value: int, limit: str
) -> None:
    schema = {
        "type": "object",
        "required": ["text", "count"],
        "properties": {
            "text": {"type": "string", "maxLength": 100000},
            "count": {"type": "integer", "minimum": 0, "maximum": 10**9},
        },
    }
    response = server.admin.post("/admin/v1/prompts", json=definition(content, schema, "grow"))
    assert response.status_code == 201, response.text
    with server.consumer() as consumer:
        response = while_responsive(
            server,
            lambda: consumer.post("/v1/prompts/grow", json={"text": "x" * 50000, "count": value}),
        )
    body = assert_problem(response, 422, "render_limit")
    assert body["limit"] == limit


def test_render_bounds_are_settings(make_server: Callable[..., Server], fake: Any) -> None:
    server = make_server(render_max_iterations=10)
    content = "{% for i in range(count) %}.{% endfor %}"
    schema = {
        "type": "object",
        "required": ["count"],
        "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 20}},
    }
    response = server.admin.post("/admin/v1/prompts", json=definition(content, schema, "dots"))
    assert response.status_code == 201, response.text
    with server.consumer() as consumer:
        assert consumer.post("/v1/prompts/dots", json={"count": 10}).status_code == 200
        body = assert_problem(
            consumer.post("/v1/prompts/dots", json={"count": 11}), 422, "render_limit"
        )
    assert "more than 10 loop iterations" in body["detail"]
    refused = server.admin.post(
        "/admin/v1/prompts", json=definition("{% for i in range(11) %}{% endfor %}", name="x")
    )
    assert "more than 10 loop iterations" in str(assert_problem(refused, 422)["errors"])


# -- the checker process ----------------------------------------------------------------------


def _checker_pids() -> set[int]:
    """This process's checker workers (children running promptapi.isolation)."""
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"promptapi.isolation" in cmdline:
                found.add(int(pid))
    return found


SLOW = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
UNBOUNDED = {
    "render_max_iterations": 10**12,
    "render_timeout": 600.0,
    "render_max_output": 10**10,
    "render_max_work": 10**12,
}


def test_a_check_past_its_wall_clock_limit_is_killed(
    make_server: Callable[..., Server], fake: Any
) -> None:
    server = make_server(check_timeout=1.0, **UNBOUNDED)
    started = time.monotonic()
    body = assert_problem(register(server, definition(SLOW)), 422, "definition_invalid")
    assert time.monotonic() - started < 10
    assert "PROMPTAPI_CHECK_TIMEOUT" in body["errors"][0]["message"]
    ok = server.admin.post("/admin/v1/prompts", json=definition("{{ text }}", name="after"))
    assert ok.status_code == 201, ok.text


def test_a_check_past_its_cpu_limit_is_killed(
    make_server: Callable[..., Server], fake: Any
) -> None:
    server = make_server(check_cpu_seconds=1, check_timeout=60.0, **UNBOUNDED)
    body = assert_problem(register(server, definition(SLOW)), 422, "definition_invalid")
    assert "PROMPTAPI_CHECK_CPU_SECONDS" in body["errors"][0]["message"]
    ok = server.admin.post("/admin/v1/prompts", json=definition("{{ text }}", name="after"))
    assert ok.status_code == 201, ok.text


def test_a_check_past_its_memory_limit_is_refused(
    make_server: Callable[..., Server], fake: Any
) -> None:
    server = make_server(check_memory_mb=600, **UNBOUNDED)
    body = assert_problem(
        register(server, definition("{{ ('a' * 10**9)|length }}")), 422, "definition_invalid"
    )
    assert "PROMPTAPI_CHECK_MEMORY_MB" in body["errors"][0]["message"]
    ok = server.admin.post("/admin/v1/prompts", json=definition("{{ text }}", name="after"))
    assert ok.status_code == 201, ok.text


def test_a_dead_checker_is_replaced(server: Server) -> None:
    first = server.admin.post("/admin/v1/prompts", json=definition("{{ text }}", name="one"))
    assert first.status_code == 201, first.text
    pids = _checker_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    second = server.admin.post("/admin/v1/prompts", json=definition("{{ text }}", name="two"))
    assert second.status_code == 201, second.text
    assert _checker_pids() and not _checker_pids() & pids


def test_sync_checks_files_in_the_checker(server: Server) -> None:
    folder = server.settings.prompts_dir
    (folder / "boom.yaml").write_text(
        "name: boom\nversion: 1\ninput_schema: {type: object}\n"
        "messages:\n  - role: user\n    content: \"{{ '%999999999d'|format(1) }}\"\n"
    )
    (folder / "fine.yaml").write_text(
        "name: fine\nversion: 1\ninput_schema: {type: object}\n"
        "messages:\n  - role: user\n    content: hello\n"
    )
    response = while_responsive(server, lambda: server.admin.post("/admin/v1/sync"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert "fine@1" in report["created"]
    [error] = report["errors"]
    assert "PROMPTAPI_RENDER_MAX_OUTPUT" in str(error)


# -- start-up -------------------------------------------------------------------------------


def test_a_restart_with_hostile_stored_definitions_stays_fast(
    make_server: Callable[..., Server], fake: Any, database_url: str
) -> None:
    """Definitions stored before these bounds existed (accepted then) load in no time and are
    bounded when called."""
    from promptapi.store import Store

    first = make_server()
    first.stop()
    hostile = [
        "{{ '%999999999d'|format(1) }}",
        "{{ text|center(10**9) }}",
        "{{ 'a'*10**8 }}",
        "{{ {}|tojson(indent=10**9) }}",
        "{{ 9**(9**9) }}",
    ]

    async def store() -> None:
        db = Store(database_url)
        for i, content in enumerate(hostile):
            stored = definition(content, name=f"old{i}") | {"version": 1, "description": ""}
            stored |= {"model": "default", "params": {}, "output_schema": None, "examples": []}
            await db.create_version(
                stored,
                content_digest(stored),
                version_digest=digest,
                created_by="old",
                state="published",
            )
        await db.aclose()

    asyncio.run(store())
    before = rss_mb()
    started = time.monotonic()
    server = make_server()
    assert time.monotonic() - started < 5
    assert rss_mb() - before < 200
    assert server.client.get("/readyz").status_code == 200
    with server.consumer() as consumer:
        for i in range(len(hostile)):
            response = while_responsive(
                server, lambda i=i: consumer.post(f"/v1/prompts/old{i}", json={"text": "x"})
            )
            assert_problem(response, 422, "render_limit")


def test_a_long_template_compiles_off_the_event_loop(server: Server) -> None:
    content = "{{ text }} and {{ input.text|upper }}\n" * 3000
    started = time.monotonic()
    response = register(server, definition(content, name="long"))
    assert response.status_code == 201, response.text
    assert time.monotonic() - started < 30
    with server.consumer() as consumer:
        called = consumer.post("/v1/prompts/long", json={"text": "hi"})
    assert called.status_code == 200, called.text


def test_lint_checks_files_within_the_bounds(tmp_path: Path, database_url: str) -> None:
    import subprocess
    import sys

    folder = tmp_path / "lint-prompts"
    folder.mkdir()
    (folder / "boom.yaml").write_text(
        "name: boom\nversion: 1\ninput_schema: {type: object}\n"
        "messages:\n  - role: user\n    content: \"{{ 'a' * 10**8 }}{{ 9**(9**9) }}\"\n"
    )
    (folder / "slow.yaml").write_text(
        "name: slow\nversion: 1\ninput_schema: {type: object}\nmessages:\n  - role: user\n"
        "    content: '{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}"
        "{% endfor %}'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTAPI_", "OPENAI_"))}
    env["PROMPTAPI_RENDER_MAX_ITERATIONS"] = "1000"
    env["PROMPTAPI_DATABASE_URL"] = database_url
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "promptapi", "lint", str(folder)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert done.returncode != 0
    assert "PROMPTAPI_RENDER_MAX_OUTPUT" in done.stdout + done.stderr
    assert "more than 1000 loop iterations" in done.stdout + done.stderr


def test_a_long_render_runs_off_the_event_loop(
    make_server: Callable[..., Server], fake: Any
) -> None:
    server = make_server(render_timeout=10.0)
    schema = {
        "type": "object",
        "required": ["count"],
        "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 99999}},
    }
    content = "{% for i in range(count) %}{{ (i * 7) % 10 }}{% endfor %}"
    response = server.admin.post("/admin/v1/prompts", json=definition(content, schema, "long"))
    assert response.status_code == 201, response.text
    with server.consumer() as consumer:
        response = while_responsive(
            server, lambda: consumer.post("/v1/prompts/long", json={"count": 99999})
        )
    assert response.status_code == 200, response.text
    assert fake.requests[-1]["body"]["messages"][0]["content"][:5] == "07418"
