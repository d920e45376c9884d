"""Who is calling: the admin credential or a consumer API key, as a bearer token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

from promptapi.errors import Forbidden, Unauthorized
from promptapi.gateway import Gateway
from promptapi.keys import ADMIN, ANONYMOUS, Caller, KeyCache
from promptapi.web import throttle


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Use `Authorization: Bearer <token>`.")
    return token


async def consumer(
    authorization: str | None, gateway: Gateway, scope: Scope | None = None
) -> Caller:
    """The caller of a consumer route. With the request's `scope`, failures are throttled per
    client address (promptapi.web.throttle); a known key is never held up."""
    token = bearer(authorization)
    if token is None:
        if gateway.settings.allow_anonymous:
            return ANONYMOUS
        raise Unauthorized("This endpoint needs an API key: `Authorization: Bearer <key>`.")
    caller = gateway.keys.check(token)
    if caller is not None:
        return caller
    if scope is not None:
        throttle.check(scope)  # before the database refresh an unknown key triggers
    caller = await gateway.caller(token)
    if caller is None:
        if scope is not None:
            throttle.failure(scope)
        raise Unauthorized("The API key is not valid or has been revoked.")
    return caller


def admin(request: Request, keys: KeyCache) -> Caller:
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("The admin API needs the admin token: `Authorization: Bearer <token>`.")
    if keys.is_admin(token):
        return ADMIN
    if keys.check(token) is not None:
        raise Forbidden("Consumer API keys cannot use the admin API.")
    throttle.failure(request.scope)
    raise Unauthorized("The admin token is not valid.")
