"""What `promptapi serve` says when it starts: a few lines a newcomer can check at a glance
(which database, where each model alias goes, what was synced from where, where to look)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from promptapi import __version__
from promptapi.config import Settings, database_warning, describe_database

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}


def _where(config: Any) -> str:
    """`provider model at base URL`; never the key, only the env var it comes from."""
    if config.provider == "mock":
        return "mock (canned answers from the prompt's examples)"
    base = config.base_url or DEFAULT_BASE_URLS.get(config.provider, "(no base URL)")
    key = f", key from ${config.api_key_env}" if config.api_key_env else ""
    return f"{config.provider} {config.model} at {base}{key}"


def model_lines(models: dict[str, Any]) -> list[str]:
    lines = []
    for alias in sorted(models):
        deployments = models[alias].deployments
        if len(deployments) == 1:
            lines.append(f"model alias {alias} -> {_where(deployments[0].config)}")
            continue
        for d in deployments:
            lines.append(f"model alias {alias} [{d.name}] -> {_where(d.config)}")
    return lines


def sync_line(settings: Settings, report: Any) -> str:
    root = Path(settings.prompts_dir).resolve()
    if report is None:
        return f"prompt files: not synced at start (PROMPTAPI_SYNC_ON_START=false); folder {root}"
    if not Path(settings.prompts_dir).is_dir():
        return (
            f"prompt files: the folder {root} does not exist, nothing was synced "
            "(create it or set PROMPTAPI_PROMPTS_DIR)"
        )
    return (
        f"prompt files: {len(report.created)} created, {len(report.unchanged)} unchanged, "
        f"{len(report.errors)} with errors, from {root}"
    )


def url_lines(host: str, port: int, catalog: bool) -> list[str]:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    lines = [f"API docs {base}/docs, OpenAPI {base}/openapi.json"]
    if catalog:
        lines.insert(0, f"catalog {base}/")
    return lines


def summary(settings: Settings, models: dict[str, Any], report: Any) -> list[tuple[int, str]]:
    """(log level, line) pairs: what a newcomer checks first, warnings where something is off."""
    info, warn = logging.INFO, logging.WARNING
    lines = [
        (info, f"promptapi {__version__}: database {describe_database(settings.database_url)}")
    ]
    warning = database_warning(settings.database_url)
    if warning:
        lines.append((warn, warning))
    lines += [(info, line) for line in model_lines(models)]
    synced = sync_line(settings, report)
    missing = report is not None and not Path(settings.prompts_dir).is_dir()
    lines.append((warn if missing else info, synced))
    lines += [
        (info, line) for line in url_lines(settings.host, settings.port, settings.catalog != "off")
    ]
    return lines
