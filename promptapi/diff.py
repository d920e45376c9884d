"""What changed between two versions of a prompt, as structured JSON and as readable text.

Per top-level field: `description` and `model` as {from, to}; the messages as a unified diff of
their text; params, schemas and examples as JSON-pointer-level changes (added / removed /
changed).
"""

from __future__ import annotations

import difflib
from typing import Any

import orjson

from promptapi.prompts import canonical_json, digest, pointer

SCALARS = ("description", "model")
STRUCTURED = ("params", "input_schema", "output_schema", "examples")


def versions(name: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` and `new` hold `version`, `state` and `definition`."""
    a, b = old["definition"], new["definition"]
    changes: dict[str, Any] = {}
    for field in SCALARS:
        if not _same(a.get(field), b.get(field)):
            changes[field] = {"from": a.get(field), "to": b.get(field)}
    if not _same(a.get("messages"), b.get("messages")):
        changes["messages"] = {
            "diff": "\n".join(
                difflib.unified_diff(
                    _message_lines(a.get("messages") or []),
                    _message_lines(b.get("messages") or []),
                    fromfile=f"{name}@{old['version']}/messages",
                    tofile=f"{name}@{new['version']}/messages",
                    lineterm="",
                )
            )
        }
    for field in STRUCTURED:
        found = pointer_changes(a.get(field), b.get(field))
        if found:
            changes[field] = found
    return {
        "name": name,
        "from": _side(old),
        "to": _side(new),
        "identical": not changes,
        "changes": changes,
    }


def _side(version: dict[str, Any]) -> dict[str, Any]:
    # The same digest as the version's own (`Prompt.digest`), whoever read the definition.
    return {
        "version": version["version"],
        "state": version["state"],
        "digest": digest(version["definition"]),
    }


def _same(a: Any, b: Any) -> bool:
    # Canonical JSON, so 1 and true (equal in Python) count as different, as they are in JSON.
    return canonical_json(a) == canonical_json(b)


def _message_lines(messages: list[dict[str, str]]) -> list[str]:
    lines: list[str] = []
    for message in messages:
        lines.append(f"## {message['role']}")
        lines.extend(message["content"].split("\n"))
    return lines


def pointer_changes(a: Any, b: Any, path: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Every difference between two JSON values, each at the JSON pointer where it is."""
    if _same(a, b):
        return []
    where = pointer(path)
    if a is None and not path:
        return [{"op": "added", "path": where, "to": b}]
    if b is None and not path:
        return [{"op": "removed", "path": where, "from": a}]
    found: list[dict[str, Any]] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in b:
                found.append({"op": "removed", "path": pointer((*path, key)), "from": a[key]})
            elif key not in a:
                found.append({"op": "added", "path": pointer((*path, key)), "to": b[key]})
            else:
                found.extend(pointer_changes(a[key], b[key], (*path, key)))
        return found
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            if i >= len(b):
                found.append({"op": "removed", "path": pointer((*path, i)), "from": a[i]})
            elif i >= len(a):
                found.append({"op": "added", "path": pointer((*path, i)), "to": b[i]})
            else:
                found.extend(pointer_changes(a[i], b[i], (*path, i)))
        return found
    return [{"op": "changed", "path": where, "from": a, "to": b}]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def render(result: dict[str, Any]) -> str:
    """The diff as text for a terminal."""
    old, new = result["from"], result["to"]
    lines = [
        f"{result['name']}: version {old['version']} ({old['state']}) -> "
        f"version {new['version']} ({new['state']})"
    ]
    if result["identical"]:
        lines.append("no changes")
        return "\n".join(lines)
    changes = result["changes"]
    for field in SCALARS:
        if field in changes:
            lines.append(f"{field}:")
            lines.append(f"  - {_json(changes[field]['from'])}")
            lines.append(f"  + {_json(changes[field]['to'])}")
    if "messages" in changes:
        lines.append("messages:")
        lines.extend("  " + line for line in changes["messages"]["diff"].split("\n"))
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for field in STRUCTURED:
        if field not in changes:
            continue
        lines.append(f"{field}:")
        for change in changes[field]:
            path = change["path"] or "/"
            if change["op"] == "changed":
                text = f"{_json(change['from'])} -> {_json(change['to'])}"
            else:
                text = _json(change["to" if change["op"] == "added" else "from"])
            lines.append(f"  {marks[change['op']]} {path}: {text}")
    return "\n".join(lines)
