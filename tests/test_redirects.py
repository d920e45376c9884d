"""Upstream redirects are never followed: a provider answering 3xx gets a 502
`upstream_redirect`, and the address it points at receives nothing, for plain and streamed
calls, whichever adapter made the request."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import ECHO
from tests.fake_providers import ProviderBehaviour
from tests.fakes import Behaviour
from tests.helpers import assert_problem, eventually, sqlite_only
from tests.test_adapters_http import assert_log_clean, providers_server  # noqa: F401
from tests.test_stream import stream

SECRET_QUERY = "token=sk-redirect-secret"


def redirect_to(target, status: int = 307) -> Behaviour:
    location = f"{target.base_url}/chat/completions?{SECRET_QUERY}"
    return Behaviour(status=status, headers={"Location": location}, body=b"")


@sqlite_only
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_redirect_is_a_502_and_never_followed(server, fake, fake_b, caplog, status, streamed):
    caplog.set_level(logging.DEBUG)
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    fake.default = redirect_to(fake_b, status)
    with server.consumer() as consumer:
        if streamed:
            response, events = stream(consumer, "/v1/prompts/echo", {"text": "hi"})
            assert events == []
        else:
            response = consumer.post("/v1/prompts/echo", json={"text": "hi"})
    body = assert_problem(response, 502, "upstream_redirect")
    assert str(status) in body["detail"]
    assert "Location" not in response.headers
    assert SECRET_QUERY not in response.text
    assert str(fake_b.port) not in response.text
    assert len(fake.requests) == 1  # not retried either
    assert fake_b.requests == []
    assert SECRET_QUERY not in caplog.text
    eventually(lambda: bool(server.admin.get("/admin/v1/calls").json()["calls"]))
    rows = server.admin.get("/admin/v1/calls").json()["calls"]
    assert rows[0]["status"] == 502 and rows[0]["error_code"] == "upstream_redirect"


@sqlite_only
@pytest.mark.parametrize("alias", ["claude", "gemini", "azure"])
@pytest.mark.parametrize("streamed", [False, True])
def test_no_adapter_follows_a_redirect(providers_server, fake_b, caplog, alias, streamed):  # noqa: F811
    server, upstreams = providers_server
    location = f"{fake_b.base_url}/chat/completions?{SECRET_QUERY}"
    upstreams[alias].default = ProviderBehaviour(status=307, headers={"Location": location})
    path = f"/v1/prompts/sentiment-{alias}"
    with server.consumer() as consumer:
        if streamed:
            response, _ = stream(consumer, path, {"text": "a"})
        else:
            response = consumer.post(path, json={"text": "a"})
    assert_problem(response, 502, "upstream_redirect")
    assert fake_b.requests == []
    assert SECRET_QUERY not in response.text
    assert_log_clean(caplog)


@sqlite_only
def test_the_problem_type_is_documented(server):
    response = server.client.get("/problems/upstream_redirect")
    assert response.status_code == 200
    assert "never followed" in response.text
