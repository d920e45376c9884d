"""The database: tables, migrations at start, and every query the rest of promptapi needs.

sqlalchemy lives only here and in `migrations/`. SQLite (aiosqlite) is the embedded default;
PostgreSQL (asyncpg) is the production choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    event,
    false,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from promptapi import lifecycle
from promptapi.config import explain_database_error
from promptapi.errors import (
    ConfigError,
    Conflict,
    MalformedRequest,
    NotFound,
    RequestInvalid,
)

log = logging.getLogger("promptapi.store")

# How long closing the store waits for database work whose caller was cancelled.
CLOSE_WAIT = 10.0
P = ParamSpec("P")

# The PostgreSQL advisory lock that serialises migrations across processes (any fixed key).
MIGRATION_LOCK = int.from_bytes(b"promptap", "big") >> 1

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
TS = DateTime(timezone=True)

prompts = Table(
    "prompts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", TS, nullable=False),
)

prompt_versions = Table(
    "prompt_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prompt_id", Integer, ForeignKey("prompts.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(64), nullable=True),
    Column("state_changed_at", TS, nullable=True),
    Column("state_changed_by", String(64), nullable=True),
    Column("deprecated_at", TS, nullable=True),
    Column("sunset_at", TS, nullable=True),
    Column("successor", Integer, nullable=True),
    UniqueConstraint("prompt_id", "version"),
)

prompt_labels = Table(
    "prompt_labels",
    metadata,
    Column("prompt_id", Integer, ForeignKey("prompts.id"), primary_key=True),
    Column("label", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("updated_by", String(64), nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", TS, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False),
    Column("prompt", String(64), nullable=True),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Index(None, "action", "id"),
    Index(None, "actor", "id"),
    Index(None, "prompt", "id"),
    Index(None, "created_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("revoked_at", TS, nullable=True),
    Column("allow_drafts", Boolean, nullable=False, server_default=false()),
)

call_records = Table(
    "call_records",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", TS, nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("prompt_name", String(64), nullable=False),
    Column("prompt_version", Integer, nullable=True),
    Column("model_alias", String(128), nullable=True),
    Column("model", String(200), nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost_usd", Float, nullable=True),
    Column("cached", Boolean, nullable=False),
    Column("mock", Boolean, nullable=False),
    Column("deployment", String(128), nullable=True),
    Column("attempts", Integer, nullable=True),
    Index(None, "prompt_name", "created_at"),
    Index(None, "key_id", "created_at"),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

revision = Table(
    "revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)


def _driver_data_errors() -> tuple[type[BaseException], ...]:
    """The raw drivers' exceptions for values the database refuses (not its own failures)."""
    import sqlite3

    found: list[type[BaseException]] = [sqlite3.DataError, sqlite3.IntegrityError]
    with contextlib.suppress(ImportError):
        import asyncpg

        found += [asyncpg.DataError, asyncpg.IntegrityConstraintViolationError]
    return tuple(found)


def async_url(url: str) -> str:
    """Accept plain URLs and pick the async driver."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url.removeprefix(plain)
    return url


def redact_url(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "migrations"
    if (here / "env.py").exists():
        return here
    import promptapi.migrations as packaged  # installed wheel: migrations/ ships inside the package

    return Path(packaged.__file__).resolve().parent


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _sqlite_timestamp(value: datetime) -> str:
    """How SQLAlchemy's DateTime stores a UTC timestamp in SQLite, so reads parse it back."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def iso(value: datetime | None) -> str | None:
    value = _utc(value)
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def create_engine(url: str) -> AsyncEngine:
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_setup(engine)
        return engine
    # Bounded waits: an unreachable database fails a request in seconds (a 503), not minutes.
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"timeout": 10},
    )
    event.listen(engine.sync_engine, "before_cursor_execute", _refuse_nul)
    return engine


def _refuse_nul(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, executemany: bool
) -> None:
    """PostgreSQL text cannot hold NUL, and its driver fails on one: every value is checked at
    the edge (identifiers, query filters, key names), and this is the net under those checks,
    so a NUL that slips through is a clear 400 rather than a 500."""
    for row in parameters if executemany else (parameters,):
        values = row.values() if isinstance(row, dict) else row or ()
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise MalformedRequest(
                "A value contains a NUL character, which the database cannot store.",
                errors=[{"path": "", "message": "NUL (\\u0000) is not allowed here"}],
            )


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so every transaction is BEGIN IMMEDIATE:
        # writers queue on busy_timeout instead of failing with "database is locked".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


T = TypeVar("T")


def _completes(
    method: Callable[Concatenate[Store, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]:
    """Once started, the database work runs to its end (commit or rollback) even when the
    caller is cancelled (a client that went away, a task stopped at shutdown); the caller
    gets its CancelledError at once. Cancelled mid-transaction, a SQLite connection is torn
    down from under its driver thread and can stay open holding its transaction: the write
    lock every other process and task then waits for, and fails on ("database is locked")."""

    @functools.wraps(method)
    async def run(self: Store, *args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(method(self, *args, **kwargs))
        self._work.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    return run


class Store:
    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.engine = create_engine(self.url)
        self.is_sqlite = self.url.startswith("sqlite")
        # One writer at a time within this process on SQLite; other processes wait on busy_timeout.
        self._lock = asyncio.Lock() if self.is_sqlite else None
        self._insert_calls_sql: str | None = None
        self._work: set[asyncio.Future[Any]] = set()

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._work.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller may have gone away

    async def aclose(self) -> None:
        """Close every connection, once work still running (its caller cancelled) is done."""
        if self._work:
            await asyncio.wait(list(self._work), timeout=CLOSE_WAIT)
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        if self._lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._lock, self.engine.begin() as conn:
            yield conn

    # -- schema ---------------------------------------------------------------------------

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    @_completes
    async def upgrade(self, target: str = "head") -> None:
        from alembic import command

        await self._migrate(lambda cfg: command.upgrade(cfg, target))

    @_completes
    async def downgrade(self, target: str) -> None:
        from alembic import command

        await self._migrate(lambda cfg: command.downgrade(cfg, target))

    async def _migrate(self, step: Callable[[Any], None]) -> None:
        """Run an alembic command in one transaction, one process at a time: replicas started
        together on a new database take turns, and each later one finds the schema at the
        revision the first left it (alembic reads it under the lock) and does nothing.
        PostgreSQL: a transaction-scoped advisory lock, released at commit or when the
        connection drops. SQLite: the transaction itself (BEGIN IMMEDIATE) is the lock."""
        cfg = self._alembic_config()

        def run(sync_conn: Any) -> None:
            cfg.attributes["connection"] = sync_conn
            step(cfg)

        async with self.transaction() as conn:
            if not self.is_sqlite:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(run)

    @_completes
    async def schema_revision(self) -> tuple[str | None, str | None]:
        """(current revision in the database, head revision of the code)."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()

        def current(sync_conn: Any) -> str | None:
            return MigrationContext.configure(sync_conn).get_current_revision()

        try:
            async with self.transaction() as conn:
                return await conn.run_sync(current), head
        except DBAPIError as exc:
            raise ConfigError(explain_database_error(self.url, str(exc.orig))) from None
        except OSError as exc:
            raise ConfigError(explain_database_error(self.url, str(exc))) from None

    async def ensure_schema(self, *, migrate: bool) -> None:
        current, head = await self.schema_revision()
        if current == head:
            return
        if not migrate:
            raise ConfigError(
                f"the database schema is at {current or 'nothing'} but this promptapi needs {head}; "
                "run `promptapi db upgrade` (or set PROMPTAPI_AUTO_MIGRATE=true)"
            )
        log.info("migrating the database schema from %s to %s", current or "nothing", head)
        await self.upgrade()

    # -- revision: how other processes learn that something changed -----------------------

    @_completes
    async def revision(self) -> int:
        async with self.transaction() as conn:
            value = await conn.scalar(select(revision.c.value).where(revision.c.id == 1))
        return int(value or 0)

    @staticmethod
    async def _bump(conn: AsyncConnection) -> None:
        await conn.execute(
            update(revision).where(revision.c.id == 1).values(value=revision.c.value + 1)
        )

    # -- prompt versions ------------------------------------------------------------------

    @_completes
    async def create_version(
        self,
        definition: dict[str, Any],
        content_digest: str,
        *,
        version_digest: Callable[[dict[str, Any]], str],
        created_by: str | None,
        state: str,
        labels: Iterable[str] = (),
    ) -> tuple[dict[str, Any], bool]:
        """Store a version and move `labels` to it, in one transaction with their audit
        records. Returns (stored definition + metadata, created?); the row's `labels_moved`
        lists the labels that changed.

        `content_digest` (the definition without its number) is what the store compares;
        `version_digest` gives the digest of the stored definition, the one the API shows, for
        the audit record.

        An explicit version that exists with the same content is a no-op; with other content
        it is a Conflict. Without a version, the next number is assigned, unless the newest
        version already has this exact content (then that one is returned).
        """
        explicit = definition.get("version") is not None
        actor = created_by or "unknown"
        name = definition["name"]
        for _ in range(10):
            try:
                async with self.transaction() as conn:
                    prompt_id, new_prompt = await self._prompt_id(conn, name)
                    row: dict[str, Any] | None = None
                    if explicit:
                        row = await self._version_row(conn, prompt_id, definition["version"])
                        if row is not None and row["digest"] != content_digest:
                            raise Conflict(
                                f"{name} version {definition['version']} already exists "
                                "with different content; versions are immutable, register a new version.",
                                errors=[{"path": "/version", "message": "version already exists"}],
                            )
                        number = definition["version"]
                    else:
                        newest = await self._newest_row(conn, prompt_id)
                        if newest is not None and newest["digest"] == content_digest:
                            row = newest
                        number = (newest["version"] if newest else 0) + 1
                    created = row is None
                    if row is None:
                        stored = {**definition, "version": number}
                        row = await self._insert_version(
                            conn,
                            prompt_id,
                            stored,
                            content_digest,
                            state=state,
                            created_by=created_by,
                        )
                        await self._audit(
                            conn,
                            actor,
                            "prompt.create" if new_prompt else "version.create",
                            f"{name}@{number}",
                            prompt=name,
                            after={
                                "version": number,
                                "state": state,
                                "digest": version_digest(stored),
                            },
                        )
                    moved = []
                    for label in labels:
                        change = await self._move_label(
                            conn, prompt_id, name, label, row["version"], row["state"], actor
                        )
                        if change is not None:
                            moved.append(change)
                    if created or moved:
                        await self._bump(conn)
                    return {**row, "labels_moved": moved}, created
            except IntegrityError:
                # Another writer took the name or number first; look again.
                await asyncio.sleep(0)
                continue
        raise Conflict(f"Could not register {name}: too many concurrent writers; retry.")

    async def _insert_version(
        self,
        conn: AsyncConnection,
        prompt_id: int,
        stored: dict[str, Any],
        content_digest: str,
        *,
        state: str,
        created_by: str | None,
    ) -> dict[str, Any]:
        created_at = now()
        values = {
            "prompt_id": prompt_id,
            "version": stored["version"],
            "definition": orjson.dumps(stored).decode(),
            "digest": content_digest,
            "state": state,
            "created_at": created_at,
            "created_by": created_by,
            "state_changed_at": created_at,
            "state_changed_by": created_by,
        }
        result = await conn.execute(insert(prompt_versions).values(**values))
        return self._version_dict(
            SimpleNamespace(
                **values,
                id=result.inserted_primary_key[0],
                name=stored["name"],
                deprecated_at=None,
                sunset_at=None,
                successor=None,
            ),
            definition=stored,
        )

    async def _find_prompt(self, conn: AsyncConnection, name: str) -> int | None:
        """The prompt's id, locking its row until the transaction ends: writers to one prompt
        (versions, transitions, labels) take turns (PostgreSQL; SQLite writers are serialised
        already)."""
        found = await conn.scalar(
            select(prompts.c.id).where(prompts.c.name == name).with_for_update()
        )
        return int(found) if found is not None else None

    async def _existing_prompt(self, conn: AsyncConnection, name: str) -> int:
        found = await self._find_prompt(conn, name)
        if found is None:
            raise NotFound(f"No prompt named {name!r}.")
        return found

    async def _prompt_id(self, conn: AsyncConnection, name: str) -> tuple[int, bool]:
        """(the prompt's id, created now?), locked as in `_find_prompt`."""
        found = await self._find_prompt(conn, name)
        if found is not None:
            return found, False
        result = await conn.execute(insert(prompts).values(name=name, created_at=now()))
        return int(result.inserted_primary_key[0]), True

    _version_columns = (
        prompts.c.name,
        prompt_versions.c.id,
        prompt_versions.c.version,
        prompt_versions.c.definition,
        prompt_versions.c.digest,
        prompt_versions.c.state,
        prompt_versions.c.created_at,
        prompt_versions.c.created_by,
        prompt_versions.c.state_changed_at,
        prompt_versions.c.state_changed_by,
        prompt_versions.c.deprecated_at,
        prompt_versions.c.sunset_at,
        prompt_versions.c.successor,
    )

    @staticmethod
    def _lifecycle_dict(row: Any) -> dict[str, Any]:
        return {
            "name": row.name,
            "version": row.version,
            "state": row.state,
            "state_changed_at": iso(row.state_changed_at),
            "state_changed_by": row.state_changed_by,
            "deprecated_at": iso(row.deprecated_at),
            "sunset": iso(row.sunset_at),
            "successor": row.successor,
        }

    @classmethod
    def _version_dict(cls, row: Any, definition: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            **cls._lifecycle_dict(row),
            "row_id": row.id,
            "definition": definition if definition is not None else orjson.loads(row.definition),
            "digest": row.digest,
            "created_at": iso(row.created_at),
            "created_by": row.created_by,
        }

    def _versions_query(self) -> Any:
        return select(*self._version_columns).join(
            prompts, prompts.c.id == prompt_versions.c.prompt_id
        )

    async def _version_row(
        self, conn: AsyncConnection, prompt_id: int, number: int
    ) -> dict[str, Any] | None:
        row = (
            await conn.execute(
                self._versions_query().where(
                    prompt_versions.c.prompt_id == prompt_id, prompt_versions.c.version == number
                )
            )
        ).first()
        return self._version_dict(row) if row else None

    async def _newest_row(self, conn: AsyncConnection, prompt_id: int) -> dict[str, Any] | None:
        row = (
            await conn.execute(
                self._versions_query()
                .where(prompt_versions.c.prompt_id == prompt_id)
                .order_by(prompt_versions.c.version.desc())
                .limit(1)
            )
        ).first()
        return self._version_dict(row) if row else None

    @_completes
    async def versions_after(self, row_id: int) -> list[dict[str, Any]]:
        """Every stored version with a row id above `row_id`, oldest first."""
        return await self._versions_where(prompt_versions.c.id > row_id)

    @_completes
    async def versions_by_ids(self, row_ids: list[int]) -> list[dict[str, Any]]:
        """The stored versions with these row ids, oldest first."""
        return await self._versions_where(prompt_versions.c.id.in_(row_ids))

    async def _versions_where(self, condition: Any) -> list[dict[str, Any]]:
        async with self.transaction() as conn:
            rows = await conn.execute(
                self._versions_query().where(condition).order_by(prompt_versions.c.id)
            )
            return [self._version_dict(r) for r in rows]

    @_completes
    async def get_version(self, name: str, number: int) -> dict[str, Any]:
        async with self.transaction() as conn:
            row = (
                await conn.execute(
                    self._versions_query().where(
                        prompts.c.name == name, prompt_versions.c.version == number
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"No version {number} of prompt {name!r}.")
        return self._version_dict(row)

    # -- lifecycle and labels -------------------------------------------------------------

    @_completes
    async def transition(
        self, name: str, number: int, action: str, body: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        """Apply a lifecycle action to one version under the prompt's row lock, with its audit
        record; the rules are in `lifecycle.plan`."""
        async with self.transaction() as conn:
            prompt_id = await self._existing_prompt(conn, name)
            row = (
                await conn.execute(
                    self._versions_query().where(
                        prompt_versions.c.prompt_id == prompt_id,
                        prompt_versions.c.version == number,
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"Prompt {name!r} has no version {number}.")
            stamp = now()
            change = lifecycle.plan(
                name=name,
                version=number,
                action=action,
                current={
                    "state": row.state,
                    "deprecated_at": _utc(row.deprecated_at),
                    "sunset_at": _utc(row.sunset_at),
                    "successor": row.successor,
                },
                states=await self._states(conn, prompt_id),
                labels=await self._labels_of(conn, prompt_id),
                body=body,
                at=stamp,
            )
            await conn.execute(
                update(prompt_versions)
                .where(prompt_versions.c.id == row.id)
                .values(
                    state=change.state,
                    deprecated_at=change.deprecated_at,
                    sunset_at=change.sunset_at,
                    successor=change.successor,
                    state_changed_at=stamp,
                    state_changed_by=actor,
                )
            )
            before = self._lifecycle_dict(row)
            await self._audit(
                conn,
                actor,
                f"version.{action}",
                f"{name}@{number}",
                prompt=name,
                before={k: before[k] for k in ("state", "deprecated_at", "sunset", "successor")},
                after=change.as_dict(),
            )
            await self._bump(conn)
            updated = await self._version_row(conn, prompt_id, number)
        assert updated is not None
        return updated

    async def _states(self, conn: AsyncConnection, prompt_id: int) -> dict[int, str]:
        rows = await conn.execute(
            select(prompt_versions.c.version, prompt_versions.c.state).where(
                prompt_versions.c.prompt_id == prompt_id
            )
        )
        return {r.version: r.state for r in rows}

    async def _labels_of(self, conn: AsyncConnection, prompt_id: int) -> dict[str, int]:
        rows = await conn.execute(
            select(prompt_labels.c.label, prompt_labels.c.version).where(
                prompt_labels.c.prompt_id == prompt_id
            )
        )
        return {r.label: r.version for r in rows}

    async def _move_label(
        self,
        conn: AsyncConnection,
        prompt_id: int,
        name: str,
        label: str,
        number: int,
        state: str,
        actor: str,
    ) -> dict[str, Any] | None:
        """Point `label` at `number` (one row per prompt and label) with its audit record;
        None when it already points there."""
        lifecycle.check_label(name, label, number, state)
        where = (prompt_labels.c.prompt_id == prompt_id, prompt_labels.c.label == label)
        previous = await conn.scalar(select(prompt_labels.c.version).where(*where))
        if previous == number:
            return None
        values = {"version": number, "updated_at": now(), "updated_by": actor}
        if previous is None:
            await conn.execute(
                insert(prompt_labels).values(prompt_id=prompt_id, label=label, **values)
            )
        else:
            await conn.execute(update(prompt_labels).where(*where).values(**values))
        await self._audit(
            conn,
            actor,
            "label.move",
            f"{name}:{label}",
            prompt=name,
            before={"version": previous} if previous is not None else None,
            after={"version": number},
        )
        return {"label": label, "from": previous, "to": number}

    @_completes
    async def set_label(self, name: str, label: str, number: int, *, actor: str) -> dict[str, Any]:
        async with self.transaction() as conn:
            prompt_id = await self._existing_prompt(conn, name)
            states = await self._states(conn, prompt_id)
            if number not in states:
                raise RequestInvalid(
                    f"Prompt {name!r} has no version {number}.",
                    errors=[{"path": "/version", "message": f"{name!r} has no version {number}"}],
                )
            moved = await self._move_label(
                conn, prompt_id, name, label, number, states[number], actor
            )
            if moved is not None:
                await self._bump(conn)
        return {
            "name": name,
            "label": label,
            "version": number,
            "previous": moved["from"] if moved is not None else number,
            "changed": moved is not None,
        }

    @_completes
    async def delete_label(self, name: str, label: str, *, actor: str) -> dict[str, Any]:
        async with self.transaction() as conn:
            prompt_id = await self._existing_prompt(conn, name)
            where = (prompt_labels.c.prompt_id == prompt_id, prompt_labels.c.label == label)
            previous = await conn.scalar(select(prompt_labels.c.version).where(*where))
            if previous is None:
                raise NotFound(f"Prompt {name!r} has no label {label!r}.")
            await conn.execute(delete(prompt_labels).where(*where))
            await self._audit(
                conn,
                actor,
                "label.delete",
                f"{name}:{label}",
                prompt=name,
                before={"version": previous},
            )
            await self._bump(conn)
        return {"name": name, "label": label, "version": previous}

    @_completes
    async def lifecycles(self) -> list[dict[str, Any]]:
        """The lifecycle columns of every version (no definitions): what a refresh re-reads."""
        query = select(
            prompt_versions.c.id,
            prompts.c.name,
            prompt_versions.c.version,
            prompt_versions.c.state,
            prompt_versions.c.state_changed_at,
            prompt_versions.c.state_changed_by,
            prompt_versions.c.deprecated_at,
            prompt_versions.c.sunset_at,
            prompt_versions.c.successor,
        ).join(prompts, prompts.c.id == prompt_versions.c.prompt_id)
        async with self.transaction() as conn:
            return [{**self._lifecycle_dict(r), "row_id": r.id} for r in await conn.execute(query)]

    @_completes
    async def labels(self) -> list[tuple[str, str, int]]:
        """(prompt name, label, version) for every label."""
        query = select(prompts.c.name, prompt_labels.c.label, prompt_labels.c.version).join(
            prompts, prompts.c.id == prompt_labels.c.prompt_id
        )
        async with self.transaction() as conn:
            return [(r.name, r.label, r.version) for r in await conn.execute(query)]

    # -- audit log --------------------------------------------------------------------------

    @staticmethod
    async def _audit(
        conn: AsyncConnection,
        actor: str,
        action: str,
        target: str,
        *,
        prompt: str | None = None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """One audit record, written in the caller's transaction: it commits with the change
        or not at all. Never pass secrets or hashes here."""
        await conn.execute(
            insert(audit_log).values(
                created_at=now(),
                actor=actor[:64],
                action=action,
                target=target[:200],
                prompt=prompt,
                before=before,
                after=after,
            )
        )

    @_completes
    async def audit(self, actor: str, action: str, target: str, **fields: Any) -> None:
        """An audit record in a transaction of its own (`_audit` takes the same fields)."""
        async with self.transaction() as conn:
            await self._audit(conn, actor, action, target, **fields)

    @_completes
    async def list_audit(
        self,
        *,
        limit: int = 100,
        cursor: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        prompt: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first, `limit` at a time; returns (records, cursor for the next page)."""
        query = select(audit_log).order_by(audit_log.c.id.desc())
        if cursor is not None:
            query = query.where(audit_log.c.id < cursor)
        for column, value in (
            (audit_log.c.action, action),
            (audit_log.c.actor, actor),
            (audit_log.c.target, target),
            (audit_log.c.prompt, prompt),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(audit_log.c.created_at >= since)
        if until is not None:
            query = query.where(audit_log.c.created_at < until)
        async with self.transaction() as conn:
            rows = list(await conn.execute(query.limit(limit + 1)))
        records = [
            {
                "id": r.id,
                "at": iso(r.created_at),
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "prompt": r.prompt,
                "before": r.before,
                "after": r.after,
            }
            for r in rows[:limit]
        ]
        return records, (records[-1]["id"] if len(rows) > limit else None)

    # -- API keys -------------------------------------------------------------------------

    @staticmethod
    def _key_dict(row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "name": row.name,
            "prefix": row.prefix,
            "scopes": row.scopes,
            "created_at": iso(row.created_at),
            "revoked_at": iso(row.revoked_at),
            "allow_drafts": bool(row.allow_drafts),
        }

    @_completes
    async def create_key(
        self,
        *,
        key_id: str,
        name: str,
        prefix: str,
        key_hash: str,
        scopes: list[str],
        allow_drafts: bool = False,
        actor: str = "admin",
    ) -> dict[str, Any]:
        values = {
            "id": key_id,
            "name": name,
            "prefix": prefix,
            "key_hash": key_hash,
            "scopes": scopes,
            "created_at": now(),
            "revoked_at": None,
            "allow_drafts": allow_drafts,
        }
        key = self._key_dict(SimpleNamespace(**values))
        async with self.transaction() as conn:
            await conn.execute(insert(api_keys).values(**values))
            await self._audit(
                conn,
                actor,
                "key.create",
                f"key:{key_id}",
                after={k: key[k] for k in ("name", "prefix", "scopes", "allow_drafts")},
            )
            await self._bump(conn)
        return key

    @_completes
    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.transaction() as conn:
            rows = await conn.execute(
                select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
            )
            return [self._key_dict(r) for r in rows]

    @_completes
    async def get_key(self, key_id: str) -> dict[str, Any]:
        async with self.transaction() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"No API key with id {key_id!r}.")
        return self._key_dict(row)

    @_completes
    async def revoke_key(self, key_id: str, *, actor: str = "admin") -> dict[str, Any]:
        async with self.transaction() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise NotFound(f"No API key with id {key_id!r}.")
            if row.revoked_at is None:
                stamp = now()
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=stamp)
                )
                await self._audit(
                    conn,
                    actor,
                    "key.revoke",
                    f"key:{key_id}",
                    before={"name": row.name, "revoked_at": None},
                    after={"name": row.name, "revoked_at": iso(stamp)},
                )
                await self._bump(conn)
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return self._key_dict(row)

    @_completes
    async def active_keys(self) -> list[tuple[str, dict[str, Any]]]:
        """(key hash, key) for every key that is not revoked."""
        async with self.transaction() as conn:
            rows = await conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None)))
            return [(r.key_hash, self._key_dict(r)) for r in rows]

    # -- settings kept in the database ----------------------------------------------------

    @_completes
    async def get_meta(self, key: str) -> str | None:
        async with self.transaction() as conn:
            return await conn.scalar(select(meta.c.value).where(meta.c.key == key))

    @_completes
    async def set_meta(
        self,
        key: str,
        value: str,
        *,
        only_if_absent: bool = False,
        audit: tuple[str, str, str] | None = None,
    ) -> bool:
        """Returns False when only_if_absent and the key was already set. `audit` is
        (actor, action, target) for the audit record of this change; the value is never
        recorded."""
        try:
            async with self.transaction() as conn:
                exists = await conn.scalar(select(meta.c.key).where(meta.c.key == key))
                if exists is not None:
                    if only_if_absent:
                        return False
                    await conn.execute(update(meta).where(meta.c.key == key).values(value=value))
                else:
                    await conn.execute(insert(meta).values(key=key, value=value))
                if audit is not None:
                    await self._audit(conn, *audit)
                await self._bump(conn)
        except IntegrityError:
            return False
        return True

    # -- call records ---------------------------------------------------------------------

    @_completes
    async def insert_calls(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write call records in one transaction. If the database refuses the batch for its
        data, write the rows one by one and return the ones it refuses; errors of the database
        itself (unreachable, locked) are raised so the caller keeps the rows and retries."""
        batch = list(rows)
        if not batch or await self._insert_calls_or_refuse(batch):
            return []
        return [row for row in batch if not await self._insert_calls_or_refuse([row])]

    async def _insert_calls_or_refuse(self, batch: list[dict[str, Any]]) -> bool:
        """False when the database refuses the rows for their data; its own failures raise."""
        try:
            await self._insert_calls(batch)
        except (OperationalError, InterfaceError, OSError):
            raise
        except (DBAPIError, StatementError, OverflowError, *_driver_data_errors()):
            # OverflowError: an integer SQLite cannot hold; the driver's own data errors (the
            # raw connection is not wrapped by SQLAlchemy): NUL in text, out-of-range numbers.
            return False
        return True

    _call_columns = tuple(c.name for c in call_records.columns)

    async def _insert_calls(self, batch: list[dict[str, Any]]) -> None:
        # The driver's own executemany with plain tuples, inside the Store's transaction:
        # measured at about half the CPU per row of a Core insert with dicts, which matters
        # because this work shares the core that serves calls.
        columns = self._call_columns
        if self._insert_calls_sql is None:
            self._insert_calls_sql = self._insert_sql("call_records", columns)
        if self.is_sqlite:
            stamp = columns.index("created_at")
            params = []
            for row in batch:
                values = [row[c] for c in columns]
                values[stamp] = _sqlite_timestamp(values[stamp])
                params.append(tuple(values))
        else:
            params = [tuple(row[c] for c in columns) for row in batch]
            # PostgreSQL text cannot hold NUL; the model name comes from the upstream's answer.
            params = [
                tuple(v.replace("\x00", "\ufffd") if type(v) is str else v for v in row)
                if any(type(v) is str and "\x00" in v for v in row)
                else row
                for row in params
            ]
        async with self.transaction() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.executemany(self._insert_calls_sql, params)  # type: ignore[union-attr]

    def _insert_sql(self, table: str, columns: tuple[str, ...]) -> str:
        style = self.engine.dialect.paramstyle
        if style == "qmark":
            marks = ["?"] * len(columns)
        elif style == "numeric_dollar":
            marks = [f"${i}" for i in range(1, len(columns) + 1)]
        elif style == "format":
            marks = ["%s"] * len(columns)
        else:
            raise ConfigError(f"unsupported driver parameter style {style!r}")
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)})"

    @_completes
    async def list_calls(
        self,
        *,
        limit: int = 100,
        prompt: str | None = None,
        key_id: str | None = None,
        status: int | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        # Call ids are time-ordered, so the primary key orders calls by when they started.
        query = select(call_records).order_by(call_records.c.id.desc())
        if prompt is not None:
            query = query.where(call_records.c.prompt_name == prompt)
        if key_id is not None:
            query = query.where(call_records.c.key_id == key_id)
        if status is not None:
            query = query.where(call_records.c.status == status)
        if before is not None:
            query = query.where(
                call_records.c.created_at < datetime.fromisoformat(before.replace("Z", "+00:00"))
            )
        async with self.transaction() as conn:
            rows = await conn.execute(query.limit(limit))
            return [
                {**{str(k): v for k, v in r._mapping.items()}, "created_at": iso(r.created_at)}
                for r in rows
            ]
