"""`promptapi test`: run each prompt's examples through the real call pipeline and check them.

Prompts come from prompt files (so a change can be gated in CI before anything is stored) or
from the database. Every example is called like a consumer call (input validation, rendering,
the provider, output parsing and checking) and its `expect` block is checked on the answer.
Nothing is written: the calls' records are discarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptapi import files
from promptapi.errors import PromptAPIError
from promptapi.expect import evaluate
from promptapi.gateway import Gateway
from promptapi.keys import ADMIN
from promptapi.prompts import Prompt, check_definition
from promptapi.registry import Registry

PASS, FAIL, SKIP = "pass", "FAIL", "skip"


@dataclass(frozen=True, slots=True)
class Row:
    prompt: str
    version: int | str
    example: str
    check: str
    result: str
    reason: str = ""
    # A file that is not a valid definition: where it is and every problem in it.
    file: str = ""
    problems: tuple[str, ...] = ()


def from_files(
    root: Path, models: Any, limit: int = files.DEFAULT_LIMIT
) -> tuple[list[dict[str, Any]], list[Row]]:
    """The newest valid version of each prompt in the files under `root`, and a failed row for
    each file that is not a valid definition."""
    newest: dict[str, dict[str, Any]] = {}
    broken: list[Row] = []
    for found in files.read_all(root, limit):
        data = found.data if isinstance(found.data, dict) else {}
        # prompts/NAME/1.yaml: a file too broken to name its prompt is named by its folder.
        folder = found.path.parent.name if found.path.parent != root else found.path.stem
        name = str(data.get("name", folder))
        if found.error is not None:
            reason = f"{found.error} in {found.path}"
            broken.append(
                Row(name, "-", "-", "definition", FAIL, reason, str(found.path), (found.error,))
            )
            continue
        try:
            definition = check_definition(data, models=models, require_version=True)
        except PromptAPIError as exc:
            problems = exc.errors or [{"path": "", "message": exc.detail}]
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            reason = f"{problems[0]['path'] or '/'}: {problems[0]['message']}{more} in {found.path}"
            named = tuple(f"{p['path'] or '/'}: {p['message']}" for p in problems)
            version = data.get("version", "-")
            row = Row(name, version, "-", "definition", FAIL, reason, str(found.path), named)
            broken.append(row)
            continue
        current = newest.get(definition["name"])
        if current is None or definition["version"] > current["version"]:
            newest[definition["name"]] = definition
    return [newest[n] for n in sorted(newest)], broken


def from_registry(gateway: Gateway) -> list[dict[str, Any]]:
    """The version each prompt serves now."""
    return [gateway.registry.resolve(name).definition for name in gateway.registry.names()]


def _reason(exc: PromptAPIError) -> str:
    first = (exc.errors or [None])[0]
    where = f" ({first['path'] or '/'}: {first['message']})" if first else ""
    return f"{exc.status} {exc.code}: {exc.detail}{where}"


async def run(
    gateway: Gateway, definitions: list[dict[str, Any]], *, model: str | None = None
) -> list[Row]:
    """Call every example of every definition (on `model` when given) and check it."""
    registry = Registry()
    for definition in definitions:
        served = {**definition, "model": model} if model else definition
        registry.add(
            {
                "name": served["name"],
                "version": served["version"],
                "definition": served,
                "state": "published",
            }
        )
    gateway.registry = registry
    rows: list[Row] = []
    for definition in definitions:
        prompt: Prompt = registry.resolve(definition["name"], definition["version"])
        name, version = prompt.name, prompt.version
        if not prompt.examples:
            rows.append(Row(name, version, "-", "call", SKIP, "no examples"))
            continue
        for i, example in enumerate(prompt.examples, start=1):
            label = f"#{i}" + (f" {example['name']}" if example.get("name") else "")
            try:
                envelope = await gateway.invoke(
                    name, example["input"], caller=ADMIN, version=version
                )
            except PromptAPIError as exc:
                rows.append(Row(name, version, label, "call", FAIL, _reason(exc)))
                continue
            rows.append(Row(name, version, label, "call", PASS, envelope["model"]))
            for result in evaluate(example.get("expect") or {}, envelope["output"]):
                rows.append(
                    Row(
                        name,
                        version,
                        label,
                        result.check,
                        PASS if result.passed else FAIL,
                        result.reason,
                    )
                )
    return rows


def table(rows: list[Row], width: int = 100) -> str:
    header = ("PROMPT", "VERSION", "EXAMPLE", "CHECK", "RESULT", "REASON")
    cells = [header] + [
        (
            r.prompt,
            str(r.version),
            r.example,
            r.check,
            r.result,
            r.reason if len(r.reason) <= width else r.reason[: width - 1] + "…",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines)
