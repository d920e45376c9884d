"""/openapi.json checked by the linters OpenAPI users run: Redocly CLI (recommended rules) with
no error and Spectral (spectral:oas) with no warning. Rules broken on purpose are switched off,
each with its reason, in tests/node/redocly.yaml and tests/node/.spectral.yaml. The document
linted holds the example prompts, one of them deprecated, so every generated part shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.helpers import serve_examples, sqlite_only
from tests.node_tools import NODE_DIR, run

pytestmark = [pytest.mark.slow, sqlite_only]


@pytest.fixture
def document(make_server: Callable[..., Server], tmp_path: Path) -> Path:
    server = serve_examples(make_server, tmp_path)
    # A deprecated version too, so the headers it documents are linted.
    assert server.admin.post(
        "/admin/v1/prompts/sentiment/versions/1/deprecate", json={}
    ).status_code in (200, 409)
    path = tmp_path / "openapi.json"
    path.write_bytes(server.client.get("/openapi.json").content)
    return path


def test_redocly_finds_no_error(document: Path) -> None:
    done = run(
        "redocly",
        "lint",
        str(document),
        "--config",
        str(NODE_DIR / "redocly.yaml"),
        "--format",
        "json",
        cwd=document.parent,
    )
    report = json.loads(done.stdout or "{}")
    problems = report.get("problems", [])
    # No error, as the recommended rules demand, and no warning either.
    assert done.returncode == 0 and problems == [], json.dumps(problems, indent=1)[:20000]
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, report["totals"]


def test_spectral_finds_no_warning(document: Path) -> None:
    out = document.parent / "spectral.json"
    done = run(
        "spectral",
        "lint",
        str(document),
        "--ruleset",
        str(NODE_DIR / ".spectral.yaml"),
        "--format",
        "json",
        "--output",
        str(out),
        "--fail-severity",
        "hint",
        cwd=document.parent,
    )
    results = json.loads(out.read_text()) if out.exists() else None
    assert done.returncode == 0 and results == [], (
        json.dumps(results, indent=1)[:20000] + done.stdout + done.stderr
    )
