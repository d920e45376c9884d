"""The admin API under /admin/v1/: prompts and versions, keys, call logs, models, sync."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from promptapi.errors import InputInvalid, NotFound
from promptapi.gateway import Gateway
from promptapi.web import auth, views
from promptapi.web.http import JSON, query_bool, query_int, read_json, route


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    auth.admin(request, gateway.keys)
    return gateway


async def _register(request: Request, gateway: Gateway, raw: Any) -> Response:
    warnings: list[dict[str, str]] = []
    version, created = await gateway.register(raw, created_by="admin", warnings=warnings)
    body = {**views.version_detail(version), "warnings": warnings}
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
    name = request.path_params["name"]
    if isinstance(raw, dict) and raw.setdefault("name", name) != name:
        raise InputInvalid(
            "The body names another prompt than the URL.",
            errors=[{"path": "/name", "message": f"must be {name!r} (from the URL) or absent"}],
        )
    return await _register(request, gateway, raw)


async def list_prompts(request: Request) -> Response:
    gateway = _gateway(request)
    registry = gateway.registry
    return JSON({"prompts": [views.detail(registry, name) for name in registry.names()]})


async def get_prompt(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON(views.detail(gateway.registry, request.path_params["name"]))


async def get_version(request: Request) -> Response:
    gateway = _gateway(request)
    name, number = request.path_params["name"], request.path_params["version"]
    for version in gateway.registry.versions(name):
        if version.prompt.version == number:
            return JSON(views.version_detail(version))
    raise NotFound(f"Prompt {name!r} has no version {number}.")


def _key_request(raw: Any) -> tuple[str, list[str]]:
    errors: list[dict[str, str]] = []
    if not isinstance(raw, dict):
        raise InputInvalid(
            "Send a JSON object.", errors=[{"path": "", "message": "expected an object"}]
        )
    name = raw.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        errors.append({"path": "/name", "message": "a name of 1 to 200 characters is required"})
    scopes = raw.get("scopes", ["*"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        errors.append({"path": "/scopes", "message": "expected a list of non-empty strings"})
    for extra in sorted(set(raw) - {"name", "scopes"}):
        errors.append({"path": f"/{extra}", "message": f"unexpected property '{extra}'"})
    if errors:
        raise InputInvalid(f"The key request has {len(errors)} problem(s).", errors=errors)
    return name.strip(), scopes  # type: ignore[union-attr]


async def create_key(request: Request) -> Response:
    gateway = _gateway(request)
    name, scopes = _key_request(await read_json(request, gateway.settings.max_body_bytes))
    plaintext, key = await gateway.create_key(name, scopes)
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
    return JSON(await gateway.store.get_key(request.path_params["key_id"]))


async def revoke_key(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON(await gateway.revoke_key(request.path_params["key_id"]))


async def list_calls(request: Request) -> Response:
    gateway = _gateway(request)
    params = request.query_params
    status = params.get("status")
    calls = await gateway.store.list_calls(
        limit=query_int(request, "limit", 100, low=1, high=1000),
        prompt=params.get("prompt"),
        key_id=params.get("key_id"),
        status=query_int(request, "status", 0, low=100, high=599) if status is not None else None,
    )
    return JSON({"calls": calls, "pending": gateway.recorder.pending})


async def list_models(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON({"models": gateway.router.status()})


async def sync(request: Request) -> Response:
    gateway = _gateway(request)
    report = await gateway.sync(
        gateway.settings.prompts_dir,
        created_by="admin:sync",
        dry_run=query_bool(request, "dry_run"),
    )
    return JSON(report.as_dict())


async def get_policy(request: Request) -> Response:
    gateway = _gateway(request)
    return JSON(gateway.policy.describe())


routes = [
    route("/admin/v1/prompts", post=create_prompt, get=list_prompts),
    route("/admin/v1/prompts/{name}", get=get_prompt),
    route("/admin/v1/prompts/{name}/versions", post=create_version),
    route("/admin/v1/prompts/{name}/versions/{version:int}", get=get_version),
    route("/admin/v1/keys", post=create_key, get=list_keys),
    route("/admin/v1/keys/{key_id}", get=get_key, delete=revoke_key),
    route("/admin/v1/calls", get=list_calls),
    route("/admin/v1/models", get=list_models),
    route("/admin/v1/sync", post=sync),
    route("/admin/v1/policy", get=get_policy),
]
