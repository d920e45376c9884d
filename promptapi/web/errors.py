"""Every error becomes an RFC 9457 problem+json response here, and only here."""

from __future__ import annotations

import contextvars
import logging
import random
import re
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptapi import store_outage
from promptapi.errors import (
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PromptAPIError,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

log = logging.getLogger("promptapi.web")

PROBLEM_JSON = "application/problem+json"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_BY_STATUS: dict[int, type[PromptAPIError]] = {
    400: MalformedRequest,
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RequestIdMiddleware:
    """Pure ASGI: give every request an id (or keep a sane incoming X-Request-ID), put it in the
    response headers and in every log line written while handling it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        if request_id is None:
            request_id = f"req_{random.getrandbits(64):016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id") or request_id_var.get()


def problem(error: PromptAPIError, path: str, request_id: str) -> dict[str, Any]:
    """The RFC 9457 document for an error: the body of a problem+json response, and the data of
    a streamed call's `error` event."""
    body: dict[str, Any] = error.problem()
    body["instance"] = path
    body["request_id"] = request_id
    return body


def problem_response(error: PromptAPIError, request: Request) -> Response:
    # An HTML page (the catalog) registers how its errors are shown to people.
    page = request.scope.get("state", {}).get("error_page")
    if page is not None:
        return page(error, request)
    body = problem(error, request.url.path, request_id(request))
    return Response(
        orjson.dumps(body), status_code=error.status, headers=error.headers, media_type=PROBLEM_JSON
    )


def log_error(method: str, path: str, exc: PromptAPIError) -> None:
    if exc.status >= 500:
        log.warning("%s %s -> %s %s: %s", method, path, exc.status, exc.code, exc.detail)


async def handle_promptapi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PromptAPIError)
    log_error(request.method, request.url.path, exc)
    return problem_response(exc, request)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    cls = _BY_STATUS.get(exc.status_code)
    if cls is None:
        error = PromptAPIError(exc.detail)
        error.status = exc.status_code
    elif cls is NotFound:
        error = NotFound(f"No route {request.method} {request.url.path}.")
    elif cls is MethodNotAllowed:
        error = MethodNotAllowed(f"{request.url.path} does not accept {request.method}.")
    else:
        error = cls()
    error.headers = {**(exc.headers or {}), **error.headers}
    return problem_response(error, request)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Starlette answers these outside every middleware, so the id header is set here.
    error = PromptAPIError(headers={"X-Request-ID": request_id(request)})
    return problem_response(error, request)


async def handle_store_error(request: Request, exc: Exception) -> Response:
    """The one place a database outage becomes a 503 `database_unavailable`, whichever route
    met it; anything else goes on to the handler of last resort (500)."""
    if not store_outage.is_outage(exc):
        raise exc
    gateway = getattr(request.app.state, "gateway", None)
    wait = gateway.settings.db_retry_after if gateway is not None else 5
    log.warning(
        "%s %s -> 503 database_unavailable: %s", request.method, request.url.path, _kind(exc)
    )
    error = StoreUnavailable(
        "The database is unavailable; retry later.", headers={"Retry-After": str(wait)}
    )
    return problem_response(error, request)


def _kind(exc: BaseException) -> str:
    """The exception types down the cause chain, never their messages (they may hold a URL)."""
    kinds = []
    seen: BaseException | None = exc
    while seen is not None and len(kinds) < 4:
        kinds.append(type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(kinds)


EXCEPTION_HANDLERS = {
    PromptAPIError: handle_promptapi_error,
    HTTPException: handle_http_exception,
    **dict.fromkeys(store_outage.TYPES, handle_store_error),
    Exception: handle_unexpected,
}
