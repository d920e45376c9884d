"""How prompts look from the outside: one description shared by the consumer and admin APIs.
`drafts` says whether the viewer may see draft versions (the admin, allow_drafts keys)."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Any

from promptapi.errors import NotFound
from promptapi.lifecycle import DEPRECATED, DRAFT
from promptapi.registry import Registry, Version


def _visible(registry: Registry, name: str, drafts: bool) -> list[Version]:
    versions = [v for v in registry.versions(name) if drafts or v.state != DRAFT]
    if not versions:
        raise NotFound(f"No prompt named {name!r}.")
    return versions


def _labels(registry: Registry, name: str, versions: list[Version]) -> dict[str, int]:
    shown = {v.prompt.version for v in versions}
    return {label: n for label, n in registry.labels(name).items() if n in shown}


def summary(registry: Registry, name: str, *, drafts: bool = False) -> dict[str, Any]:
    versions = _visible(registry, name, drafts)
    return _summary(registry, name, versions)


def _summary(registry: Registry, name: str, versions: list[Version]) -> dict[str, Any]:
    current = registry.current(name)
    shown = current or versions[-1]
    return {
        "name": name,
        "description": shown.prompt.description,
        "version": current.prompt.version if current is not None else None,
        "state": current.state if current is not None else None,
        "model": shown.prompt.model,
        "labels": _labels(registry, name, versions),
        "url": f"/v1/prompts/{name}",
    }


def detail(registry: Registry, name: str, *, drafts: bool = False) -> dict[str, Any]:
    versions = _visible(registry, name, drafts)
    shown = registry.current(name) or versions[-1]
    labels = _labels(registry, name, versions)
    return {
        **_summary(registry, name, versions),
        "input_schema": shown.prompt.input_schema,
        "output_schema": shown.prompt.output_schema,
        "examples": shown.prompt.examples,
        "versions": [
            {
                **v.summary(),
                "labels": sorted(k for k, n in labels.items() if n == v.prompt.version),
            }
            for v in versions
        ],
    }


def version_detail(version: Version, labels: dict[str, int] | None = None) -> dict[str, Any]:
    prompt = version.prompt
    return {
        "name": prompt.name,
        "version": prompt.version,
        **version.lifecycle(),
        "labels": sorted(k for k, n in (labels or {}).items() if n == prompt.version),
        "created_at": version.created_at,
        "created_by": version.created_by,
        "digest": prompt.digest,
        "definition": prompt.definition,
    }


def successor_url(name: str, successor: int) -> str:
    return f"/v1/prompts/{name}/versions/{successor}"


def deprecation_headers(version: Version) -> dict[str, str]:
    """RFC 9745 `Deprecation` (@unix-seconds), RFC 8594 `Sunset` (HTTP-date) and a
    successor-version `Link` for a call served by a deprecated version; else nothing."""
    if version.state != DEPRECATED or version.deprecated_at is None:
        return {}
    headers = {"Deprecation": f"@{int(datetime.fromisoformat(version.deprecated_at).timestamp())}"}
    if version.sunset is not None:
        headers["Sunset"] = format_datetime(datetime.fromisoformat(version.sunset), usegmt=True)
    if version.successor is not None:
        url = successor_url(version.prompt.name, version.successor)
        headers["Link"] = f'<{url}>; rel="successor-version"'
    return headers
