"""Our OpenAI adapter and our fake upstream, checked against the official OpenAI description."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests import contract
from tests.conftest import SENTIMENT
from tests.fakes import Behaviour, chunk, completion


def test_contract_is_vendored_with_its_licence_and_catches_bad_bodies():
    folder = contract.CONTRACTS_DIR
    assert contract.OPENAI_CONTRACT.is_file()
    assert "MIT License" in (folder / "openai-openapi.LICENSE").read_text(encoding="utf-8")
    assert len((folder / "openai-openapi.VERSION").read_text(encoding="utf-8").split()[0]) == 40
    assert contract.problems("CreateChatCompletionRequest", {"model": "x"})  # no messages
    assert contract.problems(
        "CreateChatCompletionRequest", {"model": "x", "messages": [{"role": "robot"}]}
    )
    assert contract.problems("CreateChatCompletionResponse", {"choices": "no"})


def test_fake_answers_follow_the_contract():
    assert (
        contract.problems("CreateChatCompletionResponse", completion("hi", model="m", usage=(1, 2)))
        == []
    )
    assert (
        contract.problems("CreateChatCompletionStreamResponse", chunk({"content": "é"}, model="m"))
        == []
    )


def test_adapter_requests_follow_the_contract(server, client, fake):
    full = {
        **SENTIMENT,
        "name": "full-params",
        "params": {
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 30,
            "stop": ["\n\n", "END"],
            "presence_penalty": 0.1,
            "frequency_penalty": -0.2,
            "seed": 7,
        },
    }
    text_only = {k: v for k, v in full.items() if k != "output_schema"} | {"name": "text-only"}
    for definition in (full, text_only):
        assert server.admin.post("/admin/v1/prompts", json=definition).status_code == 201
    fake.then(Behaviour(content='{"label": "neutral", "score": 0.5}'), Behaviour(content="plain"))
    assert client.post("/v1/prompts/full-params", json={"text": "x"}).status_code == 200
    assert client.post("/v1/prompts/text-only", json={"text": "x"}).status_code == 200
    bodies = [r["body"] for r in fake.requests]
    assert bodies[0]["response_format"]["type"] == "json_schema"
    assert bodies[0]["response_format"]["json_schema"]["schema"] == SENTIMENT["output_schema"]
    assert "response_format" not in bodies[1]
    for body in bodies:
        assert contract.problems("CreateChatCompletionRequest", body) == []


def test_bench_upstream_stream_follows_the_contract():
    path = Path(__file__).resolve().parents[1] / "bench" / "upstream.py"
    spec = importlib.util.spec_from_file_location("bench_upstream", path)
    assert spec is not None and spec.loader is not None
    bench_upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_upstream)
    events = [json.loads(data) for data in bench_upstream.STREAM_EVENTS]
    for event in events:
        assert contract.problems("CreateChatCompletionStreamResponse", event) == []
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert text == bench_upstream.STREAM_EXPECTED
    assert events[-1]["usage"]["completion_tokens"] == bench_upstream.STREAM_CHUNKS
