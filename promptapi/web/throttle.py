"""Guessing clients: failed authentications counted per client address.

An address that fails `limit` times (a wrong admin token, an unknown or revoked consumer key)
within `window` seconds of its first failure gets 429 `auth_throttled` with `Retry-After` for
its further failures until the window ends. Credentials are checked before the throttle:
a valid token is never refused nor slowed, even from a throttled address (so one client
behind a shared address cannot lock the others out). What the throttle buys is cost and
noise: a throttled address's unknown keys no longer trigger a database refresh, and floods
stand out as 429s; tokens stay safe through their entropy (256-bit keys).

The table holds at most `max_addresses` addresses; when full, the address whose last failure
is oldest is forgotten, so memory stays bounded whatever the number of addresses.
"""

from __future__ import annotations

import math
import time

from starlette.types import Scope

from promptapi.errors import AuthThrottled


class AuthThrottle:
    __slots__ = ("_failures", "limit", "max_addresses", "window")

    def __init__(self, limit: int, window: float, max_addresses: int) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max(1, max_addresses)
        # address -> (start of its window, failures in it); oldest last failure first
        self._failures: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def blocked(self, address: str) -> float | None:
        """Seconds until `address` may fail again, or None when it is not throttled."""
        entry = self._failures.get(address)
        if entry is None or self.limit <= 0:
            return None
        start, count = entry
        left = start + self.window - time.monotonic()
        if left <= 0:
            del self._failures[address]
            return None
        return left if count >= self.limit else None

    def failed(self, address: str) -> float | None:
        """Count a failure; seconds to wait when the address is now over its limit."""
        if self.limit <= 0:
            return None
        now = time.monotonic()
        entry = self._failures.pop(address, None)
        if entry is None or entry[0] + self.window <= now:
            entry = (now, 0)
        start, count = entry
        if count >= self.limit:
            self._failures[address] = entry
            return start + self.window - now
        self._failures[address] = (start, count + 1)
        if len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]
        return None


def address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "-"


def throttle_of(scope: Scope) -> AuthThrottle | None:
    app = scope.get("app")
    return getattr(getattr(app, "state", None), "auth_throttle", None)


def refuse(wait: float) -> AuthThrottled:
    seconds = max(1, math.ceil(wait))
    return AuthThrottled(
        f"Too many failed authentications from this address; retry in {seconds} s.",
        headers={"Retry-After": str(seconds)},
    )


def check(scope: Scope) -> None:
    """Raise AuthThrottled when the caller's address is throttled."""
    throttle = throttle_of(scope)
    if throttle is not None:
        wait = throttle.blocked(address(scope))
        if wait is not None:
            raise refuse(wait)


def failure(scope: Scope) -> None:
    """Count a failed authentication; raise AuthThrottled when it is one too many."""
    throttle = throttle_of(scope)
    if throttle is not None:
        wait = throttle.failed(address(scope))
        if wait is not None:
            raise refuse(wait)
