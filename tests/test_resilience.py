"""Resilience through HTTP against fake upstreams on loopback: retries and what is never retried,
Retry-After, the overall deadline, fallback aliases, circuit breakers, weighted deployments,
output repair, /admin/v1/models, and the models file's validation."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from promptapi import cli
from tests.conftest import ECHO, SENTIMENT, UPSTREAM_KEY, Server
from tests.fake_providers import ProviderBehaviour
from tests.fakes import Behaviour
from tests.helpers import assert_problem, error_paths
from tests.test_invoke import KEY_ENV, POSITIVE, assert_log_clean, register, wait_for_calls

CLOSED_PORT_URL = "http://127.0.0.1:1/v1"
FAST = {"backoff": {"base": 0.001, "max": 0.005}}


def alias(base_url: str, **fields: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        **FAST,
        **fields,
    }


@pytest.fixture
def serve(
    make_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Server, httpx.Client]]:
    """A server with these model aliases and a consumer client for it."""
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    clients: list[httpx.Client] = []

    def start(models: dict[str, Any], *prompts: dict[str, Any]) -> tuple[Server, httpx.Client]:
        path = tmp_path / "models.yaml"
        path.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
        server = make_server(models_file=path)
        for prompt in prompts or (ECHO,):
            register(server, prompt)
        client = server.consumer()
        clients.append(client)
        return server, client

    yield start
    for client in clients:
        client.close()


def call(client: httpx.Client, name: str = "echo", data: Any = None) -> httpx.Response:
    return client.post(f"/v1/prompts/{name}", json=data or {"text": "hi"})


def deployments(server: Server, name: str) -> dict[str, dict[str, Any]]:
    response = server.admin.get("/admin/v1/models")
    assert response.status_code == 200, response.text
    assert UPSTREAM_KEY not in response.text
    model = next(m for m in response.json()["models"] if m["alias"] == name)
    return {d["name"]: d for d in model["deployments"]}


def recorded(server: Server, request_id: str) -> dict[str, Any]:
    calls = wait_for_calls(
        server.admin, lambda found: any(c["request_id"] == request_id for c in found)
    )
    return next(c for c in calls if c["request_id"] == request_id)


# -- retries --------------------------------------------------------------------------------


def test_500_then_200_is_two_attempts(serve, fake, caplog):
    caplog.set_level(logging.DEBUG)
    server, client = serve({"default": alias(fake.base_url)})
    fake.then(Behaviour(status=500), Behaviour(content="second time lucky"))
    response = call(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "second time lucky"
    assert body["attempts"] == 2
    assert body["deployment"] == "default#0"
    assert len(fake.requests) == 2
    record = recorded(server, response.headers["x-request-id"])
    assert (record["status"], record["attempts"], record["deployment"]) == (200, 2, "default#0")
    assert_log_clean(caplog)


def test_retries_are_bounded_by_the_alias_setting(serve, fake):
    _, client = serve({"default": alias(fake.base_url, retries=4)})
    fake.default = Behaviour(status=503)
    body = assert_problem(call(client), 502, "upstream_error")
    assert "503" in body["detail"]
    assert len(fake.requests) == 5


@pytest.mark.parametrize(
    ("status", "code"), [(400, "upstream_error"), (404, "upstream_error"), (401, "provider_auth")]
)
def test_other_4xx_and_auth_errors_are_never_retried(serve, fake, status, code):
    server, client = serve({"default": alias(fake.base_url, retries=3)})
    fake.default = Behaviour(status=status)
    response = call(client)
    assert_problem(response, 502, code)
    assert len(fake.requests) == 1
    assert recorded(server, response.headers["x-request-id"])["attempts"] == 1


def test_retry_after_is_honoured(serve, fake):
    _, client = serve({"default": alias(fake.base_url)})
    fake.then(
        Behaviour(status=429, headers={"Retry-After": "0.3"}),
        Behaviour(status=503, headers={"retry-after-ms": "200"}),
        Behaviour(content="ok"),
    )
    started = time.monotonic()
    response = call(client)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["attempts"] == 3
    assert 0.5 <= elapsed < 1.5
    assert len(fake.requests) == 3


def test_other_providers_are_retried_the_same_way(serve, anthropic, gemini):
    models = {
        "default": alias(anthropic.base_url, provider="anthropic", params={"max_tokens": 50}),
        "gem": alias(gemini.base_url, provider="gemini"),
    }
    gem_echo = {**copy.deepcopy(ECHO), "name": "gem-echo", "model": "gem"}
    _, client = serve(models, ECHO, gem_echo)
    anthropic.then(ProviderBehaviour(status=529), ProviderBehaviour(content="from claude"))
    gemini.then(ProviderBehaviour(status=503), ProviderBehaviour(content="from gemini"))
    for name, upstream, text in [
        ("echo", anthropic, "from claude"),
        ("gem-echo", gemini, "from gemini"),
    ]:
        response = call(client, name)
        assert response.status_code == 200, response.text
        assert (response.json()["output"], response.json()["attempts"]) == (text, 2)
        assert len(upstream.requests) == 2
    anthropic.default = ProviderBehaviour(status=400)
    assert_problem(call(client), 502, "upstream_error")
    assert len(anthropic.requests) == 3  # a 400 is not retried


def test_429_after_every_retry_is_503_with_retry_after(serve, fake, caplog):
    caplog.set_level(logging.DEBUG)
    _, client = serve({"default": alias(fake.base_url)})
    fake.default = Behaviour(status=429, headers={"Retry-After": "0.05"})
    response = call(client)
    body = assert_problem(response, 503, "provider_unavailable")
    assert "429" in body["detail"]
    assert response.headers["retry-after"] == "1"  # whole seconds, at least 1
    assert len(fake.requests) == 3
    assert_log_clean(caplog)


def test_connect_refused_is_retried_then_503(serve, fake):
    server, client = serve({"default": alias(CLOSED_PORT_URL, retries=3)})
    started = time.monotonic()
    response = call(client)
    assert_problem(response, 503, "provider_unavailable")
    assert time.monotonic() - started < 1
    record = recorded(server, response.headers["x-request-id"])
    assert (record["attempts"], record["deployment"], record["status"]) == (4, "default#0", 503)


def test_one_deadline_across_attempts_and_waits(serve, fake):
    # Each attempt fails after 0.15 s; ten retries would take 1.6 s but the call has 0.5 s.
    _, client = serve({"default": alias(fake.base_url, retries=10, deadline=0.5)})
    fake.default = Behaviour(status=500, delay=0.15)
    started = time.monotonic()
    body = assert_problem(call(client), 504, "deadline_exceeded")
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 0.9
    assert 2 <= len(fake.requests) <= 4  # 3 when the machine is idle
    assert "attempts" in body["detail"]


def test_a_wait_past_the_deadline_is_not_waited(serve, fake):
    _, client = serve({"default": alias(fake.base_url, deadline=1)})
    fake.default = Behaviour(status=503, headers={"Retry-After": "30"})
    started = time.monotonic()
    assert_problem(call(client), 502, "upstream_error")
    assert time.monotonic() - started < 0.5
    assert len(fake.requests) == 1


def test_a_per_attempt_deadline_alone_bounds_the_whole_call(serve, fake):
    _, client = serve({"default": alias(fake.base_url, retries=5, timeouts={"deadline": 0.4})})
    fake.default = Behaviour(status=500, delay=0.15)
    started = time.monotonic()
    assert_problem(call(client), 504, "deadline_exceeded")
    assert time.monotonic() - started < 0.8
    assert 2 <= len(fake.requests) <= 3


def test_timeouts_are_not_retried(serve, fake):
    _, client = serve({"default": alias(fake.base_url, timeouts={"deadline": 0.2}, deadline=5)})
    fake.default = Behaviour(content="late", delay=0.5)
    started = time.monotonic()
    assert_problem(call(client), 504, "deadline_exceeded")
    assert time.monotonic() - started < 0.45
    assert len(fake.requests) == 1


# -- fallbacks ------------------------------------------------------------------------------


def test_fallback_answers_when_the_primary_is_down(serve, fake):
    models = {
        "default": alias(CLOSED_PORT_URL, retries=1, fallbacks=["backup", "spare"]),
        "backup": alias(fake.base_url, model="backup-model", retries=0),
        "spare": alias(fake.base_url, model="never-called"),
    }
    server, client = serve(models)
    fake.then(Behaviour(status=500), Behaviour(content="from spare"))
    response = call(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "from spare"
    assert body["deployment"] == "spare#0"
    assert body["attempts"] == 4  # 2 on default, 1 on backup, 1 on spare
    assert [r["body"]["model"] for r in fake.requests] == ["backup-model", "never-called"]
    record = recorded(server, response.headers["x-request-id"])
    assert (record["deployment"], record["attempts"], record["model_alias"]) == (
        "spare#0",
        4,
        "default",
    )


def test_when_every_fallback_fails_the_primary_error_is_answered(serve, fake):
    models = {
        "default": alias(CLOSED_PORT_URL, retries=0, fallbacks=["backup"]),
        "backup": alias(fake.base_url, retries=0),
    }
    _, client = serve(models)
    fake.default = Behaviour(status=500)
    body = assert_problem(call(client), 503, "provider_unavailable")
    assert "unreachable" in body["detail"]
    assert len(fake.requests) == 1


def test_aliases_may_fall_back_to_each_other_without_looping(serve, fake, fake_b):
    models = {
        "default": alias(fake.base_url, retries=1, fallbacks=["other"]),
        "other": alias(fake_b.base_url, retries=1, fallbacks=["default"]),
    }
    _, client = serve(models)
    fake.default = fake_b.default = Behaviour(status=500)
    assert_problem(call(client), 502, "upstream_error")
    # Only the called alias's own list is tried: default twice, other twice, and no more.
    assert (len(fake.requests), len(fake_b.requests)) == (2, 2)


def test_a_request_the_provider_refuses_does_not_fall_back(serve, fake, fake_b):
    models = {
        "default": alias(fake.base_url, fallbacks=["backup"]),
        "backup": alias(fake_b.base_url),
    }
    _, client = serve(models)
    fake.default = Behaviour(status=400)
    assert_problem(call(client), 502, "upstream_error")
    assert len(fake.requests) == 1
    assert fake_b.requests == []


# -- circuit breaker ------------------------------------------------------------------------


def test_circuit_opens_fails_fast_and_recovers(serve, fake, caplog):
    caplog.set_level(logging.DEBUG)
    circuit = {"failures": 3, "open_seconds": 0.6}
    server, client = serve({"default": alias(fake.base_url, retries=0, circuit=circuit)})
    fake.default = Behaviour(status=500)
    for _ in range(3):
        assert_problem(call(client), 502, "upstream_error")
    assert len(fake.requests) == 3
    state = deployments(server, "default")["default#0"]["circuit"]
    assert state["state"] == "open"
    assert state["consecutive_failures"] == 3
    assert state["recent_error_rate"] == 1.0
    assert 0 < state["retry_after"] <= 0.6

    # Open: answered at once, without a request upstream.
    started = time.monotonic()
    response = call(client)
    assert time.monotonic() - started < 0.3
    assert_problem(response, 503, "circuit_open")
    assert response.headers["retry-after"] == "1"
    assert len(fake.requests) == 3
    record = recorded(server, response.headers["x-request-id"])
    assert (record["status"], record["error_code"], record["attempts"]) == (503, "circuit_open", 0)

    # Half-open: one probe goes through; it fails, so the circuit opens again at once.
    time.sleep(0.65)
    assert_problem(call(client), 502, "upstream_error")
    assert len(fake.requests) == 4
    assert_problem(call(client), 503, "circuit_open")
    assert len(fake.requests) == 4

    # The next probe succeeds and closes the circuit.
    time.sleep(0.65)
    fake.default = Behaviour(content="back")
    for _ in range(3):
        response = call(client)
        assert response.status_code == 200, response.text
    assert len(fake.requests) == 7
    state = deployments(server, "default")["default#0"]["circuit"]
    assert (state["state"], state["consecutive_failures"], state["times_opened"]) == (
        "closed",
        0,
        2,
    )
    assert "circuit open: deployment=default#0" in caplog.text
    assert_log_clean(caplog)


def test_open_circuit_retry_after_is_the_time_left_open(serve, fake):
    circuit = {"failures": 1, "open_seconds": 30}
    server, client = serve({"default": alias(fake.base_url, retries=0, circuit=circuit)})
    fake.default = Behaviour(status=502)
    assert_problem(call(client), 502, "upstream_error")
    response = call(client)
    assert_problem(response, 503, "circuit_open")
    assert response.headers["retry-after"] == "30"
    state = deployments(server, "default")["default#0"]["circuit"]
    assert 29 < state["retry_after"] <= 30


def test_circuit_opens_on_error_rate(serve, fake):
    circuit = {"failures": 100, "error_rate": 0.5, "min_calls": 4, "window": 30}
    server, client = serve({"default": alias(fake.base_url, retries=0, circuit=circuit)})
    fake.then(Behaviour(), Behaviour(status=500), Behaviour(), Behaviour(status=500))
    statuses = [call(client).status_code for _ in range(4)]
    assert statuses == [200, 502, 200, 502]
    assert deployments(server, "default")["default#0"]["circuit"]["state"] == "open"
    assert_problem(call(client), 503, "circuit_open")
    assert len(fake.requests) == 4


def test_open_circuit_falls_back(serve, fake, fake_b):
    models = {
        "default": alias(fake.base_url, retries=0, fallbacks=["backup"], circuit={"failures": 1}),
        "backup": alias(fake_b.base_url),
    }
    _, client = serve(models)
    fake.default = Behaviour(status=500)
    fake_b.default = Behaviour(content="backup answers")
    first = call(client)
    assert first.json()["deployment"] == "backup#0" and first.json()["attempts"] == 2
    second = call(client)
    assert second.json()["deployment"] == "backup#0" and second.json()["attempts"] == 1
    assert len(fake.requests) == 1  # the open circuit kept the second call away
    assert len(fake_b.requests) == 2


# -- deployments and load balancing ---------------------------------------------------------


def test_weighted_deployments_share_the_load(serve, fake, fake_b):
    spec = alias(
        "http://127.0.0.1:1/unused",
        deployments=[
            {"name": "east", "base_url": fake.base_url, "weight": 3},
            {"base_url": fake_b.base_url, "model": "gpt-4o", "weight": 1},
        ],
    )
    server, client = serve({"default": spec})
    answered = [call(client).json()["deployment"] for _ in range(80)]
    assert set(answered) == {"east", "default#1"}
    # Expected 60 / 20; the bounds are four standard deviations (3.9 calls each) away.
    assert 44 <= answered.count("east") <= 76
    assert len(fake.requests) == answered.count("east")
    assert {r["body"]["model"] for r in fake_b.requests} == {"gpt-4o"}
    listed = deployments(server, "default")
    assert listed["east"]["weight"] == 3 and listed["default#1"]["model"] == "gpt-4o"
    assert listed["east"]["circuit"]["recent_attempts"] == answered.count("east")


def test_open_circuits_are_skipped_and_failed_deployments_avoided(serve, fake, fake_b):
    spec = alias(
        "http://127.0.0.1:1/unused",
        retries=1,
        circuit={"failures": 3, "open_seconds": 30},
        deployments=[
            {"name": "flaky", "base_url": fake.base_url, "weight": 1_000_000},
            {"name": "steady", "base_url": fake_b.base_url, "weight": 1},
        ],
    )
    server, client = serve({"default": spec})
    fake.default = Behaviour(status=500)
    answers = [call(client).json() for _ in range(13)]
    assert {a["deployment"] for a in answers} == {"steady"}
    # While its circuit is closed, "flaky" is picked first (by weight) and fails; the retry goes
    # to the other deployment rather than back to the one that had just failed. After three
    # failures its circuit is open and it is skipped.
    assert [a["attempts"] for a in answers] == [2, 2, 2] + [1] * 10
    assert len(fake.requests) == 3
    assert len(fake_b.requests) == 13
    listed = deployments(server, "default")
    assert listed["flaky"]["circuit"]["state"] == "open"
    assert listed["steady"]["circuit"]["state"] == "closed"


def test_models_endpoint_lists_routing_and_never_a_key(serve, fake):
    models = {
        "default": alias(fake.base_url, fallbacks=["cheap"], prices={"input": 1, "output": 2}),
        "cheap": alias(
            fake.base_url,
            deployments=[{"name": "a", "headers": {"X-Tenant": "t1"}}, {"api_key_env": "NOPE"}],
        ),
    }
    server, _ = serve(models)
    response = server.admin.get("/admin/v1/models")
    assert response.status_code == 200
    assert UPSTREAM_KEY not in response.text
    listed = {m["alias"]: m for m in response.json()["models"]}
    default = listed["default"]
    assert default["retries"] == 2 and default["deadline"] == 60
    assert default["fallbacks"] == ["cheap"]
    assert default["circuit"]["failures"] == 5 and default["circuit"]["open_seconds"] == 30
    assert default["backoff"] == {"base": 0.001, "max": 0.005}
    [only] = default["deployments"]
    assert only["name"] == "default#0" and only["api_key_set"] is True
    assert only["circuit"] == {
        "state": "closed",
        "consecutive_failures": 0,
        "recent_attempts": 0,
        "recent_failures": 0,
        "recent_error_rate": None,
        "retry_after": None,
        "times_opened": 0,
    }
    cheap = {d["name"]: d for d in listed["cheap"]["deployments"]}
    assert set(cheap) == {"a", "cheap#1"}
    assert cheap["a"]["api_key_set"] is True
    assert cheap["cheap#1"]["api_key_env"] == "NOPE" and cheap["cheap#1"]["api_key_set"] is False


def test_cost_comes_from_the_deployment_that_answered(serve, fake, fake_b):
    spec = alias(
        "http://127.0.0.1:1/unused",
        retries=1,
        circuit={"failures": 1},
        prices={"input": 1, "output": 1},
        deployments=[
            {"name": "pricey", "base_url": fake.base_url, "weight": 1_000_000},
            {"name": "cheap", "base_url": fake_b.base_url, "prices": {"input": 0.5, "output": 2}},
        ],
    )
    _, client = serve({"default": spec})
    fake.default = Behaviour(status=500)
    fake_b.default = Behaviour(content="x", usage=(1000, 500))
    body = call(client).json()
    assert body["deployment"] == "cheap"
    assert body["usage"] == {"input_tokens": 1000, "output_tokens": 500, "cost_usd": 0.0015}


# -- output repair --------------------------------------------------------------------------


def test_output_repair_sends_the_errors_back_and_succeeds(serve, fake):
    server, client = serve({"default": alias(fake.base_url)}, SENTIMENT)
    bad = '{"label": "great", "score": 2}'
    fake.then(Behaviour(content=bad, usage=(20, 5)), Behaviour(content=POSITIVE, usage=(40, 6)))
    response = call(client, "sentiment", {"text": "lovely"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == {"label": "positive", "score": 0.9}
    assert body["attempts"] == 2
    assert body["usage"]["input_tokens"] == 60 and body["usage"]["output_tokens"] == 11
    first, second = (r["body"]["messages"] for r in fake.requests)
    assert second[: len(first)] == first
    assert second[len(first)] == {"role": "assistant", "content": bad}
    feedback = second[len(first) + 1]
    assert feedback["role"] == "user"
    assert "/label" in feedback["content"] and "/score" in feedback["content"]
    assert fake.requests[1]["body"]["response_format"]["type"] == "json_schema"
    record = recorded(server, response.headers["x-request-id"])
    assert (record["attempts"], record["input_tokens"], record["output_tokens"]) == (2, 60, 11)


def test_output_repair_that_fails_again_is_502_with_the_errors(serve, fake):
    server, client = serve({"default": alias(fake.base_url)}, SENTIMENT)
    fake.then(Behaviour(content="not json at all"), Behaviour(content='{"label": "meh"}'))
    response = call(client, "sentiment", {"text": "meh"})
    body = assert_problem(response, 502, "output_invalid")
    assert error_paths(body) == {"/label", "/score"}
    assert "after 1 repair attempt" in body["detail"]
    assert '{"label": "meh"}' not in response.text
    assert len(fake.requests) == 2
    record = recorded(server, response.headers["x-request-id"])
    assert (record["status"], record["error_code"], record["attempts"]) == (
        502,
        "output_invalid",
        2,
    )
    assert record["input_tokens"] == 22  # both answers were paid for


def test_output_repair_can_be_disabled_or_raised_per_prompt(serve, fake):
    off = {**copy.deepcopy(SENTIMENT), "name": "strict", "output_repair": 0}
    twice = {**copy.deepcopy(SENTIMENT), "name": "patient", "output_repair": 2}
    _, client = serve({"default": alias(fake.base_url)}, off, twice)
    fake.default = Behaviour(content='{"label": "great"}')
    assert_problem(call(client, "strict", {"text": "a"}), 502, "output_invalid")
    assert len(fake.requests) == 1
    fake.then(Behaviour(content="{}"), Behaviour(content="[]"), Behaviour(content=POSITIVE))
    response = call(client, "patient", {"text": "a"})
    assert response.status_code == 200, response.text
    assert response.json()["attempts"] == 3


def test_output_repair_is_validated_in_definitions(serve, fake):
    server, _ = serve({"default": alias(fake.base_url)})
    for value in (4, -1, "yes", 1.5):
        bad = {**copy.deepcopy(SENTIMENT), "output_repair": value}
        body = assert_problem(server.admin.post("/admin/v1/prompts", json=bad), 422)
        assert error_paths(body) == {"/output_repair"}


# -- the models file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": {"retries": -1}}, "models.a.retries: expected an integer from 0 to 10"),
        ({"a": {"retries": True}}, "models.a.retries: expected an integer"),
        ({"a": {"deadline": 0}}, "models.a.deadline: expected a number"),
        ({"a": {"backoff": {"base": 2, "max": 1}}}, "models.a.backoff.max: must be at least"),
        ({"a": {"backoff": {"cap": 1}}}, "models.a.backoff: unknown keys ['cap']"),
        ({"a": {"fallbacks": ["zzz"]}}, "models.a.fallbacks: unknown model alias 'zzz'"),
        ({"a": {"fallbacks": ["a"]}}, "models.a.fallbacks: an alias cannot fall back to itself"),
        ({"a": {"fallbacks": "b"}}, "models.a.fallbacks: expected a list"),
        ({"a": {"circuit": {"failures": 0}}}, "models.a.circuit.failures: expected an integer"),
        ({"a": {"circuit": {"error_rate": 1.5}}}, "models.a.circuit.error_rate"),
        ({"a": {"circuit": {"open": 1}}}, "models.a.circuit: unknown keys ['open']"),
        ({"a": {"deployments": []}}, "models.a.deployments: expected a non-empty list"),
        ({"a": {"deployments": [{"weight": 0}]}}, "models.a.deployments[0].weight: must be"),
        ({"a": {"deployments": [{"weight": "x"}]}}, "models.a.deployments[0].weight: expected"),
        ({"a": {"deployments": [{"retries": 1}]}}, "models.a.deployments[0]: unknown keys"),
        ({"a": {"deployments": [{"api_key": "sk-x"}]}}, "models.a.deployments[0]: unknown keys"),
        ({"a": {"deployments": [{"provider": "nope"}]}}, "models.a.deployments[0].provider"),
        ({"a": {"deployments": [{"name": "x"}, {"name": "x"}]}}, "the name 'x' is used twice"),
        (
            {"a": {"deployments": [{"name": "x"}]}, "b": {"deployments": [{"name": "x"}]}},
            "models.b.deployments: the name 'x' is already used by alias 'a'",
        ),
        ({"a": {"deployments": [{"name": "a b"}]}}, "models.a.deployments[0].name"),
        ({"a": {"timeouts": {"deadline": -1}}}, "models.a.timeouts.deadline: expected a number"),
        ({"a": {"timeouts": {"total": 1}}}, "models.a.timeouts: unknown keys ['total']"),
        ({"a": {"prices": {"input": -1}}}, "models.a.prices.input: expected a number"),
    ],
)
def test_models_file_errors_name_the_alias_and_key(
    tmp_path, monkeypatch, capsys, spec: dict[str, Any], message: str
):
    models = {name: {"provider": "openai", "model": "m", **fields} for name, fields in spec.items()}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
    monkeypatch.setenv("PROMPTAPI_MODELS_FILE", str(path))
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert cli.main(["db", "current"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "sk-x" not in err
