"""A standard generator (openapi-python-client) makes a working, typed client from the
document: it calls the example prompts on a live server and gets typed answers back."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.helpers import serve_examples, sqlite_only

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "promptapi_generated_client"


@pytest.fixture
def generated(make_server: Callable[..., Server], tmp_path: Path) -> Iterator[tuple[Server, Any]]:
    server = serve_examples(make_server, tmp_path)
    spec = tmp_path / "openapi.json"
    spec.write_bytes(server.client.get("/openapi.json").content)
    out = tmp_path / "client" / PACKAGE
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(out),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(out.parent))
    try:
        yield server, importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out.parent))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.mark.slow
@sqlite_only
def test_generated_client_calls_prompts_with_typed_models(generated: tuple[Server, Any]) -> None:
    server, package = generated
    key = server.admin.post("/admin/v1/keys", json={"name": "generated"}).json()["key"]
    api = importlib.import_module(f"{PACKAGE}.api.prompts")
    models = importlib.import_module(f"{PACKAGE}.models")
    client = package.AuthenticatedClient(base_url=server.url, token=key)

    sentiment = importlib.import_module(f"{api.__name__}.call_sentiment")
    result = sentiment.sync(client=client, body=models.SentimentInput(text="I love it"))
    assert isinstance(result, models.SentimentResult)
    assert isinstance(result.output, models.SentimentOutput)
    assert isinstance(result.output.label, models.SentimentOutputLabel)
    assert 0 <= result.output.score <= 1
    assert result.prompt.name == "sentiment" and result.usage.input_tokens > 0

    # A $defs enum became a model of its own; the typed call round-trips through it.
    entities = importlib.import_module(f"{api.__name__}.call_extract_entities_v1")
    body = models.ExtractEntitiesInput(
        text="Ada Lovelace worked with Charles Babbage in London in 1843.",
        types=[models.ExtractEntitiesInputEntityType.PERSON],
    )
    answer = entities.sync(client=client, body=body)
    assert isinstance(answer, models.ExtractEntitiesV1Result)
    assert answer.prompt.version == 1
    assert {e.type_.value for e in answer.output.entities} <= {
        "person",
        "organization",
        "location",
        "date",
    }

    # Text output is a plain string; errors come back as the typed problem.
    translate = importlib.import_module(f"{api.__name__}.call_translate")
    text = translate.sync(
        client=client,
        body=models.TranslateInput(
            text="Hello", target_language=models.TranslateInputTargetLanguage.FRENCH
        ),
    )
    assert isinstance(text.output, str)
    anonymous = package.Client(base_url=server.url)
    refused = sentiment.sync_detailed(client=anonymous, body=models.SentimentInput(text="hi"))
    assert refused.status_code == 401
    assert (
        isinstance(refused.parsed, models.Problem) and refused.parsed.code.value == "unauthorized"
    )
