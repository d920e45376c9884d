"""Every shell command in the README, run as shown against a server this test starts.

The README's `sh`, `bash`, `shell` and `console` blocks are run in order, in one bash process,
in a temporary folder that looks like a fresh clone after the quick start: `prompts/` is a copy
of the shipped prompts, and `.venv` is a link to the environment running the tests (so
`.venv/bin/promptapi` is this checkout). The server is `.venv/bin/promptapi serve` with the
default settings, except that the `default` model alias points at the fake OpenAI upstream.

What is substituted, and nothing else (`substitutions` below):
- `pa_...` (the tour's "token printed at first start") becomes the token the server printed;
- `localhost:8000` and `127.0.0.1:8000` become the port the test's server listens on.

What counts as "works as shown":
- every command exits 0 (a `console` command: 0, or 1 when its output shows errors);
- every curl answers 2xx, or the status its shown output says (`"status":422`);
- a command's shown output (the comment lines right under it) matches: the same top-level JSON
  keys and the same stable values (`STABLE`; values shown with `…` are placeholders), the
  headers it shows (with their values, unless an annotation follows), the version a trailing
  `# version N` names, and a `console` block's output lines (the `promptapi test` table: its
  header and the summary line's form, as its rows depend on the shipped prompts).

Blocks that cannot run here are in SKIPPED, each with the reason; a SKIPPED entry that no
longer matches a block fails the test, so the list cannot go stale.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}

SKIPPED = {
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/promptapi serve": (
        "installs from a package index; this test uses the environment it runs in as `.venv` "
        "and starts `.venv/bin/promptapi serve` itself"
    ),
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest": (
        "runs the whole test suite, this test included; `.ci/run` runs it"
    ),
    "export PROMPTAPI_DATABASE_URL=postgresql://promptapi:secret@db.internal:5432/promptapi": (
        "needs a PostgreSQL server at db.internal with that role; tests/test_database.py runs "
        "`db upgrade` and the server on PostgreSQL"
    ),
    "npx openapi-typescript http://127.0.0.1:8000/openapi.json --output schema.d.ts": (
        "fetches openapi-typescript from the npm registry; tests/test_typescript_client.py runs "
        "the same generation with the pinned copy in tests/node and compiles a client with it"
    ),
}

# The lint example shows a file named prompts/bad/1.yaml; this is a file that gives those lines.
BAD_PROMPT = """\
name: bad
version: 1
description: Shows what lint reports.
input_schema:
  type: object
  properties:
    code: {type: string, pattern: '^(a+)+$'}
  required: [code]
  additionalProperties: false
messages:
  - role: user
    content: "Check {{ code }}."
examples:
  - input: {code: aaa}
    output: fine
"""

STABLE = (
    "prompt",
    "cached",
    "mock",
    "deployment",
    "attempts",
    "type",
    "title",
    "status",
    "detail",
    "code",
    "instance",
)
ADMIN_TOKEN_RE = re.compile(r"pa_[A-Za-z0-9_-]{20,}")


@dataclass
class Command:
    text: str
    line: int
    console: bool = False
    shown: list[str] = field(default_factory=list)


@dataclass
class Block:
    line: int
    language: str
    text: str


def blocks(markdown: str) -> list[Block]:
    found: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, language = i + 1, fence.group(1)
        i += 1
        while not lines[i].startswith("```"):
            i += 1
        found.append(Block(start + 1, language, "\n".join(lines[start:i])))
        i += 1
    return [b for b in found if b.language in SHELL_LANGUAGES]


def _open_quote(text: str) -> bool:
    """Whether `text` ends inside a quoted string (bash's rules for ' and ")."""
    quote = None
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if char == "'" else quote
        elif char == "\\":
            escaped = True
        elif quote == '"':
            quote = None if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and quote is None:
            break
    return quote is not None


def unquoted(text: str) -> str:
    """The parts of a command outside quotes and comments: what the shell expands."""
    out: list[str] = []
    quote = None
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if char == "'" else quote
        elif char == "\\":
            escaped = True
        elif quote == '"':
            quote = None if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (not out or out[-1] in " \n"):
            break
        else:
            out.append(char)
    return "".join(out)


def commands(block: Block) -> list[Command]:
    """A block's commands. In `sh` blocks, comment lines right under a command are its shown
    output; in `console` blocks, `$ ` lines are commands and the lines under them their output."""
    found: list[Command] = []
    lines = block.text.splitlines()
    if block.language == "console":
        for n, line in enumerate(lines):
            if line.startswith("$ "):
                found.append(Command(line[2:], block.line + n, console=True))
            elif found:
                found[-1].shown.append(line)
        return found
    current: list[str] = []
    attached = False
    for n, line in enumerate(lines):
        if current:
            current.append(line)
            joined = "\n".join(current)
            if not (joined.endswith("\\") or _open_quote(joined)):
                found.append(Command(joined, block.line + n - len(current) + 1))
                current = []
                attached = True
            continue
        if not line.strip():
            attached = False
        elif line.lstrip().startswith("#"):
            if attached and found:
                found[-1].shown.append(re.sub(r"^\s*# ?", "", line))
        else:
            current = [line]
            if not (line.endswith("\\") or _open_quote(line)):
                found.append(Command(line, block.line + n))
                current = []
                attached = True
    assert not current, f"README line {block.line}: unterminated command {current}"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTAPI_", "OPENAI_"))}
    env.update(extra)
    return env


def start_server(folder: Path, port: int, fake: FakeOpenAI) -> tuple[subprocess.Popen, str]:
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [".venv/bin/promptapi", "serve", "--port", str(port)],
        cwd=folder,
        env=clean_env(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY=UPSTREAM_KEY),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError("the server stopped:\n" + (folder / "server.log").read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        server.terminate()
        raise AssertionError("the server did not start:\n" + (folder / "server.log").read_text())
    token = ADMIN_TOKEN_RE.search((folder / "server.log").read_text())
    assert token, "the server printed no admin token at first start"
    return server, token.group(0)


def substitute(text: str, token: str, port: int) -> str:
    for shown, actual in substitutions(token, port):
        text = text.replace(shown, actual)
    return text


def substitutions(token: str, port: int) -> list[tuple[str, str]]:
    return [
        ("pa_...", token),
        ("localhost:8000", f"127.0.0.1:{port}"),
        ("127.0.0.1:8000", f"127.0.0.1:{port}"),
    ]


CURL = (
    # Every curl also writes its status to stderr, so each answer's status can be checked.
    "curl() { command curl --show-error --max-time 30 "
    "--write-out '%{stderr}HTTP %{http_code}\\n' \"$@\"; }\n"
)


def script(steps: list[Command], out: Path, token: str, port: int) -> str:
    parts = [CURL]
    for i, step in enumerate(steps):
        parts.append(
            f"{{ {substitute(step.text, token, port)}\n}} "
            f'>"{out}/{i}.out" 2>"{out}/{i}.err"; echo $? >"{out}/{i}.rc"\n'
        )
    return "".join(parts)


def shown_json(shown: list[str]) -> dict | None:
    text = " ".join(line.strip() for line in shown)
    if not text.startswith("{"):
        return None
    return json.loads(text)


def check_json(where: str, shown: dict, output: str) -> None:
    actual = json.loads(output)
    assert set(actual) == set(shown), f"{where}: keys {sorted(actual)} != shown {sorted(shown)}"
    for key in STABLE:
        if key in shown and "…" not in json.dumps(shown[key], ensure_ascii=False):
            assert actual[key] == shown[key], f"{where}: {key} is {actual[key]!r}, not as shown"
    if "errors" in shown:
        by_path = lambda errors: sorted((e["path"], e["message"]) for e in errors)  # noqa: E731
        assert by_path(actual["errors"]) == by_path(shown["errors"]), f"{where}: errors differ"


def check_headers(where: str, shown: list[str], output: str) -> None:
    head = output.replace("\r\n", "\n").split("\n\n", 1)[0]
    headers = {}
    for line in head.splitlines()[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    for line in shown:
        name, _, value = line.partition(":")
        annotated = re.search(r"\s{2,}\(", value)
        assert name.lower() in headers, f"{where}: no {name} header in {head}"
        if not annotated:
            assert headers[name.lower()] == value.strip(), f"{where}: {name} differs"


def check(step: Command, out: Path, i: int) -> None:
    where = f"README line {step.line} ({step.text.splitlines()[0][:60]})"
    output = (out / f"{i}.out").read_text()
    errors = (out / f"{i}.err").read_text()
    rc = int((out / f"{i}.rc").read_text())
    shown_errors = any(line.rstrip().endswith("(error)") for line in step.shown)
    assert rc == (1 if step.console and shown_errors else 0), f"{where}: exit {rc}\n{errors}"
    statuses = [int(s) for s in re.findall(r"^HTTP (\d{3})$", errors, re.M)]
    shown = shown_json(step.shown) if not step.console else None
    expected = shown["status"] if shown and "status" in shown else None
    for status in statuses:
        if expected is not None:
            assert status == expected, f"{where}: HTTP {status}, shown {expected}\n{output}"
        else:
            assert 200 <= status < 300, f"{where}: HTTP {status}\n{output}"
    if step.console:
        check_console(where, step, output)
    elif shown is not None:
        check_json(where, shown, output)
    elif step.shown and all(re.match(r"^[A-Z][\w-]*: ", line) for line in step.shown):
        check_headers(where, step.shown, output)
    version = re.search(r"#\s*version (\d+)\s*$", step.text)
    if version:
        assert json.loads(output)["prompt"]["version"] == int(version.group(1)), where
    if "stream=true" in step.text:
        assert re.search(r"event: done\ndata: \{.*\}\n\n$", output), f"{where}: {output}"


def check_console(where: str, step: Command, output: str) -> None:
    lines = output.splitlines()
    if step.shown and step.shown[0].startswith("PROMPT "):
        # `promptapi test`: the table's header and the summary's form.
        assert lines[0].split() == step.shown[0].split(), f"{where}: {lines[0]!r}"
        assert re.fullmatch(r"\d+ passed, \d+ failed, \d+ skipped", lines[-1]), where
        return
    assert lines == step.shown, f"{where}: printed\n{output}"


def test_every_readme_command_runs_as_shown(tmp_path: Path, fake: FakeOpenAI) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README's commands")
    found = blocks(README.read_text(encoding="utf-8"))
    runnable = []
    for block in found:
        first = block.text.splitlines()[0]
        if first not in SKIPPED:
            runnable.append(block)
    stale = set(SKIPPED) - {b.text.splitlines()[0] for b in found}
    assert not stale, f"SKIPPED names blocks the README no longer has: {stale}"
    steps = [step for block in runnable for step in commands(block)]
    assert len(steps) >= 20, [s.text for s in steps]

    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    port = free_port()
    server, token = start_server(tmp_path, port, fake)
    try:
        (tmp_path / "prompts" / "bad").mkdir()
        (tmp_path / "prompts" / "bad" / "1.yaml").write_text(BAD_PROMPT)
        out = tmp_path / "out"
        out.mkdir()
        (tmp_path / "readme.sh").write_text(script(steps, out, token, port))
        subprocess.run(
            ["bash", "readme.sh"], cwd=tmp_path, env=clean_env(), timeout=600, check=True
        )
        for i, step in enumerate(steps):
            check(step, out, i)
    finally:
        server.terminate()
        server.wait(30)


def test_every_readme_command_is_safe_to_paste_into_zsh() -> None:
    """zsh expands `?`, `*` and `[` in an unquoted word, and fails when nothing matches: every
    URL with a query string must be quoted."""
    for block in blocks(README.read_text(encoding="utf-8")):
        for step in commands(block):
            exposed = unquoted(step.text)
            assert not set("?*[") & set(exposed), f"README line {step.line}: quote {step.text!r}"


def test_commands_are_split_as_a_reader_sees_them() -> None:
    block = Block(
        1,
        "sh",
        '# a step\nA=$(curl -s x \\\n  -d \'{\n  "a": 1}\')\n# {"b":\n#  2}\n\n'
        "curl -s y   # version 3\n",
    )
    found = commands(block)
    assert [c.text for c in found] == [
        "A=$(curl -s x \\\n  -d '{\n  \"a\": 1}')",
        "curl -s y   # version 3",
    ]
    assert found[0].shown == ['{"b":', " 2}"]
    assert shown_json(found[0].shown) == {"b": 2}
    assert found[1].shown == []
