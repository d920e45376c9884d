"""Identifiers are matched in full wherever they are accepted: a trailing newline (which `$`
lets through in Python's `re`) or any other stray character is refused in HTTP bodies, path
parameters, prompt files and CLI arguments, and never reaches OpenAPI paths or exported
folders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ECHO
from tests.helpers import assert_problem, error_paths
from tests.hostile import while_responsive
from tests.test_files import run_cli, write


def echo(**changes: Any) -> dict[str, Any]:
    return {**ECHO, **changes}


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        ({"name": "echo\n"}, "/name"),
        ({"name": "echo\r\n"}, "/name"),
        ({"name": "\necho"}, "/name"),
        ({"labels": ["production\n"]}, "/labels/0"),
        ({"labels": ["staging", "canary\n"]}, "/labels/1"),
        ({"tags": ["billing\n"]}, "/tags/0"),
        ({"model": "default\n"}, "/model"),
    ],
)
def test_identifier_with_a_newline_is_refused_over_http(server, fake, changes, pointer):
    response = while_responsive(
        server, lambda: server.admin.post("/admin/v1/prompts", json=echo(**changes))
    )
    body = assert_problem(response, 422, "definition_invalid")
    assert pointer in error_paths(body), body
    assert "Location" not in response.headers
    # Nothing was stored: no prompt, no path in the OpenAPI document.
    listed = server.admin.get("/admin/v1/prompts").json()["prompts"]
    assert [p["name"] for p in listed] == []
    assert not [p for p in server.client.get("/openapi.json").json()["paths"] if "\n" in p]


def test_new_version_route_refuses_a_name_with_a_newline(server, fake):
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    in_body = server.admin.post("/admin/v1/prompts/echo/versions", json=echo(name="echo\n"))
    assert_problem(in_body, 422)
    in_path = server.admin.post("/admin/v1/prompts/echo%0A/versions", json=echo(name=None))
    assert_problem(in_path, 404, "not_found")
    versions = server.admin.get("/admin/v1/prompts/echo").json()["versions"]
    assert [v["version"] for v in versions] == [1]


def test_label_with_a_newline_is_refused_in_the_path(server, fake):
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    response = server.admin.put("/admin/v1/prompts/echo/labels/production%0A", json={"version": 1})
    body = assert_problem(response, 400, "malformed_request")
    assert error_paths(body) == {"{label}"}
    assert_problem(server.admin.delete("/admin/v1/prompts/echo/labels/production%0A"), 400)
    assert server.admin.get("/admin/v1/prompts/echo").json()["labels"] == {}


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/prompts/echo/versions/1%0A",
        "/admin/v1/prompts%0A",
        "/v1/prompts/echo/versions/1%0A",
    ],
)
def test_routes_match_the_whole_path(server, fake, path):
    """A final newline does not reach a route that ends there (Starlette anchors with `$`)."""
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    response = server.admin.get(path)
    assert_problem(response, 404)


def test_prompt_file_with_a_newline_in_its_name_is_refused_on_sync(make_server, tmp_path, fake):
    folder = tmp_path / "prompts"
    write(folder / "echo.yaml", yaml.safe_dump(echo(name="echo\n", version=1)))
    write(folder / "labelled.yaml", yaml.safe_dump(echo(name="other", labels=["prod\n"])))
    server = make_server()
    report = server.admin.post("/admin/v1/sync").json()
    assert report["created"] == []
    details = {Path(e["file"]).name: e for e in report["errors"]}
    assert "/name" in error_paths(details["echo.yaml"])
    assert "/labels/0" in error_paths(details["labelled.yaml"])
    assert server.admin.get("/admin/v1/prompts").json()["prompts"] == []
    assert not [p for p in server.client.get("/openapi.json").json()["paths"] if "\n" in p]


def test_lint_and_export_never_see_a_name_with_a_newline(tmp_path):
    folder = tmp_path / "prompts"
    path = write(folder / "echo.yaml", yaml.safe_dump(echo(name="echo\n", version=1)))
    result = run_cli("lint", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{path}: /name: [definition] " in result.stdout

    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    synced = run_cli("sync", cwd=tmp_path, database_url=database, prompts_dir=folder)
    assert synced.returncode == 1, synced.stdout
    exported = run_cli("export", str(tmp_path / "out"), cwd=tmp_path, database_url=database)
    assert exported.returncode == 0, exported.stderr
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if "\n" in p.name]


@pytest.mark.parametrize(
    "args",
    [
        ["render", "echo\n", "--input", "{}"],
        ["diff", "echo\n", "1", "2"],
        ["export", "--name", "echo\n"],
        ["test", "echo\n"],
        ["diff", "echo", "9223372036854775808", "1"],
    ],
)
def test_cli_arguments_are_checked_in_full(tmp_path, args):
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = run_cli(*args, cwd=tmp_path, database_url=database)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "error: argument" in result.stderr


_ALMOST = st.builds(
    lambda name, affix, front: affix + name if front else name + affix,
    st.from_regex(r"\A[a-z0-9](?:[a-z0-9_-]{0,20}[a-z0-9])?\Z"),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=3),
    st.booleans(),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=_ALMOST | st.text(alphabet=st.characters(codec="utf-8"), max_size=70))
def test_any_name_that_is_not_matched_in_full_is_refused(server, fake, name):
    """Whatever surrounds a valid name (newlines, NUL, spaces, other scripts), the definition
    is stored only when the whole name matches the rule."""
    valid = re.fullmatch(r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?", name) is not None
    response = server.admin.post("/admin/v1/prompts", json=echo(name=name, labels=[name]))
    if valid:
        assert response.status_code in (200, 201), response.text
    else:
        body = assert_problem(response, 422)
        assert {"/name", "/labels/0"} <= error_paths(body), body


def test_models_file_alias_names_are_matched_in_full(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    spec = {"provider": "mock", "model": "mock"}
    models = write(tmp_path / "models.yaml", yaml.safe_dump({"models": {"fast\n": spec}}))
    result = run_cli(
        "lint", str(folder), cwd=tmp_path, extra_env={"PROMPTAPI_MODELS_FILE": str(models)}
    )
    assert result.returncode == 2, result.stderr
    assert f"{models}: models.'fast\\n' is not an alias name" in result.stderr
    named = write(
        tmp_path / "deployments.yaml",
        yaml.safe_dump({"models": {"fast": {**spec, "deployments": [{"name": "a\n"}]}}}),
    )
    result = run_cli(
        "lint", str(folder), cwd=tmp_path, extra_env={"PROMPTAPI_MODELS_FILE": str(named)}
    )
    assert result.returncode == 2, result.stderr
    assert "deployments[0].name" in result.stderr
