"""Import Prompty files (`.prompty`): YAML front matter between `---` lines, then a Jinja2 body
whose lines `system:`, `user:`, `assistant:` start a message of that role.

What is mapped: `name` (turned into a slug), `description`, `model.parameters` (the ones
promptapi knows; others are reported as dropped), `inputs` (typed specs with `type`,
`description`, `default`, `sample`, `required`, or plain sample values) to an input JSON Schema
(closed, every input required unless it says `required: false`, since promptapi does not fill
in defaults), `outputs` to an output schema, and `sample` (or the inputs' samples) to an
example. The model configuration names a deployment, not one of our aliases, so the prompt gets
the alias the caller chooses (`default` unless told). The result is a raw definition; whoever
writes it checks it with `check_definition` like any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptapi import names, safeyaml
from promptapi.prompts import template_variables

PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)
_ROLE_LINE = re.compile(r"^\s*#?\s*(system|user|assistant|developer)\s*:\s*$", re.IGNORECASE)
_TYPES = {
    "string": "string",
    "str": "string",
    "number": "number",
    "float": "number",
    "integer": "integer",
    "int": "integer",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "object": "object",
    "dict": "object",
}


class PromptyError(ValueError):
    """The file cannot be converted; the message says why."""


@dataclass(slots=True)
class Converted:
    definition: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def slug(text: str) -> str:
    value = re.sub(r"[^a-z0-9_-]+", "-", text.strip().lower()).strip("-_")
    return value[:64].rstrip("-_")


def split(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a Prompty file."""
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            try:
                # A blank first line for the opening `---`: problems name the file's lines.
                meta = safeyaml.loads("\n" + "".join(lines[1:i])) or {}
            except safeyaml.YAMLProblem as exc:
                message = str(exc).replace("invalid YAML", "invalid YAML front matter", 1)
                raise PromptyError(message) from None
            if not isinstance(meta, dict):
                raise PromptyError("the front matter must be a YAML mapping")
            return meta, "".join(lines[i + 1 :])
    raise PromptyError("the front matter has no closing '---' line")


def messages(body: str) -> list[dict[str, str]]:
    """The body cut at role marker lines; text before the first marker is a system message."""
    found: list[dict[str, str]] = []
    role = "system"
    chunk: list[str] = []

    def close() -> None:
        content = "".join(chunk).strip("\n")
        if content.strip():
            found.append({"role": role, "content": content.rstrip() + "\n"})

    for line in body.splitlines(keepends=True):
        marker = _ROLE_LINE.match(line)
        if marker:
            close()
            named = marker.group(1).lower()
            role = "system" if named == "developer" else named
            chunk = []
        else:
            chunk.append(line)
    close()
    if not found:
        raise PromptyError("the body has no message text")
    for message in found:
        if re.search(r"^\s*\{\{[^}]*\}\}\s*:\s*$", message["content"], re.MULTILINE):
            raise PromptyError(
                "a role marker is produced by template code (e.g. a chat_history loop); "
                "promptapi messages have fixed roles"
            )
    return found


def _infer(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {"type": "string"}


def _properties(
    specs: Any, where: str, notes: list[str]
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """(JSON Schema properties, required names, sample values) for Prompty inputs/outputs."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    samples: dict[str, Any] = {}
    if specs is None:
        return properties, required, samples
    if isinstance(specs, list):  # Prompty 2: a list of {name, kind, ...}
        specs = {s.get("name"): s for s in specs if isinstance(s, dict) and s.get("name")}
    if not isinstance(specs, dict):
        raise PromptyError(f"'{where}' must be a mapping of names to specs")
    for name, spec in specs.items():
        name = str(name)
        typed = isinstance(spec, dict) and ("type" in spec or "kind" in spec)
        if not typed:
            properties[name] = _infer(spec)
            if spec is not None:
                samples[name] = spec
            required.append(name)
            continue
        kind = str(spec.get("type", spec.get("kind", "string"))).lower()
        schema: dict[str, Any] = {}
        if kind in _TYPES:
            schema["type"] = _TYPES[kind]
        else:
            notes.append(f"{where}.{name}: type {kind!r} is not a JSON type; left untyped")
        for key in ("description", "default", "enum"):
            if key in spec:
                schema[key] = spec[key]
        properties[name] = schema
        if spec.get("required", True) is not False:
            required.append(name)
        if "sample" in spec:
            samples[name] = spec["sample"]
        elif "default" in spec:
            samples[name] = spec["default"]
    return properties, required, samples


def convert(text: str, *, source: str = "", model: str = "default") -> Converted:
    """A raw promptapi definition (version 1) from the text of a Prompty file."""
    meta, body = split(text)
    notes: list[str] = []
    name = slug(str(meta.get("name") or Path(source).stem or "prompt"))
    if not names.is_name(name):
        raise PromptyError(f"cannot make a prompt name out of {meta.get('name')!r}")
    chat = messages(body)

    inputs, required, samples = _properties(meta.get("inputs"), "inputs", notes)
    sample = meta.get("sample")
    if isinstance(sample, dict):
        for key, value in sample.items():
            samples[str(key)] = value
    elif sample is not None:
        notes.append("sample: only an inline mapping is imported (not a file reference)")
    for used in sorted(template_variables([m["content"] for m in chat]) - set(inputs)):
        inputs[used] = _infer(samples.get(used, ""))
        required.append(used)
        notes.append(f"inputs.{used}: used by the template but not declared; added as required")
    for extra in sorted(set(samples) - set(inputs)):
        del samples[extra]
        notes.append(f"sample.{extra}: not an input of the template; dropped")

    definition: dict[str, Any] = {"name": name, "version": 1}
    if meta.get("description"):
        definition["description"] = str(meta["description"]).strip()
    definition["model"] = model
    spec = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    parameters = spec.get("parameters") or spec.get("options") or {}
    if isinstance(parameters, dict):
        params = {k: v for k, v in parameters.items() if k in PARAMS}
        definition["params"] = params
        dropped = sorted(set(parameters) - set(PARAMS))
        if dropped:
            notes.append(f"model.parameters: dropped {', '.join(dropped)} (not promptapi params)")
    configuration = spec.get("configuration") or spec.get("connection") or {}
    deployment = spec.get("id") or (
        configuration.get("azure_deployment") or configuration.get("name")
        if isinstance(configuration, dict)
        else None
    )
    if deployment:
        notes.append(f"model: {deployment!r} is mapped to the alias {model!r}")
    definition["input_schema"] = {
        "type": "object",
        "properties": inputs,
        "required": [r for r in dict.fromkeys(required) if r in inputs],
        "additionalProperties": False,
    }
    outputs, out_required, _ = _properties(meta.get("outputs"), "outputs", notes)
    if outputs:
        definition["output_schema"] = {
            "type": "object",
            "properties": outputs,
            "required": out_required,
            "additionalProperties": False,
        }
    definition["messages"] = chat
    if samples:
        definition["examples"] = [{"input": samples}]
    return Converted(definition, notes)
