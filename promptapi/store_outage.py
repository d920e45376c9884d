"""What a database outage looks like, so the web layer can answer it with one 503
(`StoreUnavailable`) without knowing SQLAlchemy or the drivers.

An outage is the database being unreachable or failing as a service: connection refused or
reset, a dropped connection, a connect or pool timeout, an `OperationalError` (SQLite's
"database is locked" included). A refused statement (an integrity error, bad data) is not one.
A bare `OSError` or `TimeoutError` counts only when it was raised inside SQLAlchemy or a
database driver, so a failing file read is never reported as a database outage.
"""

from __future__ import annotations

import sqlalchemy.exc as sa

_DRIVERS = ("/sqlalchemy/", "/asyncpg/", "/aiosqlite/", "/psycopg", "/sqlite3/")
_ALWAYS: tuple[type[BaseException], ...] = (
    sa.OperationalError,
    sa.InterfaceError,
    sa.TimeoutError,  # the pool's: no connection free within pool_timeout
    sa.DisconnectionError,
)
try:
    import asyncpg

    _ALWAYS += (asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
except ImportError:  # pragma: no cover (asyncpg ships with promptapi)
    pass

# The exception types to route to the outage handler; `is_outage` decides for each instance.
TYPES: tuple[type[BaseException], ...] = (*_ALWAYS, sa.DBAPIError, OSError)


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _ALWAYS):
        return True
    if isinstance(exc, sa.DBAPIError):
        return bool(exc.connection_invalidated)
    if isinstance(exc, OSError):  # TimeoutError and ConnectionError included
        return _raised_in_driver(exc)
    return False


def _raised_in_driver(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if any(part in filename for part in _DRIVERS):
            return True
        tb = tb.tb_next
    return False
