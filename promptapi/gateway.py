"""The call pipeline and the state it serves from. No HTTP types here.

invoke: resolve -> validate -> render -> provider (with a deadline) -> parse/check output ->
record. Admin writes go through here too, so this process's in-memory state changes at once;
other processes notice the database revision change on their next refresh.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptapi import files
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
from promptapi.prompts import Prompt, content_digest
from promptapi.providers import Completion, CompletionRequest, Providers, load_models
from promptapi.providers.router import Route, Router
from promptapi.registry import Registry, Version
from promptapi.store import Store, now
from promptapi.usage import Recorder

log = logging.getLogger("promptapi")

ADMIN_TOKEN_META = "admin_token_hash"
MISS_REFRESH_INTERVAL = 0.1


@dataclass(slots=True)
class SyncReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "unchanged": self.unchanged,
            "errors": self.errors,
            "warnings": self.warnings,
            "dry_run": self.dry_run,
        }


def _call_id() -> str:
    # Time-ordered, so call records append to the end of the primary-key index.
    return f"call_{time.time_ns():x}{random.getrandbits(40):010x}"


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


class Gateway:
    def __init__(
        self, settings: Settings, *, store: Store | None = None, providers: Providers | None = None
    ) -> None:
        self.settings = settings
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
        # A refresh must not interleave with this process's own key writes: it could put back a
        # key revoked a moment ago, or drop one just created.
        self._state_lock = asyncio.Lock()
        self._last_miss_refresh = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def prepare(self, *, announce_token: bool = True) -> SyncReport | None:
        """Everything a deployment does once before serving: schema, admin token, file sync.
        Safe to repeat; `promptapi serve` runs it once before starting its workers."""
        await self.store.ensure_schema(migrate=self.settings.auto_migrate)
        await self.bootstrap_admin_token(announce=announce_token)
        if self.settings.sync_on_start:
            report = await self.sync(self.settings.prompts_dir)
            for error in report.errors:
                log.error("prompt file %s: %s", error["file"], error["detail"])
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
        if self.providers.mock_default:
            log.warning(
                "no model provider is configured: the 'default' model alias is the mock provider. "
                "Set OPENAI_API_KEY / OPENAI_BASE_URL or PROMPTAPI_MODELS_FILE."
            )

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
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
            await self.store.set_meta(ADMIN_TOKEN_META, hash_secret(token), only_if_absent=True)
            and announce
        ):
            # Printed once, never logged: only its hash is kept.
            print(
                "\n  promptapi generated an admin token (shown only this once, stored hashed):\n"
                f"\n      {token}\n\n  Use it as `Authorization: Bearer <token>` on /admin/v1/.\n",
                file=sys.stderr,
                flush=True,
            )

    async def reset_admin_token(self) -> str:
        token = new_admin_token()
        await self.store.set_meta(ADMIN_TOKEN_META, hash_secret(token))
        return token

    async def refresh(self, *, force: bool = False) -> bool:
        """Catch up with writes made by other processes. Returns True when anything changed."""
        async with self._state_lock:
            current = await self.store.revision()
            if current == self._revision and not force:
                return False
            self._revision = current
            for row in await self.store.versions_after(self.registry.last_row_id):
                self.registry.add(row)
            self.keys.replace(await self.store.active_keys())
            if not self.settings.admin_token:
                stored = await self.store.get_meta(ADMIN_TOKEN_META)
                if stored:
                    self.keys.set_admin_hash(stored)
            return True

    async def refresh_on_miss(self) -> bool:
        """An unknown key or prompt may have been created a moment ago by another process:
        catch up now rather than at the next refresh. At most once per MISS_REFRESH_INTERVAL, so
        a flood of bad keys costs the database at most a few cheap queries a second."""
        now_ = time.monotonic()
        if now_ - self._last_miss_refresh < MISS_REFRESH_INTERVAL:
            return False
        self._last_miss_refresh = now_
        try:
            return await self.refresh()
        except Exception:
            log.exception("refreshing from the database failed; serving what is in memory")
            return False

    async def caller(self, token: str) -> Caller | None:
        """The consumer (or admin) a bearer token belongs to, or None."""
        found = self.keys.check(token)
        if found is None and await self.refresh_on_miss():
            found = self.keys.check(token)
        return found

    async def _resolve(self, name: str, version: int | None) -> Prompt:
        try:
            return self.registry.resolve(name, version)
        except NotFound:
            if not await self.refresh_on_miss():
                raise
        return self.registry.resolve(name, version)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing from the database failed; serving what is in memory")

    # -- the call pipeline ----------------------------------------------------------------

    async def invoke(
        self,
        name: str,
        data: Any,
        *,
        caller: Caller,
        version: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        record: dict[str, Any] = {
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
        try:
            prompt = await self._resolve(name, version)
            record["prompt_version"] = prompt.version
            record["model_alias"] = prompt.model
            prompt.validate_input(data)
            messages = prompt.render(data)
            envelope = await self._complete(prompt, messages, data, record)
            record["status"] = 200
            envelope["id"] = record["id"]
            envelope["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            return envelope
        except PromptAPIError as exc:
            record["status"] = exc.status
            record["error_code"] = exc.code
            raise
        except asyncio.CancelledError:
            record["status"] = 499
            record["error_code"] = "client_closed"
            raise
        finally:
            record["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            record["created_at"] = now()
            self.recorder.record(record)

    async def _complete(
        self, prompt: Prompt, messages: list[dict[str, str]], data: Any, record: dict[str, Any]
    ) -> dict[str, Any]:
        request = CompletionRequest(
            messages=messages,
            params=prompt.params,
            output_schema=prompt.output_schema,
            schema_name=prompt.name,
            examples=prompt.examples,
            input=data,
        )
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
            record["deployment"] = route.deployment
            record["attempts"] = route.attempts
            record.update(usage)
        return {
            "id": None,
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

    # -- admin operations -----------------------------------------------------------------

    async def _store(
        self, definition: dict[str, Any], created_by: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Store a checked definition (a no-op when identical to what is stored); the digest
        covers the content, not the version number."""
        return await self.store.create_version(
            definition, content_digest(definition), created_by=created_by, state="published"
        )

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
        """Register a version. Policy warnings are appended to `warnings` when given."""
        definition, found = self.check(raw)
        if warnings is not None:
            warnings.extend(found)
        row, created = await self._store(definition, created_by)
        version = self.registry.add(row) if created else None
        if version is None:
            version = next(
                v for v in self.registry.versions(row["name"]) if v.prompt.version == row["version"]
            )
        return version, created

    async def sync(
        self, root: Path, *, created_by: str = "sync", dry_run: bool = False
    ) -> SyncReport:
        """Store new versions from the prompt files under `root`. With `dry_run`, report what
        would be created, unchanged or refused without writing anything."""
        report = SyncReport(dry_run=dry_run)
        planned: dict[tuple[str, int], str] = {}
        for found in files.read_all(root):
            where = str(found.path)
            if found.error is not None:
                report.errors.append({"file": where, "detail": found.error})
                continue
            try:
                definition, warnings = self.check(found.data, require_version=True)
                if warnings:
                    report.warnings.append({"file": where, "warnings": warnings})
                if dry_run:
                    row, created = await self._would_store(definition, planned)
                else:
                    row, created = await self._store(definition, created_by)
            except Conflict:
                report.errors.append(
                    {
                        "file": where,
                        "detail": (
                            f"{definition['name']} version {definition['version']} is already stored "
                            "with different content; versions are immutable, so give the change a "
                            "new version number (e.g. a new file)"
                        ),
                    }
                )
                continue
            except DefinitionInvalid as exc:
                report.errors.append({"file": where, "detail": exc.detail, "errors": exc.errors})
                continue
            label = f"{row['name']}@{row['version']}"
            if created:
                if not dry_run:
                    self.registry.add(row)
                report.created.append(label)
            else:
                report.unchanged.append(label)
        return report

    async def create_key(self, name: str, scopes: list[str]) -> tuple[str, dict[str, Any]]:
        plaintext, key_id, prefix, key_hash = new_key()
        async with self._state_lock:
            key = await self.store.create_key(
                key_id=key_id, name=name, prefix=prefix, key_hash=key_hash, scopes=scopes
            )
            self.keys.add(key_hash, key)
        return plaintext, key

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        async with self._state_lock:
            key = await self.store.revoke_key(key_id)
            self.keys.remove(key_id)
        return key
