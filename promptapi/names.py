"""Identifiers: prompt names, labels, tags and model aliases, and the one check they all pass.

Each rule is written once, as the body of a regular expression. The JSON Schema copies
(`NAME_PATTERN`, ...) anchor it with `^...$` for documents (OpenAPI, the definition schema),
but what promptapi enforces is `re.fullmatch` here: in Python's `re`, `$` also matches
before a final newline, so `"echo\\n"` would pass an anchored search, and another engine may
read the anchors differently again. Every place that accepts an identifier (HTTP bodies,
path and query parameters, prompt files, the CLI) checks it with these functions.
"""

from __future__ import annotations

import re
from typing import Any

NAME = r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?"
TAG = r"[a-z0-9][a-z0-9_.-]{0,39}"
MODEL = r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}"

# The same rules as JSON Schema `pattern`s (ECMA-262: `$` is the end of the string).
NAME_PATTERN = f"^{NAME}$"
TAG_PATTERN = f"^{TAG}$"
MODEL_PATTERN = f"^{MODEL}$"

NAME_RULE = "1-64 lowercase letters, digits, - and _, starting and ending with a letter or digit"
TAG_RULE = "1-40 lowercase letters, digits, -, _ and ., starting with a letter or digit"
MODEL_RULE = "1-128 letters, digits, -, _, ., : and /, starting with a letter or digit"

_NAME = re.compile(NAME)
_TAG = re.compile(TAG)
_MODEL = re.compile(MODEL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_name(value: Any) -> bool:
    """A prompt name or a label."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def is_tag(value: Any) -> bool:
    return isinstance(value, str) and _TAG.fullmatch(value) is not None


def is_model(value: Any) -> bool:
    """A model alias as a definition names it."""
    return isinstance(value, str) and _MODEL.fullmatch(value) is not None


def has_control(value: str) -> bool:
    """Whether free text meant for one line (a key name, a filter) holds a control character:
    NUL (which PostgreSQL text cannot store), newlines, escapes."""
    return _CONTROL.search(value) is not None


def definition_problems(raw: dict[str, Any]) -> list[dict[str, str]]:
    """The identifiers of a raw definition that are not matched in full: name, tags, model,
    labels. Values of the wrong type are left to the definition schema."""
    problems: list[dict[str, str]] = []
    name = raw.get("name")
    if isinstance(name, str) and not is_name(name):
        problems.append({"path": "/name", "message": f"not a prompt name: {NAME_RULE}"})
    model = raw.get("model")
    if isinstance(model, str) and not is_model(model):
        problems.append({"path": "/model", "message": f"not a model alias: {MODEL_RULE}"})
    for field, check, rule in (("tags", is_tag, TAG_RULE), ("labels", is_name, NAME_RULE)):
        values = raw.get(field)
        if isinstance(values, list):
            problems.extend(
                {"path": f"/{field}/{i}", "message": f"not a {field[:-1]}: {rule}"}
                for i, value in enumerate(values)
                if isinstance(value, str) and not check(value)
            )
    return problems
