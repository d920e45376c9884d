"""Settings, read from environment variables (every one is documented in the README and in
`.env.example`). Every value is checked when the settings are built, so a bad one stops the
process at start with one line naming the variable, the rule and the fix."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from promptapi.errors import ConfigError

PREFIX = "PROMPTAPI_"
LOG_LEVELS = ("debug", "info", "warning", "error")
INITIAL_STATES = ("draft", "published")
CATALOG_MODES = ("public", "off")
DATABASE_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+asyncpg": "postgresql",
}


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    database_url: str = "sqlite:///./promptapi.db"
    prompts_dir: Path = Path("./prompts")
    admin_token: str | None = field(default=None, repr=False)
    models_file: Path | None = None
    policy_file: Path | None = None
    default_model: str = "gpt-4o-mini"
    allow_anonymous: bool = False
    max_body_bytes: int = 1024 * 1024
    auto_migrate: bool = True
    sync_on_start: bool = True
    refresh_interval: float = 1.0
    default_state: str = "published"
    record_batch_size: int = 500
    record_flush_interval: float = 0.5
    log_level: str = "info"
    access_log: bool = False
    forwarded_allow_ips: str | None = None
    stream_heartbeat: float = 15.0
    catalog: str = "public"
    # Bounds of every template render (promptapi/sandbox.py) and of every definition check
    # (promptapi/isolation.py).
    render_max_output: int = 1024 * 1024
    render_max_work: int = 8 * 1024 * 1024
    render_max_iterations: int = 100_000
    render_max_depth: int = 50
    render_timeout: float = 0.05
    check_timeout: float = 10.0
    check_cpu_seconds: int = 10
    check_memory_mb: int = 1024
    # Slow and guessing clients (promptapi.web.timeouts, promptapi.web.throttle).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    auth_failure_limit: int = 10
    auth_failure_window: float = 60.0
    auth_throttle_addresses: int = 10_000
    db_retry_after: int = 5
    # OpenAI client conventions, read without the PROMPTAPI_ prefix.
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            check = _CHECKS.get(f.name)
            value = getattr(self, f.name)
            if f.name in _LOWERCASE and isinstance(value, str):
                value = value.strip().lower()
                object.__setattr__(self, f.name, value)
            if check is None or value is None:
                continue
            problem = check(value)
            if problem:
                raise ConfigError(f"{env_name(f.name)} {problem}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def env_name(name: str) -> str:
    """The environment variable a setting is read from."""
    return name.upper() if name.startswith("openai_") else PREFIX + name.upper()


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if "bool" in kind:
            return _bool(raw)
        if kind.startswith("int"):
            try:
                return int(raw.strip())
            except ValueError:
                raise ValueError(f"must be a whole number, got {raw!r}") from None
        if kind.startswith("float"):
            try:
                return float(raw.strip())
            except ValueError:
                raise ValueError(f"must be a number, got {raw!r}") from None
        if "Path" in kind:
            return Path(raw)
    except ValueError as exc:
        raise ConfigError(f"{env_name(name)} {exc}") from None
    return raw


# -- checks: each returns None when the value is fine, else what is wrong and how to fix it --


def _between(low: float, high: float, *, low_open: bool = False, unit: str = "") -> Callable:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        too_low = value <= low if low_open else value < low
        if too_low or value > high:
            lower = f"greater than {low:g}" if low_open else f"at least {low:g}"
            return f"must be {lower} and at most {high:g}{unit}, got {value!r}"
        return None

    return check


def _one_of(choices: tuple[str, ...]) -> Callable:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)}, not {value!r}"
        return None

    return check


def _non_empty(value: Any) -> str | None:
    return None if str(value).strip() else "must not be empty"


def _admin_token(value: str) -> str | None:
    if len(value) < 16:
        return "must be at least 16 characters long (or unset, to have one generated)"
    return None


def check_http_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parses the port, raising on a bad one
    except ValueError:
        return "is not a valid URL; set it like https://api.openai.com/v1"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            "must start with http:// or https:// and name a host, "
            "like https://api.openai.com/v1 or http://localhost:11434/v1"
        )
    return None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_KEY_PREFIXES = ("sk-", "sk_", "gsk_", "AIza", "xai-", "pa_", "pk_", "key-", "Bearer ")


def check_env_var_name(value: str) -> str | None:
    """A field that names the env var holding a secret must not hold the secret itself. The
    answer never repeats the value."""
    text = str(value)
    looks_like_key = (
        text.startswith(_KEY_PREFIXES)
        or not _ENV_NAME.fullmatch(text)
        or (len(text) >= 24 and any(c.islower() for c in text) and any(c.isdigit() for c in text))
    )
    if looks_like_key:
        return (
            "must be the NAME of an environment variable that holds the key (like "
            "OPENAI_API_KEY), and this value looks like a key itself (not shown); put the key "
            "in an env var and name that variable here"
        )
    return None


def _forwarded(value: str) -> str | None:
    if not [part for part in value.split(",") if part.strip()]:
        return "must list proxy addresses separated by commas (or * for any), or be unset"
    return None


def check_database_url(value: str) -> str | None:
    """What is wrong with a database URL, without echoing its password."""
    scheme = value.split("://", 1)[0].lower() if "://" in value else None
    if scheme is None:
        return (
            "is not a database URL; set it like sqlite:///path/to/file.db or "
            "postgresql://user:password@host:5432/database"
        )
    if scheme not in DATABASE_SCHEMES:
        return (
            f"uses {scheme}://, which promptapi does not support; use SQLite "
            "(sqlite:///path/to/file.db) or PostgreSQL (postgresql://user:password@host/database)"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parses the port, raising on a bad one
    except ValueError:
        return (
            "cannot be parsed: its port is not a number (percent-encode any : / @ # ? in the "
            "password); set it like postgresql://user:password@host:5432/database"
        )
    if DATABASE_SCHEMES[scheme] == "postgresql" and not parts.path.strip("/"):
        return "names no database; set it like postgresql://user:password@host:5432/database"
    if DATABASE_SCHEMES[scheme] == "sqlite" and value.split("://", 1)[1][:1] not in ("/", ""):
        return "must be sqlite:///relative/path.db or sqlite:////absolute/path.db (three slashes)"
    return None


_LOWERCASE = {"log_level", "default_state", "catalog"}

_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "host": _non_empty,
    "port": _between(1, 65535),
    "workers": _between(1, 256),
    "database_url": check_database_url,
    "admin_token": _admin_token,
    "default_model": _non_empty,
    "max_body_bytes": _between(1, 1 << 30, unit=" bytes"),
    "refresh_interval": _between(0, 3600, low_open=True, unit=" seconds"),
    "default_state": _one_of(INITIAL_STATES),
    "record_batch_size": _between(1, 100_000),
    "record_flush_interval": _between(0, 3600, low_open=True, unit=" seconds"),
    "log_level": _one_of(LOG_LEVELS),
    "forwarded_allow_ips": _forwarded,
    "stream_heartbeat": _between(0, 3600, unit=" seconds (0 turns heartbeats off)"),
    "catalog": _one_of(CATALOG_MODES),
    "openai_base_url": check_http_url,
    "render_max_output": _between(1024, 10**10, unit=" characters"),
    "render_max_work": _between(1024, 10**12, unit=" characters"),
    "render_max_iterations": _between(1, 10**12),
    "render_max_depth": _between(1, 500),
    "render_timeout": _between(0, 3600, low_open=True, unit=" CPU seconds"),
    "check_timeout": _between(0, 600, low_open=True, unit=" seconds"),
    "check_cpu_seconds": _between(1, 600, unit=" CPU seconds"),
    "check_memory_mb": _between(128, 1 << 20, unit=" MiB"),
    "header_timeout": _between(0, 3600, unit=" seconds (0 turns it off)"),
    "body_timeout": _between(0, 3600, unit=" seconds (0 turns it off)"),
    "max_header_bytes": _between(0, 16 * 2**20, unit=" bytes (0 turns it off)"),
    "auth_failure_limit": _between(0, 1_000_000, unit=" (0 turns throttling off)"),
    "auth_failure_window": _between(0, 86_400, low_open=True, unit=" seconds"),
    "auth_throttle_addresses": _between(1, 10_000_000),
    "db_retry_after": _between(1, 3600, unit=" seconds"),
}


# -- the database, described for people -----------------------------------------------------


def database_kind(url: str) -> str:
    """`sqlite` or `postgresql` (the URL has been checked)."""
    return DATABASE_SCHEMES.get(url.split("://", 1)[0].lower(), "")


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names, or None for an in-memory database or another kind."""
    if database_kind(url) != "sqlite":
        return None
    rest = url.split("://", 1)[1].split("?", 1)[0]
    path = rest[1:] if rest.startswith("/") else rest
    return Path(path) if path and path != ":memory:" else None


def describe_database(url: str) -> str:
    """The database a URL names, without its credentials: the SQLite file's absolute path, or
    PostgreSQL's host, port and database."""
    path = sqlite_path(url)
    if path is not None:
        return f"SQLite {path.resolve()}"
    if database_kind(url) == "sqlite":
        return "SQLite in memory"
    parts = urlsplit(url)
    host = parts.hostname or "local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL {host}{port}/{parts.path.strip('/')}"


MAINTENANCE_DATABASES = ("postgres", "template0", "template1")


def database_warning(url: str) -> str | None:
    """A URL that works but is probably a mistake: the server's maintenance database."""
    if database_kind(url) != "postgresql":
        return None
    name = urlsplit(url).path.strip("/")
    if name in MAINTENANCE_DATABASES:
        return (
            f"PROMPTAPI_DATABASE_URL points at {name!r}, the PostgreSQL server's maintenance "
            "database; give promptapi a database of its own (createdb promptapi) and name it "
            "in the URL"
        )
    return None


def explain_database_error(url: str, problem: str) -> str:
    """One line for a database that cannot be opened: what is wrong and how to fix it."""
    where = describe_database(url)
    text = " ".join(problem.split())
    lowered = text.lower()
    if "does not exist" in lowered and "database" in lowered:
        name = urlsplit(url).path.strip("/")
        return (
            f"cannot open {where}: the database {name!r} does not exist; create it "
            f"(createdb {name}) or fix PROMPTAPI_DATABASE_URL"
        )
    if "does not exist" in lowered and "role" in lowered:
        user = urlsplit(url).username or "(none)"
        return (
            f"cannot open {where}: the role {user!r} does not exist; create it "
            f"(CREATE ROLE {user} LOGIN) or name an existing user in PROMPTAPI_DATABASE_URL"
        )
    if "password authentication failed" in lowered:
        return (
            f"cannot open {where}: the password was refused; check the user and password "
            "in PROMPTAPI_DATABASE_URL"
        )
    if "unable to open database file" in lowered:
        path = sqlite_path(url)
        folder = path.resolve().parent if path else "its folder"
        return (
            f"cannot open {where}: the folder {folder} does not exist or is not writable; "
            "create it or fix PROMPTAPI_DATABASE_URL"
        )
    if "refused" in lowered or "connect call failed" in lowered or "name or service" in lowered:
        return (
            f"cannot reach {where}: is PostgreSQL running there? Start it or fix "
            "PROMPTAPI_DATABASE_URL"
        )
    return f"cannot open {where}: {text[:200]}; check PROMPTAPI_DATABASE_URL"
