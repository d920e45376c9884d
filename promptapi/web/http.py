"""Reading JSON bodies within limits, and writing JSON answers."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.convertors import IntegerConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from promptapi import names
from promptapi.errors import MalformedRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from promptapi.lifecycle import parse_datetime

# The largest version number a definition may carry (DEFINITION_SCHEMA); a path naming a
# bigger one names no version.
MAX_VERSION = 2**31 - 1
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def dumps(content: Any) -> bytes:
    try:
        return orjson.dumps(content)
    except orjson.JSONEncodeError:
        # orjson stops at 254 levels of nesting; the standard library goes deeper.
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


async def read_json(request: Request, limit: int) -> Any:
    headers = request.headers
    return await read_json_body(
        request.receive, headers.get("content-type"), headers.get("content-length"), limit
    )


async def read_json_body(
    receive: Receive, content_type: str | None, content_length: str | None, limit: int
) -> Any:
    if not _is_json(content_type or ""):
        raise UnsupportedMediaType(
            "Send the body as JSON with `Content-Type: application/json`"
            f" (got {content_type or 'no Content-Type'!r:.80})."
        )
    if content_length is not None:
        try:
            length = int(content_length)
        except ValueError:
            raise MalformedRequest("The Content-Length header is not a number.") from None
        if length > limit:
            raise PayloadTooLarge(f"The body is {length} bytes; the limit is {limit} bytes.")
    body = b""
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


async def read_optional_json(request: Request, limit: int) -> Any:
    """A JSON body, or None when the request has none (no Content-Length or 0, not chunked)."""
    headers = request.headers
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return None
    return await read_json(request, limit)


# Query and path parameters: each parsed by one helper here that range-checks it, so a value
# the code cannot use is a 400 naming the parameter (`?name` in `errors[].path`), never a 500.


def query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = low - 1
    if raw.isascii() and len(raw) <= 20:
        with contextlib.suppress(ValueError):
            value = int(raw)
    if not low <= value <= high:
        raise MalformedRequest(
            f"Query parameter {name!r} must be an integer from {low} to {high}.",
            errors=[{"path": f"?{name}", "message": f"expected an integer from {low} to {high}"}],
        )
    return value


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", ""):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise MalformedRequest(
        f"Query parameter {name!r} must be true or false.",
        errors=[{"path": f"?{name}", "message": "expected true or false"}],
    )


def query_text(request: Request, name: str, *, max_length: int = 200) -> str | None:
    """A free-text filter: at most `max_length` characters, no control characters (NUL
    cannot even be sent to PostgreSQL)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if len(raw) > max_length or names.has_control(raw):
        message = f"at most {max_length} characters, no control characters"
        raise MalformedRequest(
            f"Query parameter {name!r} is not usable: {message}.",
            errors=[{"path": f"?{name}", "message": message}],
        )
    return raw


def query_time(request: Request, name: str) -> datetime | None:
    """An RFC 3339 date-time with a time zone, as UTC (see `lifecycle.parse_datetime` for the
    range)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    parsed = parse_datetime(raw)
    if parsed is None:
        message = (
            "expected an RFC 3339 date-time with a time zone between years 0001 and 9999 "
            "in UTC, e.g. 2026-01-31T00:00:00Z"
        )
        raise MalformedRequest(
            f"Query parameter {name!r} is not a usable date-time.",
            errors=[{"path": f"?{name}", "message": message}],
        )
    return parsed


def path_name(request: Request) -> str:
    """The `{name}` of a prompt route. Something that is not a prompt name names no prompt: a
    404, like any unknown name."""
    name: str = request.path_params["name"]
    if not names.is_name(name):
        raise NotFound(f"No prompt named {name[:80]!r}.")
    return name


def path_version(request: Request) -> int:
    """The `{version}` of a route; beyond the largest version number it names no version: a
    404, like any unknown version (never an overflow in the database driver)."""
    number: int = request.path_params["version"]
    if not 1 <= number <= MAX_VERSION:
        name = str(request.path_params.get("name", ""))[:80]
        raise NotFound(f"Prompt {name!r} has no version {str(number)[:24]}.")
    return number


def path_label(request: Request) -> str:
    label: str = request.path_params["label"]
    if not names.is_name(label):
        raise MalformedRequest(
            f"{label[:80]!r} is not a label name.",
            errors=[{"path": "{label}", "message": f"a label is {names.NAME_RULE}"}],
        )
    return label


def path_key_id(request: Request) -> str:
    key_id: str = request.path_params["key_id"]
    if _KEY_ID.fullmatch(key_id) is None:
        raise NotFound(f"No API key with id {key_id[:40]!r}.")
    return key_id


class _BoundedInteger(IntegerConvertor):
    """Starlette's `{x:int}`, but a number too long for `int()` (more than 4,300 digits raise
    ValueError, a 500 while routing) is just a number beyond any range: handlers 404 it."""

    def convert(self, value: str) -> int:
        return int(value) if len(value) <= 20 else 2**70


Endpoint = Callable[[Request], Awaitable[Response]] | ASGIApp


def raw(endpoint: ASGIApp) -> ASGIApp:
    """Mark a plain ASGI endpoint for `route`: it gets (scope, receive, send), no Request."""
    endpoint.promptapi_asgi = True  # type: ignore[attr-defined]
    return endpoint


class _Dispatch:
    def __init__(self, table: dict[str, ASGIApp]) -> None:
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.table[scope["method"]](scope, receive, send)


def route(path: str, **handlers: Endpoint) -> Route:
    """One route per path with a handler per method, so a 405 lists every allowed method.
    Handlers take a Request, or are plain ASGI endpoints marked with `raw`."""
    table: dict[str, ASGIApp] = {
        method.upper(): handler
        if getattr(handler, "promptapi_asgi", False)
        else request_response(handler)  # type: ignore[arg-type]
        for method, handler in handlers.items()
    }
    if "GET" in table:
        table["HEAD"] = table["GET"]
    found = Route(path, _Dispatch(table), methods=list(table))
    for param, convertor in found.param_convertors.items():
        if isinstance(convertor, IntegerConvertor):
            found.param_convertors[param] = _BoundedInteger()
    # Starlette anchors the path with `$`, which in Python also matches before a final newline
    # (`/admin/v1/sync%0A` would be `/admin/v1/sync`): match the whole path instead.
    found.path_regex = re.compile(found.path_regex.pattern.removesuffix("$") + r"\Z")
    return found
