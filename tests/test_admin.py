"""End-to-end tests of the admin API (/admin/v1/) and the system endpoints, through HTTP
against a live promptapi."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import ADMIN_TOKEN, ECHO, SENTIMENT, UPSTREAM_KEY
from tests.helpers import assert_problem, error_paths


def errors_at(body: dict, path: str) -> list[str]:
    return [error["message"] for error in body["errors"] if error["path"] == path]


def sentiment(**changes: Any) -> dict[str, Any]:
    definition = copy.deepcopy(SENTIMENT)
    definition.update(changes)
    return definition


def refused(server: Any, definition: Any) -> dict:
    return assert_problem(
        server.admin.post("/admin/v1/prompts", json=definition), 422, "definition_invalid"
    )


# -- admin credentials --------------------------------------------------------------------


def test_admin_routes_need_the_admin_token(server, fake):
    assert server.admin.post("/admin/v1/prompts", json=SENTIMENT).status_code == 201
    created = server.admin.post("/admin/v1/keys", json={"name": "consumer"})
    assert created.status_code == 201
    consumer_key, key_id = created.json()["key"], created.json()["id"]
    # A prompt file that an unauthenticated sync would pick up.
    prompt_file = Path(server.settings.prompts_dir) / "synced" / "1.yaml"
    prompt_file.parent.mkdir(parents=True)
    prompt_file.write_text(yaml.safe_dump({**ECHO, "name": "synced", "version": 1}))
    second = {k: v for k, v in sentiment(description="changed").items() if k != "name"}

    routes: list[tuple[str, str, Any]] = [
        ("POST", "/admin/v1/prompts", {**ECHO, "name": "intruder"}),
        ("GET", "/admin/v1/prompts", None),
        ("GET", "/admin/v1/prompts/sentiment", None),
        ("POST", "/admin/v1/prompts/sentiment/versions", second),
        ("GET", "/admin/v1/prompts/sentiment/versions/1", None),
        ("POST", "/admin/v1/keys", {"name": "intruder"}),
        ("GET", "/admin/v1/keys", None),
        ("GET", f"/admin/v1/keys/{key_id}", None),
        ("DELETE", f"/admin/v1/keys/{key_id}", None),
        ("GET", "/admin/v1/calls", None),
        ("GET", "/admin/v1/models", None),
        ("POST", "/admin/v1/sync", None),
        ("POST", "/admin/v1/prompts/sentiment/versions/1/publish", None),
        ("POST", "/admin/v1/prompts/sentiment/versions/1/deprecate", None),
        ("POST", "/admin/v1/prompts/sentiment/versions/1/retire", None),
        ("PUT", "/admin/v1/prompts/sentiment/labels/production", {"version": 1}),
        ("DELETE", "/admin/v1/prompts/sentiment/labels/production", None),
        ("GET", "/admin/v1/prompts/sentiment/diff?from=1&to=1", None),
        ("GET", "/admin/v1/audit", None),
    ]
    credentials: list[tuple[dict[str, str], int]] = [
        ({}, 401),
        ({"Authorization": "Bearer wrong-admin-token-0123456789abcdef"}, 401),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, 401),
        ({"Authorization": f"Bearer {consumer_key}"}, 403),
    ]
    for headers, status in credentials:
        for method, path, body in routes:
            response = server.client.request(method, path, json=body, headers=headers)
            problem = assert_problem(response, status)
            assert problem["code"] == ("unauthorized" if status == 401 else "forbidden"), (
                method,
                path,
                headers,
            )
            if status == 401:
                assert response.headers["www-authenticate"].lower().startswith("bearer")

    # Nothing was changed by the refused requests.
    prompts = server.admin.get("/admin/v1/prompts").json()["prompts"]
    assert [p["name"] for p in prompts] == ["sentiment"]
    assert [v["version"] for v in prompts[0]["versions"]] == [1]
    keys = server.admin.get("/admin/v1/keys").json()["keys"]
    assert [(k["id"], k["revoked_at"]) for k in keys] == [(key_id, None)]
    assert prompts[0]["versions"][0]["state"] == "published"
    assert prompts[0]["labels"] == {}
    # ... and the admin token does what the others could not.
    synced = server.admin.post("/admin/v1/sync")
    assert synced.status_code == 200, synced.text
    assert synced.json()["created"] == ["synced@1"]


# -- prompt definitions -------------------------------------------------------------------


def test_refused_definitions_name_each_problem_at_its_path(server, fake):
    optional_lang = sentiment()
    optional_lang["input_schema"]["properties"]["lang"] = {"type": "string"}
    remote_ref = sentiment()
    remote_ref["input_schema"]["properties"]["text"] = {"$ref": "https://example.com/s.json"}
    bad_type = sentiment()
    bad_type["input_schema"]["properties"]["text"]["type"] = "nope"

    def with_message(definition: dict[str, Any], content: str) -> dict[str, Any]:
        definition = copy.deepcopy(definition)
        definition["messages"][1]["content"] = content
        return definition

    cases: list[tuple[str, dict[str, Any], Callable[[str], bool], str]] = [
        ("invalid JSON Schema", bad_type, lambda p: p.startswith("/input_schema/"), "schema"),
        ("remote $ref", remote_ref, lambda p: p == "/input_schema/properties/text/$ref", "local"),
        (
            "template syntax error",
            with_message(SENTIMENT, "Text:\n{{ text }\n"),
            lambda p: p == "/messages/1/content",
            "line 2",
        ),
        (
            "undefined variable",
            with_message(SENTIMENT, "{{ txt }}"),
            lambda p: p == "/messages/1/content",
            "txt",
        ),
        (
            "optional field without a guard",
            with_message(optional_lang, "{{ text }} ({{ lang }})"),
            lambda p: p == "/messages/1/content",
            "required",
        ),
        ("unknown model alias", sentiment(model="gpt-nope"), lambda p: p == "/model", "gpt-nope"),
        ("unknown top-level field", sentiment(colour="red"), lambda p: p == "/colour", "colour"),
        (
            "example input failing the input schema",
            sentiment(examples=[{"input": {"text": 5}}]),
            lambda p: p == "/examples/0/input/text",
            "string",
        ),
        (
            "temperature out of range",
            sentiment(params={"temperature": 5}),
            lambda p: p == "/params/temperature",
            "2",
        ),
    ]
    for label, definition, path_ok, hint in cases:
        body = refused(server, definition)
        assert len(body["errors"]) == 1, (label, body["errors"])
        error = body["errors"][0]
        assert path_ok(error["path"]), (label, error)
        assert hint in error["message"], (label, error)

    for name in ("Sentiment", "my prompt", "-leading-dash", "", "a" * 65):
        body = refused(server, sentiment(name=name))
        assert error_paths(body) == {"/name"}, (name, body["errors"])

    assert server.admin.get("/admin/v1/prompts").json()["prompts"] == []
    # The guarded form of the optional field is accepted.
    guarded = with_message(
        optional_lang, "{{ text }}{% if lang is defined %} ({{ lang }}){% endif %}"
    )
    assert server.admin.post("/admin/v1/prompts", json=guarded).status_code == 201


def test_definition_shape_problems_are_all_listed_at_once(server, fake):
    definition = sentiment(name="Bad Name", colour="red", model="gpt-nope")
    definition["params"] = {"temperature": 5, "max_tokens": 50}
    body = refused(server, definition)
    assert error_paths(body) == {"/name", "/colour", "/params/temperature", "/model"}


def test_schema_and_template_problems_are_all_listed_at_once(server, fake):
    definition = sentiment()
    definition["input_schema"]["properties"]["text"]["type"] = "nope"
    definition["output_schema"]["properties"]["label"] = {"$ref": "https://example.com/s.json"}
    definition["messages"][0]["content"] = "Classify.\n{% if %}\n"
    body = refused(server, definition)
    paths = error_paths(body)
    assert len(paths) == 3, body["errors"]
    assert any(p.startswith("/input_schema/properties/text") for p in paths)
    assert "/output_schema/properties/label/$ref" in paths
    assert "/messages/0/content" in paths
    assert "line 2" in errors_at(body, "/messages/0/content")[0]


def test_every_definition_problem_is_listed_at_once(server, fake):
    definition = sentiment(name="Bad Name", examples=[{"input": {"text": 5}}])
    definition["output_schema"]["properties"]["label"] = {"$ref": "https://example.com/s.json"}
    definition["messages"][0]["content"] = "Classify.\n{% if %}\n"
    body = refused(server, definition)
    assert {
        "/name",
        "/output_schema/properties/label/$ref",
        "/messages/0/content",
        "/examples/0/input/text",
    } <= error_paths(body)


def test_syntax_error_does_not_hide_undefined_variable_elsewhere(server, fake):
    definition = sentiment()
    definition["messages"][0]["content"] = "Classify.\n{% if %}\n"
    definition["messages"][1]["content"] = "{{ txt }}"
    body = refused(server, definition)
    assert error_paths(body) == {"/messages/0/content", "/messages/1/content"}


def test_non_object_definitions_are_refused(server, fake):
    for raw in (b"[]", b'"sentiment"', b"42", b"null"):
        response = server.admin.post(
            "/admin/v1/prompts", content=raw, headers={"Content-Type": "application/json"}
        )
        body = assert_problem(response, 422, "definition_invalid")
        assert error_paths(body) == {""}, raw
    response = server.admin.post("/admin/v1/prompts/sentiment/versions", json=["x"])
    assert_problem(response, 422, "definition_invalid")


# -- versions -----------------------------------------------------------------------------


def test_explicit_versions_are_immutable_and_reposts_idempotent(server, fake):
    first = server.admin.post("/admin/v1/prompts", json=sentiment(version=1))
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1

    same = server.admin.post("/admin/v1/prompts", json=sentiment(version=1))
    assert same.status_code == 200, same.text
    assert same.json()["version"] == 1
    assert same.json()["digest"] == first.json()["digest"]

    changed = sentiment(version=1, description="Something else.")
    body = assert_problem(server.admin.post("/admin/v1/prompts", json=changed), 409, "conflict")
    assert "/version" in error_paths(body)

    unversioned = server.admin.post("/admin/v1/prompts", json=SENTIMENT)
    assert unversioned.status_code == 200, unversioned.text
    assert unversioned.json()["version"] == 1

    detail = server.admin.get("/admin/v1/prompts/sentiment").json()
    assert [v["version"] for v in detail["versions"]] == [1]
    assert detail["description"] == SENTIMENT["description"]

    newer = server.admin.post("/admin/v1/prompts", json=sentiment(description="Newer."))
    assert newer.status_code == 201, newer.text
    assert newer.json()["version"] == 2
    again = server.admin.post("/admin/v1/prompts", json=sentiment(description="Newer."))
    assert again.status_code == 200, again.text
    assert again.json()["version"] == 2
    detail = server.admin.get("/admin/v1/prompts/sentiment").json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]


def test_new_version_route_takes_the_name_from_the_url(server, fake):
    assert server.admin.post("/admin/v1/prompts", json=SENTIMENT).status_code == 201
    unnamed = {k: v for k, v in sentiment(description="Second.").items() if k != "name"}
    created = server.admin.post("/admin/v1/prompts/sentiment/versions", json=unnamed)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "sentiment"
    assert created.json()["version"] == 2
    assert created.headers["location"] == "/admin/v1/prompts/sentiment/versions/2"
    fetched = server.admin.get("/admin/v1/prompts/sentiment/versions/2")
    assert fetched.status_code == 200
    assert fetched.json()["definition"]["description"] == "Second."

    other = {**unnamed, "name": "other", "description": "Third."}
    body = assert_problem(
        server.admin.post("/admin/v1/prompts/sentiment/versions", json=other), 422
    )
    assert error_paths(body) == {"/name"}
    assert server.admin.get("/admin/v1/prompts/other").status_code == 404

    named = server.admin.post(
        "/admin/v1/prompts/sentiment/versions", json={**unnamed, "name": "sentiment"}
    )
    assert named.status_code == 200, named.text
    assert named.json()["version"] == 2

    assert_problem(server.admin.get("/admin/v1/prompts/sentiment/versions/9"), 404, "not_found")
    assert_problem(server.admin.get("/admin/v1/prompts/nope"), 404, "not_found")


# -- models -------------------------------------------------------------------------------


def test_models_list_aliases_but_never_keys(make_server, fake, tmp_path, monkeypatch):
    server = make_server()
    response = server.admin.get("/admin/v1/models")
    assert response.status_code == 200, response.text
    models = {m["alias"]: m for m in response.json()["models"]}
    assert {"default", "mock"} <= set(models)
    assert models["default"]["provider"] == "openai"
    assert models["default"]["model"] == "gpt-4o-mini"
    assert models["default"]["api_key_set"] is True
    assert UPSTREAM_KEY not in response.text

    monkeypatch.setenv("PROMPTAPI_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    models_file = tmp_path / "models.yaml"
    spec = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": fake.base_url,
        "api_key_env": "PROMPTAPI_TEST_UPSTREAM_KEY",
    }
    models_file.write_text(yaml.safe_dump({"models": {"default": spec, "fast": spec}}))
    configured = make_server(models_file=models_file)
    response = configured.admin.get("/admin/v1/models")
    assert response.status_code == 200, response.text
    models = {m["alias"]: m for m in response.json()["models"]}
    assert {"default", "fast", "mock"} <= set(models)
    assert models["fast"]["api_key_env"] == "PROMPTAPI_TEST_UPSTREAM_KEY"
    assert models["fast"]["api_key_set"] is True
    assert UPSTREAM_KEY not in response.text


# -- keys ---------------------------------------------------------------------------------


def test_key_requests_are_validated(server, fake):
    body = assert_problem(server.admin.post("/admin/v1/keys", json={}), 422)
    assert error_paths(body) == {"/name"}
    body = assert_problem(server.admin.post("/admin/v1/keys", json={"name": "   "}), 422)
    assert error_paths(body) == {"/name"}
    body = assert_problem(
        server.admin.post("/admin/v1/keys", json={"name": "ci", "colour": "red"}), 422
    )
    assert error_paths(body) == {"/colour"}
    body = assert_problem(server.admin.post("/admin/v1/keys", json={"colour": "red"}), 422)
    assert error_paths(body) == {"/name", "/colour"}
    assert_problem(server.admin.post("/admin/v1/keys", json=["ci"]), 422)
    assert server.admin.get("/admin/v1/keys").json()["keys"] == []


def test_key_creation_and_lookup(server, fake):
    created = server.admin.post("/admin/v1/keys", json={"name": "ci"})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith("pk_")
    assert key["name"] == "ci"
    assert created.headers["location"] == f"/admin/v1/keys/{key['id']}"

    fetched = server.admin.get(created.headers["location"])
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["id"] == key["id"]
    assert fetched.json()["name"] == "ci"
    assert fetched.json()["revoked_at"] is None
    assert key["key"] not in fetched.text

    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key['key']}"}
    ) as consumer:
        assert consumer.get("/v1/prompts").status_code == 200

    assert_problem(server.admin.get("/admin/v1/keys/key_unknown"), 404, "not_found")
    assert_problem(server.admin.delete("/admin/v1/keys/key_unknown"), 404, "not_found")


# -- system endpoints ---------------------------------------------------------------------


def test_health_readiness_and_problem_documents(server, fake):
    health = server.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = server.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"

    listing = server.client.get("/problems")
    assert listing.status_code == 200
    codes = {p["code"]: p for p in listing.json()["problems"]}
    for code, status in [
        ("malformed_request", 400),
        ("unauthorized", 401),
        ("not_found", 404),
        ("input_invalid", 422),
        ("definition_invalid", 422),
        ("upstream_error", 502),
        ("output_invalid", 502),
        ("provider_unavailable", 503),
        ("deadline_exceeded", 504),
    ]:
        assert codes[code]["status"] == status
        assert codes[code]["type"] == f"/problems/{code}"

    doc = server.client.get("/problems/input_invalid")
    assert doc.status_code == 200
    assert doc.json()["code"] == "input_invalid"
    assert doc.json()["status"] == 422
    assert "errors" in doc.json()["description"]
    assert_problem(server.client.get("/problems/no_such_problem"), 404, "not_found")

    problems = [
        assert_problem(server.client.get("/no/such/route"), 404, "not_found"),
        assert_problem(server.client.get("/admin/v1/prompts"), 401, "unauthorized"),
        assert_problem(server.admin.post("/admin/v1/prompts", json={}), 422),
    ]
    for problem in problems:
        resolved = server.client.get(problem["type"])
        assert resolved.status_code == 200, problem["type"]
        assert resolved.json()["code"] == problem["code"]
        assert resolved.json()["status"] == problem["status"]


def test_405_allow_lists_every_method_of_the_path(server, client, fake):
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    for response in (
        client.put("/v1/prompts/echo", json={"text": "a"}),
        server.admin.delete("/admin/v1/prompts"),
    ):
        assert_problem(response, 405, "method_not_allowed")
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert {"GET", "POST"} <= allowed
