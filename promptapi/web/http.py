"""Reading JSON bodies within limits, and writing JSON answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promptapi.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            # orjson stops at 254 levels of nesting; the standard library goes deeper.
            return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


async def read_json(request: Request, limit: int) -> Any:
    headers = request.headers
    if not _is_json(headers.get("content-type", "")):
        raise UnsupportedMediaType(
            "Send the body as JSON with `Content-Type: application/json`"
            f" (got {headers.get('content-type') or 'no Content-Type'!r:.80})."
        )
    declared = headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise MalformedRequest("The Content-Length header is not a number.") from None
        if length > limit:
            raise PayloadTooLarge(f"The body is {length} bytes; the limit is {limit} bytes.")
    body = b""
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedRequest("The client closed the connection before sending the body.")
        body += message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes.")
        if not message.get("more_body", False):
            break
    if not body.strip():
        raise MalformedRequest("The request body is empty; send a JSON value.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            errors=[{"path": "", "message": f"{exc.msg} (char {exc.pos})"}],
        ) from None


def query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise MalformedRequest(
            f"Query parameter {name!r} must be an integer from {low} to {high}.",
            errors=[{"path": f"?{name}", "message": f"expected an integer from {low} to {high}"}],
        )
    return value


Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, **handlers: Endpoint) -> Route:
    """One route per path with a handler per method, so a 405 lists every allowed method."""
    table = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in table:
        table["HEAD"] = table["GET"]

    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return Route(path, dispatch, methods=list(table))
