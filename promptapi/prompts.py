"""The prompt definition: parse and check it, compile it once, render it, check answers.

A definition is one plain JSON-compatible dict shared by the admin API, the files in
`prompts/` and the database. `check_definition` normalises it (or lists every problem at once);
`Prompt` is its compiled form, reused for every call. jinja2 and jsonschema live only here.
"""

from __future__ import annotations

import asyncio
import hashlib
import marshal
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
import jinja2.meta
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from promptapi import isolation
from promptapi.errors import (
    DefinitionInvalid,
    InputInvalid,
    OutputInvalid,
    RenderFailed,
    RenderLimitExceeded,
)
from promptapi.fastcheck import compile_check
from promptapi.names import MODEL_PATTERN, NAME_PATTERN, TAG_PATTERN, definition_problems
from promptapi.samples import sample
from promptapi.sandbox import BoundedEnvironment, Limits, RenderLimit, Slow, render_many

ROLES = ("system", "user", "assistant")
FIELDS = (
    "name",
    "version",
    "description",
    "tags",
    "model",
    "params",
    "input_schema",
    "output_schema",
    "output_repair",
    "messages",
    "examples",
)

# What `promptapi test` checks an example's answer against (see promptapi/expect.py).
EXPECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "equals": {},
        "contains": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            ]
        },
        "regex": {"type": "string", "minLength": 1},
        "schema": {"type": ["object", "boolean"]},
        "fields": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^/"},
        },
    },
}

DEFINITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "input_schema", "messages"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "description": {"type": "string", "maxLength": 10000},
        "tags": {
            "type": "array",
            "maxItems": 20,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": TAG_PATTERN},
        },
        "model": {"type": "string", "pattern": MODEL_PATTERN},
        "params": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "stop": {
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1},
                            "maxItems": 4,
                        },
                    ]
                },
                "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "seed": {"type": "integer"},
            },
        },
        "input_schema": {"type": "object"},
        "output_schema": {"type": ["object", "null"]},
        # How many times a model answer that fails output_schema is sent back with the problems.
        "output_repair": {"type": "integer", "minimum": 0, "maximum": 3},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": list(ROLES)},
                    "content": {"type": "string", "minLength": 1, "maxLength": 200_000},
                },
            },
        },
        # Not part of the version's content (nor of its digest): the version's state (a new
        # one starts in it; sync moves a stored one forward to it) and the labels to move to
        # it. Read by the gateway, dropped from the normalised definition.
        "state": {"enum": ["draft", "published", "deprecated", "retired"]},
        "labels": {
            "type": "array",
            "items": {"type": "string", "pattern": NAME_PATTERN},
            "uniqueItems": True,
            "maxItems": 20,
        },
        "examples": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["input"],
                "properties": {
                    "name": {"type": "string"},
                    "input": {},
                    "output": {},
                    "expect": EXPECT_SCHEMA,
                },
            },
        },
    },
}

_definition_validator = Draft202012Validator(DEFINITION_SCHEMA)


def _refuse_remote(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


_NO_REMOTE = Registry(retrieve=_refuse_remote)  # type: ignore[call-arg]

# Templates compile without folding and render within bounds (promptapi/sandbox.py).
_env = BoundedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    auto_reload=False,
)
_env.add_filter("json", lambda value: orjson.dumps(value).decode())


# CPU seconds a render may take on the event loop before it is run again in a thread.
INLINE_RENDER = 0.002


def set_render_limits(limits: Limits) -> None:
    """The bounds every render in this process runs within (PROMPTAPI_RENDER_*)."""
    _env.limits = limits


def render_limits() -> Limits:
    return _env.limits


# Compiled templates by source. Compiling is linear but not cheap (jinja's code generator runs
# in Python), so the admin path compiles a new version's templates in a thread (`precompile`)
# and the registry then finds them here instead of compiling on the event loop.
_compiled: dict[str, jinja2.Template] = {}
_compiled_lock = threading.Lock()
_COMPILED_SOURCE_MAX = 8 * 2**20  # characters of template source kept compiled beyond the registry


def compile_template(source: str) -> jinja2.Template:
    template = _compiled.get(source)
    if template is None:
        template = _env.from_string(source)
        _keep(source, template)
    return template


def _keep(source: str, template: jinja2.Template) -> None:
    with _compiled_lock:
        kept = sum(map(len, _compiled))
        while _compiled and kept + len(source) > _COMPILED_SOURCE_MAX:
            kept -= len(_compiled.pop(next(iter(_compiled))))
        _compiled[source] = template


def template_code(source: str) -> bytes:
    """A template's compiled Python code, marshalled: made by the checker process, so that
    neither jinja's code generator nor CPython's compile() (which holds the GIL throughout:
    a quarter of a second for a 100 KB template) runs in the serving process."""
    return marshal.dumps(_env.compile(source))


def adopt_code(source: str, code: bytes) -> None:
    """Keep a template compiled by the checker process (`template_code`): unmarshalling its
    code takes well under a millisecond."""
    if source not in _compiled:
        loaded = marshal.loads(code)
        _keep(source, _env.template_class.from_code(_env, loaded, _env.make_globals(None), None))


def precompile(definition: Mapping[str, Any]) -> None:
    """Compile a checked definition's templates ahead of `Prompt(definition)`."""
    for message in definition.get("messages") or ():
        compile_template(message["content"])


def pointer(parts: Iterable[Any]) -> str:
    """RFC 6901 JSON pointer for a path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


MISSING: Any = object()


def resolve(document: Any, at: str) -> Any:
    """The value at RFC 6901 pointer `at` (`""` or `"/a/0"`) in `document`, else MISSING."""
    node = document
    for raw in at.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def schema_errors(
    validator: Draft202012Validator, instance: Any, prefix: Iterable[Any] = ()
) -> list[dict[str, str]]:
    """Every way `instance` fails, each with a JSON pointer to the offending member."""
    found: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    base = list(prefix)

    def add(path: list[Any], message: str) -> None:
        key = (pointer(path), message)
        if key not in seen:
            seen.add(key)
            found.append({"path": key[0], "message": _short(message)})

    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        path = base + list(error.absolute_path)
        target = error.instance
        if error.validator == "required" and isinstance(target, dict):
            for name in error.validator_value:
                if name not in target:
                    add([*path, name], f"'{name}' is required")
        elif error.validator == "additionalProperties" and isinstance(target, dict):
            props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            patterns = (
                error.schema.get("patternProperties", {}) if isinstance(error.schema, dict) else {}
            )
            for name in target:
                if name not in props and not any(re.search(p, name) for p in patterns):
                    add([*path, name], f"unexpected property '{name}'")
        else:
            add(path, error.message)
    return found


def _refs(node: Any, path: list[Any]) -> Iterable[tuple[list[Any], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield [*path, key], value
            else:
                yield from _refs(value, [*path, key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, [*path, i])


def _check_schema(schema: Any, field: str | list[Any], problems: list[dict[str, str]]) -> bool:
    before = len(problems)
    at = [field] if isinstance(field, str) else field
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problems.append(
            {
                "path": pointer([*at, *exc.absolute_path]),
                "message": _short(f"invalid JSON Schema: {exc.message}"),
            }
        )
    for path, ref in _refs(schema, at):
        if not ref.startswith("#"):
            problems.append(
                {
                    "path": pointer(path),
                    "message": f"only local references ('#...') are allowed, not {ref!r}",
                }
            )
    if len(problems) == before:
        try:
            Draft202012Validator(schema, registry=_NO_REMOTE).is_valid(sample(schema))
        except (Unresolvable, NoSuchResource) as exc:
            problems.append({"path": pointer(at), "message": f"unresolvable reference: {exc}"})
    return len(problems) == before


def _check_expect(expect: dict[str, Any], at: list[Any], problems: list[dict[str, str]]) -> None:
    regex = expect.get("regex")
    if isinstance(regex, str):
        try:
            re.compile(regex)
        except re.error as exc:
            problems.append(
                {
                    "path": pointer([*at, "regex"]),
                    "message": f"not a valid regular expression: {exc}",
                }
            )
    if isinstance(expect.get("schema"), dict):
        _check_schema(expect["schema"], [*at, "schema"], problems)


def schema_problems(schema: Any, value: Any) -> list[dict[str, str]]:
    """Every way `value` fails `schema` (a schema already checked), with JSON pointers."""
    if isinstance(schema, bool):
        return [] if schema else [{"path": "", "message": "no value is allowed (schema false)"}]
    return schema_errors(_validator(schema), value)


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(
        schema, registry=_NO_REMOTE, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def digest(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(definition)).hexdigest()


def content_digest(definition: Mapping[str, Any]) -> str:
    """The digest of what a version says, not of its number: what the store compares."""
    return digest({k: v for k, v in definition.items() if k != "version"})


def check_definition(
    raw: Any, *, models: Iterable[str] | None = None, require_version: bool = False
) -> dict[str, Any]:
    """Validate a raw definition and return its normalised form, or raise DefinitionInvalid
    listing every problem. Runs in the checker process, within its limits (isolation.py)."""
    if not isolation.in_worker():
        return isolation.check_definition(raw, models=models, require_version=require_version)
    too_deep = DefinitionInvalid(
        "The definition is nested too deeply.",
        errors=[
            {"path": "", "message": "nested too deeply (JSON nesting is limited to 250 levels)"}
        ],
    )
    try:
        definition = _check_definition(raw, models=models, require_version=require_version)
        canonical_json(definition)
    except (RecursionError, orjson.JSONEncodeError):
        raise too_deep from None
    return definition


def _check_definition(
    raw: Any, *, models: Iterable[str] | None, require_version: bool
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DefinitionInvalid(
            "A prompt definition must be a JSON object.",
            errors=[{"path": "", "message": "expected an object"}],
        )
    problems = schema_errors(_definition_validator, raw)
    # Identifiers are matched in full whatever the schema's regex engine makes of `$`.
    flagged = {p["path"] for p in problems}
    problems += [p for p in definition_problems(raw) if p["path"] not in flagged]
    # Fields with structural problems are reported as such; every other field is still checked
    # in depth, so one answer lists every problem.
    broken = {p["path"].split("/")[1] for p in problems if p["path"].count("/") >= 1}
    if require_version and "version" not in raw:
        problems.append({"path": "/version", "message": "'version' is required"})
    model = raw.get("model", "default")
    known = sorted(models) if models is not None else None
    if known is not None and isinstance(model, str) and model not in known:
        problems.append(
            {
                "path": "/model",
                "message": f"unknown model alias {model!r}; configured: {', '.join(known)}",
            }
        )

    input_schema = raw.get("input_schema")
    input_ok = isinstance(input_schema, dict) and "input_schema" not in broken
    input_ok = input_ok and _check_schema(input_schema, "input_schema", problems)
    output_schema = raw.get("output_schema")
    output_ok = isinstance(output_schema, dict) and "output_schema" not in broken
    output_ok = output_ok and _check_schema(output_schema, "output_schema", problems)

    templates: list[tuple[int, jinja2.Template]] = []
    messages = raw.get("messages") if isinstance(raw.get("messages"), list) else []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            continue
        try:
            templates.append((i, _env.from_string(content)))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                {
                    "path": f"/messages/{i}/content",
                    "message": f"template syntax error on line {exc.lineno}: {exc.message}",
                }
            )

    input_validator = _validator(input_schema) if input_ok else None  # type: ignore[arg-type]
    output_validator = _validator(output_schema) if output_ok else None  # type: ignore[arg-type]
    inputs: list[tuple[str, Any]] = []
    examples = raw.get("examples") if isinstance(raw.get("examples"), list) else []
    for i, example in enumerate(examples):
        if not isinstance(example, dict) or "input" not in example:
            continue
        if input_validator is not None:
            problems.extend(
                schema_errors(input_validator, example["input"], ["examples", i, "input"])
            )
        if output_validator is not None and "output" in example:
            problems.extend(
                schema_errors(output_validator, example["output"], ["examples", i, "output"])
            )
        inputs.append((f"example {i}", example["input"]))
        expect = example.get("expect")
        if isinstance(expect, dict):
            _check_expect(expect, ["examples", i, "expect"], problems)

    if input_ok:
        inputs.insert(
            0,
            (
                "a sample input with only the required fields",
                sample(input_schema, required_only=True),
            ),
        )
        inputs.insert(0, ("a sample input with every field", sample(input_schema)))
        for i, template in templates:
            problem = _dry_render(template, inputs, messages[i]["content"])
            if problem is not None:
                problems.append({"path": f"/messages/{i}/content", "message": problem})
    if problems:
        raise DefinitionInvalid(_summary(problems), errors=problems)
    params = raw.get("params") or {}
    return {
        "name": raw["name"],
        "version": _integer(raw.get("version")),
        "description": raw.get("description", ""),
        "model": model,
        "params": {k: _integer(v) if k in _INTEGER_PARAMS else v for k, v in params.items()},
        "input_schema": input_schema,
        "output_schema": output_schema,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "examples": list(examples),
        # Only when given: definitions stored before this field existed keep their digest.
        **({"output_repair": raw["output_repair"]} if "output_repair" in raw else {}),
        # Tags too, and only when there are some.
        **({"tags": list(raw["tags"])} if raw.get("tags") else {}),
    }


def template_variables(contents: Iterable[str]) -> set[str]:
    """The variables the templates read (other than `input`); unparseable ones are skipped."""
    found: set[str] = set()
    for content in contents:
        try:
            found |= jinja2.meta.find_undeclared_variables(_env.parse(content))
        except jinja2.TemplateSyntaxError:
            continue  # check_definition reports it with its line
    return found - {"input"}


_INTEGER_PARAMS = ("max_tokens", "seed")


def _integer(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; store it as 3, so version numbers and integer
    params are ints everywhere (URLs, the database, the provider's request)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _dry_render(
    template: jinja2.Template, inputs: list[tuple[str, Any]], source: str = ""
) -> str | None:
    for label, data in inputs:
        if not isinstance(data, dict):
            continue
        try:
            template.render(_variables(data))
        except RenderLimit as exc:
            return f"rendering with {label} goes past a bound: {exc.message}"
        except MemoryError:
            raise  # the checker process reports its memory limit
        except jinja2.UndefinedError as exc:
            hint = (
                " (guard optional fields with `{% if x is defined %}` or `| default(...)`)"
                if "required" in label
                else ""
            )
            # Jinja stops at the first undefined variable; name every one the input lacks.
            missing = sorted(template_variables([source]) - set(data) - set(_env.globals))
            what = (
                f"{', '.join(map(repr, missing))} are undefined"
                if len(missing) > 1
                else exc.message
            )
            return f"{what} when rendered with {label}{hint}"
        except Exception as exc:  # a template can raise anything while dry-rendered
            return f"template failed when rendered with {label}: {type(exc).__name__}: {exc}"
    return None


def _summary(problems: list[dict[str, str]]) -> str:
    count = len(problems)
    return f"The prompt definition has {count} problem{'s' if count != 1 else ''}."


def _variables(data: dict[str, Any]) -> dict[str, Any]:
    return {"input": data, **data}


def _strip_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        first_newline = stripped.find("\n")
        if first_newline != -1 and stripped.endswith("```"):
            return stripped[first_newline + 1 : -3].strip()
    return stripped


class Prompt:
    """A compiled, immutable prompt version, ready to serve."""

    __slots__ = (
        "_fast_check",
        "_input_validator",
        "_output_validator",
        "_roles",
        "_templates",
        "definition",
        "description",
        "digest",
        "examples",
        "input_schema",
        "model",
        "name",
        "output_repair",
        "output_schema",
        "params",
        "version",
    )

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.name: str = definition["name"]
        self.version: int = definition["version"]
        self.description: str = definition.get("description", "")
        self.model: str = definition.get("model", "default")
        self.params: dict[str, Any] = definition.get("params") or {}
        self.input_schema: dict[str, Any] = definition["input_schema"]
        self.output_schema: dict[str, Any] | None = definition.get("output_schema")
        self.output_repair: int = definition.get("output_repair", 1)
        self.examples: list[dict[str, Any]] = definition.get("examples") or []
        self.digest = digest(definition)
        self._input_validator = _validator(self.input_schema)
        self._fast_check = compile_check(self.input_schema)
        self._output_validator = (
            _validator(self.output_schema) if self.output_schema is not None else None
        )
        self._roles = [m["role"] for m in definition["messages"]]
        self._templates = [compile_template(m["content"]) for m in definition["messages"]]

    def validate_input(self, data: Any) -> None:
        if self._fast_check is not None and self._fast_check(data):
            return
        try:
            valid = self._input_validator.is_valid(data)
        except RecursionError:
            raise InputInvalid(
                "The input is nested too deeply.",
                errors=[{"path": "", "message": "nested too deeply to validate"}],
            ) from None
        if not valid:
            problems = schema_errors(self._input_validator, data)
            raise InputInvalid(
                f"The input has {len(problems)} problem{'s' if len(problems) != 1 else ''}.",
                errors=problems,
            )

    def render(self, data: Any, *, inline: float = 0.0) -> list[dict[str, str]]:
        """The messages for `data`, rendered within the render bounds (one budget for all)."""
        variables = _variables(data) if isinstance(data, dict) else {"input": data}
        try:
            texts = render_many(self._templates, variables, _env.limits, inline=inline)
        except RenderLimit as exc:
            raise RenderLimitExceeded(
                f"Rendering the template with this input goes past a bound: {exc.message}.",
                limit=exc.setting,
            ) from None
        except Slow:
            raise
        except Exception as exc:  # a template can raise anything; the caller gets a 422, not a 500
            raise RenderFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from None
        return [
            {"role": role, "content": text} for role, text in zip(self._roles, texts, strict=True)
        ]

    async def arender(self, data: Any) -> list[dict[str, str]]:
        """`render` for the event loop: inline while it is quick (nearly always), else again in
        a thread, so a long render never holds up other requests."""
        try:
            return self.render(data, inline=INLINE_RENDER)
        except Slow:
            return await asyncio.to_thread(self.render, data)

    def parse_output(self, text: str) -> Any:
        if self._output_validator is None:
            return text
        try:
            value = orjson.loads(_strip_fence(text))
        except orjson.JSONDecodeError as exc:
            raise OutputInvalid(
                "The model's answer is not valid JSON.",
                errors=[{"path": "", "message": _short(f"not valid JSON: {exc}")}],
            ) from None
        if not self._output_validator.is_valid(value):
            problems = schema_errors(self._output_validator, value)
            raise OutputInvalid(
                "The model's answer does not match the output schema.", errors=problems
            )
        return value


__all__ = [
    "FIELDS",
    "MISSING",
    "NAME_PATTERN",
    "Prompt",
    "canonical_json",
    "check_definition",
    "content_digest",
    "digest",
    "pointer",
    "resolve",
]
