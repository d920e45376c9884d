"""Hostile requests: assert that one is answered while the server stays responsive and small.

`while_responsive(server, send)` runs `send()` (one hostile request) in a thread while the test
probes `GET /healthz` every 20 ms on its own connection. It fails when any probe takes longer
than `probe_ms` (the event loop was blocked), when the process's resident memory grows by more
than `memory_mb` over its level before the request, or when `send()` takes longer than
`deadline_s`. It returns what `send()` returned, so the caller asserts the clear 4xx.

The server under test runs in this process (a uvicorn thread), so the memory measured is the
server's own; work done in a worker process is bounded by that worker's limits instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from tests.conftest import Server

T = TypeVar("T")

PROBE_MS = 100.0
MEMORY_MB = 200.0


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def while_responsive(
    server: Server,
    send: Callable[[], T],
    *,
    probe_ms: float = PROBE_MS,
    memory_mb: float = MEMORY_MB,
    deadline_s: float = 30.0,
) -> T:
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(send())
        except BaseException as exc:
            failure.append(exc)

    with httpx.Client(base_url=server.url, timeout=10) as probe:
        assert probe.get("/healthz").status_code == 200  # the connection is open before
        baseline = rss_mb()
        worker = threading.Thread(target=run, daemon=True)
        started = time.monotonic()
        worker.start()
        slowest = 0.0
        peak = baseline
        probes = 0
        while worker.is_alive():
            before = time.monotonic()
            response = probe.get("/healthz")
            took = (time.monotonic() - before) * 1000
            assert response.status_code == 200
            slowest = max(slowest, took)
            peak = max(peak, rss_mb())
            probes += 1
            assert time.monotonic() - started < deadline_s, (
                f"the hostile request was not answered within {deadline_s} s"
            )
            worker.join(0.02)
    if failure:
        raise failure[0]
    assert slowest <= probe_ms, (
        f"/healthz took {slowest:.0f} ms while the hostile request ran ({probes} probes)"
    )
    assert peak - baseline <= memory_mb, (
        f"the server grew by {peak - baseline:.0f} MiB while handling the hostile request"
    )
    return result[0]
