"""The catalog: server-rendered HTML pages where people find, read and try every published
prompt API (`/`, `/prompts/{name}`), with their CSS and JS under `/static/catalog/`.

Pages are public unless `PROMPTAPI_CATALOG=off`. They are built from the in-memory registry
(no database round trip), never list drafts, and escape everything they show. The pages load
only their own assets (CSP `'self'`, no inline script); the try-it form calls the prompt's API
endpoint from the browser with a key the visitor pastes, which stays in sessionStorage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptapi.config import Settings
from promptapi.errors import ConfigError, NotFound, PromptAPIError
from promptapi.gateway import Gateway
from promptapi.keys import KEY_PREFIX
from promptapi.prompts import Prompt
from promptapi.registry import Registry, Version
from promptapi.samples import sample
from promptapi.web import schemaview, snippets
from promptapi.web.http import route

MODES = ("public", "off")
STATIC_DIR = Path(__file__).parent / "static" / "catalog"
STATIC_PREFIX = "/static/catalog"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("promptapi.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _asset_versions() -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in STATIC_DIR.iterdir()
        if path.is_file()
    }


_ASSETS = _asset_versions()


def _static(name: str) -> str:
    return f"{STATIC_PREFIX}/{name}?v={_ASSETS[name]}"


_env.globals["static"] = _static
# What a consumer key looks like, for the try-it form: never the admin token's prefix.
_env.globals["key_prefix"] = KEY_PREFIX


def _paragraphs(text: str) -> list[str]:
    """Description text as paragraphs: blank lines split, single line breaks are spaces."""
    blocks = [" ".join(block.split()) for block in text.replace("\r\n", "\n").split("\n\n")]
    return [block for block in blocks if block]


_env.filters["paragraphs"] = _paragraphs
_env.filters["fromjson"] = json.loads


# -- what the pages show ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One prompt API as the catalog lists it."""

    name: str
    description: str
    summary: str
    tags: tuple[str, ...]
    version: int
    state: str
    model: str
    labels: tuple[str, ...]
    inputs: tuple[str, ...]
    structured: bool
    haystack: str


def _tags(prompt: Prompt) -> tuple[str, ...]:
    tags = prompt.definition.get("tags")
    return tuple(str(t) for t in tags) if isinstance(tags, list) else ()


def _labels(registry: Registry, name: str, version: Version) -> tuple[str, ...]:
    """The labels pointing at a version."""
    number = version.prompt.version
    return tuple(label for label, target in registry.labels(name).items() if target == number)


def _summary(text: str, limit: int = 220) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rsplit(" ", 1)[0] + "…"


def _visible_versions(registry: Registry, name: str) -> list[Version]:
    return [v for v in registry.versions(name) if v.state != "draft"]


# Entries and their cards are built once per distinct content (definition digest, state,
# labels) and reused: without this, listing 300 prompts took ~80 ms of the event loop that
# also serves the API; with it, ~6 ms. Keys are content, so they never go stale.
_CACHE_SIZE = 4096
_entries: dict[tuple[str, str, tuple[str, ...]], Entry] = {}
_cards: dict[tuple[Entry, bool], Markup] = {}


def _current(registry: Registry, name: str) -> Version:
    """The version unpinned calls get: 404 for an unknown or draft-only prompt, 410 when every
    version is retired."""
    return registry.lookup(name)


def _entry(registry: Registry, name: str) -> Entry:
    version = _current(registry, name)
    labels = _labels(registry, name, version)
    key = (version.prompt.digest, version.state, labels)
    entry = _entries.get(key)
    if entry is None:
        if len(_entries) >= _CACHE_SIZE:
            _entries.clear()
        entry = _entries[key] = _make_entry(version, labels)
    return entry


def _make_entry(version: Version, labels: tuple[str, ...]) -> Entry:
    prompt = version.prompt
    name = prompt.name
    props = prompt.input_schema.get("properties")
    inputs = tuple(props) if isinstance(props, dict) else ()
    tags = _tags(prompt)
    words = [name, prompt.description, prompt.model, *tags, *inputs]
    return Entry(
        name=name,
        description=prompt.description,
        summary=_summary(prompt.description),
        tags=tags,
        version=prompt.version,
        state=version.state,
        model=prompt.model,
        labels=labels,
        inputs=inputs,
        structured=prompt.output_schema is not None,
        haystack=" ".join(words).lower(),
    )


def entries(registry: Registry) -> list[Entry]:
    """Every prompt with a current (published) version, by name."""
    found = []
    for name in registry.names():
        try:
            found.append(_entry(registry, name))
        except PromptAPIError:  # changed since names() was read
            continue
    return found


def matches(entry: Entry, q: str, tag: str, model: str) -> bool:
    """The server's filter; the page's script applies the same rules as the visitor types."""
    if tag and tag not in entry.tags:
        return False
    if model and model != entry.model:
        return False
    return all(term in entry.haystack for term in q.lower().split())


def _card(entry: Entry, hidden: bool) -> Markup:
    """A listing card's HTML (`hidden` when the server's filter leaves it out)."""
    html = _cards.get((entry, hidden))
    if html is None:
        if len(_cards) >= _CACHE_SIZE:
            _cards.clear()
        rendered = _env.get_template("_card.html").render(e=entry, hidden=hidden)
        html = _cards[entry, hidden] = Markup(rendered)
    return html


_env.globals["card"] = _card


# -- responses ----------------------------------------------------------------------------


def _page(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    paths = {getattr(r, "path", None) for r in request.app.routes}
    html = _env.get_template(template).render(
        has_docs="/docs" in paths, has_openapi="/openapi.json" in paths, **context
    )
    return HTMLResponse(html, status_code=status_code, headers={**(headers or {}), **PAGE_HEADERS})


def error_page(error: PromptAPIError, request: Request) -> Response:
    """The HTML form of a problem, for errors raised while rendering a catalog page;
    `web/errors.py` calls it instead of writing problem+json."""
    return _page(
        request,
        "error.html",
        error.status,
        error.headers,
        error=error,
        request_id=request.scope.get("state", {}).get("request_id", ""),
    )


def _catalog_request(request: Request) -> Gateway:
    request.scope.setdefault("state", {})["error_page"] = error_page
    gateway: Gateway = request.app.state.gateway
    return gateway


async def index(request: Request) -> Response:
    gateway = _catalog_request(request)
    params = request.query_params
    q, tag, model = (params.get(k, "").strip()[:200] for k in ("q", "tag", "model"))
    everything = entries(gateway.registry)
    shown = [e for e in everything if matches(e, q, tag, model)]
    return _page(
        request,
        "index.html",
        entries=everything,
        shown={e.name for e in shown},
        count=len(shown),
        q=q,
        tag=tag,
        model=model,
        tags=sorted({t for e in everything for t in e.tags}),
        models=sorted({e.model for e in everything}),
    )


def _pick_version(registry: Registry, name: str, raw: str | None) -> tuple[Version, bool]:
    """The version a prompt page shows: the current one, or `?version=N` (never a draft)."""
    current = _current(registry, name)
    if raw is None or raw == "":
        return current, False
    if raw.isascii() and raw.isdigit() and len(raw) <= 10:
        for version in _visible_versions(registry, name):
            if version.prompt.version == int(raw):
                return version, version is not current
    raise NotFound(f"Prompt {name!r} has no published version {raw[:20]!r}.")


def _example_input(prompt: Prompt) -> Any:
    for example in prompt.examples:
        if isinstance(example, dict) and "input" in example:
            return example["input"]
    return sample(prompt.input_schema)


async def prompt_page(request: Request) -> Response:
    gateway = _catalog_request(request)
    registry = gateway.registry
    name = request.path_params["name"]
    version, pinned = _pick_version(registry, name, request.query_params.get("version"))
    current = _current(registry, name).prompt.version
    prompt = version.prompt
    path = f"/v1/prompts/{name}" + (f"/versions/{prompt.version}" if pinned else "")
    url = str(request.base_url).rstrip("/") + path
    example = _example_input(prompt)
    history = [
        {
            "version": v.prompt.version,
            "state": v.state,
            "created_at": v.created_at,
            "labels": _labels(registry, name, v),
            "digest": v.prompt.digest[:12],
            "current": v.prompt.version == current,
            "sunset": v.sunset,
            "successor": v.successor,
        }
        for v in reversed(_visible_versions(registry, name))
    ]
    return _page(
        request,
        "prompt.html",
        entry=_entry(registry, name),
        prompt=prompt,
        state=version.state,
        sunset=version.sunset,
        successor=version.successor,
        labels=_labels(registry, name, version),
        pinned=pinned,
        endpoint=path,
        input_rows=schemaview.field_rows(prompt.input_schema),
        output_rows=(
            schemaview.field_rows(prompt.output_schema) if prompt.output_schema is not None else []
        ),
        examples=[
            {
                "name": e.get("name"),
                "input": json.dumps(e.get("input"), ensure_ascii=False, indent=2),
                "output": (
                    json.dumps(e["output"], ensure_ascii=False, indent=2)
                    if "output" in e and not isinstance(e["output"], str)
                    else e.get("output")
                ),
            }
            for e in prompt.examples
            if isinstance(e, dict)
        ],
        example_inputs=[
            e["input"] for e in prompt.examples if isinstance(e, dict) and "input" in e
        ],
        example_json=json.dumps(example, ensure_ascii=False, indent=2),
        form=schemaview.form(prompt.input_schema),
        snippets=snippets.all_snippets(url, example),
        history=history,
        anonymous=gateway.settings.allow_anonymous,
    )


# -- static assets ------------------------------------------------------------------------


class _StaticHeaders:
    """Pure ASGI: nosniff and caching on the catalog's own assets (their URLs carry a
    content hash, so a changed file gets a new URL)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"public, max-age=86400"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes(settings: Settings) -> list[BaseRoute]:
    """The catalog's routes for this configuration (none when it is off)."""
    mode = settings.catalog.strip().lower()
    if mode not in MODES:
        raise ConfigError(
            f"PROMPTAPI_CATALOG must be one of {', '.join(MODES)}, got {settings.catalog!r}"
        )
    if mode == "off":
        return []
    return [
        route("/", get=index),
        route("/prompts/{name}", get=prompt_page),
        Mount(STATIC_PREFIX, app=_StaticHeaders(StaticFiles(directory=STATIC_DIR))),
    ]
