"""Does a regular expression risk catastrophic backtracking? A conservative heuristic.

JSON Schema `pattern`s run on caller input with Python's backtracking `re` engine, so a pattern
like `^(a+)+$` lets one request burn seconds of CPU. The check reads the pattern with Python's
own parser (so it sees exactly what `re` will run) and looks, under every repetition that can
repeat more than 10 times, for:

1. a nested variable-length repetition (`(a+)+`, `(a*)*`, `(.*)*`, `(\\w+\\s?)*`), unless each
   iteration must contain a character the nested repetitions cannot match (`([a-z]+-)*` is
   safe: the `-` fixes where each iteration ends);
2. an alternation whose branches can start with the same character, or can both be empty, or
   where an empty branch lets the next iteration compete with a longer branch (`(a|ab|b)*`,
   `(a|aa)+`, `(\\w+|\\d+)*`); Python already folds single-character alternations such as
   `(a|b)*` into a character class, which is safe;
3. two adjacent variable-length repetitions over overlapping characters (`(a*a*-)+`).

Possessive quantifiers (`a++`) and atomic groups (`(?>...)`) cannot backtrack and are accepted:
they are the fix to suggest. The check does not look for polynomial backtracking outside
repetitions (e.g. `^.*a.*a.*a$`), and it may flag a few safe patterns; it never runs the
pattern. Character sets are compared on a sample alphabet (Latin-1 plus a few others).
"""

from __future__ import annotations

import re
import re._constants as C
import re._parser as P
from collections.abc import Iterable
from functools import cache
from itertools import pairwise
from typing import Any

LARGE = 10
_ALPHABET = "".join(map(chr, range(0x250))) + "\u00a0\u2003\u3000€жλ中😀"
_ALL = frozenset(_ALPHABET)
_CATEGORIES = {
    C.CATEGORY_DIGIT: r"\d",
    C.CATEGORY_NOT_DIGIT: r"\D",
    C.CATEGORY_SPACE: r"\s",
    C.CATEGORY_NOT_SPACE: r"\S",
    C.CATEGORY_WORD: r"\w",
    C.CATEGORY_NOT_WORD: r"\W",
}
_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT)
_ATOMS = (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN)


@cache
def _category(code: Any) -> frozenset[str]:
    compiled = re.compile(_CATEGORIES.get(code, r"[^\s\S]"))
    return frozenset(c for c in _ALPHABET if compiled.fullmatch(c))


def _in_set(items: Iterable[tuple[Any, Any]]) -> frozenset[str]:
    chars: set[str] = set()
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            chars.add(chr(av))
        elif op is C.RANGE:
            low, high = av
            chars.update(c for c in _ALPHABET if low <= ord(c) <= high)
        elif op is C.CATEGORY:
            chars |= _category(av)
        else:  # anything unusual: assume it may match anything
            return _ALL
    return _ALL - chars if negate else frozenset(chars)


def _atom_chars(op: Any, av: Any) -> frozenset[str]:
    if op is C.LITERAL:
        return frozenset(chr(av))
    if op is C.NOT_LITERAL:
        return _ALL - {chr(av)}
    if op is C.ANY:
        return _ALL
    return _set_of(tuple(av))


@cache
def _set_of(items: tuple[tuple[Any, Any], ...]) -> frozenset[str]:
    return _in_set(items)


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-sequences of one parsed element."""
    if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
        return [av[2]]
    if op is C.SUBPATTERN:
        return [av[3]]
    if op is C.BRANCH:
        return list(av[1])
    if op is C.ATOMIC_GROUP:
        return [av]
    if op in (C.ASSERT, C.ASSERT_NOT):
        return [av[1]]
    if op is C.GROUPREF_EXISTS:
        return [p for p in av[1:] if p is not None]
    return []


def _chars(seq: Any, *, first: bool = False) -> frozenset[str]:
    """Every character any part of `seq` can match; with `first`, those a match can start
    with."""
    found: set[str] = set()
    for op, av in seq:
        if op in _ATOMS:
            found |= _atom_chars(op, av)
        elif op is C.GROUPREF:
            return _ALL
        elif not (first and op in (C.ASSERT, C.ASSERT_NOT)):
            for child in _children(op, av):
                found |= _chars(child, first=first)
        if first and not _element_nullable(op, av):
            break
    return frozenset(found)


def _nullable(seq: Any) -> bool:
    return all(_element_nullable(op, av) for op, av in seq)


def _element_nullable(op: Any, av: Any) -> bool:
    if op in _ATOMS:
        return False
    if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
        return av[0] == 0 or _nullable(av[2])
    if op is C.SUBPATTERN:
        return _nullable(av[3])
    if op is C.ATOMIC_GROUP:
        return _nullable(av)
    if op is C.BRANCH:
        return any(_nullable(b) for b in av[1])
    return True  # anchors, lookarounds, back-references (may be empty)


def _first(seq: Any) -> frozenset[str]:
    return _chars(seq, first=True)


def _variable(op: Any, av: Any) -> bool:
    return op in _REPEATS and av[1] != av[0]


def _unbounded(op: Any, av: Any) -> bool:
    return op in _REPEATS and (av[1] is C.MAXREPEAT or av[1] > LARGE)


def _flatten(seq: Any) -> list[tuple[Any, Any]]:
    """A sequence with plain (non-repeated) groups opened up."""
    flat: list[tuple[Any, Any]] = []
    for op, av in seq:
        if op is C.SUBPATTERN:
            flat.extend(_flatten(av[3]))
        else:
            flat.append((op, av))
    return flat


def _variable_repeats(seq: Any) -> Iterable[Any]:
    """Backtrackable variable-length repetitions inside `seq` (not inside atomic parts)."""
    for op, av in seq:
        if op is C.POSSESSIVE_REPEAT or op is C.ATOMIC_GROUP:
            continue
        if _variable(op, av):
            yield av
        for child in _children(op, av):
            yield from _variable_repeats(child)


def _branches(seq: Any) -> Iterable[Any]:
    for op, av in seq:
        if op is C.POSSESSIVE_REPEAT or op is C.ATOMIC_GROUP:
            continue
        if op is C.BRANCH:
            yield av[1]
        for child in _children(op, av):
            yield from _branches(child)


def _sequences(seq: Any) -> Iterable[list[tuple[Any, Any]]]:
    yield _flatten(seq)
    for op, av in seq:
        if op is C.POSSESSIVE_REPEAT or op is C.ATOMIC_GROUP:
            continue
        for child in _children(op, av):
            yield from _sequences(child)


def _body_problem(body: Any) -> str | None:
    nested = list(_variable_repeats(body))
    if nested:
        inner = frozenset().union(*(_chars(r[2]) for r in nested))
        separators = [_atom_chars(op, av) for op, av in _flatten(body) if op in _ATOMS]
        if not any(s and not (s & inner) for s in separators):
            return "a repeated group contains another variable-length repetition (like (a+)+)"
    start = _first(body)
    for branches in _branches(body):
        if any(_nullable(b) for b in branches) and any(_first(b) & start for b in branches):
            # `(a|aa)+` is parsed as `(a(?:|a))+`: the optional branch and the next
            # iteration compete for the same character.
            return (
                "a repeated group contains alternatives that can match the same text (like (a|aa)+)"
            )
        for i, left in enumerate(branches):
            for right in branches[i + 1 :]:
                if (_first(left) & _first(right)) or (_nullable(left) and _nullable(right)):
                    return (
                        "a repeated group contains alternatives that can match the same text "
                        "(like (a|ab|b)*)"
                    )
    for flat in _sequences(body):
        for (op1, av1), (op2, av2) in pairwise(flat):
            if _variable(op1, av1) and _variable(op2, av2) and _chars(av1[2]) & _chars(av2[2]):
                return (
                    "a repeated group contains adjacent repetitions over the same characters "
                    "(like (a*a*)+)"
                )
    return None


def _walk(seq: Any) -> str | None:
    for op, av in seq:
        if op is C.POSSESSIVE_REPEAT or op is C.ATOMIC_GROUP:
            continue
        if _unbounded(op, av):
            problem = _body_problem(av[2])
            if problem is not None:
                return problem
        for child in _children(op, av):
            problem = _walk(child)
            if problem is not None:
                return problem
    return None


def backtracking_problem(pattern: str) -> str | None:
    """Why `pattern` may backtrack catastrophically, or None if the heuristic finds nothing.
    A pattern Python cannot compile is reported too."""
    try:
        parsed = P.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"is not a valid regular expression: {exc}"
    try:
        problem = _walk(parsed)
    except RecursionError:
        problem = "it is nested too deeply to analyse"
    return None if problem is None else f"can backtrack catastrophically: {problem}"
