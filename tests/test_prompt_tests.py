"""`promptapi test`: examples run through the call pipeline on the mock and on a fake OpenAI
upstream, expectations checked, a pass/fail table printed, exit status for CI; and the
`expect` block validated at registration."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptapi.cli import main
from tests.conftest import SENTIMENT, UPSTREAM_KEY
from tests.fakes import Behaviour
from tests.helpers import assert_problem
from tests.test_files import EXAMPLES_DIR, run_cli, write

CLASSIFY: dict[str, Any] = {
    **copy.deepcopy(SENTIMENT),
    "version": 1,
    "examples": [
        {
            "name": "happy",
            "input": {"text": "I love it"},
            "output": {"label": "positive", "score": 0.9},
            "expect": {
                "fields": {"/label": "positive"},
                "schema": {"properties": {"score": {"minimum": 0.5}}},
                "contains": ["positive"],
            },
        },
        {
            "input": {"text": "Meh"},
            "output": {"label": "neutral", "score": 0.5},
            "expect": {"equals": {"label": "neutral", "score": 0.5}, "regex": '"score":0\\.5'},
        },
    ],
}

SHOUT: dict[str, Any] = {
    "name": "shout",
    "version": 1,
    "description": "Shouts.",
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 100}},
        "required": ["text"],
        "additionalProperties": False,
    },
    "messages": [{"role": "user", "content": "Shout: {{ text }}"}],
    "examples": [
        {"input": {"text": "hi"}, "output": "HI!", "expect": {"regex": "^[A-Z!]+$"}},
    ],
}


def put(folder: Path, definition: dict[str, Any]) -> None:
    write(
        folder / definition["name"] / f"{definition['version']}.yaml",
        yaml.safe_dump(definition, sort_keys=False),
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith(("PROMPTAPI_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", f"sqlite:///{tmp_path / 'test.db'}")
    folder = tmp_path / "prompts"
    monkeypatch.setenv("PROMPTAPI_PROMPTS_DIR", str(folder))
    return folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["test", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def cells(lines: list[str]) -> list[list[str]]:
    """The table's rows split into columns (two or more spaces apart)."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:-1]]


def test_examples_pass_on_the_mock(env, capsys, tmp_path):
    put(env, CLASSIFY)
    put(env, SHOUT)
    code, lines, _ = run(capsys, "--model", "mock")
    assert code == 0, lines
    assert lines[0].split() == ["PROMPT", "VERSION", "EXAMPLE", "CHECK", "RESULT", "REASON"]
    assert cells(lines) == [
        ["sentiment", "1", "#1 happy", "call", "pass", "mock"],
        ["sentiment", "1", "#1 happy", "contains", "pass"],
        ["sentiment", "1", "#1 happy", "schema", "pass"],
        ["sentiment", "1", "#1 happy", "fields /label", "pass"],
        ["sentiment", "1", "#2", "call", "pass", "mock"],
        ["sentiment", "1", "#2", "equals", "pass"],
        ["sentiment", "1", "#2", "regex", "pass"],
        ["shout", "1", "#1", "call", "pass", "mock"],
        ["shout", "1", "#1", "regex", "pass"],
    ]
    assert lines[-1] == "9 passed, 0 failed, 0 skipped"
    # Nothing was written anywhere.
    assert not (tmp_path / "test.db").exists()


def test_failed_expectations_fail_the_run_with_reasons(env, capsys):
    failing = copy.deepcopy(CLASSIFY)
    failing["examples"][0]["expect"] = {
        "fields": {"/label": "negative", "/missing": 1},
        "contains": ["zebra", "positive"],
        "schema": {"properties": {"score": {"maximum": 0.1}}},
    }
    failing["examples"][1]["expect"] = {"equals": "neutral", "regex": "^never$"}
    put(env, failing)
    code, lines, _ = run(capsys, "sentiment", "--model", "mock")
    assert code == 1
    assert cells(lines)[1:4] == [
        ["sentiment", "1", "#1 happy", "contains", "FAIL", "missing 'zebra'"],
        ["sentiment", "1", "#1 happy", "schema", "FAIL", "/score: 0.9 is greater than the maximum of 0.1"],
        ["sentiment", "1", "#1 happy", "fields /label", "FAIL", "got 'positive', expected 'negative'"],
    ]  # fmt: skip
    assert ["sentiment", "1", "#1 happy", "fields /missing", "FAIL", "no value there"] in cells(
        lines
    )
    assert [
        "sentiment",
        "1",
        "#2",
        "equals",
        "FAIL",
        'got {"label":"neutral","score":0.5}',
    ] in cells(lines)
    assert ["sentiment", "1", "#2", "regex", "FAIL", "no match for '^never$'"] in cells(lines)
    assert lines[-1] == "2 passed, 6 failed, 0 skipped"


def test_against_a_fake_openai_upstream_in_a_subprocess(env, tmp_path, fake):
    put(env, CLASSIFY)
    environment = {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "PROMPTAPI_PROMPTS_DIR": str(env),
        "PROMPTAPI_DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}",
    }
    fake.default = Behaviour(content='{"label": "positive", "score": 0.8}')
    passed = run_cli("test", cwd=tmp_path, extra_env=environment)
    # Example 2 expects neutral; the upstream says positive.
    assert passed.returncode == 1, passed.stderr
    rows = cells(passed.stdout.splitlines())
    assert rows[0] == ["sentiment", "1", "#1 happy", "call", "pass", "gpt-4o-mini-2024-07-18"]
    assert ["sentiment", "1", "#1 happy", "fields /label", "pass"] in rows
    assert [
        "sentiment",
        "1",
        "#2",
        "equals",
        "FAIL",
        'got {"label":"positive","score":0.8}',
    ] in rows
    assert len(fake.requests) == 2
    assert fake.requests[0]["body"]["messages"][-1] == {"role": "user", "content": "I love it"}
    assert UPSTREAM_KEY not in passed.stdout + passed.stderr

    fake.reset()
    fake.default = Behaviour(content="not json at all")
    broken = run_cli("test", "sentiment", cwd=tmp_path, extra_env=environment)
    assert broken.returncode == 1
    rows = cells(broken.stdout.splitlines())
    assert [row[:5] for row in rows] == [
        ["sentiment", "1", "#1 happy", "call", "FAIL"],
        ["sentiment", "1", "#2", "call", "FAIL"],
    ]
    assert rows[0][5].startswith("502 output_invalid: The model's answer is not valid JSON.")

    fake.reset()
    fake.default = Behaviour(content='{"label": "neutral", "score": 0.5}')
    fake.then(Behaviour(content='{"label": "positive", "score": 0.9}'))
    ok = run_cli("test", cwd=tmp_path, extra_env=environment)
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.splitlines()[-1] == "7 passed, 0 failed, 0 skipped"


def test_invalid_files_and_prompts_without_examples_are_reported(env, capsys):
    put(env, {**SHOUT, "examples": []})
    write(env / "broken" / "1.yaml", "name: broken\nversion: 1\nmessages: []\n")
    code, lines, _ = run(capsys, "--model", "mock")
    assert code == 1
    rows = cells(lines)
    assert rows[0][:5] == ["broken", "1", "-", "definition", "FAIL"]
    assert "/input_schema: 'input_schema' is required" in rows[0][5]
    assert rows[1] == ["shout", "1", "-", "call", "skip", "no examples"]
    assert lines[-1] == "0 passed, 1 failed, 1 skipped"


def test_the_database_versions_can_be_tested(make_server, database_url, env, capsys, monkeypatch):
    server = make_server()
    registered = {k: v for k, v in CLASSIFY.items() if k != "version"}
    assert server.admin.post("/admin/v1/prompts", json=registered).status_code == 201
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", database_url)
    code, lines, _ = run(capsys, "--db", "--model", "mock")
    assert code == 0, lines
    assert lines[-1] == "7 passed, 0 failed, 0 skipped"


def test_the_shipped_prompts_pass_on_the_mock(env, capsys):
    code, lines, _ = run(capsys, "--dir", str(EXAMPLES_DIR))
    assert code == 0, lines
    assert lines[-1] == "5 passed, 0 failed, 0 skipped"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "no prompt named nosuch under"),
        (["--model", "gpt-9"], "unknown model alias 'gpt-9'; configured: default, mock"),
    ],
)
def test_usage_errors_exit_2(env, capsys, args, message):
    put(env, SHOUT)
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err


def test_empty_folder_exits_2(env, capsys):
    code, _, err = run(capsys)
    assert code == 2
    assert "no prompts to test" in err


# -- the expect block at registration -----------------------------------------------------


def test_expect_block_is_validated_at_registration(server, fake):
    definition = copy.deepcopy({k: v for k, v in CLASSIFY.items() if k != "version"})
    definition["examples"][0]["expect"] = {
        "regex": "(unclosed",
        "schema": {"type": "nonsense"},
        "fields": {"label": "no leading slash"},
        "contains": [],
        "sounds_like": "positive",
    }
    definition["examples"][1]["expect"] = {}
    body = assert_problem(
        server.admin.post("/admin/v1/prompts", json=definition), 422, "definition_invalid"
    )
    by_path = {e["path"]: e["message"] for e in body["errors"]}
    assert by_path["/examples/0/expect/sounds_like"] == "unexpected property 'sounds_like'"
    assert by_path["/examples/0/expect/regex"].startswith("not a valid regular expression")
    assert by_path["/examples/0/expect/schema/type"].startswith("invalid JSON Schema")
    assert "/examples/0/expect/fields" in by_path
    assert "/examples/0/expect/contains" in by_path
    assert by_path["/examples/1/expect"] == "{} should be non-empty"
