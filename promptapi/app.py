"""Wiring: settings -> gateway (store, registry, providers, recorder) -> routes -> app."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from promptapi.config import Settings
from promptapi.gateway import Gateway
from promptapi.web import admin, catalog, docs, invoke, openapi, system
from promptapi.web.errors import EXCEPTION_HANDLERS, RequestIdFilter, RequestIdMiddleware
from promptapi.web.throttle import AuthThrottle
from promptapi.web.timeouts import BodyTimeoutMiddleware

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _tune_gc() -> None:
    """Measured on the benchmark: with CPython's default thresholds, garbage collection costs a
    third of the CPU per call. Everything alive after start-up is long-lived, so freeze it out
    of the collector's sight, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def create_app(settings: Settings | None = None, *, prepared: bool = False) -> Starlette:
    """The ASGI app. `prepared=True` skips the one-time work (migrations, admin token, file sync)
    that `promptapi serve` already did before starting its workers."""
    settings = settings or Settings.from_env()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not prepared:
            await gateway.prepare()
        await gateway.start()
        _tune_gc()
        try:
            yield
        finally:
            await gateway.aclose()

    app = Starlette(
        routes=[*invoke.routes, *admin.routes, *system.routes, *openapi.routes, *docs.routes],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(BodyTimeoutMiddleware, timeout=settings.body_timeout),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.auth_throttle = AuthThrottle(
        settings.auth_failure_limit,
        settings.auth_failure_window,
        settings.auth_throttle_addresses,
    )
    app.router.routes.extend(catalog.routes(settings))
    return app


def create_prepared_app() -> Starlette:
    """Factory for uvicorn workers started by `promptapi serve`."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings, prepared=True)
