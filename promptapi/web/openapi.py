"""The OpenAPI 3.1 document: one typed operation per published prompt, plus the fixed API.

Built from the in-memory registry and cached until the registry changes (its `generation`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from promptapi import __version__
from promptapi.gateway import Gateway
from promptapi.lifecycle import DEPRECATED, DRAFT, RETIRED
from promptapi.prompts import Prompt
from promptapi.registry import Registry
from promptapi.web.components import Components, pascal
from promptapi.web.http import route
from promptapi.web.openapi_fixed import (
    ADMIN,
    CONSUMER,
    HEADERS,
    INVOKE_ERRORS,
    error_responses,
    fixed_paths,
    header_refs,
    json_body,
    json_response,
    shared_schemas,
)

OPENAPI_VERSION = "3.1.0"
# Prompt schemas are JSON Schema 2020-12. OpenAPI's base dialect is 2020-12 plus keywords that
# are annotations only (discriminator, xml, externalDocs, example), so they validate the same
# under it, and it is the one dialect every OpenAPI tool supports.
DIALECT = "https://spec.openapis.org/oas/3.1/dialect/base"
# Versions in these states are not served to consumers, so not documented.
HIDDEN_STATES = frozenset({DRAFT, RETIRED})
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")

STREAM_TEXT = (
    "The answer is a stream of server-sent events: `delta` events carry text as the model "
    "produces it, then one final `done` event carries the whole envelope (what the JSON "
    "operation answers), or an `error` event carries a problem. Errors found before the stream "
    "starts are answered as problem+json."
)


def operation_ids(wanted: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """Unique ids for (wanted id, priority) pairs: among equal wanted ids, the lowest priority
    keeps the plain id and the others get `_2`, `_3`, ... in priority order."""
    order = sorted(range(len(wanted)), key=lambda i: (wanted[i][0], wanted[i][1]))
    taken: set[str] = {w for w, _ in wanted}
    result = [""] * len(wanted)
    seen: set[str] = set()
    for i in order:
        base = wanted[i][0]
        if base not in seen:
            seen.add(base)
            result[i] = base
            continue
        n = 2
        while f"{base}_{n}" in taken:
            n += 1
        result[i] = f"{base}_{n}"
        taken.add(result[i])
    return result


def _summary(prompt: Prompt) -> str:
    """The description's first sentence, on one line."""
    paragraph = " ".join(prompt.description.strip().split("\n\n")[0].split())
    sentence = paragraph.split(". ", 1)[0].rstrip(".") + "." if paragraph else ""
    text = sentence or f"Call the prompt {prompt.name}"
    return text if len(text) <= 120 else text[:119] + "…"


def _tags(prompt: Prompt) -> list[str]:
    tags = prompt.definition.get("tags")
    if isinstance(tags, list) and tags and all(isinstance(t, str) and t for t in tags):
        return list(tags)
    return ["prompts"]


def _example_key(example: dict[str, Any], i: int, used: set[str]) -> str:
    name = example.get("name")
    key = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") if isinstance(name, str) else ""
    key = key or f"example-{i + 1}"
    while key in used:
        key += f"-{i + 1}"
    used.add(key)
    return key


class _Builder:
    def __init__(self, registry: Registry, *, anonymous: bool) -> None:
        self.registry = registry
        self.anonymous = anonymous
        self.components = Components()
        self.bases: dict[str, str] = {}
        shared_schemas(self.components)

    def build(self) -> dict[str, Any]:
        names = self.registry.names()
        unique = operation_ids([(pascal(n), ("-" in n, n)) for n in names])
        self.bases = {n: u.replace("_", "") for n, u in zip(names, unique, strict=True)}
        # (path, method, prompt, pinned): the current version of each prompt (call and
        # describe), then every served version pinned.
        # (path, method, kind, prompt, pinned): the current version of each prompt (call,
        # stream and describe), then every served version pinned (call and stream). Streaming
        # has its own path, so the JSON operation's 200 is JSON only and a generated client
        # reads it as it is.
        planned: list[tuple[str, str, str, Prompt, bool]] = []
        for name in names:
            current = self.registry.resolve(name)
            planned.append((f"/v1/prompts/{name}", "post", "call", current, False))
            planned.append((f"/v1/prompts/{name}", "get", "describe", current, False))
            planned.append((f"/v1/prompts/{name}/stream", "post", "stream", current, False))
        states: dict[tuple[str, int], str] = {}
        for name in names:
            for version in self.registry.versions(name):
                states[(name, version.prompt.version)] = version.state
                if version.state not in HIDDEN_STATES:
                    path = f"/v1/prompts/{name}/versions/{version.prompt.version}"
                    planned.append((path, "post", "call", version.prompt, True))
                    planned.append((f"{path}/stream", "post", "stream", version.prompt, True))
        wanted = [
            (
                f"{kind}_"
                + _NOT_IDENTIFIER.sub("_", p.name)
                + (f"_v{p.version}" if pinned else ""),
                (pinned, "-" in p.name, p.name, p.version),
            )
            for _, _, kind, p, pinned in planned
        ]
        paths: dict[str, dict[str, Any]] = {}
        for (path, method, kind, prompt, pinned), op_id in zip(
            planned, operation_ids(wanted), strict=True
        ):
            if kind == "describe":
                op = self.describe(prompt, op_id)
            else:
                state = states.get((prompt.name, prompt.version), "published")
                op = self.operation(prompt, op_id, pinned=pinned, state=state, kind=kind)
            paths.setdefault(path, {})[method] = op
        paths.update(fixed_paths(self.components, anonymous=self.anonymous))
        used = _refs(paths, self.components.schemas)
        return {
            "openapi": OPENAPI_VERSION,
            "jsonSchemaDialect": DIALECT,
            "info": {
                "title": "promptapi",
                "version": __version__,
                "description": (
                    "Stored LLM prompts served as typed REST endpoints. Each published prompt "
                    "is one operation, typed by the prompt's own input and output JSON Schemas."
                ),
                "license": {"name": "MIT", "identifier": "MIT"},
            },
            "tags": self.tags(paths),
            "paths": paths,
            "components": {
                "schemas": {k: v for k, v in sorted(self.components.schemas.items()) if k in used},
                "headers": {k: v for k, v in HEADERS.items() if k in used},
                "securitySchemes": {
                    CONSUMER: {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A consumer API key (`POST /admin/v1/keys`).",
                    },
                    ADMIN: {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "The admin token.",
                    },
                },
            },
        }

    @staticmethod
    def tags(paths: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
        described = {
            "prompts": "Prompts served as endpoints, and what a consumer key can see.",
            "admin": "The admin API: prompts, versions, keys, call log, models, sync.",
            "system": "Health, problem types and these docs.",
        }
        used = sorted({t for item in paths.values() for op in item.values() for t in op["tags"]})
        return [
            {"name": t, "description": described.get(t, f"Prompts tagged `{t}`.")} for t in used
        ]

    def describe(self, prompt: Prompt, op_id: str) -> dict[str, Any]:
        return {
            "operationId": op_id,
            "summary": f"Describe {prompt.name}: schemas, examples, versions",
            "description": f"What `POST /v1/prompts/{prompt.name}` takes and answers: its input "
            "and output schemas, examples, versions and labels. Needs a consumer API key.",
            "tags": _tags(prompt),
            "responses": {
                "200": json_response(
                    f"What {prompt.name} takes and answers.", self.components.ref("PromptDetail")
                ),
                **error_responses((401, 403, 404), self.components),
            },
            "security": self.security(),
        }

    def security(self) -> list[dict[str, list[str]]]:
        return [{CONSUMER: []}, *([{}] if self.anonymous else [])]

    def operation(
        self, prompt: Prompt, op_id: str, *, pinned: bool, state: str, kind: str
    ) -> dict[str, Any]:
        base = self.bases[prompt.name]
        stem = f"{base}V{prompt.version}" if pinned else base
        resource = f"urn:promptapi:prompt:{prompt.name}:{prompt.version}"
        input_ref = self.components.add(
            f"{stem}Input",
            prompt.input_schema,
            resource_id=f"{resource}:input",
            group=f"{base}Input",
        )
        if prompt.output_schema is not None:
            output_ref = self.components.add(
                f"{stem}Output",
                prompt.output_schema,
                resource_id=f"{resource}:output",
                group=f"{base}Output",
            )
        else:
            output_ref = {"type": "string", "description": "The model's answer, as text."}
        version_schema: dict[str, Any] = (
            {"const": prompt.version} if pinned else {"type": "integer", "minimum": 1}
        )
        properties = {
            "id": {"type": "string", "description": "The call's id."},
            "prompt": {
                "type": "object",
                "properties": {"name": {"const": prompt.name}, "version": version_schema},
                "required": ["name", "version"],
            },
            "model": {"type": "string", "description": "The model that answered."},
            "output": output_ref,
            "usage": self.components.ref("Usage"),
            "cached": {"type": "boolean"},
            "mock": {"type": "boolean", "description": "Answered by the mock provider."},
            "latency_ms": {"type": "number"},
            "deployment": {
                "type": ["string", "null"],
                "description": "Which deployment of the model alias answered.",
            },
            "attempts": {
                "type": "integer",
                "minimum": 0,
                "description": "Upstream attempts it took (retries and fallbacks included).",
            },
        }
        envelope = self.components.claim(
            f"{stem}Result",
            {
                "type": "object",
                "description": f"The answer of {prompt.name}"
                + (f" version {prompt.version}." if pinned else "."),
                "properties": properties,
                "required": list(properties),
            },
        )
        body = json_body(input_ref)
        requests, responses = self.examples(prompt, pinned)
        if requests:
            body["content"]["application/json"]["examples"] = requests
        here = f"/v1/prompts/{prompt.name}" + (f"/versions/{prompt.version}" if pinned else "")
        if kind == "stream":
            ok: dict[str, Any] = {
                "description": STREAM_TEXT,
                "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}},
                "content": {"text/event-stream": {"schema": self.event_schema(envelope)}},
            }
            how = (
                f"Streams the answer of `POST {here}`. The same stream answers that path with "
                "`Accept: text/event-stream` or `?stream=true`."
            )
        else:
            ok = {
                "description": "The model's answer in the envelope.",
                "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}},
                "content": {"application/json": {"schema": envelope}},
            }
            if responses:
                ok["content"]["application/json"]["examples"] = responses
            how = (
                f"To stream the answer, POST the same body to `{here}/stream` (or send "
                "`Accept: text/event-stream`, or `?stream=true`)."
            )
        description = prompt.description.strip() or f"Calls the prompt {prompt.name}."
        which = (
            f"This operation is pinned to version {prompt.version}."
            if pinned
            else f"Calls the current version (now {prompt.version}); "
            f"`/v1/prompts/{prompt.name}/versions/{{version}}` pins one."
        )
        op: dict[str, Any] = {
            "operationId": op_id,
            "summary": _summary(prompt) if kind == "call" else f"Stream {prompt.name}",
            "description": f"{description}\n\n{which} Model alias: `{prompt.model}`. {how}",
            "tags": _tags(prompt),
            "requestBody": body,
            "responses": {"200": ok, **error_responses(INVOKE_ERRORS, self.components)},
            "security": self.security(),
        }
        op["parameters"] = []
        if not pinned:
            op["parameters"].append(
                {
                    "name": "label",
                    "in": "query",
                    "required": False,
                    "description": "Call the version this label points at (404 if there is no "
                    "such label) instead of the current one. Its own pinned operation gives "
                    "that version's exact input and output.",
                    "schema": {"type": "string", "minLength": 1},
                }
            )
        if not op["parameters"]:
            del op["parameters"]
        if state == DEPRECATED:
            op["deprecated"] = True
            ok["headers"].update(header_refs("Deprecation", "Sunset", "Link"))
        return op

    def event_schema(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """One server-sent event (`event` and its JSON `data`), as OpenAPI 3.2's `itemSchema`
        would say it: a `delta` with text, then `done` with the envelope or `error`."""

        def event(name: str, data: dict[str, Any]) -> dict[str, Any]:
            return {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": data,
                    },
                },
            }

        delta = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        return {
            "description": "Each event of the stream.",
            "oneOf": [
                event("delta", delta),
                event("done", envelope),
                event("error", self.components.ref("Problem")),
            ],
        }

    def examples(self, prompt: Prompt, pinned: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        requests: dict[str, Any] = {}
        responses: dict[str, Any] = {}
        used: set[str] = set()
        for i, example in enumerate(prompt.examples):
            key = _example_key(example, i, used)
            summary = example.get("name") if isinstance(example.get("name"), str) else None
            requests[key] = {"value": example["input"], **({"summary": summary} if summary else {})}
            if "output" not in example:
                continue
            output = example["output"]
            if prompt.output_schema is None and not isinstance(output, str):
                continue
            responses[key] = {
                "value": {
                    "id": "call_0000000000000000",
                    "prompt": {"name": prompt.name, "version": prompt.version},
                    "model": prompt.model,
                    "output": output,
                    "usage": {"input_tokens": 0, "output_tokens": 0, "cost_usd": None},
                    "cached": False,
                    "mock": False,
                    "latency_ms": 0.0,
                    "deployment": None,
                    "attempts": 1,
                }
            }
        return requests, responses


def _refs(paths: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The names of the components the paths use, directly or through other components."""
    used: set[str] = set()
    pending: list[Any] = [paths]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key in ("$ref", "$dynamicRef"):
                ref = node.get(key)
                if not isinstance(ref, str) or not ref.startswith("#/components/"):
                    continue
                name = unquote(ref.split("/")[3].replace("~1", "/").replace("~0", "~"))
                if name not in used:
                    used.add(name)
                    if ref.startswith("#/components/schemas/") and name in schemas:
                        pending.append(schemas[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return used


def build_document(registry: Registry, *, anonymous: bool = False) -> dict[str, Any]:
    return _Builder(registry, anonymous=anonymous).build()


class DocumentCache:
    """The encoded document, rebuilt only when the registry's generation moves."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self.body = b""
        self.etag = ""
        self.builds = 0

    def get(self, registry: Registry, *, anonymous: bool) -> DocumentCache:
        key = (id(registry), registry.generation)
        if key != self._key:
            self.body = orjson.dumps(build_document(registry, anonymous=anonymous))
            # From the content, so every process serving the same prompts gives the same tag.
            self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:32]}"'
            self._key = key
            self.builds += 1
        return self


def _cache(request: Request) -> DocumentCache:
    state = request.app.state
    cache = getattr(state, "openapi_cache", None)
    if cache is None:
        cache = state.openapi_cache = DocumentCache()
    return cache


_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$"
)
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+){0,32}/?$")


def _first(value: str | None) -> str:
    return value.split(",", 1)[0].strip() if value else ""


def server_url(request: Request, *, trust_proxy: bool) -> str:
    """Where this server was reached, as the client sees it: scheme, Host and mount path, or,
    behind a trusted proxy, its X-Forwarded-Proto, -Host and -Prefix. A value that is not a
    plain host or path is ignored."""
    headers = request.headers
    scheme = request.url.scheme if request.url.scheme in ("http", "https") else "http"
    host = headers.get("host", "")
    prefix = request.scope.get("root_path", "")
    if trust_proxy:
        proto = _first(headers.get("x-forwarded-proto")).lower()
        scheme = proto if proto in ("http", "https") else scheme
        forwarded_host = _first(headers.get("x-forwarded-host"))
        host = forwarded_host if _HOST.match(forwarded_host) else host
        forwarded_prefix = _first(headers.get("x-forwarded-prefix"))
        prefix = forwarded_prefix if _PREFIX.match(forwarded_prefix) else prefix
    prefix = prefix.rstrip("/") if _PREFIX.match(prefix) else ""
    if not _HOST.match(host):
        return prefix or "/"  # relative to where the document was fetched
    return f"{scheme}://{host}{prefix}"


async def openapi_json(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    settings = gateway.settings
    cache = _cache(request).get(gateway.registry, anonymous=settings.allow_anonymous)
    url = server_url(request, trust_proxy=settings.forwarded_allow_ips is not None)
    # The cached document without `servers`, with this request's server spliced in first.
    servers = orjson.dumps({"servers": [{"url": url}]})
    body = servers[:-1] + b"," + cache.body[1:]
    etag = f'"{hashlib.sha256(servers + cache.etag.encode()).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": VARY}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


VARY = "Host, X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Prefix"


routes = [route("/openapi.json", get=openapi_json)]
