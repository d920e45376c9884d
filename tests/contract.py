"""The official OpenAI API description, used to keep our adapter and our fake honest."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

URI = "urn:openai-openapi"
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
# Vendored from the public openai/openai-openapi repository (commit in .VERSION, MIT licence in
# .LICENSE), so the contract checks run on every clone and never skip.
OPENAI_CONTRACT = CONTRACTS_DIR / "openai-openapi.json"


def _nullable(node: Any) -> Any:
    """The document marks nullable members OpenAPI 3.0 style (`nullable: true`), which JSON
    Schema ignores; real answers do carry nulls there (e.g. a chunk's finish_reason). Read the
    marker as the document means it: the value may also be null."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def _registry() -> Registry:
    document = _nullable(json.loads(OPENAI_CONTRACT.read_text(encoding="utf-8")))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(URI, resource)


@cache
def validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{URI}#/components/schemas/{schema_name}"}, registry=_registry()
    )


def problems(schema_name: str, instance: Any) -> list[str]:
    """Contract violations of `instance` against the official OpenAI description."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(schema_name).iter_errors(instance)
    ]


@cache
def provider_validator(contract: str, definition: str) -> Draft202012Validator:
    """A definition from a provider contract written from its official docs (tests/contracts)."""
    document = json.loads((CONTRACTS_DIR / f"{contract}.json").read_text(encoding="utf-8"))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    uri = document["$id"]
    registry = Registry().with_resource(uri, resource)
    return Draft202012Validator({"$ref": f"{uri}#/$defs/{definition}"}, registry=registry)


def provider_problems(contract: str, definition: str, instance: Any) -> list[str]:
    checker = provider_validator(contract, definition)
    return [
        f"{definition} /{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in checker.iter_errors(instance)
    ]
