"""Prompt files and sync: the `promptapi sync` / `promptapi render` commands run as real
processes, and a live server that syncs its prompts folder at start and on POST /admin/v1/sync."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "prompts"


def run_cli(
    *args: str,
    cwd: Path,
    database_url: str | None = None,
    prompts_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m promptapi ARGS` in a clean environment (no inherited PROMPTAPI_* / OPENAI_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTAPI_", "OPENAI_"))}
    env.update(extra_env or {})
    if database_url is not None:
        env["PROMPTAPI_DATABASE_URL"] = database_url
    if prompts_dir is not None:
        env["PROMPTAPI_PROMPTS_DIR"] = str(prompts_dir)
    return subprocess.run(
        [sys.executable, "-m", "promptapi", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def greet_yaml(name: str = "greet", version: int | None = 1, greeting: str = "Say hello to") -> str:
    lines = [f"name: {name}"]
    if version is not None:
        lines.append(f"version: {version}")
    lines += [
        "description: Greets someone.",
        "input_schema:",
        "  type: object",
        "  properties:",
        "    who: {type: string}",
        "  required: [who]",
        "  additionalProperties: false",
        "messages:",
        "  - role: user",
        f'    content: "{greeting} {{{{ who }}}}."',
        "",
    ]
    return "\n".join(lines)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    """The folder make_server syncs (tmp_path/"prompts"); also used for the CLI."""
    folder = tmp_path / "prompts"
    folder.mkdir(exist_ok=True)
    return folder


def outcome(report: dict[str, Any]) -> dict[str, Any]:
    """What a sync did, without its policy warnings."""
    return {k: report[k] for k in ("created", "unchanged", "errors")}


def last_upstream_messages(fake: Any) -> list[dict[str, Any]]:
    assert fake.requests, "the upstream was not called"
    return fake.requests[-1]["body"]["messages"]


# -- sync rules ---------------------------------------------------------------------------


def test_cli_sync_creates_new_version_then_identical_resync_is_unchanged(
    make_server, database_url, prompts_dir, tmp_path, fake
):
    write(prompts_dir / "greet" / "1.yaml", greet_yaml())

    first = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=prompts_dir)
    assert first.returncode == 0, first.stderr
    assert "created    greet@1" in first.stdout
    assert "1 created, 0 unchanged, 0 errors" in first.stdout

    again = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=prompts_dir)
    assert again.returncode == 0, again.stderr
    assert "unchanged  greet@1" in again.stdout
    assert "0 created, 1 unchanged, 0 errors" in again.stdout
    assert "created    greet@1" not in again.stdout

    # The server's own sync at start and on demand also sees it as unchanged.
    server = make_server()
    report = server.admin.post("/admin/v1/sync")
    assert report.status_code == 200, report.text
    body = report.json()
    assert {k: body[k] for k in ("created", "unchanged", "errors", "dry_run")} == {
        "created": [],
        "unchanged": ["greet@1"],
        "errors": [],
        "dry_run": False,
    }
    detail = server.admin.get("/admin/v1/prompts/greet")
    assert detail.status_code == 200, detail.text
    assert [v["version"] for v in detail.json()["versions"]] == [1]
    assert server.admin.get("/admin/v1/prompts/greet/versions/2").status_code == 404

    client = server.consumer()
    answer = client.post("/v1/prompts/greet", json={"who": "Ada"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["prompt"] == {"name": "greet", "version": 1}
    assert last_upstream_messages(fake) == [{"role": "user", "content": "Say hello to Ada."}]


def test_changed_file_with_same_version_is_an_error_and_writes_nothing(
    make_server, database_url, prompts_dir, tmp_path, fake
):
    path = write(prompts_dir / "greet" / "1.yaml", greet_yaml())
    server = make_server()
    original = server.admin.get("/admin/v1/prompts/greet/versions/1")
    assert original.status_code == 200, original.text
    original_body = original.json()

    write(path, greet_yaml(greeting="Say goodbye to"))
    result = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=prompts_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(path) in result.stderr
    assert "new version" in result.stderr
    assert "0 created" in result.stdout and "1 errors" in result.stdout

    # The running server refuses it the same way.
    report = server.admin.post("/admin/v1/sync")
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["created"] == []
    assert len(body["errors"]) == 1
    assert body["errors"][0]["file"] == str(path)
    assert "new version" in body["errors"][0]["detail"]

    # Nothing was written: a fresh server reading the database sees the original version only.
    server.stop()
    again = make_server(sync_on_start=False)
    stored = again.admin.get("/admin/v1/prompts/greet/versions/1")
    assert stored.status_code == 200, stored.text
    assert stored.json()["digest"] == original_body["digest"]
    assert stored.json()["definition"] == original_body["definition"]
    assert stored.json()["definition"]["messages"][0]["content"] == "Say hello to {{ who }}."
    versions = again.admin.get("/admin/v1/prompts/greet").json()["versions"]
    assert [v["version"] for v in versions] == [1]

    client = again.consumer()
    assert client.post("/v1/prompts/greet", json={"who": "Ada"}).status_code == 200
    assert last_upstream_messages(fake) == [{"role": "user", "content": "Say hello to Ada."}]


def test_sync_never_deletes(make_server, database_url, prompts_dir, tmp_path, fake):
    path = write(prompts_dir / "greet" / "1.yaml", greet_yaml())
    server = make_server()
    client = server.consumer()
    assert client.post("/v1/prompts/greet", json={"who": "Ada"}).status_code == 200

    path.unlink()
    report = server.admin.post("/admin/v1/sync")
    assert report.status_code == 200, report.text
    assert outcome(report.json()) == {"created": [], "unchanged": [], "errors": []}
    answer = client.post("/v1/prompts/greet", json={"who": "Ada"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["prompt"] == {"name": "greet", "version": 1}

    result = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=prompts_dir)
    assert result.returncode == 0, result.stderr
    assert "0 created, 0 unchanged, 0 errors" in result.stdout

    # Still there after a restart on the same database (with the file still gone).
    server.stop()
    again = make_server()
    detail = again.admin.get("/admin/v1/prompts/greet")
    assert detail.status_code == 200, detail.text
    assert [v["version"] for v in detail.json()["versions"]] == [1]
    answer = again.consumer().post("/v1/prompts/greet", json={"who": "Bob"})
    assert answer.status_code == 200, answer.text
    assert last_upstream_messages(fake) == [{"role": "user", "content": "Say hello to Bob."}]


def test_invalid_yaml_is_reported_with_file_and_line(
    make_server, database_url, prompts_dir, tmp_path
):
    bad = write(
        prompts_dir / "broken.yaml",
        # Line 6 has a second "key: value" inside a plain scalar: a YAML error on that line.
        "name: broken\nversion: 1\ndescription: ok\nmessages:\n  - role: user\n    content: hi: there: x\n",
    )
    result = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=prompts_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines() if str(bad) in line]
    assert error_lines, result.stderr
    assert "invalid YAML" in error_lines[0]
    assert "line 6" in error_lines[0]

    server = make_server()
    report = server.admin.post("/admin/v1/sync").json()
    assert report["created"] == []
    assert [e["file"] for e in report["errors"]] == [str(bad)]
    assert "line 6" in report["errors"][0]["detail"]
    assert server.admin.get("/admin/v1/prompts/broken").status_code == 404


def test_file_without_version_is_an_error_at_path_version(
    make_server, database_url, prompts_dir, tmp_path
):
    path = write(prompts_dir / "greet.yaml", greet_yaml(version=None))
    result = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=prompts_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(path) in result.stderr
    assert "/version" in result.stderr
    assert "0 created, 0 unchanged, 1 errors" in result.stdout

    server = make_server()
    report = server.admin.post("/admin/v1/sync").json()
    assert report["created"] == []
    assert len(report["errors"]) == 1
    error = report["errors"][0]
    assert error["file"] == str(path)
    assert "/version" in [item["path"] for item in error["errors"]]
    assert server.admin.get("/admin/v1/prompts/greet").status_code == 404


def test_several_versions_side_by_side_newest_is_served(make_server, prompts_dir, fake):
    write(prompts_dir / "x" / "1.yaml", greet_yaml(name="x", version=1, greeting="One for"))
    write(prompts_dir / "x" / "2.yaml", greet_yaml(name="x", version=2, greeting="Two for"))
    server = make_server()
    client = server.consumer()

    answer = client.post("/v1/prompts/x", json={"who": "Ada"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["prompt"] == {"name": "x", "version": 2}
    assert last_upstream_messages(fake) == [{"role": "user", "content": "Two for Ada."}]

    pinned = client.post("/v1/prompts/x/versions/1", json={"who": "Ada"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["prompt"] == {"name": "x", "version": 1}
    assert last_upstream_messages(fake) == [{"role": "user", "content": "One for Ada."}]

    detail = server.admin.get("/admin/v1/prompts/x").json()
    assert detail["version"] == 2
    assert [v["version"] for v in detail["versions"]] == [1, 2]


def test_sync_endpoint_picks_up_new_file_while_running(make_server, prompts_dir, fake):
    server = make_server()
    client = server.consumer()
    assert client.post("/v1/prompts/greet", json={"who": "Ada"}).status_code == 404

    write(prompts_dir / "greet" / "1.yaml", greet_yaml())
    report = server.admin.post("/admin/v1/sync")
    assert report.status_code == 200, report.text
    assert outcome(report.json()) == {"created": ["greet@1"], "unchanged": [], "errors": []}
    answer = client.post("/v1/prompts/greet", json={"who": "Ada"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["prompt"] == {"name": "greet", "version": 1}

    # A newer version added next to it becomes the served one.
    write(prompts_dir / "greet" / "2.yaml", greet_yaml(version=2, greeting="Wave at"))
    report = server.admin.post("/admin/v1/sync").json()
    assert report["created"] == ["greet@2"]
    assert report["unchanged"] == ["greet@1"]
    answer = client.post("/v1/prompts/greet", json={"who": "Ada"})
    assert answer.json()["prompt"] == {"name": "greet", "version": 2}
    assert last_upstream_messages(fake) == [{"role": "user", "content": "Wave at Ada."}]


def test_cli_sync_reaches_a_running_server(make_server, database_url, prompts_dir, tmp_path, fake):
    server = make_server(refresh_interval=0.2)
    client = server.consumer()
    assert client.post("/v1/prompts/greet", json={"who": "Ada"}).status_code == 404

    write(prompts_dir / "greet" / "1.yaml", greet_yaml())
    result = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=prompts_dir)
    assert result.returncode == 0, result.stderr
    assert "created    greet@1" in result.stdout

    deadline = time.monotonic() + 3
    while (status := client.post("/v1/prompts/greet", json={"who": "Ada"}).status_code) != 200:
        assert time.monotonic() < deadline, f"not callable on the running server ({status})"
        time.sleep(0.05)
    assert last_upstream_messages(fake) == [{"role": "user", "content": "Say hello to Ada."}]


# -- the shipped example prompts ----------------------------------------------------------


def example_files() -> list[Path]:
    found = sorted(EXAMPLES_DIR.rglob("*.yaml"))
    assert len(found) >= 4, f"expected the shipped example prompts under {EXAMPLES_DIR}"
    return found


def test_example_prompts_sync_without_errors(database_url, tmp_path):
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES_DIR, folder)
    names = sorted(yaml.safe_load(p.read_text())["name"] for p in example_files())

    result = run_cli("sync", cwd=tmp_path, database_url=database_url, prompts_dir=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    created = sorted(
        line.split()[1].split("@")[0]
        for line in result.stdout.splitlines()
        if line.startswith("created ")
    )
    assert created == names
    assert f"{len(names)} created, 0 unchanged, 0 errors" in result.stdout

    # `--dir` overrides PROMPTAPI_PROMPTS_DIR; a second sync of the same files changes nothing.
    again = run_cli("sync", "--dir", str(folder), cwd=tmp_path, database_url=database_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"0 created, {len(names)} unchanged, 0 errors" in again.stdout


def test_example_prompts_are_callable_with_the_mock_provider(make_server, prompts_dir):
    shutil.copytree(EXAMPLES_DIR, prompts_dir, dirs_exist_ok=True)
    definitions = [yaml.safe_load(p.read_text()) for p in example_files()]
    server = make_server(openai_base_url=None, openai_api_key=None)
    client = server.consumer()

    listed = client.get("/v1/prompts")
    assert listed.status_code == 200, listed.text
    assert sorted(p["name"] for p in listed.json()["prompts"]) == sorted(
        d["name"] for d in definitions
    )

    checked = 0
    for definition in definitions:
        name = definition["name"]
        examples = definition.get("examples") or []
        assert examples, f"{name} ships no example to call it with"
        output_schema = definition.get("output_schema")
        for example in examples:
            answer = client.post(f"/v1/prompts/{name}", json=example["input"])
            assert answer.status_code == 200, (name, answer.text)
            body = answer.json()
            assert body["prompt"] == {"name": name, "version": definition["version"]}
            assert body["mock"] is True
            if output_schema is not None:
                errors = list(Draft202012Validator(output_schema).iter_errors(body["output"]))
                assert not errors, (name, body["output"], [e.message for e in errors])
            else:
                assert isinstance(body["output"], str) and body["output"], (name, body)
            checked += 1
    assert checked >= 4
    # Both prompts with an output schema were among them.
    assert {"sentiment", "extract-entities"} <= {
        d["name"] for d in definitions if d.get("output_schema")
    }


# -- render -------------------------------------------------------------------------------


def test_render_prints_messages_as_json_and_keeps_caller_text_literal(tmp_path):
    result = run_cli(
        "render",
        "sentiment",
        "--input",
        orjson.dumps({"text": "{{7*7}} {% if true %}x{% endif %}"}).decode(),
        "--dir",
        str(EXAMPLES_DIR),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rendered = orjson.loads(result.stdout)
    assert rendered["name"] == "sentiment"
    assert rendered["version"] == 1
    assert rendered["model"] == "default"
    messages = rendered["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("You classify the sentiment")
    assert messages[1]["content"] == "{{7*7}} {% if true %}x{% endif %}"
    assert "49" not in result.stdout


def test_render_uses_template_logic_and_picks_versions(tmp_path):
    folder = tmp_path / "p"
    write(folder / "x" / "1.yaml", greet_yaml(name="x", version=1, greeting="One for"))
    write(folder / "x" / "2.yaml", greet_yaml(name="x", version=2, greeting="Two for"))

    newest = run_cli("render", "x", "--input", '{"who": "Ada"}', "--dir", str(folder), cwd=tmp_path)
    assert newest.returncode == 0, newest.stderr
    assert orjson.loads(newest.stdout)["version"] == 2
    assert orjson.loads(newest.stdout)["messages"] == [{"role": "user", "content": "Two for Ada."}]

    pinned = run_cli(
        "render",
        "x",
        "--version",
        "1",
        "--input",
        '{"who": "Ada"}',
        "--dir",
        str(folder),
        cwd=tmp_path,
    )
    assert pinned.returncode == 0, pinned.stderr
    assert orjson.loads(pinned.stdout)["messages"] == [{"role": "user", "content": "One for Ada."}]

    # Optional fields drive the template (translate's formality clause).
    translated = run_cli(
        "render",
        "translate",
        "--input",
        '{"text": "Hi", "target_language": "German", "formality": "formal"}',
        "--dir",
        str(EXAMPLES_DIR),
        cwd=tmp_path,
    )
    assert translated.returncode == 0, translated.stderr
    system = orjson.loads(translated.stdout)["messages"][0]["content"]
    assert "into German" in system
    assert "Use a formal register." in system


def test_render_bad_input_exits_1_with_json_pointer(tmp_path):
    result = run_cli(
        "render",
        "translate",
        "--input",
        '{"text": "", "extra": 1}',
        "--dir",
        str(EXAMPLES_DIR),
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    for pointer in ("/text", "/target_language", "/extra"):
        assert f"{pointer}:" in result.stderr, result.stderr


def test_render_unknown_prompt_exits_1(tmp_path):
    result = run_cli(
        "render", "no-such-prompt", "--input", "{}", "--dir", str(EXAMPLES_DIR), cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert "no-such-prompt" in result.stderr


def test_render_invalid_input_json_exits_2(tmp_path):
    result = run_cli(
        "render", "sentiment", "--input", "{not json", "--dir", str(EXAMPLES_DIR), cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "--input" in result.stderr
