"""An example's expectations, checked against a model's answer by `promptapi test`.

    expect:
      equals: {label: positive}          # the output equals this value exactly
      contains: [refund, order]          # the output text contains each string
      regex: "^- "                       # re.search on the output text (multiline)
      schema: {type: object, ...}        # the output satisfies this JSON Schema
      fields: {/label: positive}         # the value at each JSON pointer equals the given one

The output text is the answer itself for a prompt without an output schema, else the parsed
output as compact JSON. Each check gives one result: (check, passed, reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from promptapi.prompts import MISSING, resolve, schema_problems

ORDER = ("equals", "contains", "regex", "schema", "fields")


@dataclass(frozen=True, slots=True)
class Result:
    check: str
    passed: bool
    reason: str = ""


def _text(output: Any) -> str:
    return output if isinstance(output, str) else orjson.dumps(output).decode()


def _short(value: Any, limit: int = 60) -> str:
    text = _text(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evaluate(expect: dict[str, Any], output: Any) -> list[Result]:
    results: list[Result] = []
    text = _text(output)
    for check in ORDER:
        if check not in expect:
            continue
        wanted = expect[check]
        if check == "equals":
            same = output == wanted
            results.append(Result(check, same, "" if same else f"got {_short(output)}"))
        elif check == "contains":
            needles = [wanted] if isinstance(wanted, str) else list(wanted)
            missing = [n for n in needles if n not in text]
            reason = "missing " + ", ".join(map(repr, missing)) if missing else ""
            results.append(Result(check, not missing, reason))
        elif check == "regex":
            found = re.search(wanted, text, re.MULTILINE) is not None
            results.append(Result(check, found, "" if found else f"no match for {wanted!r}"))
        elif check == "schema":
            problems = schema_problems(wanted, output)
            reason = "; ".join(f"{p['path'] or '/'}: {p['message']}" for p in problems[:3])
            results.append(Result(check, not problems, reason))
        else:
            for path, value in wanted.items():
                got = resolve(output, path)
                if got is MISSING:
                    results.append(Result(f"fields {path}", False, "no value there"))
                else:
                    same = got == value
                    reason = "" if same else f"got {_short(got)}, expected {_short(value)}"
                    results.append(Result(f"fields {path}", same, reason))
    return results
