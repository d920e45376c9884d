"""How prompts look from the outside: one description shared by the consumer and admin APIs."""

from __future__ import annotations

from typing import Any

from promptapi.registry import Registry, Version


def summary(registry: Registry, name: str) -> dict[str, Any]:
    prompt = registry.resolve(name)
    return {
        "name": name,
        "description": prompt.description,
        "version": prompt.version,
        "model": prompt.model,
        "url": f"/v1/prompts/{name}",
    }


def detail(registry: Registry, name: str) -> dict[str, Any]:
    versions = registry.versions(name)
    current = registry.resolve(name)
    return {
        **summary(registry, name),
        "input_schema": current.input_schema,
        "output_schema": current.output_schema,
        "examples": current.examples,
        "versions": [v.summary() for v in versions],
    }


def version_detail(version: Version) -> dict[str, Any]:
    prompt = version.prompt
    return {
        "name": prompt.name,
        "version": prompt.version,
        "state": version.state,
        "created_at": version.created_at,
        "created_by": version.created_by,
        "digest": prompt.digest,
        "definition": prompt.definition,
    }
