"""The `promptapi` command."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from promptapi import __version__, diff, files, names, prompty, runner, safeyaml, startup
from promptapi.config import (
    Settings,
    database_warning,
    describe_database,
    env_name,
    explain_database_error,
    sqlite_path,
)
from promptapi.errors import ConfigError, PromptAPIError
from promptapi.gateway import Gateway
from promptapi.policy import PUBLISHED, Policy, review
from promptapi.prompts import Prompt, check_definition
from promptapi.providers import load_models

log = logging.getLogger("promptapi")


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _fail(message: str, code: int = 1) -> int:
    print(f"promptapi: {message}", file=sys.stderr)
    return code


def _database(settings: Settings, *, writes: bool) -> None:
    """Say which database a command uses (on stderr, so stdout stays the command's answer). A
    command that only reads refuses to create a SQLite file where there is none."""
    url = settings.database_url
    path = sqlite_path(url)
    if path is not None and not path.resolve().parent.is_dir():
        # Said before any connection attempt: aiosqlite's failed connect can outlive the loop.
        raise ConfigError(explain_database_error(url, "unable to open database file"))
    if not writes and path is not None and not path.exists():
        raise ConfigError(
            f"no database at {path.resolve()} (PROMPTAPI_DATABASE_URL={url}); run this where "
            "the server runs, point PROMPTAPI_DATABASE_URL at its database, or create one "
            "with `promptapi db upgrade`"
        )
    print(f"promptapi: database: {describe_database(url)}", file=sys.stderr)
    warning = database_warning(url)
    if warning:
        print(f"promptapi: warning: {warning}", file=sys.stderr)


async def _with_gateway(
    settings: Settings,
    action: Callable[[Gateway], Awaitable[int]],
    *,
    writes: bool | None = True,
) -> int:
    """Run `action` with a gateway. `writes`: whether the command may create and change the
    database; None when it does not use the database at all."""
    # The models file and the policy are checked (by the gateway) before the database.
    gateway = Gateway(settings)
    try:
        if writes is not None:
            _database(settings, writes=writes)
            # Opens the database first, so a URL that cannot work is one line, not a traceback.
            await gateway.store.schema_revision()
        return await action(gateway)
    finally:
        await gateway.store.aclose()


def _check_port(host: str, port: int) -> None:
    """Fail at once, before migrations and the sync, when the address is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ConfigError(
                f"cannot listen on {host}:{port}: {reason}; stop the other server or pick "
                "another port (--port or PROMPTAPI_PORT)"
            ) from None


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from promptapi.app import configure_logging

    overrides = {"host": args.host, "port": args.port, "workers": args.workers}
    settings = settings.with_(**{k: v for k, v in overrides.items() if v is not None})
    _check_port(settings.host, settings.port)
    configure_logging(settings.log_level)

    async def prepare(gateway: Gateway) -> int:
        report = await gateway.prepare()
        for level, line in startup.summary(settings, gateway.providers.models, report):
            log.log(level, "%s", line)
        return 0

    asyncio.run(_with_gateway(settings, prepare))
    from promptapi.web.timeouts import PROTOCOL

    uvicorn.run(
        "promptapi.app:create_prepared_app",
        factory=True,
        http=PROTOCOL,  # a deadline for each request's headers (PROMPTAPI_HEADER_TIMEOUT)
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
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

    return asyncio.run(_with_gateway(settings, run, writes=args.action != "current"))


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.dir) if args.dir else settings.prompts_dir
    if not root.is_dir():
        option = "--dir" if args.dir else env_name("prompts_dir")
        return _fail(f"the prompts folder {root} does not exist; create it or fix {option}", 2)

    async def run(gateway: Gateway) -> int:
        # A dry run does not even migrate: a database without the schema refuses, naming the
        # command that would create it.
        await gateway.store.ensure_schema(migrate=settings.auto_migrate and not args.dry_run)
        report = await gateway.sync(root, dry_run=args.dry_run)
        created = "would create" if args.dry_run else "created   "
        for label in report.created:
            print(f"{created} {label}")
        for label in report.unchanged:
            print(f"unchanged  {label}")
        for found in report.warnings:
            for item in found["warnings"]:
                print(f"warning    {found['file']}: {_violation(item)}", file=sys.stderr)
        for error in report.errors:
            print(f"error      {error['file']}: {error['detail']}", file=sys.stderr)
            for item in error.get("errors") or []:
                print(f"             {_violation(item)}", file=sys.stderr)
        print(
            f"{len(report.created)} {'to create' if args.dry_run else 'created'}, "
            f"{len(report.unchanged)} unchanged, {len(report.errors)} errors"
            + (" (dry run: nothing was written)" if args.dry_run else "")
        )
        return 1 if report.errors else 0

    return asyncio.run(_with_gateway(settings, run, writes=not args.dry_run))


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.dir) if args.dir else settings.prompts_dir
    try:
        data = orjson.loads(args.input)
    except orjson.JSONDecodeError as exc:
        return _fail(f"--input is not valid JSON: {exc}", 2)
    candidates: list[dict[str, Any]] = [
        found.data
        for found in files.read_all(root, settings.max_body_bytes)
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


def _violation(item: dict[str, str]) -> str:
    """`/json/pointer: [rule] message (severity)`; a definition error has the rule
    `definition`."""
    rule = item.get("rule", "definition")
    severity = item.get("severity", "error")
    return f"{item['path'] or '/'}: [{rule}] {item['message']} ({severity})"


def _lint_targets(paths: list[str], default: Path) -> list[tuple[Path, Path | None]] | str:
    """(file, the folder it was found in) for each file to lint; a file named on the command
    line has no folder (it is read wherever it is, but still only if it is a regular file)."""
    targets: list[tuple[Path, Path | None]] = []
    for given in [Path(p) for p in paths] or [default]:
        if given.is_dir():
            targets.extend((found, given) for found in files.find(given))
        elif given.exists():
            targets.append((given, None))
        else:
            return f"no such file or directory: {given}"
    return targets


def cmd_lint(args: argparse.Namespace, settings: Settings) -> int:
    policy = Policy.load(Path(args.policy) if args.policy else settings.policy_file)
    targets = _lint_targets(args.paths, settings.prompts_dir)
    if isinstance(targets, str):
        return _fail(targets, 2)
    # Model aliases are checked only against a configured models file: without one, the
    # aliases a deployment defines are unknown here.
    models = _models(settings) if settings.models_file is not None else None
    counts = {"error": 0, "warning": 0}
    seen: dict[tuple[Any, Any], Path] = {}
    for path, folder in targets:
        found = files.read(path, root=folder, limit=settings.max_body_bytes)
        lines: list[dict[str, str]] = []
        if found.error is not None:
            lines.append({"path": "", "message": found.error, "rule": "file"})
        else:
            checked = review(
                found.data, policy, models=models, require_version=True, stage=args.stage
            )
            lines = checked.problems + checked.warnings
            if checked.definition is not None:
                key = (checked.definition["name"], checked.definition["version"])
                if key in seen:
                    message = f"{key[0]} version {key[1]} is also defined in {seen[key]}"
                    lines.append({"path": "/version", "message": message, "rule": "duplicate"})
                seen.setdefault(key, path)
        for item in lines:
            counts[item.get("severity", "error")] += 1
            print(f"{path}: {_violation(item)}")
    print(
        f"{len(targets)} files checked: {counts['error']} errors, {counts['warning']} warnings "
        f"(policy: {policy.source})",
        file=sys.stderr,
    )
    if counts["error"] or (args.strict and counts["warning"]):
        return 1
    return 0


def _models(settings: Settings) -> dict[str, Any]:
    return load_models(
        settings.models_file,
        default_model=settings.default_model,
        openai_api_key=settings.openai_api_key,
        openai_base_url=settings.openai_base_url,
    )


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.dir) if args.dir else settings.prompts_dir

    async def run(gateway: Gateway) -> int:
        await gateway.store.ensure_schema(migrate=False)
        rows = await gateway.store.versions_after(0)
        if args.name:
            rows = [r for r in rows if r["name"] in set(args.name)]
        report = files.export(
            rows,
            root,
            force=args.force,
            labels=await gateway.store.labels(),
            limit=settings.max_body_bytes,
        )
        for path in report.written:
            print(f"written    {path}")
        for path in report.unchanged:
            print(f"unchanged  {path}")
        for path in report.conflicts:
            print(
                f"conflict   {path}: holds other content for this version; "
                "not overwritten (--force overwrites it with what is stored)",
                file=sys.stderr,
            )
        for path, reason in report.refused:
            print(f"refused    {path}: {reason}", file=sys.stderr)
        print(
            f"{len(report.written)} written, {len(report.unchanged)} unchanged, "
            f"{len(report.conflicts)} conflicts"
            + (f", {len(report.refused)} refused" if report.refused else "")
        )
        return 1 if report.conflicts or report.refused else 0

    return asyncio.run(_with_gateway(settings, run, writes=False))


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.out) if args.out else settings.prompts_dir
    failed = 0
    for source in map(Path, args.files):
        try:
            converted = prompty.convert(
                safeyaml.read_text(source, settings.max_body_bytes),
                source=source.name,
                model=args.model,
            )
            definition = check_definition(converted.definition, require_version=True)
        except safeyaml.YAMLProblem as exc:
            failed += 1
            print(f"{source}: {exc}", file=sys.stderr)
            continue
        except prompty.PromptyError as exc:
            failed += 1
            print(f"{source}: {exc}", file=sys.stderr)
            continue
        except PromptAPIError as exc:
            failed += 1
            print(f"{source}: {exc.detail} Nothing written.", file=sys.stderr)
            for item in exc.errors or []:
                print(f"  {_violation(item)}", file=sys.stderr)
            continue
        target = root / definition["name"] / f"{definition['version']}.yaml"
        if target.exists() and not args.force:
            failed += 1
            print(f"{source}: {target} exists (--force overwrites it)", file=sys.stderr)
            continue
        try:
            files.write(root, target, files.dump(converted.definition))
        except (files.WriteRefused, OSError) as exc:
            failed += 1
            print(f"{source}: {target} {exc}", file=sys.stderr)
            continue
        print(f"written    {target}  (from {source})")
        for note in converted.notes:
            print(f"  note: {note}")
    return 1 if failed else 0


def cmd_test(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.dir) if args.dir else settings.prompts_dir

    async def run(gateway: Gateway) -> int:
        try:
            if args.model is not None and args.model not in gateway.providers.models:
                known = ", ".join(sorted(gateway.providers.models))
                return _fail(f"unknown model alias {args.model!r}; configured: {known}", 2)
            models = None if args.model else gateway.providers.models
            if args.db:
                await gateway.store.ensure_schema(migrate=False)
                await gateway.refresh(force=True)
                definitions, broken = runner.from_registry(gateway), []
            else:
                definitions, broken = runner.from_files(root, models, settings.max_body_bytes)
            if args.names:
                wanted = set(args.names)
                known = {d["name"] for d in definitions} | {r.prompt for r in broken}
                # A file too broken to name its prompt still answers to its folder's name.
                for row in broken:
                    folders = set(Path(row.file).parts[:-1]) & wanted
                    if folders and row.prompt not in wanted:
                        wanted.add(row.prompt)
                        known |= folders
                unknown = set(args.names) - known
                if unknown:
                    where = "in the database" if args.db else f"under {root}"
                    return _fail(f"no prompt named {', '.join(sorted(unknown))} {where}", 2)
                definitions = [d for d in definitions if d["name"] in wanted]
                broken = [r for r in broken if r.prompt in wanted]
            if not definitions and not broken:
                return _fail("no prompts to test", 2)
            rows = broken + await runner.run(gateway, definitions, model=args.model)
        finally:
            await gateway.providers.aclose()
        print(runner.table(rows))
        for row in rows:
            for problem in row.problems:
                print(f"{row.file}: {problem}", file=sys.stderr)
        tally = {
            result: sum(r.result == result for r in rows) for result in ("pass", "FAIL", "skip")
        }
        print(f"{tally['pass']} passed, {tally['FAIL']} failed, {tally['skip']} skipped")
        return 1 if tally["FAIL"] else 0

    # Without --db the prompts come from files and nothing is stored: no database is opened.
    return asyncio.run(_with_gateway(settings, run, writes=False if args.db else None))


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    # The same rule as POST /admin/v1/keys: 1 to 200 characters, not only spaces.
    if args.action == "create" and (
        not 1 <= len(args.name.strip()) <= 200 or names.has_control(args.name)
    ):
        return _fail(
            "a key needs a name of 1 to 200 characters without control characters, "
            "e.g. billing-service",
            2,
        )

    async def run(gateway: Gateway) -> int:
        await gateway.store.ensure_schema(migrate=settings.auto_migrate and args.action != "list")
        if args.action == "create":
            plaintext, key = await gateway.create_key(
                args.name.strip(), ["*"], allow_drafts=args.allow_drafts, actor="cli"
            )
            _print_json({**key, "key": plaintext})
        elif args.action == "list":
            _print_json(await gateway.store.list_keys())
        else:
            _print_json(await gateway.revoke_key(args.key_id, actor="cli"))
        return 0

    return asyncio.run(_with_gateway(settings, run, writes=args.action != "list"))


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    async def run(gateway: Gateway) -> int:
        await gateway.store.ensure_schema(migrate=False)
        if not any(row["name"] == args.name for row in await gateway.store.lifecycles()):
            return _fail(f"no prompt named {args.name!r} in the database", 1)
        old = await gateway.store.get_version(args.name, args.old)
        new = await gateway.store.get_version(args.name, args.new)
        result = diff.versions(args.name, old, new)
        if args.json:
            _print_json(result)
        else:
            print(diff.render(result))
        return 0

    return asyncio.run(_with_gateway(settings, run, writes=False))


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


def cmd_openapi(args: argparse.Namespace, settings: Settings) -> int:
    from promptapi.web.openapi import build_document

    documents: list[dict[str, Any]] = []

    async def load(gateway: Gateway) -> int:
        await gateway.store.ensure_schema(migrate=False)
        await gateway.refresh(force=True)
        documents.append(build_document(gateway.registry, anonymous=settings.allow_anonymous))
        return 0

    asyncio.run(_with_gateway(settings, load, writes=False))
    document = documents[0]
    if args.server:
        document["servers"] = [{"url": url} for url in args.server]
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _prompt_name(value: str) -> str:
    if not names.is_name(value):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a prompt name ({names.NAME_RULE})")
    return value


def _version(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 10) or not (
        1 <= int(value) <= 2**31 - 1
    ):
        raise argparse.ArgumentTypeError(f"{value[:20]!r} is not a version number")
    return int(value)


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
    sync.add_argument(
        "--dry-run", action="store_true", help="report what would change, write nothing"
    )
    sync.set_defaults(func=cmd_sync)

    lint = sub.add_parser(
        "lint", help="check prompt files against the definition rules and the policy"
    )
    lint.add_argument("paths", nargs="*", help="files or folders (default: the prompts folder)")
    lint.add_argument("--policy", help="policy file (PROMPTAPI_POLICY_FILE; built-in defaults)")
    lint.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    lint.add_argument(
        "--stage",
        default=PUBLISHED,
        help="lifecycle state the files are checked for (default: published)",
    )
    lint.set_defaults(func=cmd_lint)

    export = sub.add_parser("export", help="write stored versions as prompt files")
    export.add_argument("dir", nargs="?", help="target folder (default: the prompts folder)")
    export.add_argument(
        "--name", action="append", type=_prompt_name, help="only this prompt (repeatable)"
    )
    export.add_argument(
        "--force", action="store_true", help="overwrite files that differ from what is stored"
    )
    export.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="convert Prompty (.prompty) files into prompt files")
    imp.add_argument("files", nargs="+", metavar="FILE.prompty")
    imp.add_argument("--out", help="target folder (default: the prompts folder)")
    imp.add_argument("--model", default="default", help="model alias to use (default: default)")
    imp.add_argument("--force", action="store_true", help="overwrite an existing file")
    imp.set_defaults(func=cmd_import)

    test = sub.add_parser("test", help="run each prompt's examples and check their expectations")
    test.add_argument("names", nargs="*", type=_prompt_name, help="prompt names (default: all)")
    test.add_argument("--model", help="run on this model alias instead of each prompt's own")
    test.add_argument("--dir", help="prompts folder (PROMPTAPI_PROMPTS_DIR, default ./prompts)")
    test.add_argument(
        "--db", action="store_true", help="test the versions the database serves, not files"
    )
    test.set_defaults(func=cmd_test)

    render = sub.add_parser("render", help="render a prompt file's messages for an input, offline")
    render.add_argument("name", type=_prompt_name)
    render.add_argument("--input", required=True, help="the input as JSON")
    render.add_argument("--version", type=_version)
    render.add_argument("--dir", help="prompts folder (PROMPTAPI_PROMPTS_DIR, default ./prompts)")
    render.set_defaults(func=cmd_render)

    keys = sub.add_parser("keys", help="consumer API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument(
        "--allow-drafts", action="store_true", help="the key may call draft versions"
    )
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    diff_ = sub.add_parser("diff", help="what changed between two stored versions of a prompt")
    diff_.add_argument("name", type=_prompt_name)
    diff_.add_argument("old", type=_version, metavar="FROM")
    diff_.add_argument("new", type=_version, metavar="TO")
    diff_.add_argument("--json", action="store_true", help="print the structured diff as JSON")
    diff_.set_defaults(func=cmd_diff)

    openapi = sub.add_parser(
        "openapi", help="print the OpenAPI 3.1 document of the prompts in the database"
    )
    openapi.add_argument("--output", "-o", help="write it to this file instead of stdout")
    openapi.add_argument(
        "--server", action="append", help="a base URL to list under `servers` (repeatable)"
    )
    openapi.set_defaults(func=cmd_openapi)

    token = sub.add_parser("admin-token", help="replace the generated admin token")
    token_sub = token.add_subparsers(dest="action", required=True)
    token_sub.add_parser("reset")
    token.set_defaults(func=cmd_admin_token)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc), 2)
    try:
        return int(args.func(args, settings))
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except PromptAPIError as exc:
        return _fail(exc.detail, 1)
    except KeyboardInterrupt:
        return 130
