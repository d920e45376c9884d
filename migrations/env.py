"""Alembic environment: async engines, URL from PROMPTAPI_DATABASE_URL, batch mode on SQLite."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context

from promptapi.config import Settings
from promptapi.store import async_url, create_engine, metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return async_url(config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url)


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=_url().startswith("sqlite"),
        **kwargs,
    )


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Any) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # The engine promptapi uses, so a plain `alembic upgrade` waits for SQLite's lock the same way.
    engine = create_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
        await connection.commit()
    await engine.dispose()


def run_online() -> None:
    shared = config.attributes.get("connection")
    if shared is not None:
        _run_sync(shared)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_offline()
else:
    run_online()
