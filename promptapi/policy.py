"""Governance policy: house rules a prompt definition must follow beyond being valid.

A policy is a set of rules, each with an id, a severity (`error` refuses the definition,
`warning` is reported) and options. The built-in defaults refuse only what is unsafe to run
(remote `$ref`s, regexes that can backtrack catastrophically) and warn about the rest; a YAML
policy file (PROMPTAPI_POLICY_FILE) overrides any rule. `check` reads a raw definition as data
and never raises on odd input: it lists every violation, each with a JSON pointer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptapi import safeyaml
from promptapi.errors import ConfigError, DefinitionInvalid, PolicyViolation
from promptapi.prompts import MISSING, check_definition, pointer, resolve
from promptapi.providers import conflicts
from promptapi.redos import backtracking_problem

SEVERITIES = ("error", "warning")
PUBLISHED = "published"


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    rule: str
    severity: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "message": self.message,
            "rule": self.rule,
            "severity": self.severity,
        }


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule's built-in default: its severity (None = off) and its options."""

    severity: str | None
    options: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


DEFAULTS: dict[str, RuleSpec] = {
    "description": RuleSpec("warning", {"min_length": 1}, "a non-empty description"),
    "closed-input": RuleSpec(
        "warning", {}, "input_schema is an object with additionalProperties: false"
    ),
    "bounded-strings": RuleSpec(
        "warning", {"max_length": None}, "every input string has maxLength (or enum/const)"
    ),
    "bounded-arrays": RuleSpec(
        "warning", {"max_items": None}, "every input array has maxItems (or is otherwise finite)"
    ),
    "max-tokens": RuleSpec(
        "warning", {"ceiling": 32768}, "params.max_tokens is set and at most `ceiling`"
    ),
    "model-allowlist": RuleSpec(None, {"models": []}, "the model alias is one of `models`"),
    "name-pattern": RuleSpec(None, {"pattern": None}, "the name matches `pattern`"),
    "examples": RuleSpec(
        "warning", {"min": 1}, "at least `min` examples before a version is published"
    ),
    "no-remote-ref": RuleSpec("error", {}, "schemas use only local $refs ('#...')"),
    "safe-regex": RuleSpec(
        "error",
        {"allow": []},
        "no `pattern` / patternProperties regex can backtrack catastrophically",
    ),
}

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "additionalItems",
)


def subschemas(schema: Any, path: list[Any]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """Every (sub)schema that is an object, with its path, depth first."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in _SCHEMA_MAPS:
        members = schema.get(key)
        if isinstance(members, dict):
            for name, sub in members.items():
                yield from subschemas(sub, [*path, key, name])
    for key in _SCHEMA_LISTS:
        members = schema.get(key)
        if isinstance(members, list):
            for i, sub in enumerate(members):
                yield from subschemas(sub, [*path, key, i])
    for key in _SCHEMA_ONE:
        yield from subschemas(schema.get(key), [*path, key])


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _local(root: dict[str, Any], ref: Any) -> Any:
    """The target of a local `#/...` reference inside `root`, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    found = resolve(root, ref[1:])
    return None if found is MISSING else found


def _finite(schema: Any, root: dict[str, Any], depth: int = 0) -> bool:
    """Does `schema` admit only finitely many values (enum, const, boolean, a $ref to one)?"""
    if depth > 20 or not isinstance(schema, dict):
        return schema is False
    if "enum" in schema or "const" in schema or _types(schema) in ({"boolean"}, {"null"}):
        return True
    if "$ref" in schema:
        return _finite(_local(root, schema["$ref"]), root, depth + 1)
    return False


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class Policy:
    """The rules in force: the built-in defaults overridden by a policy file."""

    def __init__(self, rules: dict[str, tuple[str | None, dict[str, Any]]] | None = None) -> None:
        self.rules: dict[str, tuple[str | None, dict[str, Any]]] = {
            rule: (spec.severity, dict(spec.options)) for rule, spec in DEFAULTS.items()
        }
        self.rules.update(rules or {})
        self.source = "built-in defaults"

    @classmethod
    def load(cls, path: Path | None) -> Policy:
        if path is None:
            return cls()
        try:
            raw = safeyaml.load_file(path, safeyaml.CONFIG_LIMIT, aliases=True)
        except safeyaml.YAMLProblem as exc:
            raise ConfigError(f"cannot read policy file {path}: {exc}") from None
        problems: list[str] = []
        rules = _parse(raw, problems)
        if problems:
            raise ConfigError(f"policy file {path}: " + "; ".join(problems))
        policy = cls(rules)
        policy.source = str(path)
        return policy

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rules": {
                rule: {"severity": severity or "off", **options}
                for rule, (severity, options) in self.rules.items()
            },
        }

    def check(self, definition: Any, *, stage: str = PUBLISHED) -> list[Violation]:
        """Every violation of the rules in force. `stage` is the lifecycle state the version
        is about to enter: rules such as `examples` only apply when it is `published`."""
        if not isinstance(definition, dict):
            return []
        found: list[Violation] = []
        for rule, (severity, options) in self.rules.items():
            if severity is None:
                continue
            check = _CHECKS[rule]
            for path, message in check(definition, options, stage):
                found.append(Violation(path, rule, severity, message))
        return found


def errors(violations: Iterable[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "error"]


def warnings(violations: Iterable[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "warning"]


@dataclass(slots=True)
class Review:
    """A raw definition checked for validity and against a policy, every problem at once.
    `problems` are the definition's own errors (path, message) followed by error-severity
    violations at other paths; `warnings` are the warning-severity violations."""

    definition: dict[str, Any] | None
    invalid: list[dict[str, str]]
    violations: list[Violation]

    @property
    def problems(self) -> list[dict[str, str]]:
        taken = {p["path"] for p in self.invalid}
        extra = [v.as_dict() for v in errors(self.violations) if v.path not in taken]
        return self.invalid + extra

    @property
    def warnings(self) -> list[dict[str, str]]:
        return [v.as_dict() for v in warnings(self.violations)]

    def accepted(self) -> dict[str, Any]:
        """The normalised definition, or DefinitionInvalid / PolicyViolation listing it all."""
        problems = self.problems
        if self.definition is None:
            raise DefinitionInvalid(_summary(problems, "problem"), errors=problems)
        if problems:
            raise PolicyViolation(_summary(problems, "policy violation"), errors=problems)
        return self.definition


def _summary(problems: list[dict[str, str]], what: str) -> str:
    return f"The prompt definition has {_plural(len(problems), what)}."


def review(
    raw: Any,
    policy: Policy,
    *,
    models: Iterable[str] | None = None,
    require_version: bool = False,
    stage: str = PUBLISHED,
) -> Review:
    try:
        violations = policy.check(raw, stage=stage)
    except RecursionError:
        violations = []  # check_definition reports the nesting
    try:
        definition = check_definition(raw, models=models, require_version=require_version)
    except DefinitionInvalid as exc:
        return Review(None, list(exc.errors or []), violations)
    if isinstance(models, Mapping):
        # What the alias's provider would refuse on every call (e.g. thinking with a forced tool).
        refused = conflicts(models, definition)
        if refused:
            return Review(None, refused, violations)
    return Review(definition, [], violations)


# -- the policy file ------------------------------------------------------------------------


def _parse(raw: Any, problems: list[str]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - {"rules"}:
        problems.append("expected a mapping with one key, 'rules'")
        return {}
    entries = raw.get("rules") or {}
    if not isinstance(entries, dict):
        problems.append("'rules' must map rule ids to settings")
        return {}
    rules: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for rule, setting in entries.items():
        spec = DEFAULTS.get(rule)
        if spec is None:
            problems.append(f"unknown rule {rule!r} (known: {', '.join(DEFAULTS)})")
            continue
        if setting is False or setting in ("off", None):
            rules[rule] = (None, dict(spec.options))
            continue
        if isinstance(setting, str):
            setting = {"severity": setting}
        if not isinstance(setting, dict):
            problems.append(f"{rule}: expected 'error', 'warning', 'off' or a mapping")
            continue
        severity = setting.get("severity", spec.severity or "error")
        if severity == "off":
            severity = None
        elif severity not in SEVERITIES:
            problems.append(f"{rule}: severity must be error, warning or off, not {severity!r}")
            continue
        options = dict(spec.options)
        for key, value in setting.items():
            if key == "severity":
                continue
            if key not in spec.options:
                known = ", ".join(spec.options) or "none"
                problems.append(f"{rule}: unknown option {key!r} (options: {known})")
                continue
            problem = _option_problem(rule, key, value)
            if problem:
                problems.append(f"{rule}.{key}: {problem}")
                continue
            options[key] = value
        if severity is not None and rule == "model-allowlist" and not options["models"]:
            problems.append("model-allowlist: list the allowed aliases under 'models'")
        if severity is not None and rule == "name-pattern" and not options["pattern"]:
            problems.append("name-pattern: set 'pattern'")
        rules[rule] = (severity, options)
    return rules


def _option_problem(rule: str, key: str, value: Any) -> str | None:
    if key in ("min_length", "max_length", "max_items", "ceiling", "min"):
        if value is None and key in ("max_length", "max_items"):
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return "expected a non-negative integer"
    elif key in ("models", "allow"):
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            return "expected a list of strings"
    elif key == "pattern":
        if not isinstance(value, str):
            return "expected a regular expression"
        try:
            re.compile(value)
        except re.error as exc:
            return f"not a valid regular expression: {exc}"
    return None


# -- the rules ------------------------------------------------------------------------------

Found = Iterator[tuple[str, str]]


def _description(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    text = d.get("description")
    minimum = max(1, options["min_length"])
    if not isinstance(text, str) or not text.strip():
        yield "/description", "a description is required"
    elif len(text.strip()) < minimum:
        yield "/description", f"the description must be at least {minimum} characters long"


def _closed_input(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    schema = d.get("input_schema")
    if not isinstance(schema, dict):
        return
    if schema.get("type") != "object":
        yield "/input_schema/type", "the input schema must have type: object"
    if schema.get("additionalProperties") is not False:
        yield (
            "/input_schema/additionalProperties",
            "must be false, so inputs with unknown fields are refused",
        )


def _typed(d: dict[str, Any], kind: str) -> Iterator[tuple[list[Any], dict[str, Any], Any]]:
    """(path, subschema, root) for every input subschema that admits `kind`."""
    root = d.get("input_schema")
    for path, schema in subschemas(root, ["input_schema"]):
        if kind in _types(schema):
            yield path, schema, root


def _bounded_strings(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    limit = options["max_length"]
    for path, schema, root in _typed(d, "string"):
        if _finite(schema, root):
            continue
        bound = schema.get("maxLength")
        if not isinstance(bound, int) or isinstance(bound, bool):
            yield pointer(path), "string without maxLength"
        elif limit is not None and bound > limit:
            yield pointer([*path, "maxLength"]), f"maxLength {bound} is above the limit of {limit}"


def _bounded_arrays(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    limit = options["max_items"]
    for path, schema, root in _typed(d, "array"):
        bound = schema.get("maxItems")
        if isinstance(bound, int) and not isinstance(bound, bool):
            if limit is not None and bound > limit:
                yield (
                    pointer([*path, "maxItems"]),
                    f"maxItems {bound} is above the limit of {limit}",
                )
            continue
        closed_tuple = isinstance(schema.get("prefixItems"), list) and schema.get("items") is False
        unique_finite = schema.get("uniqueItems") is True and _finite(schema.get("items"), root)
        if not (closed_tuple or unique_finite):
            yield pointer(path), "array without maxItems"


def _max_tokens(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    params = d.get("params")
    value = params.get("max_tokens") if isinstance(params, dict) else None
    ceiling = options["ceiling"]
    if value is None:
        yield "/params/max_tokens", f"params.max_tokens is required (at most {ceiling})"
    elif isinstance(value, int) and value > ceiling:
        yield "/params/max_tokens", f"max_tokens {value} is above the ceiling of {ceiling}"


def _model_allowlist(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    model = d.get("model", "default")
    allowed = options["models"]
    if isinstance(model, str) and model not in allowed:
        yield "/model", f"model {model!r} is not allowed; allowed: {', '.join(allowed)}"


def _name_pattern(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    name = d.get("name")
    if isinstance(name, str) and not re.search(options["pattern"], name):
        yield "/name", f"name {name!r} does not match the pattern {options['pattern']!r}"


def _examples(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    if stage != PUBLISHED:
        return
    examples = d.get("examples")
    count = len(examples) if isinstance(examples, list) else 0
    minimum = options["min"]
    if count < minimum:
        verb = "is" if minimum == 1 else "are"
        yield (
            "/examples",
            f"at least {_plural(minimum, 'example')} {verb} required before publishing",
        )


def _schemas(d: dict[str, Any]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    for key in ("input_schema", "output_schema"):
        yield from subschemas(d.get(key), [key])


def _no_remote_ref(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    for path, schema in _schemas(d):
        for key in ("$ref", "$dynamicRef"):
            ref = schema.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                yield (
                    pointer([*path, key]),
                    f"remote reference {ref!r} is not allowed; use a local one ('#/$defs/...')",
                )


def _safe_regex(d: dict[str, Any], options: dict[str, Any], stage: str) -> Found:
    allowed = set(options["allow"])
    for path, schema in _schemas(d):
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and pattern not in allowed:
            problem = backtracking_problem(pattern)
            if problem:
                yield pointer([*path, "pattern"]), f"pattern '{pattern}' {problem}"
        keyed = schema.get("patternProperties")
        if isinstance(keyed, dict):
            for key in keyed:
                problem = None if key in allowed else backtracking_problem(key)
                if problem:
                    yield (
                        pointer([*path, "patternProperties", key]),
                        f"patternProperties key '{key}' {problem}",
                    )


_CHECKS = {
    "description": _description,
    "closed-input": _closed_input,
    "bounded-strings": _bounded_strings,
    "bounded-arrays": _bounded_arrays,
    "max-tokens": _max_tokens,
    "model-allowlist": _model_allowlist,
    "name-pattern": _name_pattern,
    "examples": _examples,
    "no-remote-ref": _no_remote_ref,
    "safe-regex": _safe_regex,
}
