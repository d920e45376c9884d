"""Property-based API testing: schemathesis reads /openapi.json of a live server holding the
example prompts from `prompts/`, generates valid and invalid requests for every operation, and
checks every answer: no 5xx, status code documented, content type, headers and body schema
as documented, invalid input refused, 405 and Allow right, auth enforced. Loopback only, a fixed
seed, and a bounded number of examples per operation."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, Server
from tests.helpers import serve_examples, sqlite_only

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Operations that change the registry (so the document: new versions, lifecycle states, labels)
# or revoke keys mid-run: they get a run of their own, so the other operations are always
# checked against a current document.
WRITERS = (
    "createPrompt",
    "createPromptVersion",
    "syncPrompts",
    "revokeKey",
    "publishVersion",
    "deprecateVersion",
    "retireVersion",
    "setLabel",
    "deleteLabel",
)
MAX_EXAMPLES = 20


def _schemathesis(
    server: Server,
    config: Path,
    seed: int,
    tested: int,
    *filters: str,
    examples: int = MAX_EXAMPLES,
    timeout: float = 300,
) -> None:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--workers",
        "1",
        "--seed",
        str(seed),
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        *filters,
    ]
    # Run where its cache (.schemathesis/) lands outside the repository.
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=config.parent,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    generated = re.search(r"(\d+) generated, \1 passed", output)
    assert generated and int(generated.group(1)) > 5 * tested, output[-3000:]
    assert f"Tested: {tested}\n" in output, output[-3000:]


@pytest.mark.slow
@sqlite_only
def test_schemathesis_finds_nothing(make_server: Callable[..., Server], tmp_path: Path) -> None:
    # The mock model answers with schema-valid output, so no 502 comes from the model itself.
    server = serve_examples(make_server, tmp_path)
    key = server.admin.post("/admin/v1/keys", json={"name": "schemathesis"}).json()["key"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.consumerKey]\nbearer = "{key}"\n'
        f'[auth.openapi.adminToken]\nbearer = "{ADMIN_TOKEN}"\n'
        # Invalid data may also be refused as too large (a definition can hold 200,000
        # characters per message, over the 1 MiB body limit).
        "[checks.negative_data_rejection]\n"
        "expected-statuses = [400, 401, 403, 404, 405, 409, 413, 415, 422]\n"
        # A retired prompt's catalog page is a valid request answered 410 Gone.
        "[checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 410, 429]\n'
    )

    def operations() -> int:
        paths = server.client.get("/openapi.json").json()["paths"].values()
        # Less the writers, and GET /openapi.json: schemathesis does not test its own source.
        return sum(len(item) for item in paths) - len(WRITERS) - 1

    readers = [arg for op in WRITERS for arg in ("--exclude-operation-id", op)]
    writers = [arg for op in WRITERS for arg in ("--include-operation-id", op)]
    # 1. Every operation but the writers, against the example prompts.
    _schemathesis(server, config, 1, operations(), *readers)
    # 2. The writers. Registration refuses definitions that are schema-valid but wrong in ways a
    # schema cannot say (an unknown model alias, a template that fails on the sample input), so
    # "schema-valid requests are accepted" does not apply to them; every other check does.
    _schemathesis(
        server, config, 2, len(WRITERS), *writers, "--exclude-checks", "positive_data_acceptance"
    )
    # 3. The readers again: now the document also holds the prompts schemathesis registered,
    # with whatever schemas it made up.
    grown = operations()
    assert grown > 40
    _schemathesis(server, config, 3, grown, *readers, examples=8)
