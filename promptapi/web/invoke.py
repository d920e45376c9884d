"""The generated endpoints: every stored prompt served as POST /v1/prompts/{name}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from promptapi.gateway import Gateway
from promptapi.web import auth, views
from promptapi.web.http import JSON, raw, read_json_body, route


@raw
async def invoke(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/prompts/{name}[/versions/{version}], the hot path, as a plain ASGI endpoint:
    no Request object and no per-route exception wrapper (errors still reach the app's one
    set of handlers). A/B on bench/ at 0 ms / 16 connections: 3,395 and 3,337 req/s against
    2,500 and 3,006 as a Request/Response endpoint."""
    gateway: Gateway = scope["app"].state.gateway
    authorization = content_type = content_length = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length":
            content_length = value.decode("latin-1")
    settings = gateway.settings
    caller = await auth.consumer(authorization, gateway)
    data = await read_json_body(receive, content_type, content_length, settings.max_body_bytes)
    params = scope["path_params"]
    envelope = await gateway.invoke(
        params["name"],
        data,
        caller=caller,
        version=params.get("version"),
        request_id=scope["state"]["request_id"],
    )
    await JSON(envelope)(scope, receive, send)


async def _consumer(request: Request, gateway: Gateway) -> None:
    await auth.consumer(request.headers.get("authorization"), gateway)


async def list_prompts(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    await _consumer(request, gateway)
    registry = gateway.registry
    return JSON({"prompts": [views.summary(registry, name) for name in registry.names()]})


async def describe_prompt(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    await _consumer(request, gateway)
    return JSON(views.detail(gateway.registry, request.path_params["name"]))


routes = [
    route("/v1/prompts/{name}", post=invoke, get=describe_prompt),
    route("/v1/prompts/{name}/versions/{version:int}", post=invoke),
    route("/v1/prompts", get=list_prompts),
]
