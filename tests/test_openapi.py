"""The OpenAPI 3.1 document at /openapi.json and `promptapi openapi`: valid, typed exactly per
prompt, rebuilt when prompts change, and true to what the server answers."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.routing import Mount, Route

from promptapi.cli import main
from promptapi.samples import sample
from tests.conftest import ADMIN_TOKEN, Server
from tests.helpers import ENVELOPE_FIELDS, assert_problem, sqlite_only

MESSAGES = [{"role": "user", "content": "{{ input | json }}"}]
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATA_KEYWORDS = {"enum", "const", "default", "examples", "example"}
SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}

NESTED: dict[str, Any] = {
    "name": "nested",
    "description": "Nested objects, arrays of objects and enums.\nSecond line of the description.",
    "input_schema": {
        "type": "object",
        "properties": {
            "customer": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 50},
                    "tier": {"enum": ["free", "pro", "enterprise"]},
                    "address": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                        "required": ["city"],
                        "additionalProperties": False,
                    },
                },
                "required": ["name", "tier"],
                "additionalProperties": False,
            },
            "lines": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
                        "qty": {"type": "integer", "minimum": 1},
                    },
                    "required": ["sku", "qty"],
                },
            },
        },
        "required": ["customer", "lines"],
        "additionalProperties": False,
    },
    "output_schema": {
        "type": "object",
        "properties": {"total": {"type": "number"}, "ok": {"type": "boolean"}},
        "required": ["total", "ok"],
        "additionalProperties": False,
    },
    "messages": MESSAGES,
    "examples": [
        {
            "name": "one line",
            "input": {
                "customer": {"name": "Ada", "tier": "pro"},
                "lines": [{"sku": "ABC-1", "qty": 2}],
            },
            "output": {"total": 9.5, "ok": True},
        }
    ],
}

# $defs referring to each other, a recursive def, a ref to a non-$defs location, legacy
# `definitions`, and `{"$ref": ...}` as data inside `const` / `enum`, which must stay as it is.
WITH_DEFS: dict[str, Any] = {
    "name": "with-defs",
    "description": "Shared definitions.",
    "input_schema": {
        "type": "object",
        "properties": {
            "owner": {"$ref": "#/$defs/person"},
            "reviewers": {"type": "array", "items": {"$ref": "#/$defs/person"}, "maxItems": 3},
            "tree": {"$ref": "#/$defs/node"},
            "backup_owner": {"$ref": "#/properties/owner"},
            "unit": {"$ref": "#/definitions/unit"},
            "marker": {"const": {"$ref": "#/$defs/person"}},
            "flavour": {"enum": ["plain", {"$ref": "#/not/a/ref"}]},
        },
        "required": ["owner"],
        "additionalProperties": False,
        "$defs": {
            "person": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "role": {"$ref": "#/$defs/role"}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "role": {"enum": ["author", "editor"]},
            "node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["value"],
                "additionalProperties": False,
            },
        },
        "definitions": {"unit": {"enum": ["kg", "lb"]}},
    },
    "output_schema": {
        "type": "object",
        "properties": {"people": {"type": "array", "items": {"$ref": "#/$defs/person"}}},
        "required": ["people"],
        "$defs": {
            "person": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            }
        },
    },
    "messages": MESSAGES,
}

CHOICE: dict[str, Any] = {
    "name": "choice",
    "description": "",
    "input_schema": {
        "type": "object",
        "properties": {
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
                        "required": ["kind", "r"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {
                            "kind": {"const": "rect"},
                            "w": {"type": "number"},
                            "h": {"type": "number"},
                        },
                        "required": ["kind", "w", "h"],
                        "additionalProperties": False,
                    },
                ]
            },
            "label": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["shape"],
        "additionalProperties": False,
    },
    "messages": MESSAGES,
    "examples": [{"input": {"shape": {"kind": "circle", "r": 1}}, "output": "a circle"}],
}


# Refs by anchor (`#name`, also to a `$dynamicAnchor`) and a root `$id`: the anchors become
# JSON pointers into components, and the `$id` goes (every ref is local anyway).
ANCHORED: dict[str, Any] = {
    "name": "anchored",
    "description": "Refs by anchor.",
    "input_schema": {
        "$id": "https://example.com/schemas/anchored.json",
        "type": "object",
        "properties": {
            "count": {"$ref": "#positive"},
            "tags": {"type": "array", "items": {"$ref": "#tag"}},
        },
        "required": ["count"],
        "additionalProperties": False,
        "$defs": {
            "positive": {"$anchor": "positive", "type": "integer", "minimum": 1},
            "tag": {"$dynamicAnchor": "tag", "type": "string", "maxLength": 5},
        },
    },
    "messages": MESSAGES,
    "examples": [{"input": {"count": 2, "tags": ["a", "bc"]}}],
}


def simple(name: str, field: str = "text") -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The prompt {name}.",
        "input_schema": {
            "type": "object",
            "properties": {field: {"type": "string"}},
            "required": [field],
            "additionalProperties": False,
        },
        "messages": MESSAGES,
    }


TRICKY = [NESTED, WITH_DEFS, CHOICE, ANCHORED, simple("a-b"), simple("a_b", "other")]


def register(server: Server, definition: dict[str, Any]) -> dict[str, Any]:
    response = server.admin.post("/admin/v1/prompts", json=definition)
    assert response.status_code == 201, response.text
    return response.json()


def fetch(server: Server) -> dict[str, Any]:
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


@pytest.fixture
def mock_server(make_server: Callable[..., Server]) -> Server:
    """A server whose `default` model is the mock provider, so calls answer schema-valid output."""
    return make_server(openai_base_url=None, openai_api_key=None)


@pytest.fixture
def tricky(mock_server: Server) -> Iterator[tuple[Server, dict[str, Any]]]:
    for definition in TRICKY:
        register(mock_server, definition)
    yield mock_server, fetch(mock_server)


def component(doc: dict[str, Any], ref: dict[str, Any]) -> tuple[str, Any]:
    prefix = "#/components/schemas/"
    assert set(ref) == {"$ref"} and ref["$ref"].startswith(prefix), ref
    name = unquote(ref["$ref"][len(prefix) :])
    return name, doc["components"]["schemas"][name]


def tokens(ref: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in unquote(ref[1:]).split("/")[1:]]


def schema_nodes(node: Any, path: list[str] | None = None) -> Iterator[tuple[dict, list[str]]]:
    path = path or []
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from schema_nodes(item, [*path, str(i)])
    elif isinstance(node, dict):
        yield node, path
        for key, value in node.items():
            if key not in DATA_KEYWORDS:
                yield from schema_nodes(value, [*path, key])


class SameModuloRefs:
    """Checks a document schema against the prompt's own, node by node: equal everywhere, except
    that each `$ref` in schema position points to the same place, now inside components."""

    def __init__(self, doc: dict[str, Any], original: dict[str, Any], root: str) -> None:
        self.doc = doc
        self.original = original
        self.root = root
        self.defs: dict[tuple[str, str], str] = {}
        # Where each anchor is, as a path: the document refers to it by that path.
        self.anchors = {
            node[keyword]: path
            for node, path in schema_nodes(original)
            for keyword in ("$anchor", "$dynamicAnchor")
            if keyword in node
        }

    def check(self, original: Any, new: Any, *, at_root: bool = False) -> None:
        if isinstance(original, list):
            assert isinstance(new, list) and len(new) == len(original)
            for a, b in zip(original, new, strict=True):
                self.check(a, b)
            return
        if not isinstance(original, dict):
            assert original == new and type(original) is type(new)
            return
        expected_keys = set(original) - ({"$defs", "definitions", "$id"} if at_root else set())
        assert set(new) == expected_keys, (set(new), expected_keys)
        for key in expected_keys:
            if key == "$ref":
                self.check_ref(original[key], new[key])
            elif key in DATA_KEYWORDS:
                assert new[key] == original[key]
            elif key in SCHEMA_MAPS:
                assert set(new[key]) == set(original[key])
                for sub in original[key]:
                    self.check(original[key][sub], new[key][sub])
            else:
                self.check(original[key], new[key])

    def check_ref(self, original: str, new: str) -> None:
        parts = self.anchors.get(original[1:]) or tokens(original)
        target = tokens(new)
        assert target[:2] == ["components", "schemas"], new
        if parts and parts[0] in ("$defs", "definitions"):
            key = (parts[0], parts[1])
            assert self.defs.setdefault(key, target[2]) == target[2], "one def, one component"
            assert target[3:] == parts[2:]
        else:
            assert target[2] == self.root and target[3:] == parts, (original, new)

    def run(self) -> None:
        self.check(self.original, self.doc["components"]["schemas"][self.root], at_root=True)
        checked: set[tuple[str, str]] = set()
        while set(self.defs) - checked:
            for key in sorted(set(self.defs) - checked):
                checked.add(key)
                self.check(
                    self.original[key[0]][key[1]], self.doc["components"]["schemas"][self.defs[key]]
                )


def validator_for(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    text = json.dumps(schema).replace('"#/components/', '"urn:doc#/components/')
    return Draft202012Validator(json.loads(text), registry=registry)


def variants(value: Any) -> Iterator[Any]:
    """The value, and copies with each member removed or replaced by values of other types."""
    yield value
    replacements = [None, 0, 2.5, "", "zz", [], {}, True, {"kind": "circle", "r": 1}]

    def paths(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        yield path
        if isinstance(node, dict):
            for key, sub in node.items():
                yield from paths(sub, (*path, key))
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                yield from paths(sub, (*path, i))

    for path in list(paths(value, ())):
        for replacement in replacements:
            changed = copy.deepcopy(value)
            if not path:
                yield replacement
                continue
            parent = changed
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = replacement
            yield changed
        if path:
            removed = copy.deepcopy(value)
            parent = removed
            for step in path[:-1]:
                parent = parent[step]
            del parent[path[-1]]
            yield removed


def assert_validates_identically(
    original: dict[str, Any], doc: dict[str, Any], ref: dict[str, Any], seeds: list[Any]
) -> None:
    mine = Draft202012Validator(original)
    theirs = validator_for(doc, ref)
    checked = valid = 0
    for seed in seeds:
        for instance in variants(seed):
            verdict = mine.is_valid(instance)
            assert theirs.is_valid(instance) == verdict, instance
            errors = {(tuple(e.absolute_path), e.validator) for e in mine.iter_errors(instance)}
            assert {
                (tuple(e.absolute_path), e.validator) for e in theirs.iter_errors(instance)
            } == errors
            checked += 1
            valid += verdict
    assert valid and checked - valid, "the corpus has valid and invalid instances"


@sqlite_only
def test_document_is_valid_openapi_31_and_types_each_prompt_exactly(
    tricky: tuple[Server, dict[str, Any]],
) -> None:
    _server, doc = tricky
    validate(doc)
    assert doc["openapi"].startswith("3.1.")
    assert doc["jsonSchemaDialect"] == "https://spec.openapis.org/oas/3.1/dialect/base"
    for definition in TRICKY:
        name = definition["name"]
        op = doc["paths"][f"/v1/prompts/{name}"]["post"]
        assert IDENTIFIER.match(op["operationId"])
        assert (
            op["summary"]
            == {
                "nested": "Nested objects, arrays of objects and enums.",
                "with-defs": "Shared definitions.",
                "choice": "Call the prompt choice",
                "anchored": "Refs by anchor.",
                "a-b": "The prompt a-b.",
                "a_b": "The prompt a_b.",
            }[name]
        )
        assert op["description"].startswith(definition["description"].strip() or "Calls the prompt")
        assert op["security"] == [{"consumerKey": []}]
        # The JSON operation answers JSON only, so a generated client reads its 200 as it is;
        # streaming is its own operation on its own path, each server-sent event typed.
        assert list(op["responses"]["200"]["content"]) == ["application/json"]
        assert "/stream" in op["description"]
        streamed = doc["paths"][f"/v1/prompts/{name}/stream"]["post"]
        assert streamed["operationId"] == op["operationId"].replace("call_", "stream_", 1)
        assert streamed["requestBody"] == op["requestBody"]
        assert list(streamed["responses"]["200"]["content"]) == ["text/event-stream"]
        events = streamed["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
        assert [e["properties"]["event"]["const"] for e in events] == ["delta", "done", "error"]
        assert all(e["required"] == ["event", "data"] for e in events)
        done = events[1]["properties"]["data"]["contentSchema"]
        assert done == op["responses"]["200"]["content"]["application/json"]["schema"]
        # The request body is the prompt's input schema, its $defs moved into components.
        body = op["requestBody"]["content"]["application/json"]
        root, _ = component(doc, body["schema"])
        SameModuloRefs(doc, definition["input_schema"], root).run()
        seeds = [
            sample(definition["input_schema"]),
            sample(definition["input_schema"], required_only=True),
        ]
        seeds += [e["input"] for e in definition.get("examples", [])]
        assert_validates_identically(definition["input_schema"], doc, body["schema"], seeds)
        # The 200 answer is the envelope, with the output schema (or text) as `output`.
        ok = op["responses"]["200"]["content"]["application/json"]
        _, envelope = component(doc, ok["schema"])
        assert set(envelope["required"]) == ENVELOPE_FIELDS
        assert envelope["properties"]["prompt"]["properties"]["name"] == {"const": name}
        output = envelope["properties"]["output"]
        if definition.get("output_schema") is None:
            assert output["type"] == "string"
        else:
            out_root, _ = component(doc, output)
            SameModuloRefs(doc, definition["output_schema"], out_root).run()
        # Every error status is a problem+json answer pointing at the shared components.
        for status in ("400", "401", "404", "413", "415", "422", "502", "503", "504", "default"):
            content = op["responses"][status]["content"]
            assert list(content) == ["application/problem+json"]
            expected = "ValidationProblem" if status == "422" else "Problem"
            assert content["application/problem+json"]["schema"] == {
                "$ref": f"#/components/schemas/{expected}"
            }
        # Examples come from the prompt's examples.
        for example in definition.get("examples", []):
            assert any(e["value"] == example["input"] for e in body["examples"].values())
            if "output" in example:
                answers = ok["examples"].values()
                assert any(a["value"]["output"] == example["output"] for a in answers)
    # $defs became components of their own, the same def name in two prompts did not clash.
    schemas = doc["components"]["schemas"]
    with_defs = doc["paths"]["/v1/prompts/with-defs"]["post"]
    root, root_schema = component(
        doc, with_defs["requestBody"]["content"]["application/json"]["schema"]
    )
    assert "$defs" not in root_schema and "definitions" not in root_schema
    person_in = root_schema["properties"]["owner"]["$ref"]
    _, result = component(
        doc, with_defs["responses"]["200"]["content"]["application/json"]["schema"]
    )
    _out_name, out_schema = component(doc, result["properties"]["output"])
    person_out = out_schema["properties"]["people"]["items"]["$ref"]
    assert person_in != person_out
    assert schemas[unquote(person_in.rsplit("/", 1)[1])]["required"] == ["name"]
    assert "role" not in schemas[unquote(person_out.rsplit("/", 1)[1])]["properties"]
    # Data that looks like a ref is left alone.
    assert root_schema["properties"]["marker"] == {"const": {"$ref": "#/$defs/person"}}


@sqlite_only
def test_operation_ids_and_component_names_never_collide(
    tricky: tuple[Server, dict[str, Any]],
) -> None:
    _, doc = tricky
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert all(IDENTIFIER.match(i) for i in ids), ids
    # `a-b` and `a_b` sanitise to the same identifier: the one spelt that way keeps it.
    assert doc["paths"]["/v1/prompts/a_b"]["post"]["operationId"] == "call_a_b"
    assert doc["paths"]["/v1/prompts/a-b"]["post"]["operationId"] == "call_a_b_2"
    assert doc["paths"]["/v1/prompts/a-b/versions/1"]["post"]["operationId"] == "call_a_b_v1_2"
    assert doc["paths"]["/v1/prompts/a_b"]["get"]["operationId"] == "describe_a_b"
    inputs = {
        name: doc["paths"][f"/v1/prompts/{name}"]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]["$ref"]
        for name in ("a-b", "a_b")
    }
    assert inputs["a-b"] != inputs["a_b"]
    assert component(doc, {"$ref": inputs["a-b"]})[1]["required"] == ["text"]
    assert component(doc, {"$ref": inputs["a_b"]})[1]["required"] == ["other"]
    # Every $ref in the document resolves (refs-looking data in enum/const/examples aside).
    refs = list(all_refs(doc))
    assert len(refs) > 50
    for ref in refs:
        node: Any = doc
        for token in tokens(ref):
            node = node[token]


def all_refs(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from all_refs(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            elif key not in DATA_KEYWORDS | {"value"}:
                yield from all_refs(value)


@sqlite_only
def test_document_changes_when_a_version_is_published_and_is_cached_between(
    mock_server: Server,
) -> None:
    register(mock_server, NESTED)
    first = mock_server.client.get("/openapi.json")
    etag = first.headers["etag"]
    assert mock_server.client.get("/openapi.json").content == first.content
    unchanged = mock_server.client.get("/openapi.json", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert mock_server.app.state.openapi_cache.builds == 1
    changed = copy.deepcopy(NESTED)
    changed["input_schema"]["properties"]["note"] = {"type": "string"}
    changed["examples"] = []
    register(mock_server, changed)
    again = mock_server.client.get("/openapi.json", headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    doc = again.json()
    assert mock_server.app.state.openapi_cache.builds == 2
    current = doc["paths"]["/v1/prompts/nested"]["post"]
    _, schema = component(doc, current["requestBody"]["content"]["application/json"]["schema"])
    assert "note" in schema["properties"]
    assert "Calls the current version (now 2)" in current["description"]
    pinned = doc["paths"]["/v1/prompts/nested/versions/1"]["post"]
    _, old = component(doc, pinned["requestBody"]["content"]["application/json"]["schema"])
    assert "note" not in old["properties"]
    assert "/v1/prompts/nested/versions/2" in doc["paths"]
    _, result = component(doc, pinned["responses"]["200"]["content"]["application/json"]["schema"])
    assert result["properties"]["prompt"]["properties"]["version"] == {"const": 1}
    # The identical v2 of a schema shares v1's component instead of duplicating it.
    v2 = doc["paths"]["/v1/prompts/nested/versions/2"]["post"]
    assert (
        v2["requestBody"]["content"]["application/json"]["schema"]
        == current["requestBody"]["content"]["application/json"]["schema"]
    )
    validate(doc)


def documented(doc: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """The response's status, content type and body are what the document says."""
    responses = doc["paths"][path][method]["responses"]
    spec = responses.get(str(response.status_code), responses.get("default"))
    assert spec is not None, f"{response.status_code} not documented for {method} {path}"
    media = response.headers["content-type"].split(";")[0]
    assert media in spec["content"], (media, list(spec["content"]))
    errors = list(validator_for(doc, spec["content"][media]["schema"]).iter_errors(response.json()))
    assert not errors, [e.message for e in errors]
    for name, header in spec.get("headers", {}).items():
        target = header
        if "$ref" in header:
            target = doc["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if target.get("required"):
            assert name.lower() in response.headers


@sqlite_only
def test_real_answers_match_the_documented_schemas(tricky: tuple[Server, dict[str, Any]]) -> None:
    server, doc = tricky
    client = server.consumer()
    for definition in TRICKY:
        name = definition["name"]
        data = (
            definition.get("examples")
            or [{"input": sample(definition["input_schema"], required_only=True)}]
        )[0]["input"]
        for path in (f"/v1/prompts/{name}", f"/v1/prompts/{name}/versions/1"):
            ok = client.post(path, json=data)
            assert ok.status_code == 200, ok.text
            documented(doc, path, "post", ok)
            bad = client.post(path, json={"unexpected": True})
            assert_problem(bad, 422, "input_invalid")
            documented(doc, path, "post", bad)
            documented(doc, path, "post", server.client.post(path, json=data))  # 401
            documented(
                doc,
                path,
                "post",
                client.post(path, content=b"{", headers={"content-type": "application/json"}),
            )
        documented(doc, f"/v1/prompts/{name}", "get", client.get(f"/v1/prompts/{name}"))
    documented(doc, "/v1/prompts", "get", client.get("/v1/prompts"))
    documented(doc, "/admin/v1/prompts", "get", server.admin.get("/admin/v1/prompts"))
    documented(
        doc,
        "/admin/v1/prompts/{name}/versions/{version}",
        "get",
        server.admin.get("/admin/v1/prompts/nested/versions/1"),
    )
    documented(doc, "/admin/v1/keys", "get", server.admin.get("/admin/v1/keys"))
    documented(doc, "/admin/v1/calls", "get", server.admin.get("/admin/v1/calls"))
    documented(doc, "/admin/v1/models", "get", server.admin.get("/admin/v1/models"))
    documented(doc, "/admin/v1/policy", "get", server.admin.get("/admin/v1/policy"))
    documented(
        doc, "/admin/v1/prompts/{name}", "get", client.get("/admin/v1/prompts/nested")
    )  # 403
    documented(doc, "/problems/{code}", "get", server.client.get("/problems/input_invalid"))
    client.close()


def _served(app_routes: list[Any]) -> Iterator[tuple[str, str, Route]]:
    for route in app_routes:
        if isinstance(route, Mount):
            continue  # static files; pages and APIs are Routes
        assert isinstance(route, Route), route
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield route.path, method.lower(), route


@sqlite_only
def test_every_route_the_server_serves_is_documented(tricky: tuple[Server, dict[str, Any]]) -> None:
    """A drift guard: a route added without documenting it fails here."""
    server, doc = tricky
    missing = []
    for path, method, route in _served(server.app.routes):
        template = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
        if method in doc["paths"].get(template, {}):
            continue
        # A route serving every prompt is documented once per prompt, with the name in the path.
        instances = [
            p for p in doc["paths"] if route.path_regex.match(p) and method in doc["paths"][p]
        ]
        if not instances:
            missing.append(f"{method.upper()} {path}")
    assert not missing, f"served but not in the OpenAPI document: {missing}"
    # And the other way round: every documented path is served.
    for path in doc["paths"]:
        concrete = re.sub(r"\{\w+\}", "x", path).replace("/versions/x", "/versions/1")
        assert any(
            r.path_regex.match(concrete) for r in server.app.routes if isinstance(r, Route)
        ), path


@sqlite_only
def test_anonymous_access_is_documented_as_optional_security(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(allow_anonymous=True, openai_base_url=None, openai_api_key=None)
    register(server, simple("open"))
    doc = fetch(server)
    assert doc["paths"]["/v1/prompts/open"]["post"]["security"] == [{"consumerKey": []}, {}]
    assert doc["paths"]["/admin/v1/keys"]["post"]["security"] == [{"adminToken": []}]
    answer = server.client.post("/v1/prompts/open", json={"text": "hi"})
    documented(doc, "/v1/prompts/open", "post", answer)


@sqlite_only
def test_cli_prints_the_same_document_as_the_server(
    mock_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for definition in TRICKY:
        register(mock_server, definition)
    served = fetch(mock_server)
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", mock_server.settings.database_url)
    monkeypatch.setenv("PROMPTAPI_ADMIN_TOKEN", ADMIN_TOKEN)
    out = tmp_path / "openapi.json"
    assert main(["openapi", "--output", str(out), "--server", "https://prompts.example"]) == 0
    written = json.loads(out.read_text())
    assert written.pop("servers") == [{"url": "https://prompts.example"}]
    # The server names itself as it was reached; the CLI only when told.
    assert served.pop("servers") == [{"url": mock_server.url}]
    assert written == served
    capsys.readouterr()
    assert main(["openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == served


def test_cli_refuses_a_database_without_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("PROMPTAPI_AUTO_MIGRATE", "false")
    out = tmp_path / "openapi.json"
    assert main(["openapi", "--output", str(out)]) != 0
    assert "promptapi db upgrade" in capsys.readouterr().err
    assert not out.exists()


@sqlite_only
def test_lifecycle_shows_in_the_document(mock_server: Server) -> None:
    """Deprecated versions are marked (with their headers), retired and draft versions are not
    offered, and every state change gives a new document."""
    register(mock_server, simple("life"))
    second = {**simple("life"), "description": "Second."}
    register(mock_server, second)
    register(mock_server, {**simple("life"), "description": "Third.", "state": "draft"})
    doc = fetch(mock_server)
    paths = doc["paths"]
    assert "/v1/prompts/life/versions/2" in paths and "/v1/prompts/life/versions/3" not in paths
    label = [p for p in paths["/v1/prompts/life"]["post"]["parameters"] if p["name"] == "label"]
    assert label and label[0]["in"] == "query"

    admin = mock_server.admin
    deprecated = admin.post(
        "/admin/v1/prompts/life/versions/1/deprecate",
        json={"sunset": "2031-06-30T23:59:59Z", "successor": 2},
    )
    assert deprecated.status_code == 200, deprecated.text
    doc = fetch(mock_server)
    pinned = doc["paths"]["/v1/prompts/life/versions/1"]["post"]
    assert pinned["deprecated"] is True
    assert {"Deprecation", "Sunset", "Link"} <= set(pinned["responses"]["200"]["headers"])
    assert "deprecated" not in doc["paths"]["/v1/prompts/life/versions/2"]["post"]
    with mock_server.consumer() as consumer:
        answer = consumer.post("/v1/prompts/life/versions/1", json={"text": "hi"})
    assert answer.status_code == 200 and answer.headers["deprecation"].startswith("@")
    documented(doc, "/v1/prompts/life/versions/1", "post", answer)

    retired = admin.post("/admin/v1/prompts/life/versions/1/retire", json={"successor": 2})
    assert retired.status_code == 200, retired.text
    documented(doc, "/admin/v1/prompts/{name}/versions/{version}/retire", "post", retired)
    doc = fetch(mock_server)
    assert "/v1/prompts/life/versions/1" not in doc["paths"]
    with mock_server.consumer() as consumer:
        gone = consumer.post("/v1/prompts/life/versions/1", json={"text": "hi"})
    assert_problem(gone, 410, "version_retired")
    documented(doc, "/v1/prompts/life", "post", gone)
    moved = admin.put("/admin/v1/prompts/life/labels/staging", json={"version": 2})
    documented(doc, "/admin/v1/prompts/{name}/labels/{label}", "put", moved)
    documented(
        doc,
        "/admin/v1/prompts/{name}/diff",
        "get",
        admin.get("/admin/v1/prompts/life/diff?from=1&to=2"),
    )
    documented(doc, "/admin/v1/audit", "get", admin.get("/admin/v1/audit?limit=5"))
    validate(doc)


@sqlite_only
def test_servers_names_the_server_as_it_was_reached(make_server: Callable[..., Server]) -> None:
    forwarded = {
        "X-Forwarded-Host": "api.example.com",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/prompts",
    }
    direct = make_server(openai_base_url=None, openai_api_key=None)
    doc = direct.client.get("/openapi.json")
    assert doc.json()["servers"] == [{"url": direct.url}]
    assert "X-Forwarded-Host" in doc.headers["vary"]
    # Without a trusted proxy (PROMPTAPI_FORWARDED_ALLOW_IPS unset) X-Forwarded-* is ignored:
    # anyone can send those headers.
    spoofed = direct.client.get("/openapi.json", headers=forwarded).json()["servers"]
    assert spoofed[0]["url"].endswith(f"127.0.0.1:{direct.port}")
    host = direct.client.get("/openapi.json", headers={"Host": "other.example:8443"})
    assert host.json()["servers"] == [{"url": "http://other.example:8443"}]
    assert host.headers["etag"] != doc.headers["etag"]

    proxied = make_server(
        openai_base_url=None, openai_api_key=None, forwarded_allow_ips="127.0.0.1"
    )
    servers = proxied.client.get("/openapi.json", headers=forwarded).json()["servers"]
    assert servers == [{"url": "https://api.example.com/prompts"}]
    # Values that are not a plain scheme, host or path are ignored.
    hostile = {
        "X-Forwarded-Host": "evil.example/<script>",
        "X-Forwarded-Proto": "javascript",
        "X-Forwarded-Prefix": "//evil.example",
    }
    servers = proxied.client.get("/openapi.json", headers=hostile).json()["servers"]
    assert servers == [{"url": proxied.url}]
    # An ETag names one document: a different server is a different tag.
    tags = {proxied.client.get("/openapi.json", headers=h).headers["etag"] for h in ({}, forwarded)}
    assert len(tags) == 2


@sqlite_only
def test_streaming_has_its_own_path_and_the_old_ways_still_stream(mock_server: Server) -> None:
    from tests.test_stream import stream

    register(mock_server, simple("echo"))
    with mock_server.consumer() as client:
        for path, headers, params in [
            ("/v1/prompts/echo/stream", {}, None),  # no Accept needed on the stream path
            ("/v1/prompts/echo/versions/1/stream", {}, None),
            ("/v1/prompts/echo", {"Accept": "text/event-stream"}, None),
            ("/v1/prompts/echo", {}, {"stream": "true"}),
        ]:
            response, events = stream(client, path, {"text": "hi"}, headers=headers, params=params)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert [name for name, _ in events if name != "delta"] == ["done"], events
            done = events[-1][1]
            assert done["prompt"] == {"name": "echo", "version": 1}
        # The JSON path answers JSON without them, as its operation documents.
        plain, events = stream(client, "/v1/prompts/echo", {"text": "hi"}, headers={})
        assert plain.headers["content-type"] == "application/json" and events == []
        # Errors before the stream starts are problems, on the stream path too.
        bad, _ = stream(client, "/v1/prompts/echo/stream", {"wrong": 1}, headers={})
        assert_problem(bad, 422, "input_invalid")
        missing, _ = stream(client, "/v1/prompts/nope/stream", {"text": "hi"}, headers={})
        assert_problem(missing, 404)
