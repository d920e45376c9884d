"""The database: tables, migrations at start, and every query the rest of promptapi needs.

sqlalchemy lives only here and in `migrations/`. SQLite (aiosqlite) is the embedded default;
PostgreSQL (asyncpg) is the production choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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
    event,
    insert,
    select,
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

from promptapi.errors import ConfigError, Conflict, NotFound

log = logging.getLogger("promptapi.store")

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
    UniqueConstraint("prompt_id", "version"),
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
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so every transaction is BEGIN IMMEDIATE:
        # writers queue on busy_timeout instead of failing with "database is locked".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.engine = create_engine(self.url)
        self.is_sqlite = self.url.startswith("sqlite")
        # One writer at a time within this process on SQLite; other processes wait on busy_timeout.
        self._lock = asyncio.Lock() if self.is_sqlite else None
        self._insert_calls_sql: str | None = None

    async def aclose(self) -> None:
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

    async def upgrade(self, target: str = "head") -> None:
        from alembic import command

        cfg = self._alembic_config()

        def run(sync_conn: Any) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, target)

        async with self.transaction() as conn:
            await conn.run_sync(run)

    async def downgrade(self, target: str) -> None:
        from alembic import command

        cfg = self._alembic_config()

        def run(sync_conn: Any) -> None:
            cfg.attributes["connection"] = sync_conn
            command.downgrade(cfg, target)

        async with self.transaction() as conn:
            await conn.run_sync(run)

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
        except OperationalError as exc:
            raise ConfigError(
                f"cannot open the database {redact_url(self.url)}: {exc.orig}"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot reach the database {redact_url(self.url)}: {exc}") from None

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

    async def create_version(
        self, definition: dict[str, Any], content_digest: str, *, created_by: str | None, state: str
    ) -> tuple[dict[str, Any], bool]:
        """Store a version. Returns (stored definition + metadata, created?).

        An explicit version that exists with the same content is a no-op; with other content
        it is a Conflict. Without a version, the next number is assigned, unless the newest
        version already has this exact content (then that one is returned).
        """
        explicit = definition.get("version") is not None
        for _ in range(10):
            try:
                async with self.transaction() as conn:
                    prompt_id = await self._prompt_id(conn, definition["name"])
                    if explicit:
                        existing = await self._version_row(conn, prompt_id, definition["version"])
                        if existing is not None:
                            if existing["digest"] == content_digest:
                                return existing, False
                            raise Conflict(
                                f"{definition['name']} version {definition['version']} already exists "
                                "with different content; versions are immutable, register a new version.",
                                errors=[{"path": "/version", "message": "version already exists"}],
                            )
                        number = definition["version"]
                    else:
                        newest = await self._newest_row(conn, prompt_id)
                        if newest is not None and newest["digest"] == content_digest:
                            return newest, False
                        number = (newest["version"] if newest else 0) + 1
                    stored = {**definition, "version": number}
                    created_at = now()
                    await conn.execute(
                        insert(prompt_versions).values(
                            prompt_id=prompt_id,
                            version=number,
                            definition=orjson.dumps(stored).decode(),
                            digest=content_digest,
                            state=state,
                            created_at=created_at,
                            created_by=created_by,
                        )
                    )
                    await self._bump(conn)
                    row = {
                        "definition": stored,
                        "digest": content_digest,
                        "state": state,
                        "created_at": iso(created_at),
                        "created_by": created_by,
                        "version": number,
                        "name": definition["name"],
                    }
                    return row, True
            except IntegrityError:
                # Another writer took the name or number first; look again.
                await asyncio.sleep(0)
                continue
        raise Conflict(
            f"Could not register {definition['name']}: too many concurrent writers; retry."
        )

    async def _prompt_id(self, conn: AsyncConnection, name: str) -> int:
        """The prompt's id, locking its row until the transaction ends: writers of versions of
        one prompt take turns (PostgreSQL; SQLite writers are serialised already)."""
        locked = select(prompts.c.id).where(prompts.c.name == name).with_for_update()
        found = await conn.scalar(locked)
        if found is not None:
            return int(found)
        result = await conn.execute(insert(prompts).values(name=name, created_at=now()))
        return int(result.inserted_primary_key[0])

    _version_columns = (
        prompts.c.name,
        prompt_versions.c.id,
        prompt_versions.c.version,
        prompt_versions.c.definition,
        prompt_versions.c.digest,
        prompt_versions.c.state,
        prompt_versions.c.created_at,
        prompt_versions.c.created_by,
    )

    @staticmethod
    def _version_dict(row: Any) -> dict[str, Any]:
        return {
            "row_id": row.id,
            "name": row.name,
            "version": row.version,
            "definition": orjson.loads(row.definition),
            "digest": row.digest,
            "state": row.state,
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

    async def versions_after(self, row_id: int) -> list[dict[str, Any]]:
        """Every stored version with a row id above `row_id`, oldest first."""
        async with self.transaction() as conn:
            rows = await conn.execute(
                self._versions_query()
                .where(prompt_versions.c.id > row_id)
                .order_by(prompt_versions.c.id)
            )
            return [self._version_dict(r) for r in rows]

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
        }

    async def create_key(
        self, *, key_id: str, name: str, prefix: str, key_hash: str, scopes: list[str]
    ) -> dict[str, Any]:
        values = {
            "id": key_id,
            "name": name,
            "prefix": prefix,
            "key_hash": key_hash,
            "scopes": scopes,
            "created_at": now(),
            "revoked_at": None,
        }
        async with self.transaction() as conn:
            await conn.execute(insert(api_keys).values(**values))
            await self._bump(conn)
        return self._key_dict(SimpleNamespace(**values))

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.transaction() as conn:
            rows = await conn.execute(
                select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
            )
            return [self._key_dict(r) for r in rows]

    async def get_key(self, key_id: str) -> dict[str, Any]:
        async with self.transaction() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"No API key with id {key_id!r}.")
        return self._key_dict(row)

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        async with self.transaction() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise NotFound(f"No API key with id {key_id!r}.")
            if row.revoked_at is None:
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now())
                )
                await self._bump(conn)
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return self._key_dict(row)

    async def active_keys(self) -> list[tuple[str, dict[str, Any]]]:
        """(key hash, key) for every key that is not revoked."""
        async with self.transaction() as conn:
            rows = await conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None)))
            return [(r.key_hash, self._key_dict(r)) for r in rows]

    # -- settings kept in the database ----------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self.transaction() as conn:
            return await conn.scalar(select(meta.c.value).where(meta.c.key == key))

    async def set_meta(self, key: str, value: str, *, only_if_absent: bool = False) -> bool:
        """Returns False when only_if_absent and the key was already set."""
        try:
            async with self.transaction() as conn:
                exists = await conn.scalar(select(meta.c.key).where(meta.c.key == key))
                if exists is not None:
                    if only_if_absent:
                        return False
                    await conn.execute(update(meta).where(meta.c.key == key).values(value=value))
                else:
                    await conn.execute(insert(meta).values(key=key, value=value))
                await self._bump(conn)
        except IntegrityError:
            return False
        return True

    # -- call records ---------------------------------------------------------------------

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
        except (DBAPIError, StatementError):
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
