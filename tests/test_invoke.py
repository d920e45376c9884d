"""End-to-end tests of the consumer API (POST /v1/prompts/{name} and friends), through HTTP
against a live promptapi and the fake OpenAI upstream."""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.conftest import ECHO, SENTIMENT, UPSTREAM_KEY
from tests.fakes import Behaviour
from tests.helpers import ENVELOPE_FIELDS, SECRETS, assert_problem, error_paths, settle

KEY_ENV = "PROMPTAPI_TEST_UPSTREAM_KEY"
POSITIVE = '{"label": "positive", "score": 0.9}'

# A prompt whose input schema nests an object and an array of objects.
ORDER: dict[str, Any] = {
    "name": "order",
    "description": "Summarise an order.",
    "input_schema": {
        "type": "object",
        "properties": {
            "customer": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string"},
                        "qty": {"type": "integer", "minimum": 1},
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "note": {"type": "string"},
        },
        "required": ["customer", "items"],
        "additionalProperties": False,
    },
    "messages": [
        {
            "role": "user",
            "content": (
                "{{ customer.name }} ordered {{ items | length }} lines."
                "{% if note is defined %} Note: {{ note }}{% endif %}"
            ),
        }
    ],
}


# -- helpers ------------------------------------------------------------------------------


def header(received: dict, name: str) -> str | None:
    """A header of a request the fake received, case-insensitively."""
    for key, value in received["headers"].items():
        if key.lower() == name.lower():
            return value
    return None


def assert_log_clean(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text
    for record in caplog.records:
        text += record.getMessage()
    for secret in SECRETS:
        assert secret not in text


def register(server: Any, definition: dict[str, Any]) -> dict[str, Any]:
    response = server.admin.post("/admin/v1/prompts", json=definition)
    assert response.status_code in (200, 201), response.text
    return response.json()


def write_models(
    tmp_path: Path, base_url: str, routing: dict[str, Any] | None = None, **timeouts: float
) -> Path:
    spec: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        **(routing or {}),
    }
    if timeouts:
        spec["timeouts"] = timeouts
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"default": spec}}), encoding="utf-8")
    return path


def wait_for_calls(
    admin: httpx.Client,
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    timeout: float = 5.0,
    **params: Any,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        response = admin.get("/admin/v1/calls", params=params)
        settle(response)
        assert response.status_code == 200, response.text
        calls = response.json()["calls"]
        if done(calls) or time.monotonic() > deadline:
            return calls
        time.sleep(0.05)


@pytest.fixture
def keyed(server: Any) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    """A consumer client and its key record (id, name, ...)."""
    response = server.admin.post("/admin/v1/keys", json={"name": "keyed"})
    assert response.status_code == 201, response.text
    key = response.json()
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key['key']}"}
    ) as consumer:
        yield consumer, key


# -- register and call --------------------------------------------------------------------


def test_register_returns_created_version(server, fake):
    response = server.admin.post("/admin/v1/prompts", json=SENTIMENT)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "sentiment"
    assert body["version"] == 1
    assert body["state"] == "published"
    assert body["definition"]["messages"] == SENTIMENT["messages"]
    assert body["definition"]["input_schema"] == SENTIMENT["input_schema"]
    assert body["definition"]["output_schema"] == SENTIMENT["output_schema"]
    assert response.headers["location"] == "/admin/v1/prompts/sentiment/versions/1"
    fetched = server.admin.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json()["version"] == 1


def test_call_with_output_schema_returns_parsed_object(server, client, fake):
    register(server, SENTIMENT)
    fake.default = Behaviour(content=POSITIVE, usage=(21, 9))
    response = client.post("/v1/prompts/sentiment", json={"text": "great movie"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ENVELOPE_FIELDS
    assert body["id"].startswith("call_")
    assert body["prompt"] == {"name": "sentiment", "version": 1}
    assert body["model"] == "gpt-4o-mini-2024-07-18"
    assert body["output"] == {"label": "positive", "score": 0.9}
    assert body["usage"] == {"input_tokens": 21, "output_tokens": 9, "cost_usd": None}
    assert body["cached"] is False
    assert body["mock"] is False
    assert isinstance(body["latency_ms"], int | float) and body["latency_ms"] >= 0
    assert body["deployment"] == "default#0"
    assert body["attempts"] == 1

    assert len(fake.requests) == 1
    sent = fake.requests[0]
    assert sent["body"]["model"] == "gpt-4o-mini"
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "Classify the sentiment. Answer as JSON."},
        {"role": "user", "content": "great movie"},
    ]
    assert sent["body"]["temperature"] == 0
    assert sent["body"]["max_completion_tokens"] == 50  # the current name (max_tokens_field)
    response_format = sent["body"]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"] == SENTIMENT["output_schema"]
    assert response_format["json_schema"]["name"]
    assert header(sent, "authorization") == f"Bearer {UPSTREAM_KEY}"


def test_call_without_output_schema_returns_text(server, client, fake):
    register(server, ECHO)
    fake.default = Behaviour(content="hello there")
    response = client.post("/v1/prompts/echo", json={"text": "hello there"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "hello there"
    assert body["prompt"] == {"name": "echo", "version": 1}
    sent = fake.requests[0]["body"]
    assert sent["messages"] == [{"role": "user", "content": "Repeat: hello there"}]
    assert "response_format" not in sent
    assert "temperature" not in sent


# -- versions -----------------------------------------------------------------------------


def test_versions_unpinned_uses_newest_and_pin_selects(server, client, fake):
    register(server, SENTIMENT)
    second = copy.deepcopy(SENTIMENT)
    second["messages"][0]["content"] = "Version two: classify. Answer as JSON."
    created = server.admin.post("/admin/v1/prompts", json=second)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 2
    fake.default = Behaviour(content=POSITIVE)

    unpinned = client.post("/v1/prompts/sentiment", json={"text": "a"})
    assert unpinned.status_code == 200, unpinned.text
    assert unpinned.json()["prompt"] == {"name": "sentiment", "version": 2}
    assert fake.requests[-1]["body"]["messages"][0]["content"] == (
        "Version two: classify. Answer as JSON."
    )

    pinned = client.post("/v1/prompts/sentiment/versions/1", json={"text": "b"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["prompt"] == {"name": "sentiment", "version": 1}
    assert fake.requests[-1]["body"]["messages"] == [
        {"role": "system", "content": "Classify the sentiment. Answer as JSON."},
        {"role": "user", "content": "b"},
    ]

    calls_before = len(fake.requests)
    missing = client.post("/v1/prompts/sentiment/versions/3", json={"text": "c"})
    assert_problem(missing, 404, "not_found")
    assert len(fake.requests) == calls_before


# -- input validation ---------------------------------------------------------------------


def test_input_problems_are_all_reported_at_once(server, client, fake):
    register(server, ORDER)
    response = client.post("/v1/prompts/order", json={"items": "many", "extra": True})
    body = assert_problem(response, 422, "input_invalid")
    assert error_paths(body) == {"/customer", "/items", "/extra"}
    assert all(error["message"] for error in body["errors"])
    assert fake.requests == []


def test_nested_input_problems_have_json_pointer_paths(server, client, fake):
    register(server, ORDER)
    response = client.post(
        "/v1/prompts/order",
        json={
            "customer": {"email": 5},
            "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": "two", "color": "red"}],
            "note": 3,
        },
    )
    body = assert_problem(response, 422, "input_invalid")
    assert error_paths(body) == {
        "/customer/name",
        "/customer/email",
        "/items/1/qty",
        "/items/1/color",
        "/note",
    }
    assert fake.requests == []
    # The same prompt with a valid input renders the nested values.
    ok = client.post(
        "/v1/prompts/order", json={"customer": {"name": "Ada"}, "items": [{"sku": "a", "qty": 2}]}
    )
    assert ok.status_code == 200, ok.text
    assert fake.requests[0]["body"]["messages"][0]["content"] == "Ada ordered 1 lines."


def test_template_syntax_in_caller_strings_reaches_upstream_literally(server, client, fake):
    register(server, ECHO)
    text = "{{7*7}} {% raw %}{{ config }}{% endraw %} {{ config }} {% for x in range(3) %}x{% endfor %}"
    response = client.post("/v1/prompts/echo", json={"text": text})
    assert response.status_code == 200, response.text
    assert fake.requests[0]["body"]["messages"] == [{"role": "user", "content": f"Repeat: {text}"}]
    assert "49" not in fake.requests[0]["body"]["messages"][0]["content"]


# -- authentication -----------------------------------------------------------------------


def test_calls_without_a_valid_key_are_refused(server, fake):
    """Anonymous calls are off by default: no header is refused like a bad one."""
    register(server, ECHO)
    attempts = [
        {},
        {"Authorization": "Basic x"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer pk_unknown-key-0123456789"},
    ]
    for headers in attempts:
        response = server.client.post("/v1/prompts/echo", json={"text": "a"}, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert fake.requests == []


def test_revoked_key_is_refused_immediately(server, fake):
    register(server, ECHO)
    created = server.admin.post("/admin/v1/keys", json={"name": "temporary"})
    assert created.status_code == 201, created.text
    key = created.json()
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key['key']}"}
    ) as consumer:
        assert consumer.post("/v1/prompts/echo", json={"text": "a"}).status_code == 200
        revoked = server.admin.delete(f"/admin/v1/keys/{key['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
        assert_problem(consumer.post("/v1/prompts/echo", json={"text": "a"}), 401, "unauthorized")
        time.sleep(0.5)  # a few refreshes from the database later: still refused
        assert_problem(consumer.post("/v1/prompts/echo", json={"text": "a"}), 401, "unauthorized")
        assert_problem(consumer.get("/v1/prompts"), 401, "unauthorized")
    assert len(fake.requests) == 1
    assert server.admin.get(f"/admin/v1/keys/{key['id']}").json()["revoked_at"] is not None


def test_key_listings_never_show_the_key_or_its_hash(server, fake):
    created = server.admin.post("/admin/v1/keys", json={"name": "listed"})
    assert created.status_code == 201
    plaintext = created.json()["key"]
    key_id = created.json()["id"]
    digest = hashlib.sha256(plaintext.encode()).hexdigest()
    listing = server.admin.get("/admin/v1/keys")
    single = server.admin.get(f"/admin/v1/keys/{key_id}")
    assert listing.status_code == 200 and single.status_code == 200
    assert key_id in [k["id"] for k in listing.json()["keys"]]
    assert single.json()["id"] == key_id
    for response in (listing, single):
        assert plaintext not in response.text
        assert digest not in response.text
        assert "key_hash" not in response.text
    assert "key" not in single.json()


# -- HTTP-level errors --------------------------------------------------------------------


def test_unknown_prompt_and_route_are_404(server, client, fake):
    body = assert_problem(client.post("/v1/prompts/nope", json={"text": "a"}), 404, "not_found")
    assert body["instance"] == "/v1/prompts/nope"
    assert_problem(client.get("/v1/prompts/nope"), 404, "not_found")
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(client.post("/v2/prompts/echo", json={}), 404, "not_found")
    # A sane caller-supplied request id is kept and echoed in the body.
    tagged = client.post("/v1/prompts/nope", json={}, headers={"X-Request-ID": "trace-42"})
    assert tagged.headers["x-request-id"] == "trace-42"
    assert assert_problem(tagged, 404, "not_found")["request_id"] == "trace-42"
    assert fake.requests == []


def test_wrong_method_is_405_with_allow(server, client, fake):
    register(server, ECHO)
    response = client.get("/v1/prompts/echo/versions/1")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    response = client.delete("/v1/prompts")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]
    assert fake.requests == []


def test_body_over_the_limit_is_413(make_server, fake):
    server = make_server(max_body_bytes=1000)
    register(server, ECHO)
    with server.consumer() as consumer:
        assert consumer.post("/v1/prompts/echo", json={"text": "x" * 900}).status_code == 200
        response = consumer.post("/v1/prompts/echo", json={"text": "x" * 2000})
        assert_problem(response, 413, "payload_too_large")

        def chunks(total: int) -> Iterator[bytes]:
            yield b'{"text": "'
            for _ in range(total // 100):
                yield b"y" * 100
            yield b'"}'

        small = consumer.post(
            "/v1/prompts/echo", content=chunks(500), headers={"Content-Type": "application/json"}
        )
        assert small.request.headers.get("transfer-encoding") == "chunked"
        assert small.status_code == 200, small.text
        big = consumer.post(
            "/v1/prompts/echo", content=chunks(5000), headers={"Content-Type": "application/json"}
        )
        assert big.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in big.request.headers
        assert_problem(big, 413, "payload_too_large")
    assert len(fake.requests) == 2


def test_bodies_that_are_not_json_are_415_or_400(server, client, fake):
    register(server, ECHO)
    plain = client.post(
        "/v1/prompts/echo", content=b'{"text": "a"}', headers={"Content-Type": "text/plain"}
    )
    assert_problem(plain, 415, "unsupported_media_type")
    bare = client.post("/v1/prompts/echo", content=b'{"text": "a"}')
    assert "content-type" not in bare.request.headers
    assert_problem(bare, 415, "unsupported_media_type")

    json_headers = {"Content-Type": "application/json"}
    truncated = client.post("/v1/prompts/echo", content=b'{"text": "a"', headers=json_headers)
    assert_problem(truncated, 400, "malformed_request")
    empty = client.post("/v1/prompts/echo", content=b"", headers=json_headers)
    assert_problem(empty, 400, "malformed_request")
    assert fake.requests == []
    # The same body with the right content type goes through.
    ok = client.post("/v1/prompts/echo", content=b'{"text": "a"}', headers=json_headers)
    assert ok.status_code == 200, ok.text


# -- upstream faults ----------------------------------------------------------------------


def test_upstream_500_is_502_and_leaks_nothing(server, client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    register(server, SENTIMENT)
    fake.default = Behaviour(status=500)
    body = assert_problem(
        client.post("/v1/prompts/sentiment", json={"text": "a"}), 502, "upstream_error"
    )
    assert "500" in body["detail"]
    assert len(fake.requests) == 3  # the default: 2 retries
    assert "provider error" in caplog.text  # the log was captured
    assert_log_clean(caplog)


def test_upstream_answers_that_are_not_completions_are_502(server, client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    register(server, SENTIMENT)
    fake.then(Behaviour(body=b"<html>"), Behaviour(body=b'{"choices": []}'))
    for _ in range(2):
        response = client.post("/v1/prompts/sentiment", json={"text": "a"})
        assert_problem(response, 502, "upstream_error")
    assert len(fake.requests) == 2
    assert_log_clean(caplog)


def test_model_answer_that_is_not_json_is_output_invalid(server, client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    register(server, SENTIMENT)
    fake.default = Behaviour(content="I think it is positive.")
    body = assert_problem(
        client.post("/v1/prompts/sentiment", json={"text": "a"}), 502, "output_invalid"
    )
    assert body["errors"]
    assert_log_clean(caplog)


def test_model_answer_failing_output_schema_lists_paths(server, client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    register(server, SENTIMENT)
    fake.default = Behaviour(content='{"label": "great", "score": 2, "extra": 1}')
    body = assert_problem(
        client.post("/v1/prompts/sentiment", json={"text": "a"}), 502, "output_invalid"
    )
    assert error_paths(body) == {"/label", "/score", "/extra"}
    assert_log_clean(caplog)


def test_slow_upstream_hits_the_deadline(make_server, fake, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    server = make_server(models_file=write_models(tmp_path, fake.base_url, deadline=0.5))
    register(server, SENTIMENT)
    fake.default = Behaviour(content=POSITIVE, delay=3)
    with server.consumer() as consumer:
        started = time.monotonic()
        response = consumer.post("/v1/prompts/sentiment", json={"text": "a"})
        elapsed = time.monotonic() - started
    assert_problem(response, 504, "deadline_exceeded")
    assert 0.4 <= elapsed < 2.5
    assert header(fake.requests[0], "authorization") == f"Bearer {UPSTREAM_KEY}"
    assert_log_clean(caplog)


def test_trickling_upstream_hits_the_deadline(make_server, fake, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    server = make_server(models_file=write_models(tmp_path, fake.base_url, deadline=0.5))
    register(server, ECHO)
    fake.default = Behaviour(content="z" * 400, trickle=0.05)
    with server.consumer() as consumer:
        started = time.monotonic()
        response = consumer.post("/v1/prompts/echo", json={"text": "a"})
        elapsed = time.monotonic() - started
    assert_problem(response, 504, "deadline_exceeded")
    assert elapsed < 2.5
    assert_log_clean(caplog)


def test_upstream_401_is_provider_auth(server, client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    register(server, SENTIMENT)
    fake.default = Behaviour(status=401)
    assert_problem(client.post("/v1/prompts/sentiment", json={"text": "a"}), 502, "provider_auth")
    assert_log_clean(caplog)


def test_upstream_429_is_503_with_retry_after(make_server, fake, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    # Waiting 7 s would pass the 2 s deadline, so the 429 is answered at once.
    server = make_server(models_file=write_models(tmp_path, fake.base_url, {"deadline": 2}))
    register(server, SENTIMENT)
    fake.default = Behaviour(status=429, headers={"Retry-After": "7"})
    with server.consumer() as client:
        response = client.post("/v1/prompts/sentiment", json={"text": "a"})
    assert_problem(response, 503, "provider_unavailable")
    assert response.headers["retry-after"] == "7"
    assert len(fake.requests) == 1
    assert_log_clean(caplog)


def test_unreachable_upstream_is_503_quickly(make_server, fake, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    server = make_server(models_file=write_models(tmp_path, "http://127.0.0.1:1/v1"))
    register(server, SENTIMENT)
    with server.consumer() as consumer:
        started = time.monotonic()
        response = consumer.post("/v1/prompts/sentiment", json={"text": "a"})
        elapsed = time.monotonic() - started
    assert_problem(response, 503, "provider_unavailable")
    assert elapsed < 3
    assert fake.requests == []
    assert_log_clean(caplog)


# -- call records -------------------------------------------------------------------------


def test_calls_are_recorded_and_filterable(server, keyed, fake):
    consumer, key = keyed
    register(server, SENTIMENT)
    register(server, ECHO)
    fake.then(
        Behaviour(content=POSITIVE, usage=(123, 45)),
        Behaviour(status=400),
        Behaviour(content="hi", usage=(5, 3)),
    )
    expected: dict[str, dict[str, Any]] = {}
    for name, data, status, tokens, attempts in [
        ("sentiment", {"text": "good"}, 200, (123, 45), 1),
        ("sentiment", {"text": "bad"}, 502, (0, 0), 1),
        ("echo", {"text": "hi"}, 200, (5, 3), 1),
        ("echo", {"wrong": 1}, 422, (0, 0), 0),
    ]:
        response = consumer.post(f"/v1/prompts/{name}", json=data)
        assert response.status_code == status, response.text
        expected[response.headers["x-request-id"]] = {
            "prompt_name": name,
            "prompt_version": 1,
            "status": status,
            "key_id": key["id"],
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "attempts": attempts,
            "deployment": "default#0" if attempts else None,
        }

    calls = wait_for_calls(server.admin, lambda found: len(found) >= len(expected))
    by_request = {call["request_id"]: call for call in calls}
    assert set(by_request) == set(expected)
    for request_id, want in expected.items():
        call = by_request[request_id]
        assert {k: call[k] for k in want} == want, call
        assert isinstance(call["latency_ms"], int | float) and call["latency_ms"] >= 0
    assert by_request[next(iter(expected))]["model"] == "gpt-4o-mini-2024-07-18"
    failed = [c for c in calls if c["status"] == 502]
    assert failed[0]["error_code"] == "upstream_error"

    echo_calls = server.admin.get("/admin/v1/calls", params={"prompt": "echo"}).json()["calls"]
    assert sorted(c["status"] for c in echo_calls) == [200, 422]
    assert {c["prompt_name"] for c in echo_calls} == {"echo"}
    bad_gateway = server.admin.get("/admin/v1/calls", params={"status": 502}).json()["calls"]
    assert [(c["prompt_name"], c["status"]) for c in bad_gateway] == [("sentiment", 502)]
    limited = server.admin.get("/admin/v1/calls", params={"limit": 1}).json()["calls"]
    assert len(limited) == 1


def test_call_listing_rejects_bad_query_parameters(server, fake):
    empty = server.admin.get("/admin/v1/calls")
    assert empty.status_code == 200, empty.text
    assert empty.json()["calls"] == []
    for params in ({"limit": "abc"}, {"limit": "0"}, {"status": "abc"}):
        body = assert_problem(
            server.admin.get("/admin/v1/calls", params=params), 400, "malformed_request"
        )
        assert body["errors"][0]["path"] == f"?{next(iter(params))}"


def test_huge_pinned_version_does_not_stop_call_recording(server, client, fake, database_url):
    register(server, ECHO)
    assert_problem(
        client.post(f"/v1/prompts/echo/versions/{10**20}", json={"text": "a"}), 404, "not_found"
    )
    assert_problem(client.post("/v1/prompts/a%00b", json={"text": "a"}), 404, "not_found")
    ok = client.post("/v1/prompts/echo", json={"text": "a"})
    assert ok.status_code == 200, ok.text
    request_id = ok.headers["x-request-id"]
    # A healthy recorder flushes every 0.05 s here.
    calls = wait_for_calls(
        server.admin, lambda found: any(c["request_id"] == request_id for c in found), timeout=1.5
    )
    assert request_id in {c["request_id"] for c in calls}


# -- catalog ------------------------------------------------------------------------------


def test_catalog_lists_and_describes_prompts(server, client, fake):
    examples = [{"input": {"text": "great"}, "output": {"label": "positive", "score": 0.9}}]
    register(server, {**SENTIMENT, "examples": examples})
    second = copy.deepcopy(SENTIMENT)
    second["messages"][0]["content"] = "Second version."
    second["examples"] = examples
    register(server, second)
    register(server, ECHO)

    listing = client.get("/v1/prompts")
    assert listing.status_code == 200, listing.text
    prompts = {p["name"]: p for p in listing.json()["prompts"]}
    assert set(prompts) == {"sentiment", "echo"}
    assert prompts["sentiment"]["version"] == 2
    assert prompts["echo"]["description"] == "Says the text back."

    detail = client.get("/v1/prompts/sentiment")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["input_schema"] == SENTIMENT["input_schema"]
    assert body["output_schema"] == SENTIMENT["output_schema"]
    assert body["examples"] == examples
    assert [v["version"] for v in body["versions"]] == [1, 2]

    assert_problem(server.client.get("/v1/prompts"), 401, "unauthorized")
    assert_problem(server.client.get("/v1/prompts/sentiment"), 401, "unauthorized")


# -- anonymous mode and the mock provider -------------------------------------------------


def test_anonymous_mode_lets_calls_through(make_server, fake):
    server = make_server(allow_anonymous=True)
    register(server, ECHO)
    response = server.client.post("/v1/prompts/echo", json={"text": "a"})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "ok"
    assert server.client.get("/v1/prompts").status_code == 200
    assert len(fake.requests) == 1


def test_mock_provider_is_the_default_without_a_real_one(make_server, fake, caplog):
    caplog.set_level(logging.WARNING)
    server = make_server(openai_base_url=None, openai_api_key=None)
    assert "no model provider is configured" in caplog.text
    models = {m["alias"]: m for m in server.admin.get("/admin/v1/models").json()["models"]}
    assert models["default"]["provider"] == "mock"

    examples = [
        {"input": {"text": "great"}, "output": {"label": "positive", "score": 0.9}},
        {"input": {"text": "awful"}, "output": {"label": "negative", "score": 0.1}},
    ]
    register(server, {**SENTIMENT, "examples": examples})
    schema_only = {**SENTIMENT, "name": "sentiment-plain"}
    register(server, schema_only)

    with server.consumer() as consumer:
        matched = consumer.post("/v1/prompts/sentiment", json={"text": "awful"})
        assert matched.status_code == 200, matched.text
        assert matched.json()["output"] == {"label": "negative", "score": 0.1}
        assert matched.json()["mock"] is True
        other = consumer.post("/v1/prompts/sentiment", json={"text": "something else"})
        assert other.json()["output"] == {"label": "positive", "score": 0.9}
        assert other.json()["mock"] is True

        sampled = consumer.post("/v1/prompts/sentiment-plain", json={"text": "x"})
        assert sampled.status_code == 200, sampled.text
        assert sampled.json()["mock"] is True
        output = sampled.json()["output"]
        assert isinstance(output, dict)
        assert list(Draft202012Validator(SENTIMENT["output_schema"]).iter_errors(output)) == []
    assert fake.requests == []


def test_mock_answers_a_string_example_of_a_json_output_schema(make_server, fake):
    """Found by schemathesis: an example output that is a JSON string was answered raw, so a
    prompt whose output schema allows strings got a 502 from its own example."""
    server = make_server(openai_base_url=None, openai_api_key=None)
    quoted = {
        **ECHO,
        "name": "quoted",
        "output_schema": {"type": "string", "maxLength": 20},
        "examples": [{"input": {"text": "a"}, "output": "0 and more"}],
    }
    register(server, quoted)
    with server.consumer() as consumer:
        answer = consumer.post("/v1/prompts/quoted", json={"text": "a"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == "0 and more"
