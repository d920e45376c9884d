"""Prompt files: one YAML file per prompt version, anywhere below the prompts folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptapi.prompts import FIELDS

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
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return PromptFile(path, error=f"invalid YAML{where}: {problem}")
    return PromptFile(path, data=data)


def read_all(root: Path) -> list[PromptFile]:
    return [read(p) for p in find(root)]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(definition: dict[str, Any]) -> str:
    """A definition as a prompt file: fields in a fixed order, multi-line text as blocks."""
    ordered = {k: definition[k] for k in FIELDS if definition.get(k) not in (None, {}, [], "")}
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
