"""JSON Schemas read for people: flat field tables, and the tree a "try it" form is built from.

Local `$ref`s are followed (with a guard against cycles); anything a form control cannot
express (oneOf, free-form maps, tuples...) becomes a raw JSON field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from promptapi.prompts import MISSING
from promptapi.prompts import resolve as at_pointer

MAX_DEPTH = 10
LONG_STRING = 200
_INPUT_FORMATS = {"date": "date", "email": "email", "uri": "url", "uri-reference": "url"}


def resolve(root: Any, schema: Any, seen: tuple[str, ...] = ()) -> tuple[Any, tuple[str, ...]]:
    """`schema` with its local `$ref` replaced by the target (siblings win), and the refs taken
    to get there. A cycle stops at the repeated ref."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        if not (ref == "#" or ref.startswith("#/")) or ref in seen:
            break
        target = at_pointer(root, ref[1:])
        if target is MISSING:
            break
        seen = (*seen, ref)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **siblings} if isinstance(target, dict) else target
    return schema, seen


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    if "enum" in schema and isinstance(schema["enum"], list):
        kinds = {_json_type(v) for v in schema["enum"]}
        return sorted(kinds)
    if "const" in schema:
        return [_json_type(schema["const"])]
    if "properties" in schema:
        return ["object"]
    if "items" in schema or "prefixItems" in schema:
        return ["array"]
    return []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def constraints(schema: dict[str, Any]) -> list[str]:
    """The rules of one schema node, each as a short phrase."""
    found: list[str] = []
    if isinstance(schema.get("enum"), list):
        found.append("one of: " + ", ".join(_value(v) for v in schema["enum"]))
    if "const" in schema:
        found.append(f"always {_value(schema['const'])}")
    words = {
        "minimum": "≥ {}",
        "exclusiveMinimum": "> {}",
        "maximum": "≤ {}",
        "exclusiveMaximum": "< {}",
        "multipleOf": "multiple of {}",
        "minLength": "at least {} character{}",
        "maxLength": "at most {} character{}",
        "pattern": "matches {}",
        "format": "format {}",
        "minItems": "at least {} item{}",
        "maxItems": "at most {} item{}",
        "minProperties": "at least {} propert{}",
        "maxProperties": "at most {} propert{}",
    }
    for key, phrase in words.items():
        if key in schema and not isinstance(schema[key], dict | list):
            value = schema[key]
            plural = ("ies" if value != 1 else "y") if "Properties" in key else "s" * (value != 1)
            found.append(phrase.format(_value(value) if key == "pattern" else value, plural))
    if schema.get("uniqueItems") is True:
        found.append("unique items")
    if schema.get("additionalProperties") is False:
        found.append("no other properties")
    if "default" in schema:
        found.append(f"default {_value(schema['default'])}")
    return found


def _type_label(schema: Any, root: Any = None) -> str:
    if schema is True or schema == {}:
        return "any"
    if not isinstance(schema, dict):
        return "nothing" if schema is False else "any"
    for combinator, word in (("oneOf", "one of"), ("anyOf", "any of"), ("allOf", "all of")):
        if isinstance(schema.get(combinator), list):
            return word
    types = _types(schema)
    if types == ["array"] and isinstance(schema.get("items"), dict):
        item, _ = resolve(root, schema["items"])
        inner = _types(item) if isinstance(item, dict) else []
        if len(inner) == 1:
            return f"array of {inner[0]}"
    return " or ".join(types) if types else "any"


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    type: str
    required: bool | None
    constraints: list[str]
    description: str
    depth: int


def field_rows(schema: Any) -> list[Row]:
    """Every field of a schema, flattened: `customer.name`, `items[].qty`. The root object's
    properties are the top-level rows; a root that is not an object gets one row, `(body)`."""
    rows: list[Row] = []
    node, seen = resolve(schema, schema)
    if isinstance(node, dict) and isinstance(node.get("properties"), dict) and not _combined(node):
        _object_rows(schema, node, "", 0, seen, rows)
    else:
        _rows(schema, node, "(body)", None, 0, seen, rows)
    return rows


def _combined(node: dict[str, Any]) -> bool:
    return any(isinstance(node.get(k), list) for k in ("oneOf", "anyOf", "allOf"))


def _object_rows(
    root: Any, node: dict[str, Any], prefix: str, depth: int, seen: tuple[str, ...], rows: list[Row]
) -> None:
    required = node.get("required") if isinstance(node.get("required"), list) else []
    for name, child in node["properties"].items():
        _rows(root, child, f"{prefix}{name}", name in required, depth, seen, rows)


def _rows(
    root: Any,
    schema: Any,
    path: str,
    required: bool | None,
    depth: int,
    seen: tuple[str, ...],
    rows: list[Row],
) -> None:
    node, now_seen = resolve(root, schema, seen)
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        rows.append(Row(path, f"recursive ({node['$ref']})", required, [], "", depth))
        return
    if not isinstance(node, dict):
        rows.append(Row(path, _type_label(node, root), required, [], "", depth))
        return
    description = str(node.get("description") or node.get("title") or "")
    rules = constraints(node)
    items = node.get("items")
    item, _ = resolve(root, items, now_seen)
    nested = isinstance(item, dict) and (
        isinstance(item.get("properties"), dict) or _combined(item) or "items" in item
    )
    if isinstance(item, dict) and not nested:
        rules += [f"each {rule}" for rule in constraints(item)]
    rows.append(Row(path, _type_label(node, root), required, rules, description, depth))
    if depth >= MAX_DEPTH:
        return
    if isinstance(node.get("properties"), dict):
        _object_rows(root, node, f"{path}.", depth + 1, now_seen, rows)
    if nested:
        _rows(root, items, f"{path}[]", None, depth + 1, now_seen, rows)
    for combinator in ("oneOf", "anyOf", "allOf"):
        variants = node.get(combinator)
        if isinstance(variants, list):
            for i, variant in enumerate(variants, 1):
                _rows(root, variant, f"{path} ⟨option {i}⟩", None, depth + 1, now_seen, rows)


# -- the try-it form ----------------------------------------------------------------------


@dataclass(slots=True)
class Field:
    """One control (or group of controls) of the try-it form."""

    kind: str  # object, array, string, text, number, integer, boolean, enum, enum-set, json
    key: str | None
    label: str
    id: str
    required: bool = False
    description: str = ""
    hints: list[str] = field(default_factory=list)
    children: list[Field] = field(default_factory=list)
    item: Field | None = None
    options: list[tuple[str, str]] = field(default_factory=list)  # (JSON value, text shown)
    input_type: str = "text"
    attrs: dict[str, str] = field(default_factory=dict)
    default: str | None = None  # JSON text of the schema's default
    min_items: int = 0


class _Slot(NamedTuple):
    """Where a field sits: its property name (none for array items), label, id, and whether
    its parent requires it."""

    key: str | None
    label: str
    id: str
    required: bool


def form(schema: Any) -> Field | None:
    """The form tree of an input schema, or None when the root is not an object with
    properties (then only the raw JSON mode can express the input)."""
    node, seen = resolve(schema, schema)
    if not (
        isinstance(node, dict) and isinstance(node.get("properties"), dict) and not _combined(node)
    ):
        return None
    return _object_field(schema, node, _Slot(None, "input", "f", True), 0, seen)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def _object_field(
    root: Any, node: dict[str, Any], slot: _Slot, depth: int, seen: tuple[str, ...]
) -> Field:
    names = node.get("required") if isinstance(node.get("required"), list) else []
    children = [
        _field(
            root,
            child,
            _Slot(name, name, f"{slot.id}-{_slug(name)}", name in names),
            depth + 1,
            seen,
        )
        for name, child in node["properties"].items()
    ]
    hints = [h for h in constraints(node) if h != "no other properties"]
    description = str(node.get("description") or "")
    return Field("object", *slot, description, hints, children)


def _plain(schema: Any) -> bool:
    return isinstance(schema, str | int | float | bool) or schema is None


def _field(root: Any, schema: Any, slot: _Slot, depth: int, seen: tuple[str, ...]) -> Field:
    node, seen = resolve(root, schema, seen)
    if isinstance(node, dict):
        node = _drop_null_variant(root, node, seen)
    base: dict[str, Any] = {
        **slot._asdict(),
        "description": str(node.get("description") or "") if isinstance(node, dict) else "",
        "hints": constraints(node) if isinstance(node, dict) else [],
    }
    if not isinstance(node, dict) or depth > MAX_DEPTH or isinstance(node.get("$ref"), str):
        return Field("json", **base)
    if "default" in node:
        base["default"] = _value(node["default"])
    choices = node["enum"] if isinstance(node.get("enum"), list) else None
    if "const" in node:
        choices = [node["const"]]
    if choices is not None:
        if not all(_plain(v) for v in choices):
            return Field("json", **base)
        return Field("enum", options=[(_value(v), str(v)) for v in choices], **base)
    if _combined(node):
        return Field("json", **base)
    types = [t for t in _types(node) if t != "null"]
    if len(types) != 1:
        return Field("json", **base)
    kind = types[0]
    if kind == "object":
        if isinstance(node.get("properties"), dict) and node["properties"]:
            return _object_field(root, node, slot, depth, seen)
        return Field("json", **base)
    if kind == "array":
        return _array_field(root, node, base, depth, seen)
    if kind == "boolean":
        return Field("boolean", **base)
    if kind in ("number", "integer"):
        attrs = {"step": "1" if kind == "integer" else "any"}
        for source, target in (("minimum", "min"), ("maximum", "max")):
            if isinstance(node.get(source), int | float) and not isinstance(node[source], bool):
                attrs[target] = str(node[source])
        return Field(kind, attrs=attrs, **base)
    if kind == "string":
        fmt = node.get("format")
        max_length = node.get("maxLength")
        if isinstance(fmt, str) and fmt in _INPUT_FORMATS:
            return Field("string", input_type=_INPUT_FORMATS[fmt], **base)
        long = (isinstance(max_length, int) and max_length > LONG_STRING) or (
            max_length is None and fmt is None and "pattern" not in node
        )
        return Field("text" if long else "string", **base)
    return Field("json", **base)


def _drop_null_variant(root: Any, node: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (a nullable X) is shown as X."""
    for combinator in ("anyOf", "oneOf"):
        variants = node.get(combinator)
        if isinstance(variants, list) and len(variants) == 2:
            rest = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
            if len(rest) == 1:
                inner, _ = resolve(root, rest[0], seen)
                if isinstance(inner, dict):
                    siblings = {k: v for k, v in node.items() if k != combinator}
                    return {**inner, **siblings}
    return node


def _array_field(
    root: Any, node: dict[str, Any], base: dict[str, Any], depth: int, seen: tuple[str, ...]
) -> Field:
    items = node.get("items")
    if not isinstance(items, dict) or "prefixItems" in node:
        return Field("json", **base)
    min_items = node.get("minItems") if isinstance(node.get("minItems"), int) else 0
    item_node, _ = resolve(root, items, seen)
    choices = item_node.get("enum") if isinstance(item_node, dict) else None
    if (
        isinstance(choices, list)
        and node.get("uniqueItems") is True
        and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in choices)
    ):
        return Field(
            "enum-set", options=[(_value(v), str(v)) for v in choices], min_items=min_items, **base
        )
    slot = _Slot(None, f"{base['label']} item", f"{base['id']}-i", True)
    item = _field(root, items, slot, depth, seen)
    return Field("array", item=item, min_items=min_items, **base)
