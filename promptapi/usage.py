"""Call records: queued on the hot path without I/O, written to the database in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from promptapi.store import Store

log = logging.getLogger("promptapi.usage")


class Recorder:
    def __init__(self, store: Store, *, batch_size: int = 500, interval: float = 0.5) -> None:
        self.store = store
        self.batch_size = batch_size
        self.interval = interval
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.rejected = 0
        self._in_flight = 0

    def record(self, row: dict[str, Any]) -> None:
        self._queue.append(row)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="promptapi-recorder")

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
            except Exception:
                failures += 1
                log.exception("writing %d call records failed; will retry", len(self._queue))
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def flush(self) -> None:
        """Write everything queued. If the database is unavailable, the batch goes back to the
        front of the queue; a row the database refuses for its content is logged and dropped,
        so it cannot block the rows behind it."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._in_flight = len(batch)
            try:
                rejected = await self.store.insert_calls(batch)
            except BaseException:
                self._queue.extendleft(reversed(batch))
                raise
            finally:
                self._in_flight = 0
            for row in rejected:
                self.rejected += 1
                log.error("the database refused call record %s; it is dropped", row.get("id"))
            self.written += len(batch) - len(rejected)

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for attempt in range(5):
            try:
                await self.flush()
                return
            except Exception:
                log.exception("flushing call records at shutdown failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("%d call records could not be written at shutdown", len(self._queue))
