"""Input validation through HTTP agrees with the Draft 2020-12 reference validator, including
on the edge cases a fast path could get wrong (1.0 as an integer, true as a number, code-point
lengths, unanchored patterns, closed objects)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "word": {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "[a-z]"},
        "mood": {"type": "string", "enum": ["happy", "sad"]},
        "flag": {"type": "boolean"},
        "nothing": {"type": "null"},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["count"],
    "additionalProperties": False,
}

CASES: list[Any] = [
    {"count": 1},
    {"count": 1.0},
    {"count": 1.5},
    {"count": True},
    {"count": 0},
    {"count": 11},
    {"count": "1"},
    {"count": 2, "ratio": 0.5},
    {"count": 2, "ratio": 0},
    {"count": 2, "ratio": 1},
    {"count": 2, "ratio": False},
    {"count": 2, "word": "ab"},
    {"count": 2, "word": "AB"},
    {"count": 2, "word": "XaX"},
    {"count": 2, "word": "a"},
    {"count": 2, "word": "abcde"},
    {"count": 2, "word": "a😀"},
    {"count": 2, "mood": "happy"},
    {"count": 2, "mood": "angry"},
    {"count": 2, "flag": True},
    {"count": 2, "flag": 1},
    {"count": 2, "nothing": None},
    {"count": 2, "nothing": 0},
    {"count": 2, "items": [{"sku": "a"}]},
    {"count": 2, "items": [{"sku": "a", "qty": 2.0}, {"sku": "b"}]},
    {"count": 2, "items": []},
    {"count": 2, "items": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]},
    {"count": 2, "items": [{"qty": 1}]},
    {"count": 2, "items": [{"sku": "a", "extra": 1}]},
    {"count": 2, "extra": 1},
    {},
    [],
    "text",
    None,
]


@pytest.fixture
def mock_server(make_server):
    server = make_server(openai_base_url=None, openai_api_key=None, allow_anonymous=True)
    definition = {
        "name": "typed",
        "input_schema": SCHEMA,
        "messages": [{"role": "user", "content": "{{ input | json }}"}],
    }
    assert server.admin.post("/admin/v1/prompts", json=definition).status_code == 201
    return server


def test_validation_matches_the_reference_validator(mock_server):
    reference = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for case in CASES:
        response = mock_server.client.post(
            "/v1/prompts/typed",
            content=json.dumps(case),
            headers={"Content-Type": "application/json"},
        )
        expected = 200 if reference.is_valid(case) else 422
        assert response.status_code == expected, (case, response.text)
        if expected == 422:
            assert response.json()["errors"], case
