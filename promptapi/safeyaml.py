"""Reading YAML that someone else wrote: prompt files, Prompty files, the models and policy
files. Every YAML read in promptapi goes through here.

- Bounded in size before it is read: a regular file only (never a FIFO, which would hang the
  reader, or a device), its size checked with fstat, then read up to the limit.
- No aliases or anchors in prompt files: `*ref` lets a few hundred bytes expand into billions
  of nodes (the "billion laughs"); a prompt file has no use for them. Refused with the line
  they are on. The operator's models and policy files may share settings with them, as long
  as they expand to at most `MAX_NODES` values and never refer to themselves.
- Nesting bounded (`MAX_DEPTH`, as deep as a JSON body may be).
- Only JSON values come out: dates and times stay the text they were written as; binary,
  sets and ordered maps are refused; an integer too long to convert is a problem, not a crash.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

# JSON bodies are refused past 254 levels (orjson); a file may be as deep as a body.
MAX_DEPTH = 254
# The operator's own files (models file, policy file): their size limit, and how many values
# their aliases may expand to.
CONFIG_LIMIT = 1024 * 1024
MAX_NODES = 100_000
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLProblem(ValueError):
    """The text or file cannot be used; the message says why (and where, for YAML)."""


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _Loader(_Base):  # type: ignore[misc,valid-type]
    pass


def _as_text(loader: Any, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)


def _refuse(loader: Any, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"the tag {node.tag!r} is not a JSON value", node.start_mark
    )


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_text)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse)


def _scan(text: str, *, aliases: bool) -> None:
    """Check the event stream before any node is built (the parse is linear in the text;
    building is what aliases would multiply): nesting depth, and aliases and anchors, which
    are refused, or with `aliases` allowed while the document they expand to stays within
    `MAX_NODES` nodes and no alias refers to a collection it is inside of."""
    loader = _Loader(text)
    sizes: dict[str, int] = {}  # anchor -> nodes it expands to
    open_: list[list[Any]] = [[0, None]]  # [nodes so far, anchor] of each open collection
    try:
        while loader.check_event():
            event = loader.get_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None and not aliases:
                raise YAMLProblem(
                    f"invalid YAML{_where(event.start_mark)}: aliases and anchors (*name, "
                    "&name, <<) are not allowed"
                )
            if isinstance(event, yaml.AliasEvent):
                if any(anchor == outer for _, outer in open_):
                    raise YAMLProblem(
                        f"invalid YAML{_where(event.start_mark)}: the alias *{anchor} refers "
                        "to a collection it is inside of"
                    )
                open_[-1][0] += sizes.get(anchor, 1)
            elif isinstance(event, yaml.ScalarEvent):
                open_[-1][0] += 1
                if anchor is not None:
                    sizes[anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                open_.append([1, anchor])
                if len(open_) - 1 > MAX_DEPTH:
                    raise YAMLProblem(
                        f"invalid YAML{_where(event.start_mark)}: nested more than "
                        f"{MAX_DEPTH} levels deep"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                count, opened = open_.pop()
                open_[-1][0] += count
                if opened is not None:
                    sizes[opened] = count
            else:
                continue
            if aliases and sum(count for count, _ in open_) > MAX_NODES:
                raise YAMLProblem(
                    f"invalid YAML{_where(event.start_mark)}: its aliases expand to more "
                    f"than {MAX_NODES} values"
                )
    finally:
        loader.dispose()


def loads(text: str, *, aliases: bool = False) -> Any:
    """The JSON value of one YAML document (None for an empty one). Aliases and anchors are
    refused unless `aliases` (the operator's own files), and then bounded."""
    try:
        _scan(text, aliases=aliases)
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: see _Loader
    except YAMLProblem:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YAMLProblem(f"invalid YAML{_where(mark)}: {problem}") from None
    except ValueError:  # int() of a number too long to convert
        raise YAMLProblem("invalid YAML: a number has too many digits to convert") from None
    except RecursionError:
        raise YAMLProblem("invalid YAML: nested too deeply") from None


def read_text(path: Path, limit: int, *, follow_symlinks: bool = True) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. The file is opened without
    blocking (a FIFO does not hang), checked with fstat, and read no further than the limit.
    Without `follow_symlinks`, a symbolic link is refused rather than followed."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise YAMLProblem("is a symbolic link; not followed") from None
        raise YAMLProblem(f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YAMLProblem("not a regular file (a FIFO, socket, device or folder); not read")
        if info.st_size > limit:
            raise YAMLProblem(f"the file is {info.st_size} bytes; the limit is {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise YAMLProblem(f"the file is larger than the limit of {limit} bytes")
    except OSError as exc:
        raise YAMLProblem(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise YAMLProblem("not UTF-8 text") from None


def load_file(path: Path, limit: int, *, aliases: bool = False) -> Any:
    return loads(read_text(path, limit), aliases=aliases)
