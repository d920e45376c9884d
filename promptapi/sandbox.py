"""A jinja2 sandbox whose every render is bounded in work, size and time.

Compiling is linear in the template: nothing is folded at compile time (no optimizer, every
operator intercepted, no constant output), so `{{ 9**9**9 }}` costs nothing until rendered. A
render then runs against a `Budget`:

- loop iterations, macro calls and recursive `loop(...)` calls, counted across the render;
- every value an operator, filter, method or literal builds: its size is checked *before* it is
  built wherever the size can be known (`*`, `**`, `%`, `str.format`, padding, indentation,
  `replace`, `join`, ...), and after it is built everywhere, against `max_output`; the sizes of
  all values built are summed against `max_work`;
- the text produced, counting macro, call and set-block bodies, against `max_output`;
- the CPU time, checked every 32 loop iterations, calls, filters and operators.

An overrun raises `RenderLimit`, which names the setting that bounds it.
"""

from __future__ import annotations

import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import BlockReference, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace, pass_environment
from markupsafe import Markup

# Integers may grow to this many bits (about 20,000 decimal digits): beyond it a multiplication
# stops being cheap, and Python refuses to print more than 4,300 digits anyway.
MAX_INT_BITS = 65_536


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one render; each is a setting (PROMPTAPI_RENDER_*)."""

    max_output: int = 1_048_576
    max_work: int = 8_388_608
    max_iterations: int = 100_000
    max_depth: int = 50
    timeout: float = 0.05

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(
            max_output=settings.render_max_output,
            max_work=settings.render_max_work,
            max_iterations=settings.render_max_iterations,
            max_depth=settings.render_max_depth,
            timeout=settings.render_timeout,
        )


def limits_from_env() -> Limits:
    """The PROMPTAPI_RENDER_* settings of this process's environment."""
    from promptapi.config import Settings
    from promptapi.errors import ConfigError

    try:
        settings = Settings.from_env()
    except (ValueError, ConfigError):
        return Limits()  # the server refuses to start with it; the CLI says so elsewhere
    return Limits.of(settings)


class Slow(Exception):
    """An inline render ran past its slice: render again in a thread (`render_many`)."""


class RenderLimit(Exception):
    """A render went past one of its bounds; `setting` names the bound."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.message = message
        self.setting = setting


_OUTPUT = "PROMPTAPI_RENDER_MAX_OUTPUT"
_WORK = "PROMPTAPI_RENDER_MAX_WORK"
_ITERATIONS = "PROMPTAPI_RENDER_MAX_ITERATIONS"
_TIMEOUT = "PROMPTAPI_RENDER_TIMEOUT"
_DEPTH = "PROMPTAPI_RENDER_MAX_DEPTH"


class Budget:
    """What one render may still spend."""

    __slots__ = ("deadline", "depth", "inline", "iterations", "limits", "ops", "produced", "work")

    def __init__(self, limits: Limits, inline: float = 0.0) -> None:
        self.limits = limits
        self.inline = inline
        self.iterations = 0
        self.produced = 0
        self.work = 0
        self.ops = 0
        self.depth = 0
        self.deadline = 0.0  # set at the first clock reading: small renders never read it

    def op(self) -> None:
        self.ops += 1
        if not self.ops & 31:
            self.clock()

    def clock(self) -> None:
        # CPU time of this thread, so a busy machine does not fail a render; the first 32 steps
        # (each bounded in size) are not timed.
        now = time.thread_time()
        if not self.deadline:
            self.deadline = now + self.limits.timeout
            if self.inline:
                self.inline += now
        elif self.inline and now > self.inline:
            raise Slow()
        elif now > self.deadline:
            raise RenderLimit(
                f"the render used more than {self.limits.timeout:g} s of CPU time ({_TIMEOUT})",
                _TIMEOUT,
            )

    def iterate(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > self.limits.max_iterations:
            raise RenderLimit(
                f"the render needs more than {self.limits.max_iterations} loop iterations and "
                f"macro calls ({_ITERATIONS})",
                _ITERATIONS,
            )
        self.op()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise RenderLimit(
                f"macros, blocks or recursive loops nest more than {self.limits.max_depth} deep "
                f"({_DEPTH})",
                _DEPTH,
            )

    def allow(self, size: int, what: str = "a value") -> None:
        """Refuse to build a value of `size` characters or items."""
        if size > self.limits.max_output:
            raise RenderLimit(
                f"{what} would be {size} characters or items long, more than "
                f"{self.limits.max_output} ({_OUTPUT})",
                _OUTPUT,
            )

    def allow_int(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise RenderLimit(
                f"an integer would have about {bits} bits, more than {MAX_INT_BITS} "
                f"(integers are bounded with {_OUTPUT})",
                _OUTPUT,
            )

    def charge(self, size: int) -> None:
        self.work += size
        if self.work > self.limits.max_work:
            raise RenderLimit(
                f"the render builds more than {self.limits.max_work} characters or items in "
                f"all ({_WORK})",
                _WORK,
            )

    def output(self, size: int) -> None:
        self.produced += size
        if self.produced > self.limits.max_output:
            raise RenderLimit(
                f"the rendered text is longer than {self.limits.max_output} characters, "
                f"counting macro and block bodies ({_OUTPUT})",
                _OUTPUT,
            )

    def made(self, value: Any) -> Any:
        """Account for a value just built and return it."""
        kind = type(value)
        if kind is str or kind is Markup or kind is bytes:
            size = len(value)
            self.allow(size)
        elif kind is int:
            bits = value.bit_length()
            self.allow_int(bits)
            size = bits >> 6
        elif kind is list or kind is tuple or kind is dict or kind is Namespace:
            size = self.weigh(value)
        else:
            size = 0
        self.charge(size + 1)
        return value

    def weigh(self, value: Any, what: str = "a value") -> int:
        """The size of `value` printed (roughly), refused past max_output; each reference
        counts, so a list repeating one long string is as heavy as its text."""
        limit = self.limits.max_output
        total = 0
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, (str, bytes)):
                total += len(item) + 2
            elif isinstance(item, (list, tuple)):
                total += 2 + len(item)
                if total <= limit:
                    stack.extend(item)
            elif isinstance(item, Mapping):
                total += 2 + 2 * len(item)
                if total <= limit:
                    stack.extend(item.keys())
                    stack.extend(item.values())
            elif isinstance(item, Namespace):
                stack.append(object.__getattribute__(item, "_Namespace__attrs"))
            elif isinstance(item, int):
                total += item.bit_length() // 3 + 1
            else:
                total += 1
            if total > limit:
                self.allow(total, what)
        return total


_current: ContextVar[Budget] = ContextVar("promptapi_render_budget")


def _budget() -> Budget:
    # A template used outside `render` is bounded step by step all the same.
    return _current.get(None) or Budget(Limits())


# -- the template's own wrappers (names a template cannot spell) --------------------------

_LOOP = "bounded loop"
_OUT = "bounded output"
_CONCAT = "bounded concat"
_VALUE = "bounded value"


def _loop(iterable: Any) -> Iterator[Any]:
    budget = _budget()
    limit = budget.limits.max_iterations
    for item in iterable:
        budget.iterations += 1
        if budget.iterations > limit:
            budget.iterate(0)
        budget.ops += 1
        if not budget.ops & 31:
            budget.clock()
        yield item


def _stringify(budget: Budget, value: Any) -> str:
    if type(value) is str:
        return value
    if not isinstance(value, (int, float, type(None))):
        budget.weigh(value, "a printed value")
    return str(value)


def _out(value: Any, static: int) -> str:
    budget = _current.get(None) or Budget(Limits())
    if type(value) is not str:
        value = _stringify(budget, value)
    budget.produced += len(value) + static
    if budget.produced > budget.limits.max_output:
        budget.output(0)
    return value


def _concat(*parts: Any) -> str:
    budget = _budget()
    budget.op()
    texts = [_stringify(budget, part) for part in parts]
    budget.allow(sum(map(len, texts)), "a `~` concatenation")
    return budget.made("".join(texts))


def _value(value: Any) -> Any:
    budget = _budget()
    budget.op()
    return budget.made(value)


class _Bound(jinja2.visitor.NodeTransformer):
    """Routes loops, output, `~` and literals through the budget."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, _LOOP)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        static = sum(len(c.data) for c in node.nodes if isinstance(c, nodes.TemplateData))
        children: list[nodes.Expr] = []
        charged = False
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                children.append(child)
            else:
                children.append(_filter(child, _OUT, nodes.Const(0 if charged else static)))
                charged = True
        if not charged:
            children.append(_filter(nodes.Const(""), _OUT, nodes.Const(static)))
        node.nodes = children
        return node

    def visit_FilterBlock(self, node: nodes.FilterBlock) -> nodes.Node:
        self.generic_visit(node)
        # {% filter f %}...{% endfilter %} writes f(body) straight out: count it as output
        node.filter = _filter(node.filter, _OUT, nodes.Const(0))  # type: ignore[arg-type]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        first, *rest = node.nodes
        return _filter(first, _CONCAT, *rest)

    def _literal(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node
        return _filter(node, _VALUE)

    visit_List = visit_Tuple = visit_Dict = _literal


def _filter(node: nodes.Expr, name: str, *args: nodes.Expr) -> nodes.Filter:
    return nodes.Filter(node, name, list(args), [], None, None, lineno=node.lineno)


class _Generator(CodeGenerator):
    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> str:
        # Only literal text is output as a constant; every expression is evaluated at render
        # time, under the budget (jinja would otherwise evaluate it while compiling).
        if isinstance(node, nodes.TemplateData):
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()


# -- operators ----------------------------------------------------------------------------

_SEQUENCES = (str, bytes, list, tuple)


def _repeat(budget: Budget, seq: Any, count: int) -> None:
    if count <= 0:
        return
    if isinstance(seq, (str, bytes)):
        budget.allow(len(seq) * count, "a repeated string")
    else:
        budget.allow(count * len(seq), "a repeated list")
        budget.allow(count * budget.weigh(seq, "a repeated list"), "a repeated list")


def _check_binop(budget: Budget, op: str, left: Any, right: Any) -> None:
    if op == "*":
        if isinstance(left, _SEQUENCES) and isinstance(right, int):
            _repeat(budget, left, right)
        elif isinstance(right, _SEQUENCES) and isinstance(left, int):
            _repeat(budget, right, left)
        elif isinstance(left, int) and isinstance(right, int):
            budget.allow_int(left.bit_length() + right.bit_length())
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            budget.allow_int((left.bit_length() - 1) * right)
    elif op == "+":
        if isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
            budget.allow(len(left) + len(right), "a `+` concatenation")
        elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
            budget.allow(budget.weigh(left) + budget.weigh(right), "a `+` concatenation")
    elif op == "%" and isinstance(left, (str, bytes)):
        _check_percent(budget, left, right)


# One printf-style conversion: %[(key)][flags][width][.precision][length]type
_PERCENT = re.compile(
    rb"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?"
    rb"(?P<type>[diouxXeEfFgGcrsab%])"
)


def _check_percent(budget: Budget, template: str | bytes, values: Any) -> None:
    """Refuse `template % values` when its result would be too long, before building it."""
    raw = template.encode("utf-8", "surrogatepass") if isinstance(template, str) else template
    if isinstance(values, tuple):
        positional: list[Any] = list(values)
    elif isinstance(values, Mapping):
        positional = []
    else:
        positional = [values]
    mapping = values if isinstance(values, Mapping) else {}
    total = len(template)
    at = raw.find(b"%")
    index = 0
    while at != -1:
        match = _PERCENT.match(raw, at)
        if match is None:
            raise ValueError(f"unsupported format character at index {at}")
        numbers: list[int] = []
        for part in ("width", "precision"):
            given = match.group(part)
            if given == b"*":
                taken = positional[index] if index < len(positional) else 0
                index += 1
                numbers.append(abs(taken) if isinstance(taken, int) else 0)
            elif given:
                numbers.append(int(given) if len(given) < 12 else budget.limits.max_output + 1)
        kind = match.group("type")
        if kind != b"%":
            key = match.group("key")
            if key is not None:
                value = mapping.get(key.decode("utf-8", "replace"))
            else:
                value = positional[index] if index < len(positional) else None
                index += 1
            numbers.append(budget.weigh(value, "a `%` argument") if kind in b"rsa" else 400)
        total += max(numbers, default=1) + 20
        budget.allow(total, "a `%` formatted string")
        at = raw.find(b"%", match.end())


class _Formatter(SandboxedFormatter):
    """`str.format` with every field's width, precision and text counted before it is built."""

    def __init__(self, env: jinja2.Environment, budget: Budget, template: str) -> None:
        super().__init__(env)
        self._budget = budget
        self._total = len(template)

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = self._budget
        widths = [
            int(n) if len(n) < 12 else budget.limits.max_output + 1
            for n in _DIGITS.findall(format_spec)
        ]
        size = max(widths, default=0)
        if not isinstance(value, (int, float)):
            size = max(size, budget.weigh(value, "a `format` field"))
        self._total += size + len(format_spec) + 20
        budget.allow(self._total, "a `format` result")
        return super().format_field(value, format_spec)


_DIGITS = re.compile(r"\d+")


# -- filters ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _pre_center(value: Any, width: int = 80, *_: Any) -> int:
    return max(len(_text(value)), width if isinstance(width, int) else 0)


def _pre_indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    text = _text(s)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    return len(text) + (text.count("\n") + 1) * max(pad, 0)


def _pre_wordwrap(
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> int:
    text = _text(s)
    lines = len(text) // max(width, 1) if isinstance(width, int) else len(text)
    breaks = lines + sum(text.count(c) for c in " \t\n-") + 1
    return len(text) + breaks * len(wrapstring if isinstance(wrapstring, str) else "\n")


def _replaced(s: Any, old: Any, new: Any, count: Any = None) -> int:
    text, old, new = _text(s), _text(old), _text(new)
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _pre_truncate(
    s: Any, length: int = 255, killwords: bool = False, end: Any = "...", *_: Any
) -> int:
    return min(len(_text(s)), length if isinstance(length, int) else 0) + len(_text(end))


def _pre_urlize(
    value: Any,
    trim_url_limit: Any = None,
    nofollow: bool = False,
    target: Any = None,
    rel: Any = None,
    extra_schemes: Any = None,
) -> int:
    text = _text(value)
    links = sum(text.count(c) for c in ".@:") + 1
    extra = len(_text(target or "")) + len(_text(rel or "")) + 64
    return 2 * len(text) + links * extra


def _pre_batch(value: Any, linecount: Any, fill_with: Any = None) -> int:
    return linecount if isinstance(linecount, int) else 0


def _pre_tojson(value: Any, indent: Any = None) -> int:
    weight = _budget().weigh(value, "a `tojson` result")
    pad = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if pad <= 0:
        return weight * 6
    depth = _depth(value)
    return weight * 6 + weight * (pad * depth + 1)


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, level)
            stack.extend((x, level + 1) for x in item)
        elif isinstance(item, Mapping):
            deepest = max(deepest, level)
            stack.extend((x, level + 1) for x in item.values())
    return deepest


def _pre_pprint(value: Any, *_: Any) -> int:
    # pprint indents each nested line by its depth
    return _budget().weigh(value, "a `pprint` result") * (_depth(value) + 1)


_PRECHECKS: dict[str, Callable[..., int]] = {
    "pprint": _pre_pprint,
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "replace": _replaced,
    "truncate": _pre_truncate,
    "urlize": _pre_urlize,
    "batch": _pre_batch,
    "tojson": _pre_tojson,
}


def _round(value: Any, precision: Any = 0, method: str = "common") -> Any:
    if isinstance(precision, int):
        _budget().allow_int(abs(precision) * 4)
    return jinja2.filters.do_round(value, precision, method)  # type: ignore[arg-type]


def _slice(value: Any, slices: Any, fill_with: Any = None) -> Any:
    if isinstance(slices, int):
        _budget().iterate(max(slices, 0))
    return jinja2.filters.sync_do_slice(value, slices, fill_with)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise jinja2.FilterArgumentError(
            "can't handle positional and keyword arguments at the same time"
        )
    text = _text(value)
    values = kwargs or args
    _check_percent(_budget(), text, values)
    return text % values


@pass_environment
def _join(environment: jinja2.Environment, value: Any, d: Any = "", attribute: Any = None) -> str:
    budget = _budget()
    separator = _text(d)
    if attribute is None and type(value) is list and all(type(x) is str for x in value):
        budget.allow(sum(map(len, value)) + len(separator) * len(value), "a `join` result")
        return separator.join(value)
    if attribute is not None:
        value = map(jinja2.filters.make_attrgetter(environment, attribute), value)
    texts: list[str] = []
    total = 0
    for item in value:
        budget.op()
        text = _stringify(budget, item)
        total += len(text) + len(separator)
        budget.allow(total, "a `join` result")
        texts.append(text)
    return separator.join(texts)


@pass_environment
def _sum(
    environment: jinja2.Environment, iterable: Any, attribute: Any = None, start: Any = 0
) -> Any:
    budget = _budget()
    if attribute is not None:
        iterable = map(jinja2.filters.make_attrgetter(environment, attribute), iterable)
    if isinstance(start, (list, tuple)):
        items = list(start)
        for item in iterable:
            budget.op()
            if not isinstance(item, (list, tuple)):
                raise TypeError(f"can only concatenate lists, not {type(item).__name__!r}")
            items.extend(item)
            budget.allow(len(items), "a `sum` of lists")
        return tuple(items) if isinstance(start, tuple) else items
    total = start
    for item in iterable:
        budget.op()
        _check_binop(budget, "+", total, item)
        total = total + item
    return total


_STRINGIFYING = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "indent", "lower", "pprint",
        "replace", "safe", "string", "striptags", "title", "trim", "truncate", "upper",
        "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", "json", "float", "int",
    }
)  # fmt: skip


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    passes = jinja2.utils._PassArg.from_obj(func)  # type: ignore[attr-defined]
    skip = 0 if passes is None else 1
    precheck = _PRECHECKS.get(name)
    weighs = name in _STRINGIFYING

    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.op()
        if len(args) > skip:
            value = args[skip]
            if weighs and not isinstance(value, (str, int, float)):
                budget.weigh(value, f"the value given to `{name}`")
            if precheck is not None:
                budget.allow(precheck(*args[skip:], **kwargs), f"a `{name}` result")
        return budget.made(func(*args, **kwargs))

    if passes is not None:
        bounded.jinja_pass_arg = passes  # type: ignore[attr-defined]
    bounded.__name__ = getattr(func, "__name__", name)
    return bounded


# -- methods ------------------------------------------------------------------------------


def _method_size(
    budget: Budget, owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> int | None:
    """The largest result a method of a str, bytes or int can build, when it can be large."""
    if isinstance(owner, (str, bytes)):
        if name in ("center", "ljust", "rjust", "zfill"):
            width = args[0] if args else kwargs.get("width", 0)
            return max(len(owner), width if isinstance(width, int) else 0)
        if name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
            return len(owner) + tabs * max(size if isinstance(size, int) else 0, 0)
        if name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            if isinstance(old, type(owner)) and isinstance(new, type(owner)):
                found = len(owner) + 1 if not old else owner.count(old)  # type: ignore[arg-type]
                count = args[2] if len(args) > 2 else kwargs.get("count", -1)
                if isinstance(count, int) and count >= 0:
                    found = min(found, count)
                return len(owner) + found * max(len(new) - len(old), 0)
        if name == "translate" and args:
            table = args[0]
            values = table.values() if isinstance(table, Mapping) else table
            longest = max((len(v) for v in values if isinstance(v, (str, bytes))), default=1)
            return len(owner) * max(longest, 1)
        if name == "join":
            return None  # handled by the caller: the items are materialised first
    elif isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        return length if isinstance(length, int) else 0
    return 0


_METHODS = (types.BuiltinMethodType, types.MethodType)


class BoundedTemplate(jinja2.Template):
    def render(self, *args: Any, **kwargs: Any) -> str:
        return render(self, dict(*args, **kwargs), self.environment.limits)  # type: ignore[attr-defined]


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, bounded (see the module's docstring)."""

    code_generator_class = _Generator
    template_class = BoundedTemplate
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, limits: Limits | None = None, **options: Any) -> None:
        options["optimized"] = False
        super().__init__(**options)
        self.limits = limits or limits_from_env()
        self.globals.pop("lipsum", None)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(
            {
                "format": _bounded_filter("format", _format),
                "join": _bounded_filter("join", _join),
                "sum": _bounded_filter("sum", _sum),
                "round": _bounded_filter("round", _round),
                "slice": _bounded_filter("slice", _slice),
                _LOOP: _loop,
                _OUT: _out,
                _CONCAT: _concat,
                _VALUE: _value,
            }
        )

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        self.filters[name] = _bounded_filter(name, func)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Bound().visit(super()._parse(source, name, filename))  # type: ignore[no-any-return]

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.op()
        _check_binop(budget, operator, left, right)
        return budget.made(self.binop_table[operator](left, right))

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        _budget().op()
        return self.unop_table[operator](arg)

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            budget = _budget()
            budget.op()
            budget.made(value)
        return value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        as_map = value.__name__ == "format_map"
        environment = self

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if as_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                kwargs, args = args[0], ()
            budget = _budget()
            budget.op()
            if isinstance(owner, Markup):
                raise jinja2.exceptions.SecurityError("Markup.format is not available")
            text = _Formatter(environment, budget, owner).vformat(owner, args, kwargs)
            return budget.made(type(owner)(text))

        return bounded_format

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        if isinstance(__obj, (LoopContext, Macro, BlockReference)):
            budget.iterate()
            if isinstance(__obj, LoopContext) and args:
                args = (_loop(args[0]), *args[1:])
            budget.enter()
            try:
                return budget.made(super().call(__context, __obj, *args, **kwargs))
            finally:
                budget.depth -= 1
        else:
            budget.op()
            owner = getattr(__obj, "__self__", None)
            if isinstance(owner, (str, bytes, int)) and isinstance(__obj, _METHODS):
                name = __obj.__name__
                if name == "join" and isinstance(owner, (str, bytes)) and args:
                    items = []
                    total = 0
                    for item in args[0]:
                        budget.op()
                        total += (len(item) if isinstance(item, (str, bytes)) else 0) + len(owner)
                        budget.allow(total, "a `join` result")
                        items.append(item)
                    args = (items,)
                else:
                    size = _method_size(budget, owner, name, args, kwargs)
                    if size:
                        budget.allow(size, f"the result of `{name}`")
        return budget.made(super().call(__context, __obj, *args, **kwargs))


def render(template: jinja2.Template, variables: Mapping[str, Any], limits: Limits) -> str:
    """Render `template` within `limits`; RenderLimit on an overrun."""
    return render_many([template], variables, limits)[0]


def render_many(
    templates: Iterable[jinja2.Template],
    variables: Mapping[str, Any],
    limits: Limits,
    *,
    inline: float = 0.0,
) -> list[str]:
    """Render templates with the same variables within one budget; RenderLimit on an overrun.
    With `inline` (seconds of CPU), give up past it with Slow, so the caller can render again
    away from the event loop."""
    budget = Budget(limits, inline if inline < limits.timeout else 0.0)
    token = _current.set(budget)
    try:
        # Every piece of output, at any depth, is counted as it is produced (`_out`).
        return [
            "".join(t.root_render_func(t.new_context(variables)))  # type: ignore[arg-type]
            for t in templates
        ]
    except RecursionError:
        raise RenderLimit(
            f"the render nests too deeply (at most {limits.max_depth} macro levels, {_DEPTH})",
            _DEPTH,
        ) from None
    finally:
        _current.reset(token)


__all__ = [
    "MAX_INT_BITS",
    "BoundedEnvironment",
    "Budget",
    "Limits",
    "RenderLimit",
    "Slow",
    "render",
    "render_many",
]
