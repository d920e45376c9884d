"""Governance policy: `promptapi lint` on good and bad files (exact lines, exit status), the
backtracking heuristic on known-bad and known-good patterns, policy files, and the policy at
registration (422 listing every violation, warnings in the 201 body) and in sync."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptapi.cli import main
from tests.conftest import SENTIMENT
from tests.helpers import assert_problem
from tests.test_files import EXAMPLES_DIR, outcome, write

# A definition that satisfies every default rule, so each test breaks exactly what it checks.
GOOD: dict[str, Any] = {
    "name": "greet",
    "version": 1,
    "description": "Greets someone by name.",
    "model": "default",
    "params": {"max_tokens": 50},
    "input_schema": {
        "type": "object",
        "properties": {
            "who": {"type": "string", "maxLength": 100},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 5},
        },
        "required": ["who"],
        "additionalProperties": False,
    },
    "messages": [{"role": "user", "content": "Say hello to {{ who }}."}],
    "examples": [{"input": {"who": "Ada"}, "output": "Hello Ada."}],
}


def good(**changes: Any) -> dict[str, Any]:
    definition = copy.deepcopy(GOOD)
    definition.update(changes)
    return definition


def put(folder: Path, definition: dict[str, Any], name: str | None = None) -> Path:
    filename = name or f"{definition['name']}/{definition.get('version', 1)}.yaml"
    return write(folder / filename, yaml.safe_dump(definition, sort_keys=False))


def lint(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["lint", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PROMPTAPI_POLICY_FILE", "PROMPTAPI_MODELS_FILE", "PROMPTAPI_PROMPTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")


# -- lint ---------------------------------------------------------------------------------


def test_lint_shipped_prompts_are_clean_under_the_defaults(capsys):
    code, lines, err = lint(capsys, "--strict", str(EXAMPLES_DIR))
    assert code == 0, lines
    assert lines == []
    assert "4 files checked: 0 errors, 0 warnings (policy: built-in defaults)" in err


def test_lint_good_file_is_clean(tmp_path, capsys):
    path = put(tmp_path, GOOD)
    assert lint(capsys, "--strict", str(path))[:2] == (0, [])


def test_lint_bad_file_lists_every_violation_with_exact_lines(tmp_path, capsys):
    bad = {
        "name": "bad",
        "version": 1,
        "params": {"max_tokens": 100000},
        "input_schema": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "pattern": "^(a+)+$"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}},
                "pair": {
                    "type": "array",
                    "prefixItems": [{"type": "string"}, {"type": "integer"}],
                    "items": False,
                },
                "choice": {"anyOf": [{"$ref": "#/$defs/word"}, {"type": "integer"}]},
            },
            "patternProperties": {"^(x|xx)+$": {"type": "integer"}},
            "$defs": {"word": {"type": "string"}},
        },
        "messages": [{"role": "user", "content": "{{ code | default('') }}"}],
    }
    path = put(tmp_path, bad)
    code, lines, err = lint(capsys, str(path))
    p = str(path)
    assert code == 1
    assert sorted(lines) == sorted(
        [
            f"{p}: /description: [description] a description is required (warning)",
            f"{p}: /input_schema/additionalProperties: [closed-input] must be false, so inputs "
            "with unknown fields are refused (warning)",
            f"{p}: /input_schema/properties/code: [bounded-strings] string without maxLength "
            "(warning)",
            f"{p}: /input_schema/properties/pair/prefixItems/0: [bounded-strings] string without "
            "maxLength (warning)",
            f"{p}: /input_schema/$defs/word: [bounded-strings] string without maxLength (warning)",
            f"{p}: /input_schema/properties/tags: [bounded-arrays] array without maxItems "
            "(warning)",
            f"{p}: /params/max_tokens: [max-tokens] max_tokens 100000 is above the ceiling of "
            "32768 (warning)",
            f"{p}: /examples: [examples] at least 1 example is required before publishing "
            "(warning)",
            f"{p}: /input_schema/properties/code/pattern: [safe-regex] pattern '^(a+)+$' can "
            "backtrack catastrophically: a repeated group contains another variable-length "
            "repetition (like (a+)+) (error)",
            f"{p}: /input_schema/patternProperties/^(x|xx)+$: [safe-regex] patternProperties key "
            "'^(x|xx)+$' can backtrack catastrophically: a repeated group contains alternatives "
            "that can match the same text (like (a|aa)+) (error)",
        ]
    )
    assert "1 files checked: 2 errors, 8 warnings" in err


def test_lint_reports_definition_errors_remote_refs_and_yaml_once(tmp_path, capsys):
    remote = good(
        input_schema={
            "type": "object",
            "properties": {"x": {"$ref": "https://example.com/s.json"}},
            "additionalProperties": False,
        }
    )
    put(tmp_path, remote)
    write(tmp_path / "broken.yaml", "name: [unclosed\n")
    put(tmp_path, good(name="twin"), "a.yaml")
    put(tmp_path, good(name="twin"), "b.yaml")
    code, lines, _ = lint(capsys, str(tmp_path))
    assert code == 1
    root = str(tmp_path)
    assert (
        f"{root}/broken.yaml: /: [file] invalid YAML at line 2, column 1: did not find expected ',' or ']' (error)"
        in lines
    )
    # The definition check and the no-remote-ref rule see the same $ref: one line for it.
    assert [line for line in lines if "$ref" in line] == [
        f"{root}/greet/1.yaml: /input_schema/properties/x/$ref: [definition] only local "
        "references ('#...') are allowed, not 'https://example.com/s.json' (error)"
    ]
    assert (
        f"{root}/b.yaml: /version: [duplicate] twin version 1 is also defined in {root}/a.yaml (error)"
        in lines
    )


def test_lint_survives_absurdly_nested_files(tmp_path, capsys):
    nested = "{anyOf: [" * 2000 + "{}" + "]}" * 2000
    path = write(tmp_path / "deep.yaml", f"name: deep\nversion: 1\ninput_schema: {nested}\n")
    code, lines, _ = lint(capsys, str(path))
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: /: [file] invalid YAML at line 3, column ")
    assert lines[0].endswith("nested more than 254 levels deep (error)")


def test_lint_warnings_pass_unless_strict(tmp_path, capsys):
    path = put(tmp_path, good(description=""))
    code, lines, _ = lint(capsys, str(path))
    assert code == 0
    assert lines == [f"{path}: /description: [description] a description is required (warning)"]
    assert lint(capsys, "--strict", str(path))[0] == 1


def test_lint_examples_rule_depends_on_the_stage(tmp_path, capsys):
    path = put(tmp_path, good(examples=[]))
    assert lint(capsys, "--strict", str(path))[0] == 1
    assert lint(capsys, "--strict", "--stage", "draft", str(path))[:2] == (0, [])


def test_lint_missing_path_exits_2(tmp_path, capsys):
    code, _, err = lint(capsys, str(tmp_path / "nowhere"))
    assert code == 2
    assert "no such file or directory" in err


def test_lint_defaults_to_the_prompts_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROMPTAPI_PROMPTS_DIR", str(tmp_path))
    put(tmp_path, good(params={}))
    code, lines, _ = lint(capsys, "--strict")
    assert code == 1
    assert lines == [
        f"{tmp_path}/greet/1.yaml: /params/max_tokens: [max-tokens] params.max_tokens is "
        "required (at most 32768) (warning)"
    ]


# -- the backtracking heuristic -----------------------------------------------------------

CATASTROPHIC = [
    "(a+)+",
    "^(a+)+$",
    "(a*)*",
    "(.*)*",
    "(a|a)*",
    "(a|aa)+",
    "(a|ab|b)*",
    r"(\w+|\d+)*",
    r"^(\w+\s?)*$",
    "(a*a*-)+",
    "^([a-z0-9]+-?)+$",
    "(x+x+)+y",
    "(a{1,3})+",
    "(?:a?)+b",
    "(.*a){12}",
]
SAFE = [
    "^[a-z0-9]+(-[a-z0-9]+)*$",
    "([a-z]+-)*x",
    r'^"(?:[^"\\]|\\.)*"$',
    "(a|b)*",
    r"^\d{3}-\d{4}$",
    "(?>a+)+",
    "(a++)+",
    r"^(\d{3})+$",
    r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$",
    "(foo|foobar)*",
    r"^(?:[a-z]+\.)*[a-z]+$",
    r"(\s*,\s*\w+)+",
    "(a+)?",
]


def test_safe_regex_flags_known_catastrophic_patterns_and_passes_safe_ones(tmp_path, capsys):
    properties = {
        f"p{i}": {"type": "string", "maxLength": 10, "pattern": pattern}
        for i, pattern in enumerate(CATASTROPHIC + SAFE)
    }
    definition = good(
        input_schema={"type": "object", "properties": properties, "additionalProperties": False},
        messages=[{"role": "user", "content": "{{ input }}"}],
        examples=[{"input": {}}],
    )
    path = put(tmp_path, definition)
    code, lines, _ = lint(capsys, str(path))
    assert code == 1
    flagged = {line.split(": ")[1] for line in lines if "[safe-regex]" in line}
    expected = {f"/input_schema/properties/p{i}/pattern" for i in range(len(CATASTROPHIC))}
    assert flagged == expected
    assert len(lines) == len(CATASTROPHIC)


def test_flagged_patterns_really_backtrack_and_safe_ones_do_not():
    """The heuristic's verdicts, measured: a flagged pattern takes exponentially longer as the
    input grows by a few characters; a passed one stays fast."""
    import re
    import time

    def seconds(pattern: str, text: str) -> float:
        compiled = re.compile(pattern)
        started = time.perf_counter()
        compiled.search(text)
        return time.perf_counter() - started

    small = min(seconds("^(a+)+$", "a" * 12 + "!") for _ in range(3))
    assert seconds("^(a+)+$", "a" * 20 + "!") > 50 * small  # 2^8 = 256 times the work
    assert seconds("^[a-z0-9]+(-[a-z0-9]+)*$", "a-" * 5000 + "!") < 0.05


# -- policy files -------------------------------------------------------------------------


def test_policy_file_turns_rules_on_off_and_sets_options(tmp_path, capsys):
    policy = write(
        tmp_path / "policy.yaml",
        "rules:\n"
        "  description: error\n"
        "  examples: off\n"
        "  max-tokens: {severity: error, ceiling: 40}\n"
        "  model-allowlist: {severity: error, models: [fast]}\n"
        "  name-pattern: {severity: warning, pattern: '^team-'}\n"
        "  bounded-strings: {max_length: 50}\n",
    )
    path = put(tmp_path / "p", good(description="", examples=[]))
    code, lines, err = lint(capsys, "--policy", str(policy), str(path))
    assert code == 1
    assert sorted(lines) == sorted(
        [
            f"{path}: /description: [description] a description is required (error)",
            f"{path}: /params/max_tokens: [max-tokens] max_tokens 50 is above the ceiling of 40 "
            "(error)",
            f"{path}: /model: [model-allowlist] model 'default' is not allowed; allowed: fast "
            "(error)",
            f"{path}: /name: [name-pattern] name 'greet' does not match the pattern '^team-' "
            "(warning)",
            f"{path}: /input_schema/properties/who/maxLength: [bounded-strings] maxLength 100 is "
            "above the limit of 50 (warning)",
        ]
    )
    assert f"(policy: {policy})" in err


def test_policy_file_from_the_environment(tmp_path, capsys, monkeypatch):
    policy = write(tmp_path / "policy.yaml", "rules:\n  safe-regex: off\n")
    monkeypatch.setenv("PROMPTAPI_POLICY_FILE", str(policy))
    schema = copy.deepcopy(GOOD["input_schema"])
    schema["properties"]["who"]["pattern"] = "(a+)+"
    path = put(tmp_path / "p", good(input_schema=schema))
    assert lint(capsys, "--strict", str(path))[:2] == (0, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules:\n  no-such-rule: error\n", "unknown rule 'no-such-rule'"),
        ("rules:\n  description: fatal\n", "severity must be error, warning or off"),
        ("rules:\n  max-tokens: {ceiling: -1}\n", "max-tokens.ceiling: expected a non-negative"),
        ("rules:\n  description: {colour: red}\n", "description: unknown option 'colour'"),
        ("rules:\n  model-allowlist: error\n", "model-allowlist: list the allowed aliases"),
        ("rules:\n  name-pattern: {pattern: '('}\n", "not a valid regular expression"),
        ("rules: [\n", "cannot read policy file"),
        ("policy: {}\n", "expected a mapping with one key, 'rules'"),
    ],
)
def test_bad_policy_file_is_a_configuration_error(tmp_path, capsys, text, message):
    policy = write(tmp_path / "policy.yaml", text)
    code, lines, err = lint(capsys, "--policy", str(policy), str(EXAMPLES_DIR))
    assert code == 2
    assert lines == []
    assert message in err


# -- at registration and in sync ----------------------------------------------------------


def test_registration_refuses_error_violations_listing_them_all(make_server, tmp_path, fake):
    policy = write(
        tmp_path / "policy.yaml",
        "rules:\n  description: error\n  max-tokens: {severity: error, ceiling: 10}\n",
    )
    server = make_server(policy_file=policy)
    schema = copy.deepcopy(SENTIMENT["input_schema"])
    schema["properties"]["text"]["pattern"] = "^(\\w+\\s?)*$"
    definition = {**SENTIMENT, "description": "", "input_schema": schema}
    response = server.admin.post("/admin/v1/prompts", json=definition)
    body = assert_problem(response, 422, "policy_violation")
    assert body["detail"] == "The prompt definition has 3 policy violations."
    assert sorted(body["errors"], key=lambda e: e["path"]) == [
        {
            "path": "/description",
            "message": "a description is required",
            "rule": "description",
            "severity": "error",
        },
        {
            "path": "/input_schema/properties/text/pattern",
            "message": "pattern '^(\\w+\\s?)*$' can backtrack catastrophically: a repeated "
            "group contains another variable-length repetition (like (a+)+)",
            "rule": "safe-regex",
            "severity": "error",
        },
        {
            "path": "/params/max_tokens",
            "message": "max_tokens 50 is above the ceiling of 10",
            "rule": "max-tokens",
            "severity": "error",
        },
    ]
    assert server.admin.get("/admin/v1/prompts/sentiment").status_code == 404


def test_definition_errors_and_policy_errors_come_in_one_answer(server, fake):
    schema = copy.deepcopy(SENTIMENT["input_schema"])
    schema["properties"]["text"]["pattern"] = "(a|aa)+"
    definition = {**SENTIMENT, "input_schema": schema, "params": {"temperature": 9}}
    body = assert_problem(
        server.admin.post("/admin/v1/prompts", json=definition), 422, "definition_invalid"
    )
    paths = {e["path"]: e.get("rule") for e in body["errors"]}
    assert paths == {
        "/params/temperature": None,
        "/input_schema/properties/text/pattern": "safe-regex",
    }


def test_registration_returns_warnings_in_the_201_body(server, fake):
    response = server.admin.post("/admin/v1/prompts", json=SENTIMENT)
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == [
        {
            "path": "/examples",
            "message": "at least 1 example is required before publishing",
            "rule": "examples",
            "severity": "warning",
        }
    ]
    clean = {
        **SENTIMENT,
        "name": "clean",
        "examples": [{"input": {"text": "hi"}, "output": {"label": "neutral", "score": 0.5}}],
    }
    response = server.admin.post("/admin/v1/prompts", json=clean)
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == []


def test_sync_reports_policy_errors_and_warnings_per_file(make_server, tmp_path, fake):
    prompts = tmp_path / "prompts"
    put(prompts, good())
    put(prompts, good(name="no-desc", description=""))
    risky = copy.deepcopy(GOOD["input_schema"])
    risky["properties"]["who"]["pattern"] = "(.*)*"
    put(prompts, good(name="risky", input_schema=risky))
    server = make_server()
    report = server.admin.post("/admin/v1/sync").json()
    assert outcome(report)["unchanged"] == ["greet@1", "no-desc@1"]
    assert report["warnings"] == [
        {
            "file": str(prompts / "no-desc" / "1.yaml"),
            "warnings": [
                {
                    "path": "/description",
                    "message": "a description is required",
                    "rule": "description",
                    "severity": "warning",
                }
            ],
        }
    ]
    [error] = report["errors"]
    assert error["file"] == str(prompts / "risky" / "1.yaml")
    assert error["detail"] == "The prompt definition has 1 policy violation."
    assert [(e["path"], e["rule"]) for e in error["errors"]] == [
        ("/input_schema/properties/who/pattern", "safe-regex")
    ]
    assert server.admin.get("/admin/v1/prompts/risky").status_code == 404


def test_policy_in_force_is_visible_to_the_admin(make_server, tmp_path, fake):
    server = make_server()
    body = server.admin.get("/admin/v1/policy").json()
    assert body["source"] == "built-in defaults"
    assert body["rules"]["safe-regex"] == {"severity": "error", "allow": []}
    assert body["rules"]["model-allowlist"] == {"severity": "off", "models": []}
    policy = write(tmp_path / "policy.yaml", "rules:\n  examples: {severity: error, min: 2}\n")
    other = make_server(policy_file=policy)
    body = other.admin.get("/admin/v1/policy").json()
    assert body["source"] == str(policy)
    assert body["rules"]["examples"] == {"severity": "error", "min": 2}
    assert_problem(other.client.get("/admin/v1/policy"), 401, "unauthorized")


def test_server_refuses_to_start_with_a_bad_policy_file(make_server, tmp_path):
    policy = write(tmp_path / "policy.yaml", "rules:\n  nonsense: error\n")
    with pytest.raises(Exception, match="unknown rule 'nonsense'"):
        make_server(policy_file=policy)
