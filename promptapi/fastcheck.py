"""A fast, conservative pre-check for the simple input schemas most prompts have.

`compile_check(schema)` returns a function that answers True only when the instance is
certainly valid, or None when the schema uses anything beyond the plain subset below. The full
Draft 2020-12 validator still decides every instance this check does not pass, and produces all
error messages; the check only skips it for the common valid case (measured with timeit on the
bench prompt's input: 0.5 µs instead of 12 µs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
}
_KEYWORDS = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "array": {"type", "items", "minItems", "maxItems"},
    "string": {"type", "minLength", "maxLength", "pattern", "enum"},
    "integer": {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "boolean": {"type"},
    "null": {"type"},
}


def compile_check(schema: Any) -> Check | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in _KEYWORDS:
        return None
    if set(schema) - _ANNOTATIONS - _KEYWORDS[kind]:
        return None
    return getattr(_Compiler, kind)(schema)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Compiler:
    @staticmethod
    def object(schema: dict[str, Any]) -> Check | None:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        extra = schema.get("additionalProperties", True)
        if (
            not isinstance(props, dict)
            or not isinstance(required, list)
            or extra not in (True, False)
        ):
            return None
        checks: dict[str, Check] = {}
        for name, sub in props.items():
            check = compile_check(sub)
            if check is None:
                return None
            checks[name] = check
        required_names = tuple(required)
        closed = extra is False

        def check(value: Any) -> bool:
            if type(value) is not dict:
                return False
            for name in required_names:
                if name not in value:
                    return False
            for name, item in value.items():
                sub = checks.get(name)
                if sub is None:
                    if closed:
                        return False
                elif not sub(item):
                    return False
            return True

        return check

    @staticmethod
    def array(schema: dict[str, Any]) -> Check | None:
        items = schema.get("items", True)
        item_check = None if items is True else compile_check(items)
        if items is not True and item_check is None:
            return None
        low = schema.get("minItems", 0)
        high = schema.get("maxItems")

        def check(value: Any) -> bool:
            if (
                type(value) is not list
                or len(value) < low
                or (high is not None and len(value) > high)
            ):
                return False
            return item_check is None or all(item_check(item) for item in value)

        return check

    @staticmethod
    def string(schema: dict[str, Any]) -> Check | None:
        low = schema.get("minLength", 0)
        high = schema.get("maxLength")
        enum = schema.get("enum")
        if enum is not None and not (
            isinstance(enum, list) and all(isinstance(e, str) for e in enum)
        ):
            return None
        allowed = frozenset(enum) if enum is not None else None
        pattern = schema.get("pattern")
        try:
            regex = re.compile(pattern) if pattern is not None else None
        except (re.error, TypeError):
            return None

        def check(value: Any) -> bool:
            if type(value) is not str:
                return False
            if len(value) < low or (high is not None and len(value) > high):
                return False
            if allowed is not None and value not in allowed:
                return False
            return regex is None or regex.search(value) is not None

        return check

    @staticmethod
    def _bounded(schema: dict[str, Any], is_kind: Check) -> Check:
        minimum = schema.get("minimum")
        maximum = schema.get("maximum")
        above = schema.get("exclusiveMinimum")
        below = schema.get("exclusiveMaximum")

        def check(value: Any) -> bool:
            if not is_kind(value):
                return False
            if minimum is not None and value < minimum:
                return False
            if maximum is not None and value > maximum:
                return False
            if above is not None and value <= above:
                return False
            return below is None or value < below

        return check

    @staticmethod
    def integer(schema: dict[str, Any]) -> Check | None:
        return _Compiler._bounded(
            schema, lambda v: _is_number(v) and (isinstance(v, int) or v.is_integer())
        )

    @staticmethod
    def number(schema: dict[str, Any]) -> Check | None:
        return _Compiler._bounded(schema, _is_number)

    @staticmethod
    def boolean(schema: dict[str, Any]) -> Check | None:
        return lambda value: type(value) is bool

    @staticmethod
    def null(schema: dict[str, Any]) -> Check | None:
        return lambda value: value is None
