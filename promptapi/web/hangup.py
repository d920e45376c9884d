"""A caller who hangs up cancels the work being done for it.

After the request body has been read, the only message the server can still deliver is
`http.disconnect`. `unless_gone` awaits a call in the handler's own task while a watcher task
waits for that message; when it comes, the watcher cancels the handler's task, so the upstream
request is closed and the gateway records the call as 499 (as a streamed call already does,
promptapi.web.stream). Pure ASGI and cheap: one extra task per call, no extra task for the call
itself (see the README, Performance, for the measured cost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class CallerGone(Exception):
    """The caller disconnected while its call ran; there is nobody to answer."""


async def unless_gone(receive: Receive, call: Awaitable[T]) -> T:
    """`await call`, cancelled as soon as the caller disconnects (then CallerGone). Only for
    use once the request body has been read in full."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_watch(receive, task))
    try:
        result = await call
    except asyncio.CancelledError:
        if not _fired(watcher):
            raise  # cancelled from outside (shutdown): not ours to swallow
        task.uncancel()
        raise CallerGone from None
    finally:
        watcher.cancel()
    if _fired(watcher):
        # The call swallowed our cancellation and finished anyway: still nobody to answer.
        task.uncancel()
        raise CallerGone
    return result


def _fired(watcher: asyncio.Task[bool]) -> bool:
    return watcher.done() and not watcher.cancelled() and watcher.result()


async def _watch(receive: Receive, task: asyncio.Task[object]) -> bool:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()
    return True
