"""Benchmark harness: promptapi vs. minimal pass-throughs vs. the bare upstream.

Run with the project's virtualenv from the repository root::

    .venv/bin/python bench/run.py [--duration 10] [--only upstream,aiohttp]
                                  [--scenarios 0:16,50:64,500:256] [--json out.json]

A fake OpenAI upstream (nginx + echo module, one server block per latency) and
wrk run pinned to one core; the server under test runs pinned to the other.
Every process this script starts is stopped by its id on exit, Ctrl-C included.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import upstream  # bench/upstream.py; bench/ is sys.path[0] when run as a script

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENV_BIN = REPO_DIR / ".venv" / "bin"
HOST = "127.0.0.1"  # the only address this harness ever talks to

APT_HINT = "sudo apt-get install -y wrk nginx-light libnginx-mod-http-echo"
PIP_HINT = (
    f"{VENV_BIN / 'pip'} install -e '{REPO_DIR}[bench]'  (or just: pip install httpx-aiohttp)"
)

UPSTREAM = "upstream"
PASSTHROUGHS = ("httpx", "httpx-aiohttp", "aiohttp")
PROMPTAPI = "promptapi"
ALL_TARGETS = (UPSTREAM, *PASSTHROUGHS, PROMPTAPI)
# promptapi runs right after the upstream so that its consumer key is known
# before the pass-throughs run: every target is sent the same Authorization.
RUN_ORDER = (UPSTREAM, PROMPTAPI, *PASSTHROUGHS)
BASELINE = "aiohttp"
TARGET_LABELS = {
    UPSTREAM: "upstream (nginx)",
    "httpx": "pass-through httpx",
    "httpx-aiohttp": "pass-through httpx-aiohttp",
    "aiohttp": "pass-through aiohttp",
    PROMPTAPI: "promptapi",
}

DEFAULT_SCENARIOS = "0:16,50:64,500:256"
WARMUP_S = 2
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

PROMPT_PATH = "/v1/prompts/bench"
PROMPT_BODY = json.dumps({"text": "I love this product"}, separators=(",", ":"))
CHAT_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Classify the sentiment of: I love this product"}],
        "temperature": 0,
        "max_tokens": 5,
    },
    separators=(",", ":"),
)
UPSTREAM_API_KEY = "bench-key"


class HarnessError(Exception):
    """A fatal problem with the harness setup (missing tool, bad option...)."""


class TargetError(Exception):
    """A target could not be started or failed its pre-flight request."""


# --------------------------------------------------------------------------- processes


@dataclass(eq=False)
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None


class Processes:
    """Starts child processes in their own process group and stops them by id.

    Each child leads a new session, so Ctrl-C in the terminal reaches only this
    script, which then stops the children itself: SIGTERM to the child's
    process group (its id is the child's pid), SIGKILL if it has not exited
    after a grace period.
    """

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log: IO[bytes] | int = subprocess.DEVNULL
        if log_path is not None:
            log = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        child = Child(name, proc, log_path)
        self._children.append(child)
        return child

    def run(self, name: str, argv: Sequence[str], timeout_s: float) -> tuple[int, str, str]:
        """Run a command to completion (bounded by ``timeout_s``); return rc, stdout, stderr."""
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        child = Child(name, proc, None)
        self._children.append(child)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{name} did not finish within {timeout_s:.0f} s") from None
        finally:
            self.stop(child)
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def stop(self, child: Child) -> None:
        if child in self._children:
            self._children.remove(child)
        proc = child.proc
        if proc.returncode is not None:
            return
        pgid = proc.pid  # start_new_session: the child leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"  {child.name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)

    def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            try:
                self.stop(child)
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {child.name} (pid {child.proc.pid}): {exc}", file=sys.stderr)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------- networking


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(child: Child, port: int, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise TargetError(f"{child.name} exited with code {child.proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TargetError(
        f"{child.name} did not accept connections on {HOST}:{port} in {timeout_s:.0f} s"
    )


def http_request(
    port: int,
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    """One plain HTTP/1.1 request to 127.0.0.1 (http.client ignores proxy settings)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for_http_ok(
    child: Child, port: int, path: str, timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise TargetError(f"{child.name} exited with code {child.proc.returncode}")
        try:
            status, _ = http_request(port, "GET", path, timeout_s=2.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TargetError(f"{child.name}: GET {path} not 200 within {timeout_s:.0f} s (last: {last})")


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for servers under test: no proxies, only loopback traffic."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


# --------------------------------------------------------------------------- wrk

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]


def _time_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unparseable wrk time {text!r}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse ``wrk --latency`` output plus the BENCH_NON2XX line our Lua script prints."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match

    totals = find(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),")
    rps = float(find(r"^Requests/sec:\s*([\d.]+)").group(1))
    p50 = _time_ms(find(r"^\s*50%\s+(\S+)").group(1))
    p99 = _time_ms(find(r"^\s*99%\s+(\S+)").group(1))
    non_2xx = int(find(r"^BENCH_NON2XX (\d+)").group(1))
    # wrk itself counts only status >= 400; keep the larger of both counts.
    wrk_errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if wrk_errors is not None:
        non_2xx = max(non_2xx, int(wrk_errors.group(1)))
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    sock = _SOCKET_ERRORS_RE.search(output)
    if sock is not None:
        socket_errors = dict(zip(socket_errors, map(int, sock.groups()), strict=True))
    return WrkResult(
        requests=int(totals.group(1)),
        duration_s=_time_ms(totals.group(2) + totals.group(3)) / 1000.0,
        rps=rps,
        p50_ms=p50,
        p99_ms=p99,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


def _lua_string(value: str) -> str:
    level = "="
    while f"]{level}]" in value:
        level += "="
    return f"[{level}[{value}]{level}]"


def write_wrk_script(path: Path, body: str, authorization: str) -> Path:
    # response() lets us count every non-2xx status: wrk's own counter only
    # sees statuses >= 400.
    path.write_text(
        f"""-- generated by bench/run.py
wrk.method = "POST"
wrk.body = {_lua_string(body)}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {_lua_string(authorization)}

local threads = {{}}
non2xx = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("non2xx")
  end
  io.write(string.format("BENCH_NON2XX %d\\n", total))
end
"""
    )
    return path


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Scenario:
    latency_ms: int
    connections: int

    @property
    def label(self) -> str:
        return f"{self.latency_ms} ms / {self.connections} conn"


@dataclass
class Result:
    target: str
    latency_ms: int
    connections: int
    duration_s: float
    requests: int = 0
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        if self.error:
            found.append(self.error)
        elif self.requests == 0:
            found.append("no request completed")
        if self.non_2xx:
            found.append(f"{self.non_2xx} non-2xx responses")
        found.extend(f"{n} socket {kind} errors" for kind, n in self.socket_errors.items() if n)
        return found


def parse_scenarios(text: str) -> list[Scenario]:
    scenarios: list[Scenario] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"(\d+):(\d+)", item)
        if match is None:
            raise argparse.ArgumentTypeError(f"bad scenario {item!r}; want LATENCY_MS:CONNECTIONS")
        scenario = Scenario(int(match.group(1)), int(match.group(2)))
        if scenario.connections < 1:
            raise argparse.ArgumentTypeError(f"scenario {item!r} needs at least one connection")
        scenarios.append(scenario)
    if not scenarios:
        raise argparse.ArgumentTypeError("no scenarios given")
    return scenarios


def parse_targets(text: str) -> list[str]:
    targets = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown or not targets:
        bad = ", ".join(unknown) or "(none)"
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {bad}; choose from {', '.join(ALL_TARGETS)}"
        )
    return targets


def _pct(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{100.0 * value / reference:.1f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def markdown_table(results: Sequence[Result], scenarios: Sequence[Scenario]) -> str:
    lines = [
        "| target | scenario | req/s | p50 | p99 "
        "| % of aiohttp pass-through | % of upstream | status |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for scenario in scenarios:
        here = {
            r.target: r
            for r in results
            if (r.latency_ms, r.connections) == (scenario.latency_ms, scenario.connections)
        }

        def rps_of(target: str, here: dict[str, Result] = here) -> float | None:
            result = here.get(target)
            return result.rps if result is not None and not result.problems else None

        for target in ALL_TARGETS:
            result = here.get(target)
            if result is None:
                continue
            rps = f"{result.rps:,.0f}" if result.rps is not None else "-"
            status = (
                "ok" if not result.problems else "**FAILED: " + "; ".join(result.problems) + "**"
            )
            lines.append(
                f"| {TARGET_LABELS[target]} | {scenario.label} | {rps} | {_ms(result.p50_ms)} "
                f"| {_ms(result.p99_ms)} | {_pct(result.rps, rps_of(BASELINE))} "
                f"| {_pct(result.rps, rps_of(UPSTREAM))} | {status} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the bench


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    procs: Processes
    tools: dict[str, str]
    upstream_ports: dict[int, int] = field(default_factory=dict)
    authorization: str = field(default_factory=lambda: "Bearer " + secrets.token_urlsafe(32))
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    promptapi_key: str | None = None

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def pinned(self, cpu: int, argv: Sequence[str]) -> list[str]:
        return [self.tools["taskset"], "-c", str(cpu), *argv]

    # ---- upstream

    def start_upstream(self, scenarios: Sequence[Scenario]) -> None:
        latencies = sorted({s.latency_ms for s in scenarios})
        self.upstream_ports = {latency: free_port() for latency in latencies}
        nginx_dir = self.workdir / "nginx"
        config = upstream.write_nginx_config(nginx_dir, self.upstream_ports)
        argv = upstream.nginx_argv(self.tools["nginx"], nginx_dir, config)
        child = self.procs.start(
            "nginx", self.pinned(self.args.load_cpu, argv), log_path=nginx_dir / "stdout.log"
        )
        for latency, port in self.upstream_ports.items():
            try:
                wait_for_port(child, port)
                self.preflight(UPSTREAM, port, upstream.CHAT_PATH, CHAT_BODY, "upstream")
            except TargetError as exc:
                raise HarnessError(f"{exc}\n{tail(nginx_dir / 'nginx-error.log')}") from exc
            self.log(f"nginx upstream with {latency} ms latency on {HOST}:{port}")

    def upstream_url(self, latency_ms: int) -> str:
        return f"http://{HOST}:{self.upstream_ports[latency_ms]}{upstream.CHAT_PATH}"

    # ---- servers under test

    def start_passthrough(self, client: str, scenario: Scenario) -> tuple[Child, int]:
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", "passthrough:app",
            "--app-dir", str(BENCH_DIR),
            "--host", HOST, "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--lifespan", "on", "--log-level", "warning",
        ]  # fmt: skip
        env = child_env(
            {
                "BENCH_CLIENT": client,
                "BENCH_HTTPX_POOL": self.args.httpx_pool,
                "UPSTREAM_URL": self.upstream_url(scenario.latency_ms),
            }
        )
        log_path = self.workdir / f"{client}-{scenario.latency_ms}ms.log"
        child = self.procs.start(
            f"pass-through {client}",
            self.pinned(self.args.server_cpu, argv),
            env=env,
            log_path=log_path,
        )
        return child, port

    def start_promptapi(self, scenario: Scenario) -> tuple[Child, int]:
        port = free_port()
        argv = [
            str(VENV_BIN / "promptapi"), "serve",
            "--host", HOST, "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        env = child_env(
            {
                # one database for the whole run: the key created first stays valid
                "PROMPTAPI_DATABASE_URL": f"sqlite:///{self.workdir / 'bench.db'}",
                "PROMPTAPI_PROMPTS_DIR": str(BENCH_DIR / "prompts"),
                "PROMPTAPI_ADMIN_TOKEN": self.admin_token,
                "OPENAI_BASE_URL": f"http://{HOST}:{self.upstream_ports[scenario.latency_ms]}/v1",
                "OPENAI_API_KEY": UPSTREAM_API_KEY,
                "PROMPTAPI_DEFAULT_MODEL": "gpt-4o-mini",
            }
        )
        log_path = self.workdir / f"promptapi-{scenario.latency_ms}ms.log"
        child = self.procs.start(
            PROMPTAPI,
            self.pinned(self.args.server_cpu, argv),
            env=env,
            log_path=log_path,
            cwd=REPO_DIR,
        )
        return child, port

    def promptapi_ready(self, child: Child, port: int) -> None:
        wait_for_http_ok(child, port, "/readyz")
        if self.promptapi_key is None:
            self.promptapi_key = self.create_key(port)
            self.authorization = f"Bearer {self.promptapi_key}"
            self.log("  created a promptapi consumer key; later targets send it too")

    def create_key(self, port: int) -> str:
        status, raw = http_request(
            port,
            "POST",
            "/admin/v1/keys",
            json.dumps({"name": "bench"}),
            {"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"},
        )
        if status != 201:
            raise TargetError(f"POST /admin/v1/keys answered {status}: {raw[:300]!r}")
        try:
            key = json.loads(raw)["key"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"POST /admin/v1/keys: no 'key' in {raw[:300]!r}") from exc
        if not isinstance(key, str) or not key:
            raise TargetError(f"POST /admin/v1/keys: bad key {key!r}")
        return key

    def preflight(self, name: str, port: int, path: str, body: str, kind: str) -> None:
        """One request before the load: the target must answer 200 with the right content."""
        headers = {"Content-Type": "application/json", "Authorization": self.authorization}
        try:
            status, raw = http_request(port, "POST", path, body, headers)
        except OSError as exc:
            raise TargetError(f"{name}: pre-flight request failed: {exc!r}") from exc
        if status != 200:
            raise TargetError(f"{name}: pre-flight answered HTTP {status}: {raw[:300]!r}")
        try:
            data: Any = json.loads(raw)
            content = (
                data["choices"][0]["message"]["content"] if kind == "upstream" else data["output"]
            )
        except (ValueError, LookupError, TypeError) as exc:
            raise TargetError(f"{name}: unexpected pre-flight body {raw[:300]!r}") from exc
        if content != upstream.EXPECTED_CONTENT:
            raise TargetError(
                f"{name}: pre-flight output {content!r} != {upstream.EXPECTED_CONTENT!r}"
            )

    # ---- load

    def wrk(
        self, name: str, url: str, script: Path, connections: int, duration_s: int
    ) -> WrkResult:
        argv = self.pinned(
            self.args.load_cpu,
            [
                self.tools["wrk"], "-t", "1", "-c", str(connections), "-d", f"{duration_s}s",
                "--timeout", f"{self.args.timeout}s", "--latency", "-s", str(script), url,
            ],
        )  # fmt: skip
        rc, out, err = self.procs.run(
            f"wrk ({name})", argv, timeout_s=duration_s + self.args.timeout + 30
        )
        if rc != 0:
            raise TargetError(f"wrk exited with {rc}: {err.strip() or out.strip()}")
        try:
            return parse_wrk(out)
        except ValueError as exc:
            raise TargetError(f"could not parse the wrk output: {exc}") from exc

    @contextlib.contextmanager
    def serving(self, target: str, scenario: Scenario) -> Iterator[tuple[int, str, str]]:
        """Yield (port, path, body) for a running target; stop it afterwards."""
        if target == UPSTREAM:
            yield self.upstream_ports[scenario.latency_ms], upstream.CHAT_PATH, CHAT_BODY
            return
        if target == PROMPTAPI:
            child, port = self.start_promptapi(scenario)
        else:
            child, port = self.start_passthrough(target, scenario)
        try:
            if target == PROMPTAPI:
                self.promptapi_ready(child, port)
            else:
                wait_for_port(child, port)
            yield port, PROMPT_PATH, PROMPT_BODY
        except TargetError as exc:
            if child.log_path is not None:
                raise TargetError(f"{exc}\n{tail(child.log_path)}") from exc
            raise
        finally:
            self.procs.stop(child)
            if child.proc.returncode not in (0, -signal.SIGTERM):
                self.log(f"  note: {child.name} exited with code {child.proc.returncode}")

    def measure(self, target: str, scenario: Scenario) -> Result:
        duration = self.args.duration
        result = Result(target, scenario.latency_ms, scenario.connections, float(duration))
        self.log(f"[{scenario.label}] {TARGET_LABELS[target]} ...")
        try:
            with self.serving(target, scenario) as (port, path, body):
                kind = "upstream" if target == UPSTREAM else "prompt"
                self.preflight(target, port, path, body, kind)
                script = write_wrk_script(
                    self.workdir / f"wrk-{target}.lua", body, self.authorization
                )
                url = f"http://{HOST}:{port}{path}"
                warm = self.wrk(target, url, script, scenario.connections, WARMUP_S)
                if warm.non_2xx or any(warm.socket_errors.values()):
                    self.log(f"  warm-up had errors: {warm.non_2xx} non-2xx, {warm.socket_errors}")
                run = self.wrk(target, url, script, scenario.connections, duration)
        except TargetError as exc:
            result.error = str(exc).splitlines()[0]
            self.log(f"  ERROR: {exc}")
            return result
        result.requests = run.requests
        result.duration_s = run.duration_s
        result.rps = run.rps
        if run.requests:  # wrk prints 0 latencies when nothing completed
            result.p50_ms = run.p50_ms
            result.p99_ms = run.p99_ms
        result.non_2xx = run.non_2xx
        result.socket_errors = run.socket_errors
        flag = "" if not result.problems else "   <-- " + "; ".join(result.problems)
        self.log(
            f"  {run.rps:,.0f} req/s  p50 {_ms(result.p50_ms)}  p99 {_ms(result.p99_ms)}"
            f"  ({run.requests} requests){flag}"
        )
        return result

    def run(self, scenarios: Sequence[Scenario], targets: Sequence[str]) -> list[Result]:
        """Each scenario's targets run in turn, `--repeat` times over (interleaved, so a noisy
        moment on the machine hits every target alike); each target reports its median run."""
        self.start_upstream(scenarios)
        results: list[Result] = []
        for scenario in scenarios:
            runs: dict[str, list[Result]] = {}
            for _ in range(self.args.repeat):
                for target in RUN_ORDER:
                    if target in targets:
                        runs.setdefault(target, []).append(self.measure(target, scenario))
            results.extend(_median(found) for found in runs.values())
        return results


def _median(runs: list[Result]) -> Result:
    failed = [r for r in runs if r.problems]
    if failed:
        return failed[0]
    return sorted(runs, key=lambda r: r.rps or 0.0)[len(runs) // 2]


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text)


# --------------------------------------------------------------------------- main

T = TypeVar("T")


def in_harness(prefix: str, keep_tmp: bool, work: Callable[[Path, Processes], T]) -> T | int:
    """`work` inside a `harness`; a setup problem gives exit status 2, Ctrl-C 130."""
    try:
        with harness(prefix, keep_tmp=keep_tmp) as (workdir, procs):
            return work(workdir, procs)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything started", file=sys.stderr)
        return 130


@contextlib.contextmanager
def harness(prefix: str, *, keep_tmp: bool) -> Iterator[tuple[Path, Processes]]:
    """A temp dir and a process table; on the way out (Ctrl-C and SIGTERM included) every
    process started is stopped and the temp dir removed (unless kept)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    procs = Processes()
    try:
        yield workdir, procs
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if keep_tmp:
            print(f"temp dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def find_tools() -> dict[str, str]:
    """Locate wrk, nginx, taskset and the echo module; explain how to install them."""
    missing: list[str] = []
    tools: dict[str, str] = {}
    for name, fallback in (("wrk", None), ("nginx", "/usr/sbin/nginx"), ("taskset", None)):
        found = shutil.which(name) or (
            fallback if fallback and os.access(fallback, os.X_OK) else None
        )
        if found is None:
            missing.append(name)
        else:
            tools[name] = found
    if not upstream.ECHO_MODULE.exists():
        missing.append(f"nginx echo module ({upstream.ECHO_MODULE})")
    if missing:
        raise HarnessError(
            f"missing: {', '.join(missing)}.\nInstall them with:\n    {APT_HINT}\n"
            "(taskset comes with util-linux)"
        )
    for module in (
        "uvicorn",
        "uvloop",
        "httptools",
        "starlette",
        "jinja2",
        "httpx",
        "aiohttp",
        "httpx_aiohttp",
    ):
        try:
            __import__(module)
        except ImportError:
            raise HarnessError(
                f"python module {module!r} is missing from {sys.executable}; try:\n    {PIP_HINT}"
            ) from None
    return tools


def select_targets(args: argparse.Namespace) -> list[str]:
    targets: list[str] = list(args.only) if args.only else list(ALL_TARGETS)
    if PROMPTAPI in targets and not os.access(VENV_BIN / "promptapi", os.X_OK):
        if args.only:
            raise HarnessError(
                f"{VENV_BIN / 'promptapi'} not found; install the project into the venv"
            )
        print(f"note: {VENV_BIN / 'promptapi'} not found; skipping promptapi", file=sys.stderr)
        targets.remove(PROMPTAPI)
    return targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark promptapi against minimal pass-throughs and the bare fake upstream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per target and scenario, interleaved; the median run is reported",
    )
    parser.add_argument(
        "--only",
        type=parse_targets,
        help=f"comma-separated targets out of {','.join(ALL_TARGETS)} (default: all)",
    )
    parser.add_argument(
        "--scenarios",
        type=parse_scenarios,
        default=parse_scenarios(DEFAULT_SCENARIOS),
        help=f"comma-separated LATENCY_MS:CONNECTIONS pairs (default: {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--httpx-pool",
        choices=("default", "unbounded"),
        default="default",
        help="pool limits of the httpx pass-through: httpx's defaults (100 connections, "
        "20 kept alive) or none",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--timeout", type=int, default=10, help="wrk per-request timeout in seconds"
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server under test")
    parser.add_argument(
        "--load-cpu", type=int, default=1, help="core for wrk and the nginx upstream"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration < 1:
        print("--duration must be at least 1 second", file=sys.stderr)
        return 2
    scenarios: list[Scenario] = args.scenarios
    try:
        tools = find_tools()
        targets = select_targets(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cpus = os.sched_getaffinity(0)
    if {args.server_cpu, args.load_cpu} - cpus:
        print(
            f"error: cpus {args.server_cpu}/{args.load_cpu} not available (have {sorted(cpus)})",
            file=sys.stderr,
        )
        return 2

    started = dt.datetime.now(dt.UTC)
    results = in_harness(
        "promptapi-bench-",
        args.keep_tmp,
        lambda workdir, procs: Bench(args, workdir, procs, tools).run(scenarios, targets),
    )
    if isinstance(results, int):
        return results

    print()
    print(
        f"wrk: 1 thread, {args.duration} s per run after a {WARMUP_S} s warm-up, median of {args.repeat}; "
        f"server under test on cpu {args.server_cpu}, wrk + nginx upstream on cpu {args.load_cpu}; "
        f"httpx pool: {args.httpx_pool}"
    )
    print()
    print(markdown_table(results, scenarios))
    bad = [r for r in results if r.problems]
    if bad:
        banner = "!" * 78
        warning = [banner, f"WARNING: {len(bad)} run(s) had errors; their numbers are NOT valid:"]
        warning += [
            f"  - {TARGET_LABELS[r.target]} @ {r.latency_ms} ms / {r.connections} conn: "
            + "; ".join(r.problems)
            for r in bad
        ]
        warning.append(banner)
        print("\n" + "\n".join(warning))
        print("\n".join(warning), file=sys.stderr)

    if args.json is not None:
        payload = {
            "started_at": started.isoformat(),
            "duration_s": args.duration,
            "warmup_s": WARMUP_S,
            "server_cpu": args.server_cpu,
            "load_cpu": args.load_cpu,
            "httpx_pool": args.httpx_pool,
            "results": [asdict(r) | {"problems": r.problems} for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nresults written to {args.json}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
