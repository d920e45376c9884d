"""The admin API under /admin/v1/: prompts and versions, lifecycle, labels, diff, keys, call
logs, audit log, models, sync."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from promptapi import lifecycle, names
from promptapi.errors import MalformedRequest, NotFound, RequestInvalid
from promptapi.gateway import Gateway, SyncReport
from promptapi.web import auth, views
from promptapi.web.http import (
    JSON,
    MAX_VERSION,
    path_key_id,
    path_label,
    path_name,
    path_version,
    query_bool,
    query_int,
    query_text,
    query_time,
    read_json,
    read_optional_json,
    route,
)

ACTOR = "admin"  # who the audit log names for changes made with the admin credential


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    auth.admin(request, gateway.keys)
    return gateway


async def _register(request: Request, gateway: Gateway, raw: Any) -> Response:
    warnings: list[dict[str, str]] = []
    version, created = await gateway.register(raw, created_by=ACTOR, warnings=warnings)
    body = {
        **views.version_detail(version, gateway.registry.labels(version.prompt.name)),
        "warnings": warnings,
    }
    location = f"/admin/v1/prompts/{body['name']}/versions/{body['version']}"
    return JSON(body, status_code=201 if created else 200, headers={"Location": location})


async def create_prompt(request: Request) -> Response:
    gateway = _gateway(request)
    return await _register(
        request, gateway, await read_json(request, gateway.settings.max_body_bytes)
    )


async def create_version(request: Request) -> Response:
    gateway = _gateway(request)
    raw = await read_json(request, gateway.settings.max_body_bytes)
    name = path_name(request)
    if isinstance(raw, dict) and raw.setdefault("name", name) != name:
        raise RequestInvalid(
            "The body names another prompt than the URL.",
            errors=[{"path": "/name", "message": f"must be {name!r} (from the URL) or absent"}],
        )
    return await _register(request, gateway, raw)


async def list_prompts(request: Request) -> Response:
    gateway = _gateway(request)
    registry = gateway.registry
    return JSON(
        {"prompts": [views.detail(registry, name, drafts=True) for name in registry.all_names()]}
    )


async def get_prompt(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON(views.detail(gateway.registry, path_name(request), drafts=True))


async def get_version(request: Request) -> Response:
    gateway = _gateway(request)
    name, number = path_name(request), path_version(request)
    for version in gateway.registry.versions(name):
        if version.prompt.version == number:
            return JSON(views.version_detail(version, gateway.registry.labels(name)))
    raise NotFound(f"Prompt {name!r} has no version {number}.")


def _transition(action: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        gateway = _gateway(request)
        name, number = path_name(request), path_version(request)
        raw = await read_optional_json(request, gateway.settings.max_body_bytes)
        body = lifecycle.parse_body(action, raw)
        warnings: list[dict[str, str]] = []
        version = await gateway.transition(
            name, number, action, body, actor=ACTOR, warnings=warnings
        )
        answer = views.version_detail(version, gateway.registry.labels(name))
        if action == "publish":
            answer["warnings"] = warnings
        return JSON(answer)

    endpoint.__name__ = action
    return endpoint


async def put_label(request: Request) -> Response:
    gateway = _gateway(request)
    name, label = path_name(request), path_label(request)
    raw = await read_json(request, gateway.settings.max_body_bytes)
    number = raw.get("version") if isinstance(raw, dict) else None
    errors = []
    if not isinstance(raw, dict):
        errors.append({"path": "", "message": "expected an object with a version"})
    else:
        if (
            isinstance(number, bool)
            or not isinstance(number, int)
            or not 1 <= number <= MAX_VERSION
        ):
            errors.append({"path": "/version", "message": "a version number (>= 1) is required"})
        errors.extend(
            {"path": f"/{extra}", "message": f"unexpected property '{extra}'"}
            for extra in sorted(set(raw) - {"version"})
        )
    if errors:
        raise RequestInvalid(f"The label request has {len(errors)} problem(s).", errors=errors)
    return JSON(await gateway.set_label(name, label, number, actor=ACTOR))  # type: ignore[arg-type]


async def delete_label(request: Request) -> Response:
    gateway = _gateway(request)
    name, label = path_name(request), path_label(request)
    return JSON(await gateway.delete_label(name, label, actor=ACTOR))


async def diff(request: Request) -> Response:
    gateway = _gateway(request)
    for needed in ("from", "to"):
        if needed not in request.query_params:
            raise MalformedRequest(
                f"Query parameter {needed!r} is required.",
                errors=[{"path": f"?{needed}", "message": "a version number is required"}],
            )
    old = query_int(request, "from", 0, low=1, high=MAX_VERSION)
    new = query_int(request, "to", 0, low=1, high=MAX_VERSION)
    return JSON(gateway.diff(path_name(request), old, new))


def _key_request(raw: Any) -> tuple[str, list[str], bool]:
    errors: list[dict[str, str]] = []
    if not isinstance(raw, dict):
        raise RequestInvalid(
            "Send a JSON object.", errors=[{"path": "", "message": "expected an object"}]
        )
    name = raw.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200 or names.has_control(name):
        errors.append(
            {
                "path": "/name",
                "message": "a name of 1 to 200 characters without control characters is required",
            }
        )
    scopes = raw.get("scopes", ["*"])
    if not isinstance(scopes, list) or not all(
        isinstance(s, str) and s and len(s) <= 200 and not names.has_control(s) for s in scopes
    ):
        errors.append(
            {
                "path": "/scopes",
                "message": "expected a list of non-empty strings without control characters",
            }
        )
    allow_drafts = raw.get("allow_drafts", False)
    if not isinstance(allow_drafts, bool):
        errors.append({"path": "/allow_drafts", "message": "expected true or false"})
    for extra in sorted(set(raw) - {"name", "scopes", "allow_drafts"}):
        errors.append({"path": f"/{extra}", "message": f"unexpected property '{extra}'"})
    if errors:
        raise RequestInvalid(f"The key request has {len(errors)} problem(s).", errors=errors)
    return name.strip(), scopes, allow_drafts  # type: ignore[union-attr]


async def create_key(request: Request) -> Response:
    gateway = _gateway(request)
    name, scopes, allow_drafts = _key_request(
        await read_json(request, gateway.settings.max_body_bytes)
    )
    plaintext, key = await gateway.create_key(name, scopes, allow_drafts=allow_drafts, actor=ACTOR)
    return JSON(
        {**key, "key": plaintext},
        status_code=201,
        headers={"Location": f"/admin/v1/keys/{key['id']}"},
    )


async def list_keys(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON({"keys": await gateway.store.list_keys()})


async def get_key(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON(await gateway.store.get_key(path_key_id(request)))


async def revoke_key(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON(await gateway.revoke_key(path_key_id(request), actor=ACTOR))


async def list_calls(request: Request) -> Response:
    gateway = _gateway(request)
    params = request.query_params
    status = params.get("status")
    calls = await gateway.store.list_calls(
        limit=query_int(request, "limit", 100, low=1, high=1000),
        prompt=query_text(request, "prompt"),
        key_id=query_text(request, "key_id"),
        status=query_int(request, "status", 0, low=100, high=599) if status is not None else None,
    )
    return JSON({"calls": calls, "pending": gateway.recorder.pending})


async def list_models(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON({"models": gateway.router.status()})


async def sync(request: Request) -> Response:
    gateway = _gateway(request)
    root = gateway.settings.prompts_dir
    if not root.is_dir():
        missing = SyncReport(dry_run=query_bool(request, "dry_run"))
        detail = (
            f"The prompts folder {root} does not exist; create it or set PROMPTAPI_PROMPTS_DIR."
        )
        missing.errors.append({"file": str(root), "detail": detail})
        return JSON(missing.as_dict())
    report = await gateway.sync(
        gateway.settings.prompts_dir,
        created_by=ACTOR,
        dry_run=query_bool(request, "dry_run"),
    )
    return JSON(report.as_dict())


async def get_policy(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON(gateway.policy.describe())


async def list_audit(request: Request) -> Response:
    gateway = _gateway(request)
    params = request.query_params
    cursor = params.get("cursor")
    records, next_cursor = await gateway.store.list_audit(
        limit=query_int(request, "limit", 100, low=1, high=1000),
        cursor=query_int(request, "cursor", 0, low=1, high=2**62) if cursor is not None else None,
        action=query_text(request, "action"),
        actor=query_text(request, "actor"),
        target=query_text(request, "target"),
        prompt=query_text(request, "prompt"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
    )
    return JSON(
        {
            "records": records,
            "next_cursor": str(next_cursor) if next_cursor is not None else None,
        }
    )


routes = [
    route("/admin/v1/prompts", post=create_prompt, get=list_prompts),
    route("/admin/v1/prompts/{name}", get=get_prompt),
    route("/admin/v1/prompts/{name}/versions", post=create_version),
    route("/admin/v1/prompts/{name}/versions/{version:int}", get=get_version),
    *(
        route(
            f"/admin/v1/prompts/{{name}}/versions/{{version:int}}/{action}",
            post=_transition(action),
        )
        for action in lifecycle.ACTIONS
    ),
    route("/admin/v1/prompts/{name}/labels/{label}", put=put_label, delete=delete_label),
    route("/admin/v1/prompts/{name}/diff", get=diff),
    route("/admin/v1/audit", get=list_audit),
    route("/admin/v1/keys", post=create_key, get=list_keys),
    route("/admin/v1/keys/{key_id}", get=get_key, delete=revoke_key),
    route("/admin/v1/calls", get=list_calls),
    route("/admin/v1/models", get=list_models),
    route("/admin/v1/sync", post=sync),
    route("/admin/v1/policy", get=get_policy),
]
