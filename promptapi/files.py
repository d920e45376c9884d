"""Prompt files: one YAML file per prompt version, anywhere below the prompts folder."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promptapi.errors import PromptAPIError
from promptapi.prompts import FIELDS, check_definition, content_digest

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class PromptFile:
    path: Path
    data: Any = None
    error: str | None = None


def find(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix in SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.parts)
    )


def read(path: Path) -> PromptFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return PromptFile(path, error=f"cannot read: {exc.strerror}")
    except UnicodeDecodeError:
        return PromptFile(path, error="not UTF-8 text")
    except RecursionError:
        return PromptFile(path, error="nested too deeply")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return PromptFile(path, error=f"invalid YAML{where}: {problem}")
    return PromptFile(path, data=data)


def read_all(root: Path) -> list[PromptFile]:
    return [read(p) for p in find(root)]


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Lists indented under their key, as people write them.
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    # Short lists of plain values on one line (`required: [text, type]`), as people write them.
    scalars = all(isinstance(v, str | int | float | bool) or v is None for v in value)
    flow = (
        scalars
        and len(repr(value)) <= 100
        and not any(isinstance(v, str) and "\n" in v for v in value)
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)


def dump(
    definition: dict[str, Any], *, state: str | None = None, labels: Iterable[str] = ()
) -> str:
    """A definition as a prompt file: fields in a fixed order, multi-line text as blocks, then
    the labels pointing at the version and its state."""
    ordered = {k: definition[k] for k in FIELDS if definition.get(k) not in (None, {}, [], "")}
    if labels:
        ordered["labels"] = sorted(labels)
    if state is not None:
        ordered["state"] = state
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


@dataclass(slots=True)
class ExportReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    conflicts: list[Path] = field(default_factory=list)


def file_digest(raw: Any) -> str | None:
    """The digest sync would store for a file's definition, or None when it is not a valid
    definition."""
    try:
        return content_digest(check_definition(raw, require_version=True))
    except PromptAPIError:
        return None


def _declared(data: dict[str, Any]) -> tuple[Any, list[Any]]:
    """A file's state and labels (sorted), as export compares them."""
    labels = data.get("labels")
    return data.get("state"), sorted(map(str, labels)) if isinstance(labels, list) else []


def _redeclare(path: Path, state: str, labels: list[str]) -> str | None:
    """The file's text with its top-level `state` and `labels` replaced (appended at the end),
    everything else, comments included, as it was; None when that cannot be done safely."""
    try:
        text = path.read_text(encoding="utf-8")
        before = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith(("state:", "labels:")):
            skipping = True
            continue
        if skipping and (line[:1] in (" ", "\t", "-") or not line.strip()):
            continue
        skipping = False
        kept.append(line)
    tail = {**({"labels": labels} if labels else {}), "state": state}
    extra = yaml.dump(tail, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    new = "\n".join(kept).rstrip("\n") + "\n" + extra
    try:
        after = yaml.safe_load(new)
    except yaml.YAMLError:
        return None
    expected = {k: v for k, v in before.items() if k not in ("state", "labels")} | tail
    return new if after == expected else None


def export(
    rows: Iterable[dict[str, Any]],
    root: Path,
    *,
    force: bool = False,
    labels: Iterable[tuple[str, str, int]] = (),
) -> ExportReport:
    """Write stored versions as prompt files `<root>/<name>/<version>.yaml`, each with its
    state and the labels pointing at it (`labels`: (prompt, label, version) triples), so that
    syncing the files into a new database serves the same versions.

    A version already present anywhere under `root` with the same content, state and labels
    is left alone (its formatting and comments too); with the same content but another state
    or labels, only its `state` and `labels` lines are rewritten. One present with other
    content is a conflict, reported and not touched unless `force` is set, when it is
    overwritten with what is stored."""
    report = ExportReport()
    pointing: dict[tuple[str, int], list[str]] = {}
    for name, label, number in labels:
        pointing.setdefault((name, number), []).append(label)
    present: dict[tuple[Any, Any], tuple[Path, str | None, tuple[Any, list[Any]]]] = {}
    for found in read_all(root):
        data = found.data
        if isinstance(data, dict) and "name" in data and "version" in data:
            key = (data["name"], data["version"])
            present[key] = (found.path, file_digest(data), _declared(data))
    for row in rows:
        target = root / row["name"] / f"{row['version']}.yaml"
        own = pointing.get((row["name"], row["version"]), [])
        existing = present.get((row["name"], row["version"]))
        if existing is not None:
            target = existing[0]
            if existing[1] == row["digest"]:
                if existing[2] == (row["state"], sorted(own)):
                    report.unchanged.append(target)
                    continue
                text = _redeclare(target, row["state"], sorted(own))
                if text is not None:
                    target.write_text(text, encoding="utf-8")
                    report.written.append(target)
                    continue
            elif not force:
                report.conflicts.append(target)
                continue
        elif target.exists() and not force:
            report.conflicts.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dump(row["definition"], state=row["state"], labels=own), encoding="utf-8")
        report.written.append(target)
    return report
