"""The generated endpoints: every stored prompt served as POST /v1/prompts/{name}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from promptapi.gateway import Gateway
from promptapi.web import auth, views
from promptapi.web.errors import request_id
from promptapi.web.http import JSON, read_json, route


async def invoke(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    caller = auth.consumer(request, gateway.keys, allow_anonymous=gateway.settings.allow_anonymous)
    data = await read_json(request, gateway.settings.max_body_bytes)
    envelope = await gateway.invoke(
        request.path_params["name"],
        data,
        caller=caller,
        version=request.path_params.get("version"),
        request_id=request_id(request),
    )
    return JSON(envelope)


async def list_prompts(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    auth.consumer(request, gateway.keys, allow_anonymous=gateway.settings.allow_anonymous)
    registry = gateway.registry
    return JSON({"prompts": [views.summary(registry, name) for name in registry.names()]})


async def describe_prompt(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    auth.consumer(request, gateway.keys, allow_anonymous=gateway.settings.allow_anonymous)
    return JSON(views.detail(gateway.registry, request.path_params["name"]))


routes = [
    route("/v1/prompts/{name}", post=invoke, get=describe_prompt),
    route("/v1/prompts/{name}/versions/{version:int}", post=invoke),
    route("/v1/prompts", get=list_prompts),
]
