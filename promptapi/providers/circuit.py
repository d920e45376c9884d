"""A circuit breaker per upstream deployment, kept in this process's memory.

closed: attempts go through. After `failures` consecutive failed attempts (or, when
`error_rate` is set, that share of failures among at least `min_calls` attempts of the last
`window` seconds) it opens. open: no attempt goes through for `open_seconds`. Then half-open:
exactly one probe goes through; its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from promptapi.providers.base import CircuitConfig

log = logging.getLogger("promptapi.providers")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_BUCKETS = 10
# While a half-open probe is in flight, others are told to come back after this many seconds.
PROBE_WAIT = 1.0


class Circuit:
    __slots__ = (
        "_buckets",
        "_width",
        "clock",
        "config",
        "consecutive",
        "name",
        "open_until",
        "opened",
        "probing",
        "state",
    )

    def __init__(self, name: str, config: CircuitConfig, clock: Callable[[], float]) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.state = CLOSED
        self.consecutive = 0
        self.open_until = 0.0
        self.probing = False
        self.opened = 0
        self._width = config.window / _BUCKETS
        # [bucket index, attempts, failures], oldest first: the error rate over `window`.
        self._buckets: deque[list[int]] = deque()

    def wait(self, now: float | None = None) -> float:
        """0 when an attempt may go through now, else the seconds until one may."""
        if self.state == CLOSED:
            return 0.0
        now = self.clock() if now is None else now
        if self.state == OPEN:
            if now < self.open_until:
                return self.open_until - now
            self.state = HALF_OPEN
            self.probing = False
            log.info("circuit half-open: deployment=%s lets one probe through", self.name)
        return PROBE_WAIT if self.probing else 0.0

    def acquire(self) -> None:
        """An attempt is going through: when half-open, it is the one probe."""
        if self.state == HALF_OPEN:
            self.probing = True

    def release(self) -> None:
        """The attempt ended without a verdict on the deployment (e.g. the caller left)."""
        self.probing = False

    def success(self) -> None:
        self._count(failed=False)
        self.consecutive = 0
        self.probing = False
        if self.state != CLOSED:
            self.state = CLOSED
            log.warning("circuit closed: deployment=%s answered again", self.name)

    def failure(self) -> None:
        self._count(failed=True)
        self.consecutive += 1
        self.probing = False
        if self.state == OPEN:
            return
        if (
            self.state == HALF_OPEN
            or self.consecutive >= self.config.failures
            or self._rate_exceeded()
        ):
            self.state = OPEN
            self.opened += 1
            self.open_until = self.clock() + self.config.open_seconds
            log.warning(
                "circuit open: deployment=%s consecutive_failures=%d error_rate=%s for %.3g s",
                self.name,
                self.consecutive,
                self.error_rate(),
                self.config.open_seconds,
            )

    def _count(self, *, failed: bool) -> None:
        index = int(self.clock() / self._width)
        buckets = self._buckets
        if buckets and buckets[-1][0] == index:
            bucket = buckets[-1]
        else:
            bucket = [index, 0, 0]
            buckets.append(bucket)
            while buckets[0][0] <= index - _BUCKETS:
                buckets.popleft()
        bucket[1] += 1
        bucket[2] += failed

    def _window(self) -> tuple[int, int]:
        oldest = int(self.clock() / self._width) - _BUCKETS
        attempts = failures = 0
        for index, total, failed in self._buckets:
            if index > oldest:
                attempts += total
                failures += failed
        return attempts, failures

    def _rate_exceeded(self) -> bool:
        if self.config.error_rate is None:
            return False
        attempts, failures = self._window()
        return attempts >= self.config.min_calls and failures >= self.config.error_rate * attempts

    def error_rate(self) -> float | None:
        attempts, failures = self._window()
        return round(failures / attempts, 4) if attempts else None

    def snapshot(self) -> dict[str, Any]:
        wait = self.wait()
        attempts, failures = self._window()
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive,
            "recent_attempts": attempts,
            "recent_failures": failures,
            "recent_error_rate": round(failures / attempts, 4) if attempts else None,
            "retry_after": round(wait, 3) if self.state == OPEN else None,
            "times_opened": self.opened,
        }
