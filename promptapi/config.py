"""Settings, read from environment variables (every one is documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PREFIX = "PROMPTAPI_"


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    database_url: str = "sqlite:///./promptapi.db"
    prompts_dir: Path = Path("./prompts")
    admin_token: str | None = None
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name.startswith("openai_"):
                raw = env.get(f.name.upper())
            else:
                raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if "bool" in kind:
            return _bool(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if "Path" in kind:
            return Path(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}: {exc}") from None
    return raw
