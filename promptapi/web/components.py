"""Prompt JSON Schemas as OpenAPI `components/schemas`, with collision-free names.

A prompt's schema becomes one component; its `$defs` (and legacy `definitions`) become
components of their own, and every local `$ref` is rewritten to point into `components`, so the
schemas in the document validate exactly as the prompt's own schemas do. Only schema positions
are rewritten: a `{"$ref": ...}` inside `enum`, `const`, `default` or `examples` is data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

from promptapi.prompts import canonical_json

PREFIX = "#/components/schemas/"
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_DEFS = ("$defs", "definitions")
_REFS = ("$ref", "$dynamicRef")
_ANCHORS = ("$anchor", "$dynamicAnchor")
_RESERVED = object()
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def pascal(text: str) -> str:
    """`extract-entities` -> `ExtractEntities`: a component-name-safe, readable name."""
    words = [w for w in _UNSAFE.split(text) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words)
    return name or "Schema"


def _tokens(fragment: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in unquote(fragment).split("/")[1:]]


def _escape(token: str) -> str:
    return quote(token.replace("~", "~0").replace("/", "~1"), safe="")


def _pointer(path: tuple[Any, ...]) -> str:
    return "".join("/" + _escape(str(t)) for t in path)


def _schemas(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[dict[str, Any], tuple]]:
    """Every object in schema position, with its path. Values of `enum`, `const`, `default`
    and `examples` are data, not schemas, and are skipped."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _schemas(item, (*path, i))
        return
    if not isinstance(node, dict):
        return
    yield node, path
    for key, value in node.items():
        if key in _DATA_KEYWORDS or key in _REFS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from _schemas(sub, (*path, key, name))
        else:
            yield from _schemas(value, (*path, key))


def _refs(node: Any) -> Iterator[tuple[dict[str, Any], str]]:
    for schema, _ in _schemas(node):
        for key in _REFS:
            if isinstance(schema.get(key), str):
                yield schema, key


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def _anchors_to_pointers(root: dict[str, Any]) -> bool:
    """Rewrite refs to anchors (`#name`) as JSON pointers, which can then be re-pointed into
    components; False when the schema has embedded resources (`$id` below the root) or a ref to
    an anchor it does not define, which cannot be."""
    anchors: dict[str, tuple[Any, ...]] = {}
    for schema, path in _schemas(root):
        if path and "$id" in schema:
            return False
        for keyword in _ANCHORS:
            if isinstance(schema.get(keyword), str):
                anchors[schema[keyword]] = path
    for schema, key in _refs(root):
        fragment = schema[key][1:]
        if fragment and not fragment.startswith("/"):
            if fragment not in anchors:
                return False
            schema[key] = "#" + _pointer(anchors[fragment])
    return True


class Components:
    """Collects schemas under unique names. Adding the same schema under the same wanted name
    twice returns the first name; a different schema wanting a taken name gets a numbered one."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._by_source: dict[tuple[str, bytes], str] = {}

    def _claim(self, wanted: str, schema: Any) -> str:
        """`schema=_RESERVED` takes a fresh name, to be filled in later."""
        name, n = wanted, 1
        while name in self.schemas:
            if schema is not _RESERVED and self.schemas[name] == schema:
                return name
            n += 1
            name = f"{wanted}{n}"
        self.schemas[name] = schema
        return name

    def claim(self, wanted: str, schema: Any) -> dict[str, str]:
        """A schema of the server's own under `wanted`, or a numbered name if that is taken."""
        return self.ref(self._claim(wanted, schema))

    def ref(self, name: str) -> dict[str, str]:
        return {"$ref": PREFIX + _escape(name)}

    def fixed(self, name: str, schema: Any) -> dict[str, str]:
        """A schema of the server's own (envelope, problem, ...), under exactly this name."""
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"component {name!r} defined twice")
        return self.ref(name)

    def add(
        self, wanted: str, schema: dict[str, Any], *, resource_id: str, group: str | None = None
    ) -> dict[str, str]:
        """Add a prompt's schema (with its `$defs` moved out) and return a `$ref` to it. The
        same schema added again in the same `group` (e.g. another version of the same prompt's
        input) reuses the first component. `resource_id` names the schema when it must be kept
        whole (see _anchors_to_pointers)."""
        key = (group or wanted, canonical_json(schema))
        known = self._by_source.get(key)
        if known is None:
            known = self._add(wanted, schema, resource_id)
            self._by_source[key] = known
        return self.ref(known)

    def _add(self, wanted: str, schema: dict[str, Any], resource_id: str) -> str:
        root = _copy(schema)
        # Refs are all local (`#...`), so a root `$id` only changes what they are relative to.
        root.pop("$id", None)
        if not _anchors_to_pointers(root):
            whole = _copy(schema)
            whole.setdefault("$id", resource_id)
            return self._claim(wanted, whole)
        defs: dict[tuple[str, str], Any] = {}
        for keyword in _DEFS:
            if isinstance(root.get(keyword), dict) and all(
                isinstance(v, dict) for v in root[keyword].values()
            ):
                for def_name, body in root[keyword].items():
                    defs[(keyword, def_name)] = body
        if not self._movable(root, defs):
            defs = {}
        for keyword in {k for k, _ in defs}:
            del root[keyword]
        # Names are fixed before any ref is rewritten; the rewritten bodies are then stored.
        root_name = self._claim(wanted, _RESERVED)
        def_names = {
            key: self._claim(f"{root_name}{pascal(key[1])}", _RESERVED) for key in sorted(defs)
        }

        def rewrite(node: dict[str, Any], key: str) -> None:
            fragment = node[key][1:]
            tokens = _tokens(fragment)
            if len(tokens) >= 2 and (tokens[0], tokens[1]) in def_names:
                target = def_names[(tokens[0], tokens[1])]
                node[key] = PREFIX + _escape(target) + _pointer(tuple(tokens[2:]))
            else:
                node[key] = PREFIX + _escape(root_name) + fragment

        for body in (root, *defs.values()):
            for node, key in list(_refs(body)):
                rewrite(node, key)
        self.schemas[root_name] = root
        for key, name in def_names.items():
            self.schemas[name] = defs[key]
        return root_name

    @staticmethod
    def _movable(root: dict[str, Any], defs: dict[tuple[str, str], Any]) -> bool:
        """Defs can move out when every ref into `$defs` names one def (not the map itself)."""
        for node, key in _refs(root):
            tokens = _tokens(node[key][1:])
            if tokens and tokens[0] in _DEFS and tuple(tokens[:2]) not in defs:
                return False
        return True
