"""Edge values in dates, numbers and text are clear 4xx answers naming the parameter, never a
500: dates at the ends of the calendar, integers beyond what the database holds, and NUL (which
PostgreSQL text cannot hold). Run on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ECHO
from tests.fakes import Behaviour
from tests.helpers import assert_problem, error_paths, settle
from tests.hostile import while_responsive

BIG = str(2**63)


@pytest.fixture
def echo(server, fake):
    response = server.admin.post("/admin/v1/prompts", json=ECHO)
    assert response.status_code == 201, response.text
    return server


@pytest.mark.parametrize(
    "sunset",
    [
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "0001-01-01T00:00:00Z",  # before the deprecation
        "2031-06-30T23:59:59",  # no time zone
        "2031-06-30T23:59:59Z" + " " * 50,
    ],
)
def test_deprecate_refuses_sunsets_it_cannot_use(echo, sunset):
    response = while_responsive(
        echo,
        lambda: echo.admin.post(
            "/admin/v1/prompts/echo/versions/1/deprecate", json={"sunset": sunset}
        ),
    )
    body = assert_problem(response, 422)
    assert error_paths(body) == {"/sunset"}
    assert echo.admin.get("/admin/v1/prompts/echo/versions/1").json()["state"] == "published"


def test_a_sunset_at_the_end_of_the_calendar_is_served(echo, client):
    response = echo.admin.post(
        "/admin/v1/prompts/echo/versions/1/deprecate",
        json={"sunset": "9999-12-31T23:59:59.999999Z"},
    )
    assert response.status_code == 200, response.text
    called = client.post("/v1/prompts/echo", json={"text": "hi"})
    assert called.status_code == 200, called.text
    assert "9999" in called.headers["sunset"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"since": "0001-01-01T00:00:00Z"}, 200),
        ({"until": "9999-12-31T23:59:59.999999Z"}, 200),
        ({"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"}, 200),
        ({"since": "0001-01-01T00:00:00+14:00"}, 400),
        ({"until": "9999-12-31T23:59:59-14:00"}, 400),
        ({"since": "0000-12-31T23:59:59Z"}, 400),
        ({"until": "10000-01-01T00:00:00Z"}, 400),
        ({"since": "2026-01-01"}, 400),
        ({"until": "9" * 5000}, 400),
    ],
)
def test_audit_dates_at_the_ends_of_the_calendar(echo, query, status):
    response = echo.admin.get("/admin/v1/audit", params=query)
    settle(response)
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json()["records"]
        return
    body = assert_problem(response, 400, "malformed_request")
    assert error_paths(body) == {f"?{next(iter(query))}"}


@pytest.mark.parametrize(
    ("path", "query", "parameter"),
    [
        ("/admin/v1/audit", {"limit": BIG}, "limit"),
        ("/admin/v1/audit", {"limit": "9" * 5000}, "limit"),
        ("/admin/v1/audit", {"cursor": BIG}, "cursor"),
        ("/admin/v1/audit", {"cursor": "-1"}, "cursor"),
        ("/admin/v1/audit", {"actor": "admin\x00"}, "actor"),
        ("/admin/v1/audit", {"action": "a\nb"}, "action"),
        ("/admin/v1/audit", {"target": "x" * 201}, "target"),
        ("/admin/v1/audit", {"prompt": "echo\x00"}, "prompt"),
        ("/admin/v1/calls", {"limit": "1e3"}, "limit"),
        ("/admin/v1/calls", {"status": BIG}, "status"),
        ("/admin/v1/calls", {"status": "\uff12\uff10\uff10"}, "status"),
        ("/admin/v1/calls", {"prompt": "echo\x00"}, "prompt"),
        ("/admin/v1/calls", {"key_id": "\x00"}, "key_id"),
        ("/admin/v1/prompts/echo/diff", {"from": BIG, "to": "1"}, "from"),
        ("/admin/v1/prompts/echo/diff", {"from": "1", "to": "9" * 5000}, "to"),
    ],
)
def test_query_parameters_are_range_checked(echo, path, query, parameter):
    response = echo.admin.get(path, params=query)
    body = assert_problem(response, 400, "malformed_request")
    assert error_paths(body) == {f"?{parameter}"}


def test_key_name_with_nul_is_refused(server, fake):
    response = server.admin.post("/admin/v1/keys", json={"name": "bad\x00name"})
    body = assert_problem(response, 422)
    assert error_paths(body) == {"/name"}
    scoped = server.admin.post("/admin/v1/keys", json={"name": "ok", "scopes": ["echo\x00"]})
    assert error_paths(assert_problem(scoped, 422)) == {"/scopes"}
    assert server.admin.get("/admin/v1/keys").json()["keys"] == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_key_id_with_nul_in_the_path_is_not_found(server, fake, method):
    response = server.admin.request(method, "/admin/v1/keys/key_%00")
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("action", ["publish", "deprecate", "retire"])
@pytest.mark.parametrize("number", [BIG, str(2**31), "9" * 40, "0"])
def test_version_beyond_the_largest_in_a_transition_path_is_not_found(echo, action, number):
    response = echo.admin.post(f"/admin/v1/prompts/echo/versions/{number}/{action}")
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        f"/admin/v1/prompts/echo/versions/{BIG}",
        f"/admin/v1/prompts/echo/versions/{'9' * 5000}",
        f"/v1/prompts/echo/versions/{BIG}",
        f"/prompts/echo?version={'9' * 5000}",
        f"/prompts/echo?version={BIG}",
    ],
)
def test_version_beyond_the_largest_anywhere_is_not_found(echo, client, path):
    if path.startswith("/v1/"):
        response = client.post(path, json={"text": "hi"})
    else:
        response = echo.admin.get(path)
    settle(response)
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/admin/v1/prompts/echo%00/versions/1/publish"),
        ("POST", "/admin/v1/prompts/echo%00/versions/1/retire"),
        ("PUT", "/admin/v1/prompts/echo%00/labels/staging"),
        ("DELETE", "/admin/v1/prompts/echo%00/labels/staging"),
        ("GET", "/admin/v1/prompts/echo%00"),
        ("POST", "/admin/v1/prompts/echo%00/versions"),
    ],
)
def test_prompt_name_with_nul_in_the_path_is_not_found(echo, method, path):
    response = echo.admin.request(method, path, json={"version": 1} if "labels" in path else ECHO)
    assert_problem(response, 404, "not_found")


def test_a_nul_in_the_upstream_model_name_does_not_block_call_records(server, fake, client):
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    fake.then(Behaviour(model="gpt\x00evil"), Behaviour())
    for _ in range(2):
        assert client.post("/v1/prompts/echo", json={"text": "hi"}).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        calls = server.admin.get("/admin/v1/calls", params={"prompt": "echo"}).json()["calls"]
        if len(calls) == 2:
            break
        time.sleep(0.05)
    assert len(calls) == 2, calls
    assert {c["status"] for c in calls} == {200}
    assert server.gateway.recorder.pending == 0
