"""The in-memory registry of compiled prompt versions: the hot path never asks the database."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from promptapi.errors import NotFound
from promptapi.prompts import Prompt

log = logging.getLogger("promptapi.registry")


@dataclass(frozen=True, slots=True)
class Version:
    prompt: Prompt
    state: str
    created_at: str | None
    created_by: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.prompt.version,
            "state": self.state,
            "created_at": self.created_at,
            "digest": self.prompt.digest,
        }


class Registry:
    def __init__(self) -> None:
        self._versions: dict[str, dict[int, Version]] = {}
        self._current: dict[str, Prompt] = {}
        self.last_row_id = 0

    def add(self, row: dict[str, Any]) -> Version | None:
        self.last_row_id = max(self.last_row_id, row.get("row_id", 0))
        name = row["name"]
        existing = self._versions.get(name, {}).get(row["version"])
        if existing is not None:
            return existing
        try:
            prompt = Prompt(row["definition"])
        except Exception:
            log.exception(
                "cannot compile %s version %s; it will not be served", name, row["version"]
            )
            return None
        version = Version(prompt, row["state"], row.get("created_at"), row.get("created_by"))
        versions = self._versions.setdefault(name, {})
        versions[prompt.version] = version
        current = self._current.get(name)
        if version.state == "published" and (current is None or prompt.version > current.version):
            self._current[name] = prompt
        return version

    def resolve(self, name: str, version: int | None = None) -> Prompt:
        if version is None:
            prompt = self._current.get(name)
            if prompt is None:
                raise NotFound(f"No prompt named {name!r}.")
            return prompt
        found = self._versions.get(name, {}).get(version)
        if found is None:
            if name not in self._versions:
                raise NotFound(f"No prompt named {name!r}.")
            raise NotFound(f"Prompt {name!r} has no version {version}.")
        return found.prompt

    def names(self) -> list[str]:
        return sorted(self._current)

    def versions(self, name: str) -> list[Version]:
        found = self._versions.get(name)
        if not found:
            raise NotFound(f"No prompt named {name!r}.")
        return [found[v] for v in sorted(found)]

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())
