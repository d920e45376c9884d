"""Prompt files: one YAML file per prompt version, anywhere below the prompts folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import secrets
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promptapi import safeyaml
from promptapi.errors import PromptAPIError
from promptapi.prompts import FIELDS, check_definition, content_digest
from promptapi.safeyaml import YAMLProblem

SUFFIXES = (".yaml", ".yml")
# The size limit of a prompt file when the caller has no settings: PROMPTAPI_MAX_BODY_BYTES's
# default, since a file and a registration body carry the same definition.
DEFAULT_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PromptFile:
    path: Path
    data: Any = None
    error: str | None = None


def find(root: Path) -> list[Path]:
    """The prompt files below `root` (`.yaml`, `.yml`; hidden names skipped), sorted.

    Symbolic links to folders are not entered; they are listed, like files that are not
    regular files, so that `read` reports them instead of skipping them silently."""
    if not root.is_dir():
        return []
    found: list[Path] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            found.append(folder)  # `read` reports why it cannot be read
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                folders.append(path)
            elif path.suffix in SUFFIXES or (entry.is_symlink() and entry.is_dir()):
                found.append(path)
    return sorted(found)


def _inside(path: Path, root: Path) -> Path:
    """The file to open for `path`, found below `root`: itself, or for a symbolic link, its
    target when that is a file inside the prompts folder (as in a Kubernetes ConfigMap
    volume). A link out of the folder, or to a folder, is not followed."""
    if not path.is_symlink():
        return path
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        raise YAMLProblem("is a symbolic link that leads nowhere; not followed") from None
    if target.is_dir():
        raise YAMLProblem("is a symbolic link to a folder; not followed")
    if not target.is_relative_to(root.resolve()):
        raise YAMLProblem("is a symbolic link out of the prompts folder; not followed")
    return target


def read(path: Path, *, root: Path | None = None, limit: int = DEFAULT_LIMIT) -> PromptFile:
    """A prompt file's data, or the reason it cannot be used. With `root` (the prompts folder
    it was found in), only regular files inside that folder are read."""
    try:
        if root is None:
            text = safeyaml.read_text(path, limit)
        else:
            text = safeyaml.read_text(_inside(path, root), limit, follow_symlinks=False)
        return PromptFile(path, data=safeyaml.loads(text))
    except YAMLProblem as exc:
        return PromptFile(path, error=str(exc))


def read_all(root: Path, limit: int = DEFAULT_LIMIT) -> list[PromptFile]:
    return [read(p, root=root, limit=limit) for p in find(root)]


# Reading in a child process: bounds of its own (seconds, bytes of address space).
CHILD_SECONDS = 60
CHILD_MEMORY = 2 * 1024**3


async def read_all_apart(root: Path, limit: int = DEFAULT_LIMIT) -> list[PromptFile]:
    """`read_all` in a child process, for the server. Parsing a folder of YAML is CPU work
    (about a second per MiB of small values) that holds the GIL even in a thread, slowing
    every other request; in a child it cannot, and it is killed after CHILD_SECONDS."""
    if not find(root):
        return []
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        "-m",
        "promptapi.files",
        str(root),
        str(limit),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(), CHILD_SECONDS + 5)
    except TimeoutError:
        child.kill()
        await child.wait()
        out, err = b"", b"timed out"
    if child.returncode != 0 or not out:
        why = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return [PromptFile(root, error=f"reading the prompt files failed: {why[0][:200]}")]
    found: list[tuple[str, Any, str | None]] = pickle.loads(out)  # our own child's answer
    return [PromptFile(Path(path), data, error) for path, data, error in found]


def _child(argv: list[str]) -> None:
    import resource  # POSIX only, and only needed here

    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_SECONDS, CHILD_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    found = read_all(Path(argv[0]), int(argv[1]))
    sys.stdout.buffer.write(pickle.dumps([(str(f.path), f.data, f.error) for f in found]))


class WriteRefused(Exception):
    """A file export or import will not write; the message says why."""


def write(root: Path, target: Path, text: str) -> None:
    """Write `text` to `target` below `root` without ever writing through a symbolic link.

    The folders below `root` are opened one by one with O_NOFOLLOW (created when missing),
    a link in the target's place is refused, and the text goes to a new temporary file that
    is then renamed over the target: a link (or hard link) there is never written through,
    and a reader never sees half a file."""
    parts = target.relative_to(root).parts
    root.mkdir(parents=True, exist_ok=True)
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=folder)
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            except OSError:
                raise WriteRefused(
                    f"{part} is a symbolic link or not a folder; not written through"
                ) from None
            os.close(folder)
            folder = inner
        name = parts[-1]
        try:
            mode = os.lstat(name, dir_fd=folder).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise WriteRefused(f"is {kind}; not written through (remove it to export here)")
        temporary = f".{name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(temporary, flags, 0o666, dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(text.encode("utf-8"))
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise
    finally:
        os.close(folder)


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Lists indented under their key, as people write them.
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    # Short lists of plain values on one line (`required: [text, type]`), as people write them.
    scalars = all(isinstance(v, str | int | float | bool) or v is None for v in value)
    flow = (
        scalars
        and len(repr(value)) <= 100
        and not any(isinstance(v, str) and "\n" in v for v in value)
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)


def dump(
    definition: dict[str, Any], *, state: str | None = None, labels: Iterable[str] = ()
) -> str:
    """A definition as a prompt file: fields in a fixed order, multi-line text as blocks, then
    the labels pointing at the version and its state."""
    ordered = {k: definition[k] for k in FIELDS if definition.get(k) not in (None, {}, [], "")}
    if labels:
        ordered["labels"] = sorted(labels)
    if state is not None:
        ordered["state"] = state
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


@dataclass(slots=True)
class ExportReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    conflicts: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)


def file_digest(raw: Any) -> str | None:
    """The digest sync would store for a file's definition, or None when it is not a valid
    definition."""
    try:
        return content_digest(check_definition(raw, require_version=True))
    except PromptAPIError:
        return None


def _declared(data: dict[str, Any]) -> tuple[Any, list[Any]]:
    """A file's state and labels (sorted), as export compares them."""
    labels = data.get("labels")
    return data.get("state"), sorted(map(str, labels)) if isinstance(labels, list) else []


def _redeclare(path: Path, state: str, labels: list[str], limit: int) -> str | None:
    """The file's text with its top-level `state` and `labels` replaced (appended at the end),
    everything else, comments included, as it was; None when that cannot be done safely."""
    try:
        text = safeyaml.read_text(path, limit)
        before = safeyaml.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError):
        return None
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith(("state:", "labels:")):
            skipping = True
            continue
        if skipping and (line[:1] in (" ", "\t", "-") or not line.strip()):
            continue
        skipping = False
        kept.append(line)
    tail = {**({"labels": labels} if labels else {}), "state": state}
    extra = yaml.dump(tail, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    new = "\n".join(kept).rstrip("\n") + "\n" + extra
    try:
        after = safeyaml.loads(new)
    except (ValueError, yaml.YAMLError):
        return None
    expected = {k: v for k, v in before.items() if k not in ("state", "labels")} | tail
    return new if after == expected else None


def export(
    rows: Iterable[dict[str, Any]],
    root: Path,
    *,
    force: bool = False,
    labels: Iterable[tuple[str, str, int]] = (),
    limit: int = DEFAULT_LIMIT,
) -> ExportReport:
    """Write stored versions as prompt files `<root>/<name>/<version>.yaml`, each with its
    state and the labels pointing at it (`labels`: (prompt, label, version) triples), so that
    syncing the files into a new database serves the same versions.

    A version already present anywhere under `root` with the same content, state and labels
    is left alone (its formatting and comments too); with the same content but another state
    or labels, only its `state` and `labels` lines are rewritten. One present with other
    content is a conflict, reported and not touched unless `force` is set, when it is
    overwritten with what is stored."""
    report = ExportReport()
    pointing: dict[tuple[str, int], list[str]] = {}
    for name, label, number in labels:
        pointing.setdefault((name, number), []).append(label)
    present: dict[tuple[Any, Any], tuple[Path, str | None, tuple[Any, list[Any]]]] = {}
    for found in read_all(root, limit):
        data = found.data
        if (
            isinstance(data, dict)
            and isinstance(data.get("name"), str)
            and isinstance(data.get("version"), int)
        ):
            key = (data["name"], data["version"])
            present[key] = (found.path, file_digest(data), _declared(data))
    for row in rows:
        target = root / row["name"] / f"{row['version']}.yaml"
        own = pointing.get((row["name"], row["version"]), [])
        existing = present.get((row["name"], row["version"]))
        if existing is not None:
            target = existing[0]
            if existing[1] == row["digest"]:
                if existing[2] == (row["state"], sorted(own)):
                    report.unchanged.append(target)
                    continue
                text = _redeclare(target, row["state"], sorted(own), limit)
                if text is not None:
                    try:
                        write(root, target, text)
                    except (WriteRefused, OSError) as exc:
                        report.refused.append((target, str(exc)))
                    else:
                        report.written.append(target)
                    continue
            elif not force:
                report.conflicts.append(target)
                continue
        elif target.exists() and not force:
            report.conflicts.append(target)
            continue
        try:
            write(root, target, dump(row["definition"], state=row["state"], labels=own))
        except (WriteRefused, OSError) as exc:
            report.refused.append((target, str(exc)))
            continue
        report.written.append(target)
    return report


if __name__ == "__main__":
    from promptapi import files

    files._child(sys.argv[1:])
