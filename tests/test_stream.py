"""Streamed calls (server-sent events), through HTTP against a live promptapi and the fake OpenAI
upstream: deltas as they arrive, the final envelope or error event, plain problems before the
first byte, cut and slow upstreams, callers that hang up, heartbeats, the mock provider, and
the call records."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ECHO, SENTIMENT, UPSTREAM_KEY
from tests.fakes import Behaviour
from tests.helpers import assert_problem, error_paths, eventually
from tests.test_invoke import KEY_ENV, assert_log_clean, register, wait_for_calls

SSE = {"Accept": "text/event-stream"}
ANSWER = ["Grüße ", "aus ", "Köln 🌍", " — ", "日本語"]
POSITIVE = ['{"label": ', '"positive", ', '"score": 0.9}']

Event = tuple[str, Any]


# -- helpers ------------------------------------------------------------------------------


def parse_event(block: bytes) -> Event:
    """One event. Its bytes must be whole UTF-8 on their own: never a character split between
    events."""
    text = block.decode("utf-8")
    if text.startswith(":"):
        return "comment", text[1:].strip()
    lines = text.split("\n")
    assert len(lines) == 2, text
    fields = dict(line.split(": ", 1) for line in lines)
    assert set(fields) == {"event", "data"}, text
    return fields["event"], json.loads(fields["data"])


def iter_events(response: httpx.Response) -> Iterator[Event]:
    buffer = b""
    for piece in response.iter_raw():
        buffer += piece
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            yield parse_event(block)
    assert buffer == b"", f"unterminated event {buffer!r}"


def stream(
    client: httpx.Client,
    path: str,
    body: Any,
    *,
    headers: dict[str, str] | None = SSE,
    params: dict[str, str] | None = None,
) -> tuple[httpx.Response, list[Event]]:
    """POST and read the whole answer: the events of a stream, or none for a plain answer."""
    with client.stream("POST", path, json=body, headers=headers, params=params) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response, list(iter_events(response))
        response.read()
        return response, []


def texts(events: list[Event]) -> list[str]:
    return [data["text"] for name, data in events if name == "delta"]


def models_file(tmp_path: Path, base_url: str, **spec: Any) -> Path:
    """The default alias at `base_url`, retrying at once (the router's backoff is not under
    test here)."""
    alias = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "backoff": {"base": 0.001, "max": 0.005},
        **spec,
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"default": alias}}), encoding="utf-8")
    return path


@pytest.fixture
def configured(make_server, fake, tmp_path, monkeypatch):
    """A server whose default alias has these settings (see `models_file`)."""
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)

    def make(**spec: Any) -> Any:
        return make_server(models_file=models_file(tmp_path, fake.base_url, **spec))

    return make


@pytest.fixture
def slow_server(configured):
    """A server whose upstream deadline is 0.6 s, without retries."""
    return configured(timeouts={"deadline": 0.6}, retries=0)


def raw_request(url: str, path: str, key: str, body: dict[str, Any]) -> socket.socket:
    """Send a streamed call on a plain socket, so the test decides when the connection drops."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Accept: text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        piece = sock.recv(4096)
        assert piece, f"connection closed before {marker!r}: {seen!r}"
        seen += piece
    return seen


# -- the happy path -----------------------------------------------------------------------


def test_deltas_arrive_in_order_and_end_with_the_envelope(server, client, fake):
    register(server, ECHO)
    fake.default = Behaviour(stream_chunks=ANSWER, usage=(9, 4))
    response, events = stream(client, "/v1/prompts/echo", {"text": "hi"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers
    assert texts(events) == ANSWER
    assert [name for name, _ in events] == ["delta"] * len(ANSWER) + ["done"]
    done = events[-1][1]
    assert done["output"] == "".join(ANSWER)
    assert done["prompt"] == {"name": "echo", "version": 1}
    assert done["model"] == "gpt-4o-mini-2024-07-18"
    assert done["usage"] == {"input_tokens": 9, "output_tokens": 4, "cost_usd": None}
    assert done["id"].startswith("call_")
    assert done["cached"] is False and done["mock"] is False
    assert isinstance(done["latency_ms"], float) and done["latency_ms"] > 0
    # The upstream was asked for a stream, with usage in its last chunk.
    body = fake.requests[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "Repeat: hi"}]


def test_query_parameter_accept_header_and_pinned_versions(server, client, fake):
    register(server, ECHO)
    fake.default = Behaviour(stream_chunks=["a", "b"])

    _, by_query = stream(
        client, "/v1/prompts/echo", {"text": "x"}, headers=None, params={"stream": "true"}
    )
    assert texts(by_query) == ["a", "b"]
    _, pinned = stream(client, "/v1/prompts/echo/versions/1", {"text": "x"}, params={"stream": "1"})
    assert pinned[-1][0] == "done" and pinned[-1][1]["prompt"]["version"] == 1
    _, listed = stream(
        client,
        "/v1/prompts/echo",
        {"text": "x"},
        headers={"Accept": "application/json;q=0.5, text/event-stream"},
    )
    assert texts(listed) == ["a", "b"]

    # Not streamed: ?stream=false wins over Accept, and q=0 refuses the event stream.
    for headers, params in [
        (SSE, {"stream": "false"}),
        ({"Accept": "text/event-stream;q=0"}, None),
    ]:
        plain, events = stream(
            client, "/v1/prompts/echo", {"text": "x"}, headers=headers, params=params
        )
        assert plain.status_code == 200 and events == []
        assert plain.headers["content-type"] == "application/json"
        assert plain.json()["output"] == "ok"  # the fake's non-streamed answer

    bad, _ = stream(client, "/v1/prompts/echo", {"text": "x"}, params={"stream": "maybe"})
    assert error_paths(assert_problem(bad, 400, "malformed_request")) == {"?stream"}


def test_labels_and_lifecycle_apply_to_streamed_calls(server, client, fake):
    register(server, ECHO)
    register(server, {**ECHO, "messages": [{"role": "user", "content": "Two: {{ text }}"}]})
    fake.default = Behaviour(stream_chunks=["a"])
    sunset = {"sunset": "2031-06-30T23:59:59Z", "successor": 2}
    deprecated = server.admin.post("/admin/v1/prompts/echo/versions/1/deprecate", json=sunset)
    assert deprecated.status_code == 200, deprecated.text
    labelled = server.admin.put("/admin/v1/prompts/echo/labels/old", json={"version": 1})
    assert labelled.status_code in (200, 201), labelled.text

    # The deprecation headers go out with the stream's own, before the first delta.
    response, events = stream(client, "/v1/prompts/echo", {"text": "x"}, params={"label": "old"})
    assert events[-1][1]["prompt"] == {"name": "echo", "version": 1}
    assert response.headers["deprecation"].startswith("@")
    assert response.headers["sunset"] == "Mon, 30 Jun 2031 23:59:59 GMT"
    assert response.headers["link"] == '</v1/prompts/echo/versions/2>; rel="successor-version"'
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    current, events = stream(client, "/v1/prompts/echo", {"text": "x"})
    assert events[-1][1]["prompt"]["version"] == 2
    assert "deprecation" not in current.headers

    unlabelled = server.admin.delete("/admin/v1/prompts/echo/labels/old")
    assert unlabelled.status_code in (200, 204), unlabelled.text
    retired = server.admin.post("/admin/v1/prompts/echo/versions/1/retire", json={})
    assert retired.status_code == 200, retired.text
    gone, events = stream(client, "/v1/prompts/echo/versions/1", {"text": "x"})
    assert events == []
    assert_problem(gone, 410, "version_retired")
    bad, _ = stream(client, "/v1/prompts/echo", {"text": "x"}, params={"label": ""})
    assert error_paths(assert_problem(bad, 400, "malformed_request")) == {"?label"}


def test_done_event_has_the_validated_output_and_its_cost(make_server, fake, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    prices = {"input": 0.15, "output": 0.6}
    server = make_server(models_file=models_file(tmp_path, fake.base_url, prices=prices))
    register(server, SENTIMENT)
    fake.default = Behaviour(stream_chunks=POSITIVE, usage=(1000, 200))
    with server.consumer() as consumer:
        _, events = stream(consumer, "/v1/prompts/sentiment", {"text": "great"})
    assert "".join(texts(events)) == "".join(POSITIVE)
    name, done = events[-1]
    assert name == "done"
    assert done["output"] == {"label": "positive", "score": 0.9}
    assert done["usage"] == {
        "input_tokens": 1000,
        "output_tokens": 200,
        "cost_usd": pytest.approx((1000 * 0.15 + 200 * 0.6) / 1_000_000),
    }


def test_first_delta_reaches_the_caller_before_the_upstream_has_finished(server, client, fake):
    register(server, ECHO)
    fake.default = Behaviour(
        stream_chunks=["one ", "two ", "three ", "four ", "five"], chunk_delay=0.3
    )
    started = time.monotonic()
    with client.stream("POST", "/v1/prompts/echo", json={"text": "x"}, headers=SSE) as response:
        events = iter_events(response)
        first = next(events)
        first_at = time.monotonic()
        upstream = dict(fake.streams[0])
        rest = list(events)
    assert first == ("delta", {"text": "one "})
    # Ordering: when the first delta arrived, the upstream was still writing its answer.
    assert upstream["finished"] is None and upstream["sent"] < 5
    # Timing, with generous bounds: the upstream needs at least 1.5 s in all.
    assert first_at - started < 1.4
    assert first_at - upstream["first_content"] < 0.6
    assert texts(rest) == ["two ", "three ", "four ", "five"]
    eventually(lambda: fake.streams[0]["outcome"] == "complete", what="the upstream finishing")


def test_heartbeat_comments_fill_long_silences(make_server, fake):
    server = make_server(stream_heartbeat=0.1)
    register(server, ECHO)
    fake.default = Behaviour(stream_chunks=["a", "b"], chunk_delay=0.35)
    with server.consumer() as consumer:
        _, events = stream(consumer, "/v1/prompts/echo", {"text": "x"})
    names = [name for name, _ in events]
    assert ("comment", "ping") in events
    # Pings come only after the first byte, between deltas: the answer is unchanged.
    assert names[0] == "delta" and names[-1] == "done"
    assert texts(events) == ["a", "b"]

    quiet = make_server(stream_heartbeat=0)
    register(quiet, ECHO)
    with quiet.consumer() as consumer:
        _, events = stream(consumer, "/v1/prompts/echo", {"text": "x"})
    assert [name for name, _ in events] == ["delta", "delta", "done"]


def test_mock_provider_streams_too(make_server, fake):
    server = make_server(openai_base_url=None, openai_api_key=None)
    examples = [{"input": {"text": "awful"}, "output": {"label": "negative", "score": 0.1}}]
    register(server, {**SENTIMENT, "examples": examples})
    register(server, ECHO)
    with server.consumer() as consumer:
        _, events = stream(consumer, "/v1/prompts/sentiment", {"text": "awful"})
        _, echoed = stream(consumer, "/v1/prompts/echo", {"text": "a fairly long text to split"})
    assert json.loads("".join(texts(events))) == {"label": "negative", "score": 0.1}
    assert events[-1] == ("done", events[-1][1])
    assert events[-1][1]["output"] == {"label": "negative", "score": 0.1}
    assert events[-1][1]["mock"] is True
    assert len(texts(echoed)) > 1
    assert "".join(texts(echoed)) == echoed[-1][1]["output"]
    assert fake.requests == []


# -- failures -----------------------------------------------------------------------------


def test_output_failing_its_schema_ends_with_an_error_event(server, client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    register(server, SENTIMENT)
    fake.default = Behaviour(stream_chunks=['{"label": "great", ', '"score": 2}'])
    response, events = stream(client, "/v1/prompts/sentiment", {"text": "a"})
    assert response.status_code == 200
    assert texts(events) == ['{"label": "great", ', '"score": 2}']
    name, error = events[-1]
    assert name == "error"
    assert error["status"] == 502
    assert error["code"] == "output_invalid" and error["type"] == "/problems/output_invalid"
    assert error["title"] and error["detail"]
    assert error_paths(error) == {"/label", "/score"}
    assert error["instance"] == "/v1/prompts/sentiment"
    assert error["request_id"] == response.headers["x-request-id"]
    assert_log_clean(caplog)


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        (Behaviour(status=500), 502, "upstream_error"),
        (Behaviour(status=401), 502, "provider_auth"),
        (Behaviour(status=429, headers={"Retry-After": "7"}), 503, "provider_unavailable"),
        (Behaviour(cut_after=0), 502, "upstream_error"),
    ],
)
def test_upstream_refusals_before_the_first_token_are_plain_problems(
    configured, fake, caplog, behaviour, status, code
):
    caplog.set_level(logging.DEBUG)
    server = configured(retries=0)
    register(server, SENTIMENT)
    fake.default = behaviour
    with server.consumer() as consumer:
        response, events = stream(consumer, "/v1/prompts/sentiment", {"text": "a"})
    assert events == []
    assert_problem(response, status, code)
    if status == 503:
        assert response.headers["retry-after"] == "7"
    assert_log_clean(caplog)


def test_router_retries_before_the_first_delta_but_never_after(configured, fake):
    server = configured(retries=2)
    register(server, ECHO)
    fake.then(Behaviour(status=500), Behaviour(status=503), Behaviour(stream_chunks=["a", "b"]))
    with server.consumer() as consumer:
        _, events = stream(consumer, "/v1/prompts/echo", {"text": "x"})
        assert texts(events) == ["a", "b"]
        done = events[-1][1]
        assert (done["attempts"], done["deployment"]) == (3, "default#0")
        assert len(fake.requests) == 3

        # Once a delta is out, a failure is the stream's end: no second attempt.
        fake.then(Behaviour(stream_chunks=["a", "b", "c"], cut_after=1), Behaviour())
        _, events = stream(consumer, "/v1/prompts/echo", {"text": "x"})
    assert texts(events) == ["a"]
    assert events[-1][0] == "error" and events[-1][1]["code"] == "upstream_error"
    assert len(fake.requests) == 4
    calls = wait_for_calls(server.admin, lambda found: len(found) >= 2)
    assert sorted((c["status"], c["attempts"]) for c in calls) == [(200, 3), (502, 1)]


def test_caller_mistakes_are_plain_problems(server, client, fake):
    register(server, SENTIMENT)
    for caller, path, body, status, code in [
        (server.client, "/v1/prompts/sentiment", {"text": "a"}, 401, "unauthorized"),
        (client, "/v1/prompts/nope", {"text": "a"}, 404, "not_found"),
        (client, "/v1/prompts/sentiment/versions/9", {"text": "a"}, 404, "not_found"),
        (client, "/v1/prompts/sentiment", {"text": ""}, 422, "input_invalid"),
    ]:
        response, events = stream(caller, path, body)
        assert events == []
        assert_problem(response, status, code)
    assert fake.requests == []


def test_upstream_silent_past_the_deadline_is_504_before_the_first_byte(slow_server, fake):
    register(slow_server, ECHO)
    # Headers and the role chunk come at once; then nothing (chunk_delay), or nothing at all.
    fake.then(Behaviour(chunk_delay=3), Behaviour(delay=3))
    with slow_server.consumer() as consumer:
        for _ in range(2):
            started = time.monotonic()
            response, events = stream(consumer, "/v1/prompts/echo", {"text": "a"})
            assert time.monotonic() - started < 2.5
            assert events == []
            assert_problem(response, 504, "deadline_exceeded")


def test_deadline_passing_mid_stream_ends_with_an_error_event(slow_server, fake):
    register(slow_server, ECHO)
    fake.default = Behaviour(stream_chunks=list("abcdefgh"), chunk_delay=0.2)
    with slow_server.consumer() as consumer:
        started = time.monotonic()
        _, events = stream(consumer, "/v1/prompts/echo", {"text": "a"})
    assert time.monotonic() - started < 2.5
    assert 1 <= len(texts(events)) < 8
    name, error = events[-1]
    assert (name, error["status"], error["code"]) == ("error", 504, "deadline_exceeded")


@pytest.mark.parametrize("cleanly", [False, True], ids=["dropped", "ended-without-done"])
def test_stream_cut_midway_ends_with_an_error_event(server, client, fake, cleanly):
    register(server, ECHO)
    fake.default = Behaviour(stream_chunks=["a", "b", "c", "d"], cut_after=2, cut_cleanly=cleanly)
    started = time.monotonic()
    response, events = stream(client, "/v1/prompts/echo", {"text": "a"})
    assert time.monotonic() - started < 3
    assert response.status_code == 200
    assert texts(events) == ["a", "b"]
    name, error = events[-1]
    assert (name, error["status"], error["code"]) == ("error", 502, "upstream_error")
    assert error["request_id"] == response.headers["x-request-id"]


# -- callers that hang up, and the call records -------------------------------------------


@pytest.mark.parametrize("when", ["after-first-delta", "before-first-byte"])
def test_caller_disconnect_cancels_the_upstream_and_records_499(server, fake, when):
    register(server, ECHO)
    chunks = [f"piece {i} " for i in range(40)]
    delay = 0.1 if when == "after-first-delta" else 0.5
    fake.default = Behaviour(stream_chunks=chunks, chunk_delay=delay)
    with server.consumer() as consumer:
        key = consumer.headers["authorization"].removeprefix("Bearer ")
    sock = raw_request(server.url, "/v1/prompts/echo", key, {"text": "x"})
    if when == "after-first-delta":
        head = read_until(sock, b"event: delta")
        assert head.startswith(b"HTTP/1.1 200")
    else:
        eventually(lambda: len(fake.streams) == 1, what="the upstream stream started")
        time.sleep(0.1)
    request_id = None
    if when == "after-first-delta":
        request_id = head.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    sock.close()
    hung_up = time.monotonic()

    eventually(
        lambda: fake.streams[0]["outcome"] == "client_gone",
        timeout=delay + 2,
        what="the upstream seeing the connection drop",
    )
    upstream = fake.streams[0]
    assert upstream["finished"] - hung_up < delay + 1
    assert upstream["sent"] < len(chunks)
    calls = wait_for_calls(server.admin, lambda found: len(found) >= 1, prompt="echo")
    assert len(calls) == 1
    call = calls[0]
    assert (call["status"], call["error_code"]) == (499, "client_closed")
    if request_id is not None:
        assert call["request_id"] == request_id


def test_streamed_calls_are_recorded(server, fake):
    key = server.admin.post("/admin/v1/keys", json={"name": "recorded"}).json()
    consumer = httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key['key']}"}
    )
    register(server, SENTIMENT)
    fake.then(
        Behaviour(stream_chunks=POSITIVE, usage=(12, 5)),
        Behaviour(stream_chunks=["not json"], usage=(3, 2)),
        Behaviour(stream_chunks=["{", "}"], cut_after=1),
    )
    expected: dict[str, tuple[int, str | None, int, int]] = {}
    for body, want in [
        ({"text": "good"}, (200, None, 12, 5)),
        ({"text": "odd"}, (502, "output_invalid", 3, 2)),
        ({"text": "cut"}, (502, "upstream_error", 0, 0)),
        ({"text": ""}, (422, "input_invalid", 0, 0)),
    ]:
        response, _ = stream(consumer, "/v1/prompts/sentiment", body)
        expected[response.headers["x-request-id"]] = want
    consumer.close()

    calls = wait_for_calls(server.admin, lambda found: len(found) >= len(expected))
    by_request = {call["request_id"]: call for call in calls}
    assert set(by_request) == set(expected)
    for request_id, (status, code, tokens_in, tokens_out) in expected.items():
        call = by_request[request_id]
        assert (call["status"], call["error_code"]) == (status, code), call
        assert (call["input_tokens"], call["output_tokens"]) == (tokens_in, tokens_out), call
        assert call["key_id"] == key["id"]
        assert call["prompt_name"] == "sentiment" and call["prompt_version"] == 1
    ok = next(c for c in calls if c["status"] == 200)
    assert ok["model"] == "gpt-4o-mini-2024-07-18"
    assert ok["latency_ms"] > 0
