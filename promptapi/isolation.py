"""Definition checks in a worker process with CPU, memory and wall-clock limits.

Checking a definition compiles its templates and dry-renders them with sample inputs: work an
admin's definition drives. It runs in one persistent worker process per server process (started
on first use, reused so a sync of many files stays fast), never on the event loop. The worker
limits its own memory (RLIMIT_AS) and, per check, its CPU time (RLIMIT_CPU); the parent waits at
most the wall-clock limit, then kills it. A worker that is killed or dies (say, by the OOM
killer) is replaced by the next check. An overrun is a DefinitionInvalid naming the limit.

`check_definition` is blocking and thread-safe (checks are serialised); async code calls it
through `asyncio.to_thread`.
"""

from __future__ import annotations

import atexit
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from promptapi.errors import DefinitionInvalid, PromptAPIError
from promptapi.sandbox import Limits

_HEADER = struct.Struct(">Q")
_START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class CheckLimits:
    """What one check may spend (PROMPTAPI_CHECK_TIMEOUT, _CPU_SECONDS, _MEMORY_MB)."""

    timeout: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024


_config: tuple[CheckLimits, Limits] | None = None
_in_worker = False


def configure(check: CheckLimits, render: Limits) -> None:
    global _config
    _config = (check, render)


def in_worker() -> bool:
    return _in_worker


def _limits() -> tuple[CheckLimits, Limits]:
    if _config is None:
        from promptapi.config import Settings

        settings = Settings.from_env()
        configure(check_limits(settings), render_limits(settings))
    assert _config is not None
    return _config


def check_limits(settings: Any) -> CheckLimits:
    return CheckLimits(
        timeout=settings.check_timeout,
        cpu_seconds=settings.check_cpu_seconds,
        memory_mb=settings.check_memory_mb,
    )


def render_limits(settings: Any) -> Limits:
    return Limits.of(settings)


def _overrun(message: str) -> DefinitionInvalid:
    return DefinitionInvalid(
        f"Checking the definition went past a limit: {message}.",
        errors=[{"path": "", "message": message}],
    )


def _send(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return pickle.loads(payload)


class _Worker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._memory_mb = 0

    def _start(self, limits: CheckLimits) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "promptapi.isolation", str(limits.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT)
        if not ready or process.stdout.read(5) != b"ready":
            self._stop(process)
            raise PromptAPIError("The definition checker could not start.")
        self._memory_mb = limits.memory_mb
        return process

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        with self._lock:
            if self._process is not None:
                self._stop(self._process)
                self._process = None

    def forget(self) -> None:
        """After a fork: the child must not share the parent's worker."""
        self._lock = threading.Lock()
        self._process = None

    def run(self, request: dict[str, Any]) -> Any:
        check, _ = _limits()
        with self._lock:
            # A worker that died while idle (say, killed by the OOM killer) is only noticed
            # when it is asked again: one more try, with a fresh worker, tells the two apart.
            for attempt in (1, 2):
                try:
                    return self._exchange(request, check)
                except _Died as died:
                    if attempt == 2 or died.code == -signal.SIGXCPU:
                        raise _died(died.code, check) from None
            raise AssertionError("unreachable")

    def _exchange(self, request: dict[str, Any], check: CheckLimits) -> Any:
        process = self._process
        if process is None or process.poll() is not None or self._memory_mb != check.memory_mb:
            if process is not None:
                self._stop(process)
            self._process = process = self._start(check)
        assert process.stdin is not None and process.stdout is not None
        try:
            _send(process.stdin, request)
            ready, _, _ = select.select([process.stdout], [], [], check.timeout)
            if not ready:
                raise TimeoutError
            reply = _receive(process.stdout)
        except TimeoutError:
            self._stop(process)
            self._process = None
            raise _overrun(
                f"it took longer than {check.timeout:g} s (PROMPTAPI_CHECK_TIMEOUT)"
            ) from None
        except (EOFError, OSError, pickle.UnpicklingError):
            self._stop(process)
            self._process = None
            raise _Died(process.returncode) from None
        if reply[0] == "memory":
            self._stop(process)
            self._process = None
            raise _died(-signal.SIGKILL, check)
        return reply


class _Died(Exception):
    def __init__(self, code: int | None) -> None:
        self.code = code


def _died(code: int | None, check: CheckLimits) -> DefinitionInvalid:
    if code == -signal.SIGXCPU:
        return _overrun(
            f"it used more than {check.cpu_seconds} s of CPU time (PROMPTAPI_CHECK_CPU_SECONDS)"
        )
    if code == -signal.SIGKILL:
        return _overrun(
            f"it needed more than {check.memory_mb} MiB of memory (PROMPTAPI_CHECK_MEMORY_MB)"
        )
    return _overrun(f"the checking process ended unexpectedly (exit status {code})")


_worker = _Worker()
atexit.register(_worker.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_worker.forget)


def check_definition(
    raw: Any, *, models: Iterable[str] | None = None, require_version: bool = False
) -> dict[str, Any]:
    """`prompts.check_definition`, run in the worker process within the check limits."""
    check, render = _limits()
    try:
        request = {
            "raw": raw,
            "models": sorted(models) if models is not None else None,
            "require_version": require_version,
            "render": render,
            "cpu_seconds": check.cpu_seconds,
        }
        reply = _worker.run(request)
    except RecursionError:
        raise DefinitionInvalid(
            "The definition is nested too deeply.",
            errors=[{"path": "", "message": "nested too deeply"}],
        ) from None
    if reply[0] == "ok":
        from promptapi import prompts

        for source, code in reply[2].items():
            prompts.adopt_code(source, code)
        return reply[1]  # type: ignore[no-any-return]
    if reply[0] == "invalid":
        error_class = reply[3] if len(reply) > 3 else DefinitionInvalid
        raise error_class(reply[1], errors=reply[2])
    raise PromptAPIError(f"The definition checker failed: {reply[1]}")


# -- the worker process ---------------------------------------------------------------------


def _serve(memory_mb: int) -> None:
    from promptapi import isolation  # this file runs as __main__: mark the imported module

    isolation._in_worker = True
    memory = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from promptapi import prompts

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the reply stream
    stdout.write(b"ready")
    stdout.flush()
    while True:
        try:
            request = _receive(stdin)
        except EOFError:
            return
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        soft = int(used) + 1 + int(request["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        prompts.set_render_limits(request["render"])
        try:
            definition = prompts.check_definition(
                request["raw"],
                models=request["models"],
                require_version=request["require_version"],
            )
            codes = {
                m["content"]: prompts.template_code(m["content"]) for m in definition["messages"]
            }
            reply: tuple[Any, ...] = ("ok", definition, codes)
        except DefinitionInvalid as exc:
            reply = ("invalid", exc.detail, exc.errors, type(exc))
        except MemoryError:
            reply = ("memory",)
        except Exception as exc:  # a bug: the parent answers 500 and logs it
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            _send(stdout, reply)
        except MemoryError:
            _send(stdout, ("memory",))
        if reply[0] == "memory":
            return


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
