"""Anthropic, Gemini and Azure OpenAI aliases through a live promptapi server: a models file
points each alias at its fake upstream; callers see the same envelope (usage, cost) and the
same problem types whichever provider answers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptapi.errors import ConfigError
from promptapi.providers import load_models
from tests.conftest import SENTIMENT, UPSTREAM_KEY
from tests.fake_providers import ProviderBehaviour as B
from tests.helpers import SECRETS, assert_problem
from tests.test_stream import stream, texts

KEY_ENV = "PROMPTAPI_TEST_PROVIDER_KEY"
PRICES = {"claude": (3.0, 15.0), "gemini": (0.3, 2.5), "azure": (0.15, 0.6)}


@pytest.fixture
def providers_server(make_server, tmp_path, monkeypatch, anthropic, gemini, fake):
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    # No retries: each provider failure reaches the caller as mapped (retries: test_resilience).
    common = {"api_key_env": KEY_ENV, "retries": 0}
    models = {
        "claude": {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "base_url": anthropic.base_url,
            "params": {"max_tokens": 200},
        },
        "gemini": {
            "provider": "gemini",
            "model": "gemini-2.5-flash",
            "base_url": gemini.base_url,
            "api_version": "v1beta",
        },
        "azure": {
            "provider": "azure",
            "model": "gpt-4o-mini",
            "deployment": "prod-4o",
            "api_version": "2024-10-21",
            "base_url": f"http://127.0.0.1:{fake.port}",
        },
    }
    for alias, spec in models.items():
        spec.update(common, prices={"input": PRICES[alias][0], "output": PRICES[alias][1]})
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
    server = make_server(models_file=path)
    for alias in models:
        definition = {**SENTIMENT, "name": f"sentiment-{alias}", "model": alias}
        response = server.admin.post("/admin/v1/prompts", json=definition)
        assert response.status_code == 201, response.text
    upstreams = {"claude": anthropic, "gemini": gemini, "azure": fake}
    return server, upstreams


def assert_log_clean(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("alias", ["claude", "gemini", "azure"])
def test_each_provider_answers_in_the_same_envelope(providers_server, alias):
    server, upstreams = providers_server
    upstream = upstreams[alias]
    upstream.default = B(content='{"label": "positive", "score": 0.75}', usage=(1000, 200))
    with server.consumer() as consumer:
        response = consumer.post(f"/v1/prompts/sentiment-{alias}", json={"text": "Great!"})
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["output"] == {"label": "positive", "score": 0.75}
    price_in, price_out = PRICES[alias]
    assert envelope["usage"] == {
        "input_tokens": 1000,
        "output_tokens": 200,
        "cost_usd": pytest.approx((1000 * price_in + 200 * price_out) / 1_000_000),
    }
    assert envelope["mock"] is False
    assert len(upstream.requests) == 1
    sent = upstream.requests[0]
    key_header = {"claude": "x-api-key", "gemini": "x-goog-api-key", "azure": "api-key"}[alias]
    assert {k.lower(): v for k, v in sent["headers"].items()}[key_header] == UPSTREAM_KEY
    assert "Great!" in str(sent["body"])


def test_admin_lists_the_aliases_without_their_keys(providers_server):
    server, _ = providers_server
    response = server.admin.get("/admin/v1/models")
    assert response.status_code == 200, response.text
    models = {m["alias"]: m for m in response.json()["models"]}
    assert models["claude"]["provider"] == "anthropic"
    assert models["gemini"]["provider"] == "gemini"
    assert models["azure"]["provider"] == "azure"
    assert models["azure"]["deployment"] == "prod-4o"
    assert models["azure"]["api_version"] == "2024-10-21"
    assert all(models[a]["api_key_set"] for a in ("claude", "gemini", "azure"))
    assert UPSTREAM_KEY not in response.text


@pytest.mark.parametrize(
    ("alias", "behaviour", "status", "code", "logged"),
    [
        ("claude", B(status=401), 502, "provider_auth", "type=authentication_error"),
        ("claude", B(status=529, headers={"Retry-After": "3"}), 503, "provider_unavailable", ""),
        ("claude", B(status=400), 502, "upstream_error", "type=invalid_request_error"),
        ("gemini", B(status=400, reason="API_KEY_INVALID"), 502, "provider_auth", "reason="),
        ("gemini", B(status=429, headers={"Retry-After": "9"}), 503, "provider_unavailable", ""),
        ("gemini", B(blocked="PROHIBITED_CONTENT"), 502, "upstream_error", "PROHIBITED"),
        ("azure", B(status=403), 502, "provider_auth", "type=server_error"),
        ("azure", B(status=500), 502, "upstream_error", ""),
    ],
)
def test_provider_failures_reach_the_caller_as_problems(
    providers_server, caplog, alias, behaviour, status, code, logged
):
    caplog.set_level(logging.DEBUG)
    server, upstreams = providers_server
    upstreams[alias].default = behaviour
    with server.consumer() as consumer:
        response = consumer.post(f"/v1/prompts/sentiment-{alias}", json={"text": "a"})
    body = assert_problem(response, status, code)
    assert alias in body["detail"]
    if "Retry-After" in behaviour.headers:
        assert response.headers["retry-after"] == behaviour.headers["Retry-After"]
    assert f"alias={alias}" in caplog.text
    assert logged in caplog.text
    assert_log_clean(caplog)


@pytest.mark.parametrize("alias", ["claude", "gemini", "azure"])
def test_each_provider_streams_to_the_caller(providers_server, alias):
    server, upstreams = providers_server
    pieces = ['{"label": "posi', 'tive", "score"', ": 0.75}"]
    upstreams[alias].default = B(stream_chunks=pieces, usage=(1000, 200))
    with server.consumer() as consumer:
        response, events = stream(consumer, f"/v1/prompts/sentiment-{alias}", {"text": "Great!"})
    assert response.status_code == 200
    assert "".join(texts(events)) == "".join(pieces)
    name, done = events[-1]
    assert name == "done"
    assert done["output"] == {"label": "positive", "score": 0.75}
    price_in, price_out = PRICES[alias]
    assert done["usage"]["input_tokens"] == 1000
    assert done["usage"]["output_tokens"] == 200
    assert done["usage"]["cost_usd"] == pytest.approx((1000 * price_in + 200 * price_out) / 1e6)

    # A stream that breaks off after its first delta ends with an error event.
    cut = {"cut": True} if alias != "azure" else {"cut_after": 1}
    upstreams[alias].default = B(stream_chunks=pieces, **cut)
    with server.consumer() as consumer:
        _, events = stream(consumer, f"/v1/prompts/sentiment-{alias}", {"text": "Great!"})
    assert texts(events)[0] == pieces[0]
    name, error = events[-1]
    assert (name, error["status"], error["code"]) == ("error", 502, "upstream_error")


# -- the models file ------------------------------------------------------------------------


def write(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"x": spec}}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"provider": "azure", "model": "gpt-4o"}, "models.x.base_url: azure needs"),
        (
            {"provider": "openai", "model": "m", "deployment": "d"},
            "models.x.deployment: only for provider azure",
        ),
        (
            {"provider": "openai", "model": "m", "api_version": "1"},
            "models.x.api_version: only for provider azure or anthropic or gemini",
        ),
        ({"provider": "bedrock", "model": "m"}, "must be one of"),
        (
            {"provider": "anthropic", "model": "m", "structured_output": "response_schema"},
            "(gemini also takes response_schema)",
        ),
    ],
)
def test_models_file_mistakes_are_named(tmp_path, spec, message):
    with pytest.raises(ConfigError) as raised:
        load_models(write(tmp_path, spec), environ={})
    assert message in str(raised.value)


def test_models_file_reads_the_new_providers(tmp_path):
    spec = {
        "provider": "azure",
        "model": "gpt-4o",
        "base_url": "https://example.openai.azure.com",
        "api_key_env": "AZ_KEY",
    }
    models = load_models(write(tmp_path, spec), environ={"AZ_KEY": "secret"})
    config = models["x"]
    assert (config.provider, config.deployment, config.api_version) == ("azure", None, None)
    assert config.api_key == "secret"
    assert "secret" not in repr(config)


def test_openai_quick_config_is_unchanged():
    models = load_models(None, environ={}, openai_api_key="sk-x", openai_base_url=None)
    default = models["default"]
    assert (default.provider, default.model, default.base_url) == ("openai", "gpt-4o-mini", None)
    assert default.deployment is None and default.api_version is None
    assert models["mock"].provider == "mock"
