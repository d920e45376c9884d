"""Property: however a template, its schema and its input are built from expensive constructs,
checking the definition and rendering it finish within the bounds, in time and memory, with a
success or a clear error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptapi import isolation, prompts
from promptapi.errors import DefinitionInvalid, RenderFailed
from promptapi.prompts import Prompt, check_definition
from promptapi.sandbox import Limits
from tests.hostile import rss_mb

RENDER = Limits()
CHECK = isolation.CheckLimits()


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    isolation.configure(CHECK, RENDER)
    prompts.set_render_limits(RENDER)
    yield


big = st.sampled_from(["9", "99", "10**3", "10**6", "10**9", "9**9", "99999", "n"])
text = st.sampled_from(["text", "'x'", "(text * 3)", "(items|string)", "(n|string)"])
seq = st.sampled_from(["items", "range(99999)", "range(n)", "[text, text]", "(items|list)"])


def _expressions() -> st.SearchStrategy[str]:
    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, big).map(lambda p: f"({p[0]} * {p[1]})"),
            st.tuples(big, big).map(lambda p: f"({p[0]} ** {p[1]})"),
            st.tuples(inner, inner).map(lambda p: f"({p[0]} ~ {p[1]})"),
            st.tuples(big, inner).map(lambda p: f"('%{p[0]}s' % {p[1]})".replace("%n", "%*")),
            st.tuples(inner, big).map(lambda p: f"({p[0]}|center({p[1]}))"),
            st.tuples(inner, big).map(lambda p: f"({p[0]}|indent({p[1]}))"),
            st.tuples(inner, inner).map(lambda p: f"({p[0]}|wordwrap(1, wrapstring={p[1]}))"),
            st.tuples(inner, inner).map(lambda p: f"({p[0]}|replace('', {p[1]}))"),
            st.tuples(seq, inner).map(lambda p: f"({p[0]}|join({p[1]}))"),
            st.tuples(seq, big).map(lambda p: f"({p[0]}|tojson(indent={p[1]}))"),
            st.tuples(inner, big).map(lambda p: f"('{{:{{}}}}'.format({p[0]}, {p[1]}))"),
            st.tuples(inner, big).map(lambda p: f"({p[0]}.ljust({p[1]}))"),
            st.tuples(inner, big).map(lambda p: f"({p[0]}.zfill({p[1]}))"),
            st.tuples(inner, big).map(lambda p: f"([{p[0]}] * {p[1]})"),
            st.tuples(seq, big).map(lambda p: f"({p[0]}|batch({p[1]})|list)"),
            st.tuples(seq, big).map(lambda p: f"({p[0]}|slice({p[1]})|list)"),
            st.tuples(big, big).map(lambda p: f"({p[0]}|round(-{p[1]}))"),
            st.tuples(seq, inner).map(lambda p: f"({p[0]}|map('string')|join({p[1]}))"),
        )

    return st.recursive(text, grow, max_leaves=4)


def _blocks() -> st.SearchStrategy[str]:
    expression = _expressions()
    leaf = expression.map(lambda e: "{{ " + e + " }}")

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(seq, inner).map(lambda p: f"{{% for x in {p[0]} %}}{p[1]}{{% endfor %}}"),
            st.tuples(inner, inner).map(lambda p: p[0] + p[1]),
            inner.map(
                lambda body: (
                    "{% macro f(d) %}" + body + "{% if d < 30 %}{{ f(d + 1) }}"
                    "{{ f(d + 1) }}{% endif %}{% endmacro %}{{ f(0) }}"
                )
            ),
            inner.map(
                lambda body: (
                    "{% for x in [[1, [2]], 3] recursive %}"
                    + body
                    + "{% if x is iterable %}{{ loop(x) }}{{ loop(x) }}{% endif %}{% endfor %}"
                )
            ),
            expression.map(
                lambda e: (
                    "{% set ns = namespace(s='a') %}{% for i in range(64) %}"
                    "{% set ns.s = ns.s ~ " + e + " ~ ns.s %}{% endfor %}{{ ns.s }}"
                )
            ),
            inner.map(lambda body: "{% set x %}" + body + body + "{% endset %}{{ x ~ x }}"),
        )

    return st.recursive(leaf, grow, max_leaves=4)


minimum = st.sampled_from([0, 1, 1000, 10**6, 10**9])
schemas = st.builds(
    lambda text_min, items_min, n_max: {
        "type": "object",
        "required": ["text", "n", "items"],
        "properties": {
            "text": {"type": "string", "minLength": text_min},
            "n": {"type": "integer", "minimum": 0, "maximum": n_max},
            "items": {
                "type": "array",
                "minItems": items_min,
                "items": {"type": "array", "minItems": items_min, "items": {"type": "integer"}},
            },
        },
    },
    minimum,
    minimum,
    st.sampled_from([10, 10**5, 10**9]),
)
inputs = st.builds(
    lambda size, n, count: {"text": "t" * size, "n": n, "items": [[1]] * count},
    st.sampled_from([0, 10, 10_000, 100_000]),
    st.sampled_from([0, 3, 99999, 10**9]),
    st.sampled_from([0, 2, 2000]),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=_blocks(), schema=schemas, data=inputs)
def test_checks_and_renders_stay_within_bounds(content: str, schema: dict, data: Any) -> None:
    before = rss_mb()
    raw = {
        "name": "prop",
        "input_schema": schema,
        "messages": [{"role": "user", "content": content}],
    }
    started = time.monotonic()
    try:
        definition = check_definition(raw)
    except DefinitionInvalid as exc:
        definition = None
        assert exc.errors, exc
    checked = time.monotonic() - started
    assert checked < CHECK.timeout, f"the check took {checked:.1f} s"
    if definition is not None:
        prompt = Prompt(definition)
        started = time.monotonic()
        try:
            rendered = prompt.render(data)
        except RenderFailed as exc:
            assert exc.detail
        else:
            assert sum(len(m["content"]) for m in rendered) <= RENDER.max_output
        took = time.monotonic() - started
        assert took < RENDER.timeout + 0.5, f"the render took {took:.2f} s"
    assert rss_mb() - before < 200
