"""The in-memory registry of compiled prompt versions, their lifecycle states and labels: the
hot path never asks the database."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from promptapi.errors import NotFound, VersionRetired
from promptapi.lifecycle import DEPRECATED, DRAFT, PRODUCTION, PUBLISHED, RETIRED, SERVED
from promptapi.prompts import Prompt

log = logging.getLogger("promptapi.registry")

LIFECYCLE_FIELDS = (
    "state",
    "state_changed_at",
    "state_changed_by",
    "deprecated_at",
    "sunset",
    "successor",
)


@dataclass(frozen=True, slots=True)
class Version:
    prompt: Prompt
    state: str
    created_at: str | None
    created_by: str | None
    state_changed_at: str | None = None
    state_changed_by: str | None = None
    deprecated_at: str | None = None
    sunset: str | None = None
    successor: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.prompt.version,
            "state": self.state,
            "created_at": self.created_at,
            "digest": self.prompt.digest,
            "deprecated_at": self.deprecated_at,
            "sunset": self.sunset,
            "successor": self.successor,
        }

    def lifecycle(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in LIFECYCLE_FIELDS}


def _lifecycle_of(row: dict[str, Any]) -> dict[str, Any]:
    return {field: row.get(field) for field in LIFECYCLE_FIELDS}


class Registry:
    def __init__(self) -> None:
        self._versions: dict[str, dict[int, Version]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        # What an unpinned call serves: the production label's version, else the newest
        # published, else the newest deprecated. Recomputed on every change to a prompt.
        self._current: dict[str, Version] = {}
        self._public: set[str] = set()  # prompts with a version that is not a draft
        self._broken: set[tuple[str, int]] = set()  # stored versions that failed to compile
        # Bumped on every change to what is served, so derived views (the OpenAPI document) can
        # be cached until the next change.
        self.generation = 0

    # -- changes ----------------------------------------------------------------------------

    def add(self, row: dict[str, Any]) -> Version | None:
        name = row["name"]
        existing = self._versions.get(name, {}).get(row["version"])
        if existing is not None:
            return self.update_lifecycle(row)
        try:
            prompt = Prompt(row["definition"])
        except Exception:
            log.exception(
                "cannot compile %s version %s; it will not be served", name, row["version"]
            )
            self._broken.add((name, row["version"]))
            return None
        version = Version(
            prompt,
            created_at=row.get("created_at"),
            created_by=row.get("created_by"),
            **_lifecycle_of(row),
        )
        self._versions.setdefault(name, {})[prompt.version] = version
        self._recompute(name)
        return version

    def update_lifecycle(self, row: dict[str, Any]) -> Version | None:
        """Take a version's lifecycle columns (state, deprecation) from a stored row."""
        name = row["name"]
        existing = self._versions.get(name, {}).get(row["version"])
        if existing is None:
            return None
        changes = _lifecycle_of(row)
        if existing.lifecycle() == changes:
            return existing
        version = replace(existing, **changes)
        self._versions[name][row["version"]] = version
        self._recompute(name)
        return version

    def missing(self, rows: list[dict[str, Any]]) -> list[int]:
        """Row ids of the stored versions (lifecycle rows) that this registry does not hold."""
        return [
            row["row_id"]
            for row in rows
            if self.get(row["name"], row["version"]) is None
            and (row["name"], row["version"]) not in self._broken
        ]

    def apply_lifecycles(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.update_lifecycle(row)

    def move_label(self, name: str, label: str, version: int) -> None:
        self._labels.setdefault(name, {})[label] = version
        self._recompute(name)

    def remove_label(self, name: str, label: str) -> None:
        self._labels.get(name, {}).pop(label, None)
        self._recompute(name)

    def replace_labels(self, rows: list[tuple[str, str, int]]) -> None:
        labels: dict[str, dict[str, int]] = {}
        for name, label, version in rows:
            labels.setdefault(name, {})[label] = version
        changed = {
            n for n in set(labels) | set(self._labels) if labels.get(n) != self._labels.get(n)
        }
        self._labels = labels
        for name in changed:
            self._recompute(name)

    def _recompute(self, name: str) -> None:
        self.generation += 1
        versions = self._versions.get(name)
        if not versions:
            return
        production = self._labels.get(name, {}).get(PRODUCTION)
        current = versions.get(production) if production is not None else None
        if current is None or current.state not in SERVED:
            current = None
            for state in (PUBLISHED, DEPRECATED):
                numbers = [n for n, v in versions.items() if v.state == state]
                if numbers:
                    current = versions[max(numbers)]
                    break
        if current is None:
            self._current.pop(name, None)
        else:
            self._current[name] = current
        if any(v.state != DRAFT for v in versions.values()):
            self._public.add(name)
        else:
            self._public.discard(name)

    # -- lookups ----------------------------------------------------------------------------

    def lookup(
        self,
        name: str,
        version: int | None = None,
        *,
        label: str | None = None,
        drafts: bool = False,
    ) -> Version:
        """The version a call should use: pinned, by label, or the current one. Drafts are
        invisible (404, as if they did not exist) unless `drafts`; retired versions are 410."""
        versions = self._versions.get(name)
        if not versions or not (drafts or name in self._public):
            raise NotFound(f"No prompt named {name!r}.")
        if version is not None:
            found = versions.get(version)
            if found is None or (found.state == DRAFT and not drafts):
                raise NotFound(f"Prompt {name!r} has no version {version}.")
        elif label is not None:
            number = self._labels.get(name, {}).get(label)
            found = versions.get(number) if number is not None else None
            if found is None or (found.state == DRAFT and not drafts):
                raise NotFound(f"Prompt {name!r} has no label {label!r}.", label=label)
        else:
            found = self._current.get(name)
            if found is None:
                retired = [n for n, v in versions.items() if v.state == RETIRED]
                if not retired:
                    raise NotFound(
                        f"Prompt {name!r} has no published version yet; call a draft by its "
                        "version or a label."
                    )
                found = versions[max(retired)]
        if found.state == RETIRED:
            raise VersionRetired(name, found.prompt.version, found.successor)
        return found

    def resolve(self, name: str, version: int | None = None) -> Prompt:
        return self.lookup(name, version).prompt

    def get(self, name: str, version: int) -> Version | None:
        return self._versions.get(name, {}).get(version)

    def current(self, name: str) -> Version | None:
        return self._current.get(name)

    def labels(self, name: str) -> dict[str, int]:
        return dict(sorted(self._labels.get(name, {}).items()))

    def names(self, *, drafts: bool = False) -> list[str]:
        """Prompts a caller can call: with a current version, or (`drafts`) with any draft."""
        names = set(self._current)
        if drafts:
            names.update(
                n for n, vs in self._versions.items() if any(v.state == DRAFT for v in vs.values())
            )
        return sorted(names)

    def all_names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[Version]:
        found = self._versions.get(name)
        if not found:
            raise NotFound(f"No prompt named {name!r}.")
        return [found[v] for v in sorted(found)]

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())
