"""Interactive API docs at /docs: Swagger UI, with every asset served from the package."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from promptapi.errors import NotFound
from promptapi.web.http import route

STATIC = Path(__file__).parent / "static" / "docs"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",
}
# Only these files are served: a name is looked up in this table, never joined to a path.
ASSETS = {
    p.name: _TYPES[p.suffix]
    for p in sorted(STATIC.iterdir())
    if p.is_file() and p.suffix in _TYPES and p.name != "index.html"
}
# Nothing on the page may come from, or be sent to, another origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


async def docs_page(request: Request) -> Response:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", **SECURITY_HEADERS},
    )


async def docs_asset(request: Request) -> Response:
    name = request.path_params["file"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"No docs asset {name[:100]!r}.")
    return FileResponse(
        STATIC / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", **SECURITY_HEADERS},
    )


routes = [
    route("/docs", get=docs_page),
    route("/docs/assets/{file}", get=docs_asset),
]
