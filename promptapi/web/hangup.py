"""A caller who hangs up cancels the work being done for it.

After the request body has been read, the only message the server can still deliver is
`http.disconnect`. `unless_gone` awaits a call in the handler's own task while listening for
that message; when it comes, the handler's task is cancelled, so the upstream request is closed
and the gateway records the call as 499 (as a streamed call already does,
promptapi.web.stream). Pure ASGI.

Listening costs no task: the server's `receive()` is started by hand up to the future it waits
on, and a callback on that future finishes it when it completes. A watcher task per call cost
about 3x more CPU (bench/overhead.py); it remains the fallback for a server whose `receive`
waits on something other than an asyncio future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")


class CallerGone(Exception):
    """The caller disconnected while its call ran; there is nobody to answer."""


class _Listener:
    """Drives one `receive()` coroutine from future callbacks; cancels `task` on disconnect."""

    __slots__ = ("coroutine", "fired", "task", "waiting")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False
        self.waiting: asyncio.Future[Any] | None = None
        self.coroutine: Coroutine[Any, Any, Any] | None = receive()  # type: ignore[assignment]
        self._step()

    def _step(self, _done: asyncio.Future[Any] | None = None) -> None:
        coroutine = self.coroutine
        if coroutine is None:
            return
        self.waiting = None
        try:
            waiting = coroutine.send(None)
        except StopIteration as returned:
            self.coroutine = None
            # After the body, a server has nothing else to deliver; anything but a disconnect
            # ends the listening (the call then simply runs to its end).
            if returned.value["type"] == "http.disconnect":
                self.fired = True
                self.task.cancel()
            return
        except Exception:  # the server's receive failed: stop listening
            self.coroutine = None
            return
        if not isinstance(waiting, asyncio.Future):
            if _done is None:  # on the first step: the caller falls back to a watcher task
                raise _NotAFuture(coroutine, waiting)
            self.close()
            return
        self.waiting = waiting
        waiting.add_done_callback(self._step)

    def close(self) -> None:
        if self.waiting is not None:
            self.waiting.remove_done_callback(self._step)
            self.waiting = None
        if self.coroutine is not None:
            self.coroutine.close()
            self.coroutine = None


class _NotAFuture(Exception):
    def __init__(self, coroutine: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coroutine = coroutine
        self.waiting = waiting


async def unless_gone(receive: Receive, call: Awaitable[T]) -> T:
    """`await call`, cancelled as soon as the caller disconnects (then CallerGone). Only for
    use once the request body has been read in full."""
    task = asyncio.current_task()
    assert task is not None
    try:
        listener = _Listener(receive, task)
    except _NotAFuture as odd:
        odd.coroutine.close()
        return await _with_watcher(receive, call, task)
    try:
        result = await call
    except asyncio.CancelledError:
        if not listener.fired:
            raise  # cancelled from outside (shutdown): not ours to swallow
        task.uncancel()
        raise CallerGone from None
    finally:
        listener.close()
    if listener.fired:
        # The call swallowed our cancellation and finished anyway: still nobody to answer.
        task.uncancel()
        raise CallerGone
    return result


async def _with_watcher(receive: Receive, call: Awaitable[T], task: asyncio.Task[Any]) -> T:
    watcher = asyncio.create_task(_watch(receive, task))
    try:
        result = await call
    except asyncio.CancelledError:
        if not _fired(watcher):
            raise
        task.uncancel()
        raise CallerGone from None
    finally:
        watcher.cancel()
    if _fired(watcher):
        task.uncancel()
        raise CallerGone
    return result


def _fired(watcher: asyncio.Task[bool]) -> bool:
    return watcher.done() and not watcher.cancelled() and watcher.result()


async def _watch(receive: Receive, task: asyncio.Task[Any]) -> bool:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()
    return True
