"""Deterministic sample instances of a JSON Schema.

Used to dry-render templates at registration and by the mock provider. Pure Python: it reads
schemas as data and never fetches anything. A sample is small whatever the schema asks: strings
of at most MAX_STRING characters, arrays of at most MAX_ITEMS items, at most MAX_SIZE values
and characters in all, nested at most MAX_DEPTH deep, numbers near zero when the bounds allow (a dry-render checks the template, not the schema's bounds).
"""

from __future__ import annotations

from typing import Any

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
}


MAX_STRING = 1_000
MAX_ITEMS = 100
MAX_SIZE = 100_000
MAX_DEPTH = 12
SMALL_NUMBER = 1_000


def sample(schema: Any, *, required_only: bool = False) -> Any:
    """A value that satisfies `schema` in the common cases (objects, arrays, enums, formats,
    bounds, local `$ref`s, combinators)."""
    return _Sampler(schema, required_only).make(schema, depth=0)


class _Sampler:
    def __init__(self, root: Any, required_only: bool) -> None:
        self.root = root
        self.required_only = required_only
        self.left = MAX_SIZE

    def resolve(self, ref: str) -> Any:
        node = self.root
        if ref == "#":
            return node
        for part in ref.removeprefix("#/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node.get(part, {})
        return node

    def make(self, schema: Any, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return None if depth else {}
        if depth > MAX_DEPTH or self.left <= 0:
            return None
        self.left -= 1
        if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
            merged = {
                **self.resolve(schema["$ref"]),
                **{k: v for k, v in schema.items() if k != "$ref"},
            }
            return self.make(merged, depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        if "default" in schema:
            return schema["default"]
        if isinstance(schema.get("examples"), list) and schema["examples"]:
            return schema["examples"][0]
        for key in ("oneOf", "anyOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.make(schema[key][0], depth + 1)
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                if isinstance(part, dict):
                    for k, v in part.items():
                        if k in ("properties", "$defs") and isinstance(v, dict):
                            merged[k] = {**merged.get(k, {}), **v}
                        elif k == "required" and isinstance(v, list):
                            merged[k] = [*merged.get(k, []), *v]
                        else:
                            merged.setdefault(k, v)
            return self.make(merged, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
        return getattr(self, f"_{kind}", self._none)(schema, depth)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if self.required_only and name not in required:
                continue
            out[name] = self.make(sub, depth + 1)
        for name in required:
            out.setdefault(name, "sample")
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = [self.make(s, depth + 1) for s in prefix]
        minimum = min(max(_count(schema.get("minItems"), 1), len(prefix)), MAX_ITEMS)
        item_schema = schema.get("items", {})
        while len(items) < minimum and item_schema is not False and self.left > 0:
            items.append(self.make(item_schema, depth + 1))
        if schema.get("uniqueItems") and len(items) > 1:
            items = items[:1]
        return items

    def _string(self, schema: dict[str, Any], depth: int) -> str:
        text = _FORMATS.get(schema.get("format", ""), "sample")
        min_len = min(_count(schema.get("minLength"), 0), MAX_STRING, max(self.left, 0))
        max_len = schema.get("maxLength")
        if len(text) < min_len:
            text = text + "x" * (min_len - len(text))
        if isinstance(max_len, int) and len(text) > max_len:
            text = text[:max_len]
        self.left -= len(text)
        return text

    def _number(self, schema: dict[str, Any], depth: int) -> float | int:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is not None and high is not None:
            value = (low + high) / 2
        elif low is not None:
            value = low + 1 if "exclusiveMinimum" in schema else low
        elif high is not None:
            value = high - 1 if "exclusiveMaximum" in schema else high
        else:
            value = 0
        if abs(value) > SMALL_NUMBER:
            # A value that drives a loop or a repetition should not make the sample expensive:
            # the valid value closest to zero.
            value = max(low, 0) if low is not None and high is None else value
            value = min(high, 0) if high is not None and low is None else value
            if low is not None and high is not None:
                value = min(max(0, low), high)
        return value

    def _integer(self, schema: dict[str, Any], depth: int) -> int:
        value = self._number(schema, depth)
        as_int = int(value)
        if "exclusiveMinimum" in schema and as_int <= schema["exclusiveMinimum"]:
            as_int += 1
        return as_int

    def _boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return True

    def _null(self, schema: dict[str, Any], depth: int) -> None:
        return None

    def _none(self, schema: dict[str, Any], depth: int) -> Any:
        return "sample"


def _count(value: Any, default: int) -> int:
    """A schema's minLength / minItems as a count (they are checked elsewhere)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return int(value) if value == value and abs(value) != float("inf") else default
