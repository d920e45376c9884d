"""Per-call CPU cost of the pure-ASGI guards a call passes through, measured in one event loop
with no I/O: the hang-up watcher around a call (promptapi.web.hangup) and the body-read
deadline on `receive` and the per-request header bookkeeping (promptapi.web.timeouts). Each line is the median difference against
the same loop without the guard; run it on a quiet machine.

    .venv/bin/python bench/overhead.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from promptapi.web.hangup import _with_watcher, unless_gone
from promptapi.web.timeouts import BodyDeadline, HeaderLimits, _HeaderGuard

N = 20_000


async def call() -> int:
    await asyncio.sleep(0)  # the call suspends at least once, as a real one does
    return 1


async def main() -> None:
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    async def bare() -> None:
        await call()

    async def guarded() -> None:
        await unless_gone(receive, call())

    async def watched() -> None:  # the fallback: a watcher task per call
        task = asyncio.current_task()
        assert task is not None
        await _with_watcher(receive, call(), task)

    def body_receive() -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        return receive

    async def bare_body() -> None:
        await body_receive()()

    async def guarded_body() -> None:
        await BodyDeadline(body_receive(), 10.0)()

    class Connection:  # what the guard reads of a uvicorn protocol
        loop = asyncio.get_running_loop()

    connection = Connection()
    guard = _HeaderGuard(HeaderLimits())
    guard.ready(connection)

    async def bare_request() -> None:
        pass

    async def guarded_request() -> None:  # what each keep-alive request adds
        guard.ready(connection)
        guard.complete()

    async def per_call(fn: Any) -> float:
        started = time.perf_counter()
        for _ in range(N):
            await fn()
        return (time.perf_counter() - started) / N * 1e6

    for name, plain, wrapped in (
        ("hang-up listener", bare, guarded),
        ("hang-up watcher task (fallback only)", bare, watched),
        ("body deadline", bare_body, guarded_body),
        ("header guard", bare_request, guarded_request),
    ):
        rounds = [(await per_call(wrapped)) - (await per_call(plain)) for _ in range(7)]
        print(f"{name}: +{statistics.median(rounds):.2f} µs per call (median of 7 x {N})")


if __name__ == "__main__":
    asyncio.run(main())
