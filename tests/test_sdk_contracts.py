"""Every request each adapter builds (plain, structured output, streamed, with every documented
parameter) is one the provider's official SDK types accept, and every answer of the fakes is one
the SDK's response models read (the fakes check both: tests/sdk_contract.py). Then what those
contracts revealed: parameters the current APIs refuse are dropped or renamed, an impossible
combination is refused at registration, and the start-up warning names what is missing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import yaml

from promptapi.errors import ConfigError
from promptapi.providers import load_models
from tests import sdk_contract
from tests.conftest import SENTIMENT, UPSTREAM_KEY
from tests.fake_providers import ProviderBehaviour as B
from tests.helpers import assert_problem, error_paths
from tests.test_adapters import complete, make, request, stream

# The OpenAI names every prompt may use (README, "Provider by provider"), with the values a
# prompt would give them.
DOCUMENTED = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 64,
    "stop": ["END", "\n\n"],
    "presence_penalty": 0.1,
    "frequency_penalty": -0.2,
    "seed": 7,
}
# Native names an alias may add, per provider.
NATIVE = {
    "openai": {"max_completion_tokens": 80, "logprobs": True, "user": "u-1"},
    "anthropic": {"metadata": {"user_id": "u-1"}, "service_tier": "auto", "top_k": 5},
    "gemini": {
        "top_k": 20,
        "thinkingConfig": {"thinkingBudget": 0},
        "safetySettings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
        ],
    },
}
SCHEMA: dict[str, Any] = SENTIMENT["output_schema"]
ANSWER = '{"label": "positive", "score": 0.9}'
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Rate: great"},
]


def _upstream(kind: str, anthropic: Any, gemini: Any, fake: Any) -> tuple[Any, str]:
    if kind == "anthropic":
        return anthropic, anthropic.base_url
    if kind == "gemini":
        return gemini, gemini.base_url
    return fake, f"http://127.0.0.1:{fake.port}" + ("/v1" if kind == "openai" else "")


@pytest.mark.parametrize("kind", ["openai", "azure", "anthropic", "gemini"])
@pytest.mark.parametrize("structured", [False, True])
async def test_every_request_is_one_the_sdk_accepts(kind, structured, anthropic, gemini, fake):
    upstream, base_url = _upstream(kind, anthropic, gemini, fake)
    native = NATIVE["openai" if kind == "azure" else kind]
    answer = ANSWER if structured else "fine"
    upstream.default = B(content=answer, stream_chunks=[answer[:5], answer[5:]])
    schema = SCHEMA if structured else None
    options: dict[str, Any] = {"params": native}
    if kind == "openai":
        options["model"] = "gpt-4o-mini"
    await complete(make(kind, base_url, **options), request(MESSAGES, DOCUMENTED, schema))
    deltas = await stream(make(kind, base_url, **options), request(MESSAGES, DOCUMENTED, schema))
    assert "".join(d.text for d in deltas) == answer
    bodies = [r["body"] for r in upstream.requests]
    assert len(bodies) == 2
    for body in bodies:
        # The fixture asserts the fake saw no violation; check here too, so this test fails
        # on its own if the fake stopped checking.
        assert sdk_contract.request_problems(kind, body) == []


async def test_openai_sends_max_completion_tokens_unless_the_alias_says_max_tokens(fake):
    url = f"http://127.0.0.1:{fake.port}/v1"
    await complete(make("openai", url, model="m"), request(params={"max_tokens": 9}))
    await complete(
        make("openai", url, model="m", max_tokens_field="max_tokens"),
        request(params={"max_completion_tokens": 9}),
    )
    await complete(
        make("azure", f"http://127.0.0.1:{fake.port}"), request(params={"max_tokens": 9})
    )
    first, second, azure = (r["body"] for r in fake.requests)
    assert first["max_completion_tokens"] == 9 and "max_tokens" not in first
    assert second["max_tokens"] == 9 and "max_completion_tokens" not in second
    assert azure["max_completion_tokens"] == 9


def test_max_tokens_field_is_checked_in_the_models_file(tmp_path):
    path = tmp_path / "models.yaml"
    for spec, error in [
        ({"provider": "openai", "model": "m", "max_tokens_field": "tokens"}, "max_tokens_field"),
        ({"provider": "anthropic", "model": "m", "max_tokens_field": "max_tokens"}, "only for"),
    ]:
        path.write_text(yaml.safe_dump({"models": {"x": spec}}), encoding="utf-8")
        with pytest.raises(ConfigError, match=error):
            load_models(path, environ={})
    path.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "x": {"provider": "openai", "model": "m", "max_tokens_field": "max_tokens"}
                }
            }
        ),
        encoding="utf-8",
    )
    assert load_models(path, environ={})["x"].max_tokens_field == "max_tokens"


async def test_anthropic_drops_what_the_messages_api_refuses(anthropic):
    await complete(make("anthropic", anthropic.base_url), request(params=DOCUMENTED))
    body = anthropic.requests[0]["body"]
    for refused in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed"):
        assert refused not in body
    assert body["max_tokens"] == 64 and body["stop_sequences"] == ["END", "\n\n"]


async def test_anthropic_version_defaults_to_the_sdks_and_an_alias_overrides_it(anthropic):
    await complete(make("anthropic", anthropic.base_url))
    await complete(make("anthropic", anthropic.base_url, api_version="2023-06-01"))
    versions = [r["headers"]["anthropic-version"] for r in anthropic.requests]
    assert versions == [sdk_contract.ANTHROPIC_VERSION, "2023-06-01"]


def _models_file(tmp_path, anthropic, **claude: Any):
    spec = {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "base_url": anthropic.base_url,
        "api_key_env": "PROMPTAPI_TEST_PROVIDER_KEY",
        **claude,
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"claude": spec}}), encoding="utf-8")
    return path


THINKING = {"type": "enabled", "budget_tokens": 2048}


def test_thinking_with_a_forced_tool_call_is_refused_at_registration(
    make_server, tmp_path, anthropic, monkeypatch
):
    """Thinking is an alias's native param; with an output schema the alias answers through a
    forced tool call, which Anthropic does not allow with thinking: refused at registration,
    pointing at the output schema, instead of a 502 on every call."""
    monkeypatch.setenv("PROMPTAPI_TEST_PROVIDER_KEY", UPSTREAM_KEY)
    models = _models_file(tmp_path, anthropic, params={"thinking": THINKING, "max_tokens": 4096})
    server = make_server(models_file=models)
    definition = {**SENTIMENT, "name": "thinks", "model": "claude", "params": {"temperature": 0}}
    response = server.admin.post("/admin/v1/prompts", json=definition)
    assert error_paths(assert_problem(response, 422, "definition_invalid")) == {"/output_schema"}
    assert "forced tool call" in response.text and "'claude'" in response.text
    # Without an output schema there is no forced tool call: thinking is fine.
    plain = {k: v for k, v in definition.items() if k != "output_schema"} | {"name": "plain"}
    assert server.admin.post("/admin/v1/prompts", json=plain).status_code == 201
    # A prompt whose max_tokens leaves the thinking budget no room is refused too.
    small = {**plain, "name": "small", "params": {"max_tokens": 1000}}
    response = server.admin.post("/admin/v1/prompts", json=small)
    assert error_paths(assert_problem(response, 422)) == {"/params/max_tokens"}
    assert "budget_tokens" in response.text
    assert anthropic.requests == []


def test_an_alias_whose_fallback_thinks_is_checked_too(
    make_server, tmp_path, anthropic, monkeypatch, fake
):
    monkeypatch.setenv("PROMPTAPI_TEST_PROVIDER_KEY", UPSTREAM_KEY)
    claude = {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "base_url": anthropic.base_url,
        "params": {"thinking": THINKING, "max_tokens": 4096},
    }
    first = {"provider": "openai", "model": "m", "base_url": fake.base_url, "fallbacks": ["claude"]}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"claude": claude, "first": first}}), "utf-8")
    server = make_server(models_file=path)
    definition = {**SENTIMENT, "name": "s", "model": "first", "params": {}}
    response = server.admin.post("/admin/v1/prompts", json=definition)
    assert error_paths(assert_problem(response, 422)) == {"/output_schema"}
    # The same alias without thinking takes the prompt.
    claude["params"] = {"max_tokens": 4096}
    path.write_text(yaml.safe_dump({"models": {"claude": claude, "first": first}}), "utf-8")
    other = make_server(models_file=path)
    response = other.admin.post(
        "/admin/v1/prompts", json={**SENTIMENT, "name": "s", "model": "first"}
    )
    assert response.status_code == 201, response.text


def test_start_up_warning_names_the_missing_default_alias(make_server, tmp_path, caplog, fake):
    caplog.set_level(logging.WARNING)
    models = {
        name: {"provider": "openai", "model": "m", "base_url": fake.base_url}
        for name in ("fast", "smart", "cheap", "local", "backup")
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
    make_server(models_file=path, openai_base_url=None, openai_api_key=None)
    assert "no model provider is configured" not in caplog.text
    assert "no 'default'" in caplog.text
    assert "backup, cheap, fast, local, smart" in caplog.text


def test_promptapi_lint_reports_the_impossible_combination(
    tmp_path, monkeypatch, capsys, anthropic
):
    from promptapi.cli import main

    models = _models_file(tmp_path, anthropic, params={"thinking": THINKING, "max_tokens": 4096})
    folder = tmp_path / "lint-prompts"
    (folder / "thinks").mkdir(parents=True)
    definition = {**SENTIMENT, "name": "thinks", "version": 1, "model": "claude", "params": {}}
    (folder / "thinks" / "1.yaml").write_text(yaml.safe_dump(definition), encoding="utf-8")
    monkeypatch.setenv("PROMPTAPI_MODELS_FILE", str(models))
    monkeypatch.delenv("PROMPTAPI_POLICY_FILE", raising=False)
    assert main(["lint", str(folder)]) == 1
    out = capsys.readouterr()
    assert "/output_schema" in out.out + out.err and "forced tool call" in out.out + out.err
