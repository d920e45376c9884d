"""Streaming benchmark: promptapi's server-sent events vs. the upstream stream read directly.

Run with the project's virtualenv from the repository root::

    .venv/bin/python bench/stream.py [--duration 10] [--scenarios 0:16,5:64]
                                     [--ttft-requests 300] [--json out.json]

nginx (echo module) streams a chat completion of 20 chunks with a fixed pause between them. For
each scenario (pause, connections) and each target (the upstream itself, a minimal Starlette +
aiohttp pass-through relaying the stream as server-sent events, promptapi) it measures

* time to first token (TTFT): from sending the request to receiving the first piece of answer
  text (the first content chunk upstream, the first `event: delta` from promptapi), over
  `--ttft-requests` streams one at a time, each on a fresh connection; and
* throughput: wrk holding the scenario's connections for `--duration` seconds, each request
  one whole stream; streams/s, chunks/s, the stream duration's p50/p99, and promptapi's CPU
  time per stream over that run. Every stream must be complete (`[DONE]` upstream, `event: done` from promptapi) or the row is marked FAILED.

Everything listens on 127.0.0.1; every process is stopped by its id at the end. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import run  # bench/run.py; bench/ is sys.path[0] when run as a script
import upstream

STREAM_PATH = run.PROMPT_PATH + "?stream=true"
CHAT_STREAM_BODY = json.dumps(
    {**json.loads(run.CHAT_BODY), "stream": True, "stream_options": {"include_usage": True}},
    separators=(",", ":"),
)
PASSTHROUGH = "aiohttp"  # bench/passthrough.py relaying the stream as server-sent events
TARGETS = (run.UPSTREAM, PASSTHROUGH, run.PROMPTAPI)
# What marks the first piece of answer text, and the end of a complete stream.
FIRST_TOKEN = {
    run.UPSTREAM: b'"content":"tok',
    PASSTHROUGH: b"event: delta",
    run.PROMPTAPI: b"event: delta",
}
COMPLETE = {
    run.UPSTREAM: b"data: [DONE]",
    PASSTHROUGH: b"event: done",
    run.PROMPTAPI: b"event: done",
}
DEFAULT_SCENARIOS = "0:16,5:64"


@dataclass(frozen=True)
class StreamScenario:
    interval_ms: int
    connections: int

    @property
    def label(self) -> str:
        return (
            f"{upstream.STREAM_CHUNKS} chunks {self.interval_ms} ms apart / {self.connections} conn"
        )


@dataclass
class StreamResult:
    target: str
    interval_ms: int
    connections: int
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    streams_per_s: float | None = None
    chunks_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us_per_stream: float | None = None  # the server's CPU time (user + system) per stream
    streams: int = 0
    non_2xx: int = 0
    incomplete: int = 0
    socket_errors: int = 0
    error: str | None = None

    @property
    def problems(self) -> list[str]:
        found = [self.error] if self.error else []
        if not self.error and not self.streams:
            found.append("no stream completed")
        if self.non_2xx:
            found.append(f"{self.non_2xx} non-2xx responses")
        if self.incomplete:
            found.append(f"{self.incomplete} incomplete streams")
        if self.socket_errors:
            found.append(f"{self.socket_errors} socket errors")
        return found


def parse_scenarios(text: str) -> list[StreamScenario]:
    scenarios = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"(\d+):(\d+)", item)
        if match is None or int(match.group(2)) < 1:
            raise argparse.ArgumentTypeError(f"bad scenario {item!r}; want INTERVAL_MS:CONNECTIONS")
        scenarios.append(StreamScenario(int(match.group(1)), int(match.group(2))))
    if not scenarios:
        raise argparse.ArgumentTypeError("no scenarios given")
    return scenarios


# --------------------------------------------------------------------------- one stream


async def one_stream(port: int, target: str, authorization: str) -> tuple[float, float, bytes]:
    """One streamed request on a fresh connection: (time to first token, total time, body)."""
    path, body = (
        (upstream.CHAT_PATH, CHAT_STREAM_BODY)
        if target == run.UPSTREAM
        else (STREAM_PATH, run.PROMPT_BODY)
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {run.HOST}:{port}\r\nAuthorization: {authorization}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()
    reader, writer = await asyncio.open_connection(run.HOST, port)
    try:
        started = time.perf_counter()
        writer.write(head)
        received = bytearray()
        first: float | None = None
        while piece := await reader.read(65536):
            received += piece
            if first is None and FIRST_TOKEN[target] in received:
                first = time.perf_counter() - started
        total = time.perf_counter() - started
    finally:
        writer.close()
    if not received.startswith(b"HTTP/1.1 200") or COMPLETE[target] not in received:
        raise run.TargetError(f"{target}: bad stream {bytes(received[:300])!r}")
    if first is None:
        raise run.TargetError(f"{target}: no answer text in {bytes(received[:300])!r}")
    return first, total, bytes(received)


def streamed_text(target: str, raw: bytes) -> str:
    """The answer text of a whole (de-chunked enough) response, to check it in the pre-flight."""
    text = ""
    for line in raw.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        data = json.loads(line[6:])
        if target != run.UPSTREAM:
            text += data.get("text", "")
        else:
            for choice in data.get("choices", []):
                text += choice["delta"].get("content") or ""
    return text


async def ttft(port: int, target: str, authorization: str, requests: int) -> list[float]:
    return [(await one_stream(port, target, authorization))[0] for _ in range(requests)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- wrk


def write_stream_script(path: Path, body: str, authorization: str, complete: bytes) -> Path:
    """Like run.write_wrk_script, and also counts 2xx answers that are not whole streams."""
    lua = run.write_wrk_script(path, body, authorization).read_text()
    lua = lua.replace(
        'wrk.headers["Content-Type"] = "application/json"\n',
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Accept"] = "text/event-stream"\n',
    )
    lua = lua.replace(
        "non2xx = 0\n",
        "non2xx = 0\nincomplete = 0\n",
    )
    lua = lua.replace(
        "    non2xx = non2xx + 1\n  end\n",
        "    non2xx = non2xx + 1\n  elseif not string.find(body, "
        f"{run._lua_string(complete.decode())}, 1, true) then\n"
        "    incomplete = incomplete + 1\n  end\n",
    )
    lua = lua.replace(
        '  io.write(string.format("BENCH_NON2XX %d\\n", total))\n',
        '  io.write(string.format("BENCH_NON2XX %d\\n", total))\n'
        "  local bad = 0\n"
        "  for _, thread in ipairs(threads) do\n"
        '    bad = bad + thread:get("incomplete")\n'
        "  end\n"
        '  io.write(string.format("BENCH_INCOMPLETE %d\\n", bad))\n',
    )
    path.write_text(lua)
    return path


# --------------------------------------------------------------------------- the bench


class StreamBench:
    def __init__(self, args: argparse.Namespace, workdir: Path, procs: run.Processes) -> None:
        self.args = args
        self.bench = run.Bench(args, workdir, procs, run.find_tools())
        self.workdir = workdir
        self.procs = procs
        self.stream_ports: dict[int, int] = {}

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def start_upstream(self, scenarios: Sequence[StreamScenario]) -> None:
        self.stream_ports = {s.interval_ms: run.free_port() for s in scenarios}
        nginx_dir = self.workdir / "nginx"
        config = upstream.write_nginx_config(nginx_dir, {}, self.stream_ports)
        argv = upstream.nginx_argv(self.bench.tools["nginx"], nginx_dir, config)
        child = self.procs.start(
            "nginx", self.bench.pinned(self.args.load_cpu, argv), log_path=nginx_dir / "stdout.log"
        )
        for interval, port in self.stream_ports.items():
            try:
                run.wait_for_port(child, port)
                self.preflight(run.UPSTREAM, port)
            except run.TargetError as exc:
                raise run.HarnessError(f"{exc}\n{run.tail(nginx_dir / 'nginx-error.log')}") from exc
            self.log(f"nginx streaming upstream, chunks {interval} ms apart, on {run.HOST}:{port}")
        # promptapi finds its upstream through the latency-keyed ports of run.Bench.
        self.bench.upstream_ports = dict(self.stream_ports)

    def preflight(self, target: str, port: int) -> None:
        _, _, raw = asyncio.run(one_stream(port, target, self.bench.authorization))
        text = streamed_text(target, raw)
        if text != upstream.STREAM_EXPECTED:
            raise run.TargetError(f"{target}: pre-flight text {text!r}")

    def measure(self, target: str, scenario: StreamScenario) -> StreamResult:
        result = StreamResult(target, scenario.interval_ms, scenario.connections)
        self.log(f"[{scenario.label}] {run.TARGET_LABELS[target]} ...")
        child = None
        try:
            if target == run.UPSTREAM:
                port = self.stream_ports[scenario.interval_ms]
                path, body = upstream.CHAT_PATH, CHAT_STREAM_BODY
            elif target == PASSTHROUGH:
                child, port = self.bench.start_passthrough(
                    PASSTHROUGH, run.Scenario(scenario.interval_ms, scenario.connections)
                )
                run.wait_for_port(child, port)
                path, body = STREAM_PATH, run.PROMPT_BODY
            else:
                child, port = self.bench.start_promptapi(
                    run.Scenario(scenario.interval_ms, scenario.connections)
                )
                self.bench.promptapi_ready(child, port)
                path, body = STREAM_PATH, run.PROMPT_BODY
            self.preflight(target, port)
            firsts = asyncio.run(
                ttft(port, target, self.bench.authorization, self.args.ttft_requests)
            )
            result.ttft_p50_ms = statistics.median(firsts) * 1000
            result.ttft_p99_ms = percentile(firsts, 0.99) * 1000
            script = write_stream_script(
                self.workdir / f"wrk-stream-{target}.lua",
                body,
                self.bench.authorization,
                COMPLETE[target],
            )
            url = f"http://{run.HOST}:{port}{path}"
            if self.args.warmup:
                self.bench.wrk(target, url, script, scenario.connections, self.args.warmup)
            argv = self.bench.pinned(
                self.args.load_cpu,
                [
                    self.bench.tools["wrk"], "-t", "1", "-c", str(scenario.connections),
                    "-d", f"{self.args.duration}s", "--timeout", f"{self.args.timeout}s",
                    "--latency", "-s", str(script), url,
                ],
            )  # fmt: skip
            cpu_before = cpu_seconds(child.proc.pid) if child is not None else None
            rc, out, err = self.procs.run(
                f"wrk ({target})", argv, timeout_s=self.args.duration + self.args.timeout + 30
            )
            cpu_after = cpu_seconds(child.proc.pid) if child is not None else None
            if rc != 0:
                raise run.TargetError(f"wrk exited with {rc}: {err.strip() or out.strip()}")
            wrk = run.parse_wrk(out)
            incomplete = re.search(r"^BENCH_INCOMPLETE (\d+)", out, re.MULTILINE)
        except (run.TargetError, ValueError, OSError) as exc:
            result.error = str(exc).splitlines()[0]
            self.log(f"  ERROR: {exc}")
            return result
        finally:
            if child is not None:
                self.procs.stop(child)
        result.streams = wrk.requests
        if cpu_before is not None and cpu_after is not None and wrk.requests:
            result.cpu_us_per_stream = (cpu_after - cpu_before) / wrk.requests * 1e6
        result.streams_per_s = wrk.rps
        result.chunks_per_s = wrk.rps * upstream.STREAM_CHUNKS
        if wrk.requests:
            result.p50_ms, result.p99_ms = wrk.p50_ms, wrk.p99_ms
        result.non_2xx = wrk.non_2xx
        result.incomplete = int(incomplete.group(1)) if incomplete else 0
        result.socket_errors = sum(wrk.socket_errors.values())
        flag = "" if not result.problems else "   <-- " + "; ".join(result.problems)
        self.log(
            f"  TTFT p50 {run._ms(result.ttft_p50_ms)} p99 {run._ms(result.ttft_p99_ms)}; "
            f"{wrk.rps:,.0f} streams/s, stream p50 {run._ms(result.p50_ms)} "
            f"p99 {run._ms(result.p99_ms)}{flag}"
        )
        return result


def _share(result: StreamResult, base: StreamResult | None) -> str:
    if base is None or base.problems or not base.streams_per_s or not result.streams_per_s:
        return "-"
    return f"{100 * result.streams_per_s / base.streams_per_s:.1f} %"


def markdown_table(results: Sequence[StreamResult], scenarios: Sequence[StreamScenario]) -> str:
    lines = [
        "| target | scenario | TTFT p50 | TTFT p99 | TTFT overhead (p50) | streams/s | chunks/s "
        "| % of pass-through | % of upstream | stream p50 | stream p99 | server CPU per stream "
        "| status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scenario in scenarios:
        here = {
            r.target: r
            for r in results
            if (r.interval_ms, r.connections) == (scenario.interval_ms, scenario.connections)
        }
        base = here.get(run.UPSTREAM)
        for target in TARGETS:
            r = here.get(target)
            if r is None:
                continue
            overhead = "-"
            if target != run.UPSTREAM and base and base.ttft_p50_ms and r.ttft_p50_ms:
                overhead = f"+{r.ttft_p50_ms - base.ttft_p50_ms:.2f} ms"
            share = _share(r, base)
            of_passthrough = _share(r, here.get(PASSTHROUGH))
            status = "ok" if not r.problems else "**FAILED: " + "; ".join(r.problems) + "**"
            rate = f"{r.streams_per_s:,.0f}" if r.streams_per_s is not None else "-"
            chunks = f"{r.chunks_per_s:,.0f}" if r.chunks_per_s is not None else "-"
            lines.append(
                f"| {run.TARGET_LABELS[target]} | {scenario.label} | {run._ms(r.ttft_p50_ms)} "
                f"| {run._ms(r.ttft_p99_ms)} | {overhead} | {rate} | {chunks} | {of_passthrough} "
                f"| {share} "
                f"| {run._ms(r.p50_ms)} | {run._ms(r.p99_ms)} "
                f"| {f'{r.cpu_us_per_stream:,.0f} µs' if r.cpu_us_per_stream else '-'} | {status} |"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark promptapi's streaming against the upstream streamed directly.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of discarded wrk warm-up")
    parser.add_argument(
        "--scenarios",
        type=parse_scenarios,
        default=parse_scenarios(DEFAULT_SCENARIOS),
        help="comma-separated INTERVAL_MS:CONNECTIONS pairs (pause between chunks, wrk connections)",
    )
    parser.add_argument(
        "--ttft-requests", type=int, default=300, help="sequential streams per TTFT measurement"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--timeout", type=int, default=10, help="wrk per-request timeout (s)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for promptapi")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for wrk, nginx, this script")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.httpx_pool = "default"  # read by run.Bench.start_passthrough; unused by aiohttp
    if args.duration < 1 or args.ttft_requests < 1:
        print("--duration and --ttft-requests must be at least 1", file=sys.stderr)
        return 2
    try:
        run.find_tools()
        if not os.access(run.VENV_BIN / "promptapi", os.X_OK):
            raise run.HarnessError(f"{run.VENV_BIN / 'promptapi'} not found; install the project")
    except run.HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if {args.server_cpu, args.load_cpu} - os.sched_getaffinity(0):
        print(f"error: cpus {args.server_cpu}/{args.load_cpu} not available", file=sys.stderr)
        return 2
    # The TTFT client runs in this process: keep it off the server's core.
    os.sched_setaffinity(0, {args.load_cpu})

    def work(workdir: Path, procs: run.Processes) -> list[StreamResult]:
        bench = StreamBench(args, workdir, procs)
        bench.start_upstream(args.scenarios)
        return [bench.measure(t, s) for s in args.scenarios for t in TARGETS]

    results = run.in_harness("promptapi-stream-bench-", args.keep_tmp, work)
    if isinstance(results, int):
        return results

    print()
    print(
        f"TTFT: {args.ttft_requests} streams one at a time, fresh connection each; wrk: 1 thread, "
        f"{args.duration} s after a {args.warmup} s warm-up; promptapi on cpu {args.server_cpu}, "
        f"wrk + nginx + TTFT client on cpu {args.load_cpu}"
    )
    print()
    print(markdown_table(results, args.scenarios))
    bad = [r for r in results if r.problems]
    for r in bad:
        print(f"WARNING: {run.TARGET_LABELS[r.target]} @ {r.interval_ms} ms / {r.connections} "
              f"conn: {'; '.join(r.problems)}", file=sys.stderr)  # fmt: skip
    if args.json is not None:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}}
        payload["results"] = [asdict(r) | {"problems": r.problems} for r in results]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
