"""The call pipeline and the state it serves from. No HTTP types here.

invoke: resolve -> validate -> render -> provider (with a deadline) -> parse/check output ->
record. stream: the same steps, the answer's text yielded piece by piece as it arrives. Admin
writes go through here too, so this process's in-memory state changes at once; other processes
notice the database revision change on their next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptapi import diff, files, isolation, lifecycle, prompts
from promptapi.config import Settings
from promptapi.errors import (
    ConfigError,
    Conflict,
    DefinitionInvalid,
    NotFound,
    OutputInvalid,
    PromptAPIError,
)
from promptapi.keys import Caller, KeyCache, hash_secret, new_admin_token, new_key
from promptapi.policy import PUBLISHED, Policy, review
from promptapi.prompts import Prompt, content_digest, digest
from promptapi.providers import Completion, CompletionRequest, Providers, StreamDelta, load_models
from promptapi.providers.router import Route, Router
from promptapi.registry import Registry, Version
from promptapi.store import Store, now
from promptapi.usage import Recorder

log = logging.getLogger("promptapi")

ADMIN_TOKEN_META = "admin_token_hash"
# At least this long between the starts of two refreshes triggered by misses, so a flood of bad
# keys costs the database at most a few dozen cheap revision checks a second.
MISS_REFRESH_GAP = 0.02
# How long a miss waits for its refresh (a database that does not answer) before it is answered
# from memory; and how long shutdown waits for a refresh in flight before cancelling it.
MISS_REFRESH_WAIT = 5.0
REFRESH_STOP_WAIT = 10.0


@dataclass(slots=True)
class SyncReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    labels: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "unchanged": self.unchanged,
            "errors": self.errors,
            "warnings": self.warnings,
            "dry_run": self.dry_run,
            "labels": self.labels,
            "states": self.states,
        }


# The order a version's lifecycle moves in. A file's `state` moves a stored version forward along
# it (never back), with the actions the admin API would use.
_ORDER = {state: rank for rank, state in enumerate(lifecycle.STATES)}


def _forward(current: str, target: str | None) -> list[str]:
    """The lifecycle actions that take a version from `current` forward to `target`."""
    if target is None or _ORDER[target] <= _ORDER[current]:
        return []
    if target == lifecycle.RETIRED:
        return ["retire"]
    steps = ["publish"] if current == lifecycle.DRAFT else []
    return steps + (["deprecate"] if target == lifecycle.DEPRECATED else [])


def _call_id() -> str:
    # Time-ordered, so call records append to the end of the primary-key index.
    return f"call_{time.time_ns():x}{random.getrandbits(40):010x}"


# What `Gateway.stream` yields: the Prompt served (first), a piece of answer text, or (last)
# the envelope.
StreamEvent = Prompt | str | dict[str, Any]
REPAIR_ANSWER_CHARS = 16_000
REPAIR_ERRORS = 20


def _add_usage(usage: dict[str, Any], completion: Completion, route: Route) -> None:
    usage["input_tokens"] += completion.input_tokens
    usage["output_tokens"] += completion.output_tokens
    assert route.config is not None
    cost = route.config.cost(completion.input_tokens, completion.output_tokens)
    if cost is not None:
        usage["cost_usd"] = round((usage["cost_usd"] or 0.0) + cost, 10)


def _repair_request(
    request: CompletionRequest, answer: str, problem: OutputInvalid
) -> CompletionRequest:
    """The same request, plus the rejected answer and why it was rejected."""
    errors = problem.errors or []
    lines = [
        f"- {e['path'] or '(the whole answer)'}: {e['message']}" for e in errors[:REPAIR_ERRORS]
    ]
    if len(errors) > REPAIR_ERRORS:
        lines.append(f"- … and {len(errors) - REPAIR_ERRORS} more")
    feedback = (
        "Your answer was rejected: it must be JSON that matches the required output schema.\n"
        "Problems:\n" + "\n".join(lines) + "\n"
        "Answer again with only the corrected JSON, no other text."
    )
    return CompletionRequest(
        messages=[
            *request.messages,
            {"role": "assistant", "content": answer[:REPAIR_ANSWER_CHARS]},
            {"role": "user", "content": feedback},
        ],
        params=request.params,
        output_schema=request.output_schema,
        schema_name=request.schema_name,
        examples=request.examples,
        input=request.input,
    )


def _new_record(
    name: str, version: int | None, caller: Caller, request_id: str | None
) -> dict[str, Any]:
    return {
        "id": _call_id(),
        "request_id": request_id,
        "prompt_name": name[:64].replace("\x00", ""),
        "prompt_version": version if version is not None and 0 < version < 2**31 else None,
        "model_alias": None,
        "model": None,
        "key_id": caller.key_id,
        "status": 500,
        "error_code": None,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": None,
        "cached": False,
        "mock": False,
        "deployment": None,
        "attempts": 0,
    }


def _mark_failed(record: dict[str, Any], exc: BaseException) -> None:
    if isinstance(exc, PromptAPIError):
        record["status"] = exc.status
        record["error_code"] = exc.code
    elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
        record["status"] = 499
        record["error_code"] = "client_closed"


def _take(completion: Completion, delta: StreamDelta) -> None:
    """Fold a delta's model, usage and finish reason into the streamed call's completion."""
    if delta.model:
        completion.model = delta.model
    if delta.input_tokens is not None:
        completion.input_tokens = delta.input_tokens
    if delta.output_tokens is not None:
        completion.output_tokens = delta.output_tokens
    if delta.finish_reason is not None:
        completion.finish_reason = delta.finish_reason


def _settle(record: dict[str, Any], route: Route, usage: dict[str, Any]) -> None:
    """What the call cost and where it went, recorded whether or not it succeeded."""
    record["deployment"] = route.deployment
    record["attempts"] = route.attempts
    record.update(usage)


def _envelope(
    prompt: Prompt,
    completion: Completion,
    output: Any,
    usage: dict[str, Any],
    route: Route,
    record: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": record["id"],
        "prompt": {"name": prompt.name, "version": prompt.version},
        "model": completion.model,
        "output": output,
        "usage": usage,
        "cached": False,
        "mock": completion.mock,
        "latency_ms": None,
        "deployment": route.deployment,
        "attempts": route.attempts,
    }


class Gateway:
    def __init__(
        self, settings: Settings, *, store: Store | None = None, providers: Providers | None = None
    ) -> None:
        if settings.default_state not in lifecycle.INITIAL_STATES:
            raise ConfigError(
                f"PROMPTAPI_DEFAULT_STATE must be one of {', '.join(lifecycle.INITIAL_STATES)}, "
                f"not {settings.default_state!r}"
            )
        self.settings = settings
        prompts.set_render_limits(isolation.render_limits(settings))
        isolation.configure(isolation.check_limits(settings), isolation.render_limits(settings))
        self.store = store or Store(settings.database_url)
        self.providers = providers or Providers(
            load_models(
                settings.models_file,
                default_model=settings.default_model,
                openai_api_key=settings.openai_api_key,
                openai_base_url=settings.openai_base_url,
            )
        )
        self.policy = Policy.load(settings.policy_file)
        self.router = Router(self.providers)
        self.registry = Registry()
        self.keys = KeyCache()
        self.recorder = Recorder(
            self.store,
            batch_size=settings.record_batch_size,
            interval=settings.record_flush_interval,
        )
        self._revision = -1
        self._refresher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Refreshes run one at a time, in order: `_refreshes_started` numbers them as they
        # begin, `_refreshes_done` counts the ones finished (so the newest finished one).
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshes_started = 0
        self._refreshes_done = 0
        self._last_refresh_start = -MISS_REFRESH_GAP
        # A refresh must not interleave with this process's own key writes: it could put back a
        # key revoked a moment ago, or drop one just created.
        self._state_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def prepare(self, *, announce_token: bool = True) -> SyncReport | None:
        """Everything a deployment does once before serving: schema, admin token, file sync.
        Safe to repeat; `promptapi serve` runs it once before starting its workers."""
        await self.store.ensure_schema(migrate=self.settings.auto_migrate)
        await self.bootstrap_admin_token(announce=announce_token)
        if self.settings.sync_on_start:
            report = await self.sync(self.settings.prompts_dir)
            for error in report.errors:
                named = [f"{e['path'] or '/'}: {e['message']}" for e in error.get("errors") or []]
                log.error("prompt file %s: %s", error["file"], "; ".join([error["detail"], *named]))
            for found in report.warnings:
                log.warning(
                    "prompt file %s: %d policy warnings (see `promptapi lint`)",
                    found["file"],
                    len(found["warnings"]),
                )
            return report
        return None

    async def start(self) -> None:
        await self.store.ensure_schema(migrate=False)
        if self.settings.admin_token:
            self.keys.set_admin_hash(hash_secret(self.settings.admin_token))
        await self.refresh(force=True)
        self.recorder.start()
        if self.settings.refresh_interval > 0:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="promptapi-refresh")
        warning = self.providers.mock_default_warning()
        if warning:
            log.warning(warning)

    async def aclose(self) -> None:
        # Stop the refresh loop between refreshes, never in the middle of one: a task cancelled
        # mid-transaction leaves its connection to be closed later, and if the event loop ends
        # first, the connection stays open, holding its transaction (on SQLite: the write lock
        # that the next process, e.g. a CLI command, then waits for in vain).
        self._stopping.set()
        for task in (self._refresher, self._refreshing):
            if task is not None and not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), REFRESH_STOP_WAIT)
                except Exception:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        await self.recorder.aclose()
        await self.providers.aclose()
        await self.store.aclose()

    async def bootstrap_admin_token(self, *, announce: bool = True) -> None:
        if self.settings.admin_token:
            if len(self.settings.admin_token) < 16:
                raise ConfigError("PROMPTAPI_ADMIN_TOKEN must be at least 16 characters long")
            return
        if await self.store.get_meta(ADMIN_TOKEN_META) is not None:
            return
        token = new_admin_token()
        if (
            await self.store.set_meta(
                ADMIN_TOKEN_META,
                hash_secret(token),
                only_if_absent=True,
                audit=("system", "admin_token.create", "admin_token"),
            )
            and announce
        ):
            # Printed once, never logged: only its hash is kept.
            print(
                "\n  promptapi generated an admin token (shown only this once, stored hashed):\n"
                f"\n      {token}\n\n  Use it as `Authorization: Bearer <token>` on /admin/v1/.\n",
                file=sys.stderr,
                flush=True,
            )

    async def reset_admin_token(self, *, actor: str = "cli") -> str:
        token = new_admin_token()
        await self.store.set_meta(
            ADMIN_TOKEN_META,
            hash_secret(token),
            audit=(actor, "admin_token.reset", "admin_token"),
        )
        return token

    async def refresh(self, *, force: bool = False) -> bool:
        """Catch up with writes made by other processes. Returns True when anything changed."""
        async with self._state_lock:
            current = await self.store.revision()
            if current == self._revision and not force:
                return False
            self._revision = current
            # Every version's lifecycle columns (small: no definitions) whenever the revision
            # moved; definitions only for versions this process does not hold yet. Row ids are
            # not a safe high-water mark: on PostgreSQL a lower id can commit after a higher one.
            lifecycles = await self.store.lifecycles()
            missing = self.registry.missing(lifecycles)
            if missing:
                for row in await self.store.versions_by_ids(missing):
                    self.registry.add(row)
            self.registry.apply_lifecycles(lifecycles)
            self.registry.replace_labels(await self.store.labels())
            self.keys.replace(await self.store.active_keys())
            if not self.settings.admin_token:
                stored = await self.store.get_meta(ADMIN_TOKEN_META)
                if stored:
                    self.keys.set_admin_hash(stored)
            return True

    async def refresh_on_miss(self) -> None:
        """An unknown key or prompt may have been created a moment ago by another process:
        wait for a refresh that starts after now (joining the next one if others are waiting
        too), so a write that committed before this miss is seen. One refresh at a time, and
        their starts at least MISS_REFRESH_GAP apart: a flood of misses shares them instead of
        multiplying them, and cannot starve a real miss, which waits for at most the refresh
        in flight and the next one (and never more than MISS_REFRESH_WAIT)."""
        wanted = self._refreshes_started + 1
        deadline = time.monotonic() + MISS_REFRESH_WAIT
        while self._refreshes_done < wanted and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._shared_refresh()), left)

    def _shared_refresh(self) -> asyncio.Task[None]:
        """The refresh in flight or about to start, else a new one."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_once(), name="promptapi-refresh")
        return self._refreshing

    async def _refresh_once(self) -> None:
        # Runs as its own task, so a caller that goes away never cancels it mid-transaction.
        wait = self._last_refresh_start + MISS_REFRESH_GAP - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._refreshes_started += 1
        self._last_refresh_start = time.monotonic()
        try:
            await self.refresh()
        except Exception:
            log.exception("refreshing from the database failed; serving what is in memory")
        finally:
            self._refreshes_done += 1

    async def caller(self, token: str) -> Caller | None:
        """The consumer (or admin) a bearer token belongs to, or None."""
        found = self.keys.check(token)
        if found is None:
            await self.refresh_on_miss()
            found = self.keys.check(token)
        return found

    async def _resolve(
        self, name: str, version: int | None, label: str | None = None, *, drafts: bool = False
    ) -> Prompt:
        try:
            return self.registry.lookup(name, version, label=label, drafts=drafts).prompt
        except NotFound:
            await self.refresh_on_miss()
        return self.registry.lookup(name, version, label=label, drafts=drafts).prompt

    async def _refresh_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.refresh_interval)
                return
            await asyncio.shield(self._shared_refresh())

    # -- the call pipeline ----------------------------------------------------------------

    async def invoke(
        self,
        name: str,
        data: Any,
        *,
        caller: Caller,
        version: int | None = None,
        request_id: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        record = _new_record(name, version, caller, request_id)
        try:
            prompt, request = await self._prepare(name, data, version, label, caller, record)
            envelope = await self._complete(prompt, request, record)
            record["status"] = 200
            envelope["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            return envelope
        except BaseException as exc:
            _mark_failed(record, exc)
            raise
        finally:
            self._record(record, started)

    async def stream(
        self,
        name: str,
        data: Any,
        *,
        caller: Caller,
        version: int | None = None,
        request_id: str | None = None,
        label: str | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The same pipeline as `invoke`, streamed: yields the Prompt being served (once its
        input is valid), then each non-empty piece of answer text as it arrives, then the
        envelope (the last event). Everything that fails before the first piece of text
        (resolve, validation, render, an upstream that refuses or times out, after the router's
        retries and fallbacks) raises from `anext` before it, so a caller can still answer with
        a plain error. Closing or cancelling the generator closes the upstream stream and
        records the call as 499. No output repair: the caller has already seen the answer."""
        started = time.perf_counter()
        record = _new_record(name, version, caller, request_id)
        try:
            prompt, request = await self._prepare(name, data, version, label, caller, record)
            yield prompt
            route = Route()
            usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "cost_usd": None}
            completion = Completion(text="", model="")
            parts: list[str] = []
            try:
                async with contextlib.aclosing(
                    self._open_stream(prompt.model, request, route)
                ) as upstream:
                    async for delta in upstream:
                        _take(completion, delta)
                        if delta.text:
                            parts.append(delta.text)
                            yield delta.text
                assert route.config is not None
                completion.text = "".join(parts)
                completion.model = completion.model or route.config.model
                completion.mock = route.config.provider == "mock"
                record["model"] = completion.model
                record["mock"] = completion.mock
                _add_usage(usage, completion, route)
            finally:
                _settle(record, route, usage)
            envelope = _envelope(
                prompt, completion, prompt.parse_output(completion.text), usage, route, record
            )
            record["status"] = 200
            envelope["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        except BaseException as exc:
            _mark_failed(record, exc)
            raise
        finally:
            self._record(record, started)
        yield envelope

    def _open_stream(
        self, alias: str, request: CompletionRequest, route: Route
    ) -> AsyncIterator[StreamDelta]:
        """The one place a streamed call goes upstream: the router (retries, fallbacks and
        circuits before the first delta) over the Provider interface."""
        return self.router.stream(alias, request, route)

    async def _prepare(
        self,
        name: str,
        data: Any,
        version: int | None,
        label: str | None,
        caller: Caller,
        record: dict[str, Any],
    ) -> tuple[Prompt, CompletionRequest]:
        """Resolve, validate, render: everything a call does before it goes upstream."""
        prompt = await self._resolve(name, version, label, drafts=caller.drafts)
        record["prompt_version"] = prompt.version
        record["model_alias"] = prompt.model
        prompt.validate_input(data)
        request = CompletionRequest(
            messages=await prompt.arender(data),
            params=prompt.params,
            output_schema=prompt.output_schema,
            schema_name=prompt.name,
            examples=prompt.examples,
            input=data,
        )
        return prompt, request

    def _record(self, record: dict[str, Any], started: float) -> None:
        record["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        record["created_at"] = now()
        self.recorder.record(record)

    async def _complete(
        self, prompt: Prompt, request: CompletionRequest, record: dict[str, Any]
    ) -> dict[str, Any]:
        route = Route()
        usage = {"input_tokens": 0, "output_tokens": 0, "cost_usd": None}
        repairs = 0
        try:
            while True:
                completion, route = await self.router.complete(
                    route.alias or prompt.model, request, route
                )
                _add_usage(usage, completion, route)
                record["model"] = completion.model
                record["mock"] = completion.mock
                try:
                    output = prompt.parse_output(completion.text)
                    break
                except OutputInvalid as exc:
                    if repairs >= prompt.output_repair:
                        if repairs:
                            exc.detail += f" (after {repairs} repair attempt{'s' * (repairs > 1)})"
                        raise
                    repairs += 1
                    request = _repair_request(request, completion.text, exc)
        finally:
            _settle(record, route, usage)
        return _envelope(prompt, completion, output, usage, route, record)

    # -- admin operations -----------------------------------------------------------------

    async def _store(
        self,
        definition: dict[str, Any],
        created_by: str | None,
        *,
        state: str | None = None,
        labels: list[str] | tuple[str, ...] = (),
    ) -> tuple[dict[str, Any], bool]:
        """Store a checked definition (a no-op when identical to what is stored) and move
        `labels` to it; the digest covers the content, not the version number, state or labels."""
        row, created = await self.store.create_version(
            definition,
            content_digest(definition),
            version_digest=digest,
            created_by=created_by,
            state=state or self.settings.default_state,
            labels=labels,
        )
        if created or self.registry.get(row["name"], row["version"]) is None:
            # An identical version made by another process may not have reached this one yet.
            self.registry.add(row)
        for moved in row["labels_moved"]:
            self.registry.move_label(row["name"], moved["label"], moved["to"])
        return row, created

    def check(
        self, raw: Any, *, require_version: bool = False, stage: str = PUBLISHED
    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """A definition checked for validity and against the policy for the lifecycle state it
        is about to enter: (normalised definition, policy warnings), or DefinitionInvalid /
        PolicyViolation listing every problem at once."""
        found = review(
            raw,
            self.policy,
            models=self.providers.models,
            require_version=require_version,
            stage=stage,
        )
        return found.accepted(), found.warnings

    async def acheck(
        self, raw: Any, *, require_version: bool = False, stage: str = PUBLISHED
    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """`check` off the event loop (the definition itself is checked in the checker
        process, promptapi/isolation.py), its templates compiled there too."""

        def check_and_compile() -> tuple[dict[str, Any], list[dict[str, str]]]:
            definition, warnings = self.check(raw, require_version=require_version, stage=stage)
            prompts.precompile(definition)
            return definition, warnings

        return await asyncio.to_thread(check_and_compile)

    def _initial_state(self, raw: Any) -> str:
        """The state a new version starts in: its own `state`, else PROMPTAPI_DEFAULT_STATE. A
        file's deprecated version starts published and a retired one as a draft; sync then
        moves them on."""
        state = raw.get("state") if isinstance(raw, dict) else None
        if state == lifecycle.DEPRECATED:
            return lifecycle.PUBLISHED
        if state == lifecycle.RETIRED:
            return lifecycle.DRAFT
        return state if state in lifecycle.INITIAL_STATES else self.settings.default_state

    async def _would_store(
        self, definition: dict[str, Any], planned: dict[tuple[str, int], str]
    ) -> tuple[dict[str, Any], bool]:
        """What `_store` would do with a definition that names its version, without writing.
        `planned` holds what this dry run would already have created."""
        key = (definition["name"], definition["version"])
        wanted = content_digest(definition)
        try:
            have = (await self.store.get_version(*key))["digest"]
        except NotFound:
            have = planned.get(key)
        if have is None:
            planned[key] = wanted
            return definition, True
        if have != wanted:
            raise Conflict(f"{key[0]} version {key[1]} differs")
        return definition, False

    async def register(
        self,
        raw: Any,
        *,
        created_by: str | None,
        warnings: list[dict[str, str]] | None = None,
    ) -> tuple[Version, bool]:
        """Register a version, checked against the policy for the state it starts in. Policy
        warnings are appended to `warnings` when given."""
        state = self._initial_state(raw)
        if isinstance(raw, dict) and raw.get("state") not in (None, *lifecycle.INITIAL_STATES):
            # Only files may name a later state (sync moves the version there); through the
            # API, deprecate and retire are actions of their own.
            problem = {
                "path": "/state",
                "message": "a new version starts as draft or published; deprecate and retire "
                "it with POST .../versions/{version}/deprecate or /retire",
            }
            try:
                await self.acheck(raw, stage=state)
            except DefinitionInvalid as exc:
                exc.errors = sorted([*(exc.errors or []), problem], key=lambda e: e["path"])
                raise
            raise DefinitionInvalid("The definition has 1 problem.", errors=[problem])
        definition, found = await self.acheck(raw, stage=state)
        if warnings is not None:
            warnings.extend(found)
        async with self._state_lock:
            row, created = await self._store(
                definition, created_by, state=state, labels=raw.get("labels") or ()
            )
        version = self.registry.get(row["name"], row["version"])
        assert version is not None
        return version, created

    async def sync(
        self, root: Path, *, created_by: str = "sync", dry_run: bool = False
    ) -> SyncReport:
        """Store new versions from the prompt files under `root`, move the labels they declare
        and move each version forward to the `state` its file names (publish, deprecate,
        retire; never back). Retirements come last, once every label has moved. With
        `dry_run`, report what would be created, unchanged or refused without writing anything
        (label moves and state changes are not predicted)."""
        report = SyncReport(dry_run=dry_run)
        planned: dict[tuple[str, int], str] = {}
        later: list[tuple[str, str, int, str, str]] = []
        # Reading and parsing the files is bounded (size, no aliases) but still CPU work: in a
        # child process, off the event loop and the GIL.
        found_files = await files.read_all_apart(root, self.settings.max_body_bytes)
        clashes = _label_clashes(found_files)
        for found in found_files:
            where = str(found.path)
            if found.error is not None:
                report.errors.append({"file": where, "detail": found.error})
                continue
            try:
                state = self._initial_state(found.data)
                definition, warnings = await self.acheck(
                    found.data, require_version=True, stage=state
                )
                if warnings:
                    report.warnings.append({"file": where, "warnings": warnings})
                labels = [str(x) for x in found.data.get("labels") or ()]
                for label in [x for x in labels if (definition["name"], x) in clashes]:
                    labels.remove(label)
                    others = [f for f in clashes[(definition["name"], label)] if f != where]
                    report.errors.append(
                        {
                            "file": where,
                            "detail": (
                                f"label {label!r} of {definition['name']} is also declared by "
                                f"{', '.join(others)}; a label points at one version, so "
                                "declare it in one file (not moved)"
                            ),
                        }
                    )
                if dry_run:
                    row, created = await self._would_store(definition, planned)
                else:
                    target = found.data.get("state")
                    # A stored version moves forward first, so the labels it declares may
                    # point at it (e.g. production at a draft the file publishes).
                    stored = await self._stored_state(definition)
                    if stored is not None:
                        await self._move_forward(
                            where, definition, stored, target, created_by, report, later
                        )
                    async with self._state_lock:
                        row, created = await self._store(
                            definition, created_by, state=state, labels=labels
                        )
                    if stored is None:
                        await self._move_forward(
                            where, definition, row["state"], target, created_by, report, later
                        )
            except Conflict as exc:
                detail = exc.detail
                if exc.code == "conflict":
                    detail = (
                        f"{definition['name']} version {definition['version']} is already stored "
                        "with different content; versions are immutable, so give the change a "
                        "new version number (e.g. a new file)"
                    )
                report.errors.append({"file": where, "detail": detail})
                continue
            except DefinitionInvalid as exc:
                report.errors.append({"file": where, "detail": exc.detail, "errors": exc.errors})
                continue
            label = f"{row['name']}@{row['version']}"
            (report.created if created else report.unchanged).append(label)
            for moved in row.get("labels_moved", ()):
                report.labels.append(f"{row['name']}:{moved['label']} -> {moved['to']}")
        # Deprecations once every file's version exists (the default successor is then the
        # newest published one), retirements once every label has moved.
        for step in ("deprecate", "retire"):
            for where, name, number, before, action in later:
                if action != step:
                    continue
                try:
                    after = (
                        await self.transition(name, number, action, {}, actor=created_by)
                    ).state
                except Conflict as exc:
                    report.errors.append({"file": where, "detail": exc.detail})
                else:
                    report.states.append(f"{name}@{number}: {before} -> {after}")
        if not dry_run and (report.created or report.labels or report.states or report.errors):
            await self.store.audit(
                created_by,
                "sync.run",
                f"sync:{root}",
                after={
                    "created": report.created,
                    "labels": report.labels,
                    "errors": len(report.errors),
                    **({"states": report.states} if report.states else {}),
                },
            )
        return report

    async def _stored_state(self, definition: dict[str, Any]) -> str | None:
        """The stored state of the version a file defines, None when it is new. Conflict when
        it is stored with other content (before anything moves)."""
        try:
            row = await self.store.get_version(definition["name"], definition["version"])
        except NotFound:
            return None
        if row["digest"] != content_digest(definition):
            raise Conflict(f"{definition['name']} version {definition['version']} differs")
        return str(row["state"])

    async def _move_forward(
        self,
        where: str,
        definition: dict[str, Any],
        current: str,
        target: Any,
        actor: str,
        report: SyncReport,
        later: list[tuple[str, str, int, str, str]],
    ) -> None:
        """Take a version forward to the state its file names: publish now (labels may need
        it), deprecate and retire at the end of the sync (`later`)."""
        name, number = definition["name"], definition["version"]
        if target not in lifecycle.STATES:
            return
        for action in _forward(current, target):
            if action != "publish":
                later.append((where, name, number, current, action))
                continue
            before = current
            current = (await self.transition(name, number, action, {}, actor=actor)).state
            report.states.append(f"{name}@{number}: {before} -> {current}")

    # -- lifecycle and labels -------------------------------------------------------------

    async def transition(
        self,
        name: str,
        number: int,
        action: str,
        body: dict[str, Any],
        *,
        actor: str,
        warnings: list[dict[str, str]] | None = None,
    ) -> Version:
        """Move a version to another state. Publishing checks the policy for published versions;
        its warnings are appended to `warnings` when given."""
        if action == "publish":
            # A published version must meet the policy for published versions (e.g. examples).
            known = self.registry.get(name, number)
            definition = (
                known.prompt.definition
                if known is not None
                else (await self.store.get_version(name, number))["definition"]
            )
            _, found = await self.acheck(definition, stage=PUBLISHED)
            if warnings is not None:
                warnings.extend(found)
        async with self._state_lock:
            row = await self.store.transition(name, number, action, body, actor=actor)
            version = self.registry.add(row)
        if version is None:
            raise NotFound(f"Prompt {name!r} has no version {number}.")
        return version

    async def set_label(self, name: str, label: str, number: int, *, actor: str) -> dict[str, Any]:
        async with self._state_lock:
            result = await self.store.set_label(name, label, number, actor=actor)
            self.registry.move_label(name, label, number)
        return result

    async def delete_label(self, name: str, label: str, *, actor: str) -> dict[str, Any]:
        async with self._state_lock:
            result = await self.store.delete_label(name, label, actor=actor)
            self.registry.remove_label(name, label)
        return result

    def diff(self, name: str, old: int, new: int) -> dict[str, Any]:
        """What changed between two stored versions (from memory)."""
        found = []
        for number in (old, new):
            version = self.registry.get(name, number)
            if version is None:
                self.registry.versions(name)  # 404 for an unknown prompt
                raise NotFound(f"Prompt {name!r} has no version {number}.")
            found.append(version)
        before, after = (
            {"version": v.prompt.version, "state": v.state, "definition": v.prompt.definition}
            for v in found
        )
        return diff.versions(name, before, after)

    async def create_key(
        self, name: str, scopes: list[str], *, allow_drafts: bool = False, actor: str = "admin"
    ) -> tuple[str, dict[str, Any]]:
        plaintext, key_id, prefix, key_hash = new_key()
        async with self._state_lock:
            key = await self.store.create_key(
                key_id=key_id,
                name=name,
                prefix=prefix,
                key_hash=key_hash,
                scopes=scopes,
                allow_drafts=allow_drafts,
                actor=actor,
            )
            self.keys.add(key_hash, key)
        return plaintext, key

    async def revoke_key(self, key_id: str, *, actor: str = "admin") -> dict[str, Any]:
        async with self._state_lock:
            key = await self.store.revoke_key(key_id, actor=actor)
            self.keys.remove(key_id)
        return key


def _label_clashes(found: list[files.PromptFile]) -> dict[tuple[str, str], list[str]]:
    """(prompt, label) declared by more than one file -> those files."""
    claims: dict[tuple[str, str], list[str]] = {}
    for item in found:
        data = item.data
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
            continue
        for label in data["labels"]:
            if isinstance(label, str):
                claims.setdefault((str(data.get("name")), label), []).append(str(item.path))
    return {key: paths for key, paths in claims.items() if len(paths) > 1}
