"""The Node tools some tests run (tests/node/package.json, installed with `npm ci`): the OpenAPI
linters, openapi-typescript and the TypeScript compiler. Without node, npm or the installed
tools a test is skipped, except under CI=true, where it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
REQUIRED = os.environ.get("CI", "").lower() in ("1", "true")
# No telemetry and no update checks from the tools: they run offline.
ENV = {
    **os.environ,
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
    "SCARF_ANALYTICS": "false",
    "DO_NOT_TRACK": "1",
    "NO_UPDATE_NOTIFIER": "1",
}


def tool(name: str) -> Path:
    """The installed tool's executable, or a skip (a failure under CI) naming what is missing."""
    missing = [t for t in ("node", "npm") if shutil.which(t) is None]
    path = NODE_DIR / "node_modules" / ".bin" / name
    if name == "node" and not missing:
        return Path(shutil.which("node") or "node")
    if missing:
        why = f"{' and '.join(missing)} not found"
    elif not path.exists():
        why = f"{name} is not installed: run `npm ci --ignore-scripts --prefix {NODE_DIR}`"
    else:
        return path
    if REQUIRED:
        pytest.fail(f"CI needs the Node tools: {why}")
    pytest.skip(why)


def run(
    name: str, *args: str, cwd: Path, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool(name)), *args],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
