"""The official OpenAI API description, used to keep our adapter and our fake honest."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

URI = "urn:openai-openapi"


def contract_path() -> Path | None:
    explicit = os.environ.get("PROMPTAPI_CONTRACTS_DIR")
    candidates = [Path(explicit)] if explicit else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "contracts", here / ".." / "shared" / "contracts"]
    for folder in candidates:
        path = folder / "openai-openapi.json"
        if path.is_file():
            return path
    return None


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
def _registry() -> Registry | None:
    path = contract_path()
    if path is None:
        return None
    document = _nullable(json.loads(path.read_text(encoding="utf-8")))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(URI, resource)


@cache
def validator(schema_name: str) -> Draft202012Validator | None:
    registry = _registry()
    if registry is None:
        return None
    return Draft202012Validator(
        {"$ref": f"{URI}#/components/schemas/{schema_name}"}, registry=registry
    )


def problems(schema_name: str, instance: Any) -> list[str]:
    """Contract violations of `instance` (empty when the contract file is absent)."""
    checker = validator(schema_name)
    if checker is None:
        return []
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in checker.iter_errors(instance)
    ]


REQUIRED = os.environ.get("CI", "").lower() in ("1", "true")


CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"


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
