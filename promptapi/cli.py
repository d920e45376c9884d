"""The `promptapi` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from promptapi import __version__, files
from promptapi.config import Settings
from promptapi.errors import ConfigError, PromptAPIError
from promptapi.gateway import Gateway
from promptapi.prompts import Prompt, check_definition


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _fail(message: str, code: int = 1) -> int:
    print(f"promptapi: {message}", file=sys.stderr)
    return code


async def _with_gateway(settings: Settings, action: Callable[[Gateway], Awaitable[int]]) -> int:
    gateway = Gateway(settings)
    try:
        return await action(gateway)
    finally:
        await gateway.store.aclose()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from promptapi.app import configure_logging

    configure_logging(settings.log_level)

    async def prepare(gateway: Gateway) -> int:
        await gateway.prepare()
        return 0

    asyncio.run(_with_gateway(settings, prepare))
    uvicorn.run(
        "promptapi.app:create_prepared_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
        access_log=settings.access_log,
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    async def run(gateway: Gateway) -> int:
        store = gateway.store
        if args.action == "upgrade":
            await store.upgrade(args.revision)
        elif args.action == "downgrade":
            await store.downgrade(args.revision)
        current, head = await store.schema_revision()
        print(f"current: {current or 'none'}  head: {head}")
        return 0

    return asyncio.run(_with_gateway(settings, run))


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.dir) if args.dir else settings.prompts_dir

    async def run(gateway: Gateway) -> int:
        await gateway.store.ensure_schema(migrate=settings.auto_migrate)
        report = await gateway.sync(root)
        for label in report.created:
            print(f"created    {label}")
        for label in report.unchanged:
            print(f"unchanged  {label}")
        for error in report.errors:
            print(f"error      {error['file']}: {error['detail']}", file=sys.stderr)
            for item in error.get("errors") or []:
                print(f"             {item['path'] or '/'}: {item['message']}", file=sys.stderr)
        print(
            f"{len(report.created)} created, {len(report.unchanged)} unchanged, "
            f"{len(report.errors)} errors"
        )
        return 1 if report.errors else 0

    return asyncio.run(_with_gateway(settings, run))


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.dir) if args.dir else settings.prompts_dir
    try:
        data = orjson.loads(args.input)
    except orjson.JSONDecodeError as exc:
        return _fail(f"--input is not valid JSON: {exc}", 2)
    candidates: list[dict[str, Any]] = [
        found.data
        for found in files.read_all(root)
        if isinstance(found.data, dict)
        and found.data.get("name") == args.name
        and (args.version is None or found.data.get("version") == args.version)
    ]
    if not candidates:
        wanted = f"{args.name} version {args.version}" if args.version else args.name
        return _fail(f"no prompt file for {wanted} under {root}")
    raw = max(candidates, key=lambda d: d.get("version") or 0)
    try:
        prompt = Prompt(check_definition(raw, require_version=True))
        prompt.validate_input(data)
        messages = prompt.render(data)
    except PromptAPIError as exc:
        print(f"promptapi: {exc.detail}", file=sys.stderr)
        for item in exc.errors or []:
            print(f"  {item['path'] or '/'}: {item['message']}", file=sys.stderr)
        return 1
    _print_json(
        {
            "name": prompt.name,
            "version": prompt.version,
            "model": prompt.model,
            "messages": messages,
        }
    )
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    async def run(gateway: Gateway) -> int:
        await gateway.store.ensure_schema(migrate=settings.auto_migrate)
        if args.action == "create":
            plaintext, key = await gateway.create_key(args.name, ["*"])
            _print_json({**key, "key": plaintext})
        elif args.action == "list":
            _print_json(await gateway.store.list_keys())
        else:
            _print_json(await gateway.revoke_key(args.key_id))
        return 0

    return asyncio.run(_with_gateway(settings, run))


def cmd_admin_token(args: argparse.Namespace, settings: Settings) -> int:
    if settings.admin_token:
        return _fail("PROMPTAPI_ADMIN_TOKEN is set; the admin token comes from the environment")

    async def run(gateway: Gateway) -> int:
        await gateway.store.ensure_schema(migrate=settings.auto_migrate)
        token = await gateway.reset_admin_token()
        print(token)
        print(
            "The old admin token no longer works (running servers pick this up on refresh).",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(_with_gateway(settings, run))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="promptapi", description="Stored LLM prompts served as typed REST APIs."
    )
    root.add_argument("--version", action="version", version=f"promptapi {__version__}")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="interface to bind (PROMPTAPI_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (PROMPTAPI_PORT, default 8000)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (PROMPTAPI_WORKERS, default 1)"
    )
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema: upgrade, downgrade, current")
    db_sub = db.add_subparsers(dest="action", required=True)
    up = db_sub.add_parser("upgrade")
    up.add_argument("revision", nargs="?", default="head")
    down = db_sub.add_parser("downgrade")
    down.add_argument("revision")
    db_sub.add_parser("current")
    db.set_defaults(func=cmd_db)

    sync = sub.add_parser("sync", help="store new prompt versions from the prompts folder")
    sync.add_argument("--dir", help="prompts folder (PROMPTAPI_PROMPTS_DIR, default ./prompts)")
    sync.set_defaults(func=cmd_sync)

    render = sub.add_parser("render", help="render a prompt file's messages for an input, offline")
    render.add_argument("name")
    render.add_argument("--input", required=True, help="the input as JSON")
    render.add_argument("--version", type=int)
    render.add_argument("--dir", help="prompts folder (PROMPTAPI_PROMPTS_DIR, default ./prompts)")
    render.set_defaults(func=cmd_render)

    keys = sub.add_parser("keys", help="consumer API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("name")
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    token = sub.add_parser("admin-token", help="replace the generated admin token")
    token_sub = token.add_subparsers(dest="action", required=True)
    token_sub.add_parser("reset")
    token.set_defaults(func=cmd_admin_token)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        return _fail(str(exc), 2)
    try:
        return int(args.func(args, settings))
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except PromptAPIError as exc:
        return _fail(exc.detail, 1)
    except KeyboardInterrupt:
        return 130
