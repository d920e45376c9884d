"""The parts of the OpenAPI document that do not depend on the registry: shared schemas, error
responses, and the consumer listing, admin and system operations."""

from __future__ import annotations

from typing import Any

from promptapi.errors import all_problem_types
from promptapi.prompts import DEFINITION_SCHEMA, NAME_PATTERN
from promptapi.web.components import Components
from promptapi.web.docs import ASSETS

PROBLEM_JSON = "application/problem+json"
CONSUMER = "consumerKey"
ADMIN = "adminToken"

ERROR_TEXT = {
    400: "Malformed request: the body is not JSON, or a parameter has the wrong form.",
    401: "No credential, or a bad one.",
    403: "The credential is valid but not allowed here.",
    404: "No such prompt, version or resource.",
    409: "Conflicts with what is stored.",
    410: "The version has been retired.",
    413: "The body is larger than the server's limit.",
    415: "The body is not sent as `application/json`.",
    422: "The input failed validation; `errors` lists every problem with a JSON pointer.",
    429: "A limit of this server was reached (or too many failed authentications from this "
    "address); retry after `Retry-After` seconds.",
    502: "The model provider failed, refused our credential, or answered with output that does "
    "not match the output schema.",
    503: "No usable model provider (unreachable, rate-limiting us, or its circuit is open), or "
    "the database is unavailable (admin API); retry after `Retry-After` seconds.",
    504: "The model did not answer before the deadline.",
}
# Statuses a call of a prompt can answer with (see the status map in the README).
INVOKE_ERRORS = (400, 401, 403, 404, 410, 413, 415, 422, 429, 502, 503, 504)
ADMIN_ERRORS = (401, 403, 429, 503)
WRITE_ERRORS = (400, 413, 415)


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    return schema


def _nullable(type_: str) -> dict[str, Any]:
    return {"type": [type_, "null"]}


def shared_schemas(components: Components) -> None:
    """The server's own schemas. Responses may gain fields over time, so objects stay open."""
    add = components.fixed
    field_error = add(
        "FieldError",
        _object(
            {
                "path": {"type": "string", "description": "JSON pointer into the request"},
                "message": {"type": "string"},
            }
        ),
    )
    problem_properties = {
        "type": {"type": "string", "description": "`/problems/{code}`; GET it for details"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted(all_problem_types())},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": field_error},
    }
    required = ["type", "title", "status", "detail", "code", "instance", "request_id"]
    add(
        "Problem",
        {
            **_object(problem_properties, required),
            "description": "An RFC 9457 problem; `errors` is set for validation problems.",
        },
    )
    add(
        "ValidationProblem",
        {
            **_object(problem_properties, [*required, "errors"]),
            "description": "An RFC 9457 problem listing every field that failed, at once.",
        },
    )
    add(
        "Usage",
        _object(
            {
                "input_tokens": {"type": "integer", "minimum": 0},
                "output_tokens": {"type": "integer", "minimum": 0},
                "cost_usd": {
                    **_nullable("number"),
                    "description": "From the model alias's prices; null when it has none.",
                },
            }
        ),
    )
    add("PromptDefinition", DEFINITION_SCHEMA)
    version_summary = add(
        "VersionSummary",
        _object(
            {
                "version": {"type": "integer"},
                "state": {"type": "string"},
                "created_at": _nullable("string"),
                "digest": {"type": "string"},
            }
        ),
    )
    summary_properties = {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "version": {
            "type": ["integer", "null"],
            "description": "The current version; null when none is served (all drafts or retired).",
        },
        "model": {"type": "string"},
        "url": {"type": "string"},
    }
    add("PromptSummary", _object(summary_properties))
    add(
        "PromptDetail",
        _object(
            {
                **summary_properties,
                "input_schema": {"type": "object"},
                "output_schema": _nullable("object"),
                "examples": {"type": "array", "items": {"type": "object"}},
                "versions": {"type": "array", "items": version_summary},
            }
        ),
    )
    add(
        "VersionDetail",
        _object(
            {
                "name": {"type": "string"},
                "version": {"type": "integer"},
                "state": {"type": "string"},
                "created_at": _nullable("string"),
                "created_by": _nullable("string"),
                "digest": {"type": "string"},
                "definition": components.ref("PromptDefinition"),
            }
        ),
    )
    key_properties = {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "prefix": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "created_at": _nullable("string"),
        "revoked_at": _nullable("string"),
    }
    add("ApiKey", _object(key_properties))
    add(
        "ApiKeyCreated",
        _object({**key_properties, "key": {"type": "string", "description": "shown only once"}}),
    )
    add(
        "CallRecord",
        _object(
            {
                "id": {"type": "string"},
                "created_at": _nullable("string"),
                "request_id": _nullable("string"),
                "prompt_name": {"type": "string"},
                "prompt_version": _nullable("integer"),
                "model_alias": _nullable("string"),
                "model": _nullable("string"),
                "key_id": _nullable("string"),
                "status": {"type": "integer"},
                "error_code": _nullable("string"),
                "latency_ms": {"type": "number"},
                "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"},
                "cost_usd": _nullable("number"),
                "cached": {"type": "boolean"},
                "mock": {"type": "boolean"},
                "deployment": _nullable("string"),
                "attempts": _nullable("integer"),
            },
            ["id", "prompt_name", "status", "latency_ms"],
        ),
    )
    add(
        "ModelAlias",
        _object(
            {
                "alias": {"type": "string"},
                "provider": {"type": "string"},
                "model": {"type": "string"},
                "api_key_set": {"type": "boolean"},
            }
        ),
    )
    add(
        "SyncReport",
        _object(
            {
                "created": {"type": "array", "items": {"type": "string"}},
                "unchanged": {"type": "array", "items": {"type": "string"}},
                "errors": {
                    "type": "array",
                    "items": _object(
                        {"file": {"type": "string"}, "detail": {"type": "string"}},
                        ["file", "detail"],
                    ),
                },
            }
        ),
    )
    add(
        "ProblemType",
        _object(
            {
                "type": {"type": "string"},
                "code": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "description": {"type": "string"},
            }
        ),
    )


HEADERS: dict[str, Any] = {
    "RequestId": {
        "description": "The request id, also in the problem body and the server's log lines.",
        "required": True,
        "schema": {"type": "string"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "string"},
    },
    "WWWAuthenticate": {
        "description": "The expected scheme: `Bearer`.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Deprecation": {
        "description": "RFC 9745: when the version was deprecated (`@` unix seconds).",
        "schema": {"type": "string"},
    },
    "Sunset": {
        "description": "RFC 8594: when it will be retired (HTTP-date), if set.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'The version to move to, `rel="successor-version"`, if set.',
        "schema": {"type": "string"},
    },
}


def header_refs(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name.replace('-', '')}"} for name in names}


def _headers(*names: str) -> dict[str, Any]:
    return {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}, **header_refs(*names)}


def problem_response(status: int, components: Components) -> dict[str, Any]:
    schema = components.ref("ValidationProblem" if status == 422 else "Problem")
    headers = {401: ("WWW-Authenticate",), 429: ("Retry-After",), 503: ("Retry-After",)}
    return {
        "description": ERROR_TEXT.get(status, "Error."),
        "headers": _headers(*headers.get(status, ())),
        "content": {PROBLEM_JSON: {"schema": schema}},
    }


def error_responses(statuses: tuple[int, ...], components: Components) -> dict[str, Any]:
    """A problem+json response per status, plus `default` for anything unexpected (a 500)."""
    responses = {str(s): problem_response(s, components) for s in sorted(set(statuses))}
    responses["default"] = {
        "description": "Unexpected error (500), as a problem.",
        "headers": _headers(),
        "content": {PROBLEM_JSON: {"schema": components.ref("Problem")}},
    }
    return responses


def json_response(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(),
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


# Text that names something: no control characters (NUL cannot even be stored). Written as
# `not` + an unanchored pattern, which every regex engine reads the same way.
_NO_CONTROL = {"not": {"pattern": "[\u0000-\u001f\u007f-\u009f]"}}
_FILTER = {"type": "string", "maxLength": 200, **_NO_CONTROL}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


NAME_PARAM = _path_param("name", {"type": "string", "pattern": NAME_PATTERN}, "The prompt's name.")
VERSION_PARAM = _path_param(
    "version", {"type": "integer", "minimum": 1}, "A version number of the prompt."
)


def _op(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    errors: tuple[int, ...],
    components: Components,
    *,
    security: str | None,
    anonymous: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    who = {
        None: "Public: no credential needed.",
        ADMIN: "Needs the admin token.",
        CONSUMER: "Needs a consumer API key"
        + (" (optional: this server allows anonymous calls)." if anonymous else "."),
    }[security]
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": f"{summary.rstrip('.')}. {who}",
        "tags": [tag],
        **extra,
    }
    # Public operations say so explicitly: no security requirement at all.
    op["security"] = [] if security is None else [{security: []}, *([{}] if anonymous else [])]
    op["responses"] = {**responses, **error_responses(errors, components)}
    return op


def fixed_paths(components: Components, *, anonymous: bool) -> dict[str, dict[str, Any]]:
    ref = components.ref
    c = components

    def consumer(
        op_id: str, summary: str, responses: dict[str, Any], errors: tuple[int, ...], **extra: Any
    ) -> dict[str, Any]:
        return _op(
            op_id,
            summary,
            "prompts",
            responses,
            (401, 403, 429, *errors),
            c,
            security=CONSUMER,
            anonymous=anonymous,
            **extra,
        )

    def admin(
        op_id: str,
        summary: str,
        responses: dict[str, Any],
        errors: tuple[int, ...] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        return _op(
            op_id, summary, "admin", responses, (*ADMIN_ERRORS, *errors), c, security=ADMIN, **extra
        )

    def system(
        op_id: str,
        summary: str,
        responses: dict[str, Any],
        errors: tuple[int, ...] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        return _op(op_id, summary, "system", responses, errors, c, security=None, **extra)

    def listing(key: str, item: str) -> dict[str, Any]:
        return _object({key: {"type": "array", "items": ref(item)}})

    version_written = {
        "201": json_response(
            "Stored as a new version.",
            ref("VersionDetail"),
            headers={**_headers(), "Location": {"schema": {"type": "string"}, "required": True}},
        ),
        "200": json_response(
            "Identical to what is stored: nothing written.",
            ref("VersionDetail"),
            headers={**_headers(), "Location": {"schema": {"type": "string"}}},
        ),
    }
    new_version_body = {
        **DEFINITION_SCHEMA,
        "required": [r for r in DEFINITION_SCHEMA["required"] if r != "name"],
    }
    calls_params = [
        _query("prompt", _FILTER, "Only calls of this prompt."),
        _query("key_id", _FILTER, "Only calls made with this key."),
        _query(
            "status",
            {"type": "integer", "minimum": 100, "maximum": 599},
            "Only calls that answered this HTTP status.",
        ),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            "How many calls, newest first.",
        ),
    ]
    key_param = _path_param("key_id", {"type": "string"}, "The key's id.")
    key_body = {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "pattern": r"\S",
                **_NO_CONTROL,
            },
            "scopes": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 200, **_NO_CONTROL},
            },
            "allow_drafts": {
                "type": "boolean",
                "default": False,
                "description": "Whether this key may call draft versions.",
            },
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        **lifecycle_paths(c),
        "/v1/prompts": {
            "get": consumer(
                "listPrompts",
                "The prompts this key can call",
                {"200": json_response("The prompts.", listing("prompts", "PromptSummary"))},
                (),
            ),
        },
        "/admin/v1/prompts": {
            "post": admin(
                "createPrompt",
                "Register a prompt or its next version",
                version_written,
                (*WRITE_ERRORS, 409, 422),
                requestBody=json_body(ref("PromptDefinition")),
            ),
            "get": admin(
                "adminListPrompts",
                "Every prompt with its versions",
                {"200": json_response("The prompts.", listing("prompts", "PromptDetail"))},
            ),
        },
        "/admin/v1/prompts/{name}": {
            "get": admin(
                "adminGetPrompt",
                "One prompt",
                {"200": json_response("The prompt.", ref("PromptDetail"))},
                (404,),
                parameters=[NAME_PARAM],
            ),
        },
        "/admin/v1/prompts/{name}/versions": {
            "post": admin(
                "createPromptVersion",
                "Register a new version of a prompt",
                version_written,
                (*WRITE_ERRORS, 409, 422),
                parameters=[NAME_PARAM],
                requestBody=json_body(new_version_body),
            ),
        },
        "/admin/v1/prompts/{name}/versions/{version}": {
            "get": admin(
                "adminGetVersion",
                "One stored version with its full definition",
                {"200": json_response("The version.", ref("VersionDetail"))},
                (404,),
                parameters=[NAME_PARAM, VERSION_PARAM],
            ),
        },
        "/admin/v1/keys": {
            "post": admin(
                "createKey",
                "Create a consumer API key",
                {"201": json_response("The key; `key` is shown only here.", ref("ApiKeyCreated"))},
                (*WRITE_ERRORS, 422),
                requestBody=json_body(key_body),
            ),
            "get": admin(
                "listKeys",
                "Consumer API keys (never the key or its hash)",
                {"200": json_response("The keys.", listing("keys", "ApiKey"))},
            ),
        },
        "/admin/v1/keys/{key_id}": {
            "get": admin(
                "getKey",
                "One key",
                {"200": json_response("The key.", ref("ApiKey"))},
                (404,),
                parameters=[key_param],
            ),
            "delete": admin(
                "revokeKey",
                "Revoke a key",
                {"200": json_response("The revoked key.", ref("ApiKey"))},
                (404,),
                parameters=[key_param],
            ),
        },
        "/admin/v1/calls": {
            "get": admin(
                "listCalls",
                "The call log, newest first",
                {
                    "200": json_response(
                        "The calls.",
                        _object(
                            {
                                "calls": {"type": "array", "items": ref("CallRecord")},
                                "pending": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "Call records queued, not yet written.",
                                },
                            }
                        ),
                    )
                },
                (400,),
                parameters=calls_params,
            ),
        },
        "/admin/v1/models": {
            "get": admin(
                "listModels",
                "Model aliases (never the provider keys)",
                {"200": json_response("The aliases.", listing("models", "ModelAlias"))},
            ),
        },
        "/admin/v1/sync": {
            "post": admin(
                "syncPrompts",
                "Sync the prompts folder now",
                {
                    "200": json_response(
                        "What was created, unchanged or refused.", ref("SyncReport")
                    )
                },
            ),
        },
        "/admin/v1/policy": {
            "get": admin(
                "getPolicy",
                "The governance policy in force: every rule with its severity and options",
                {
                    "200": json_response(
                        "The policy.",
                        _object(
                            {
                                "source": {
                                    "type": "string",
                                    "description": "The policy file, or `built-in defaults`.",
                                },
                                "rules": {
                                    "type": "object",
                                    "additionalProperties": _object(
                                        {
                                            "severity": {
                                                "enum": ["error", "warning", "off"],
                                            }
                                        }
                                    ),
                                },
                            }
                        ),
                    )
                },
            ),
        },
        "/healthz": {
            "get": system(
                "healthz",
                "Liveness",
                {"200": json_response("Alive.", _object({"status": {"const": "ok"}}))},
            ),
        },
        "/readyz": {
            "get": system(
                "readyz",
                "Readiness: the database answers",
                {
                    "200": json_response("Ready.", _object({"status": {"const": "ok"}})),
                    "503": json_response(
                        "The database does not answer.", _object({"status": {"type": "string"}})
                    ),
                },
            ),
        },
        "/problems": {
            "get": system(
                "listProblemTypes",
                "Every problem type",
                {"200": json_response("The problem types.", listing("problems", "ProblemType"))},
            ),
        },
        "/problems/{code}": {
            "get": system(
                "getProblemType",
                "One problem type",
                {"200": json_response("The problem type.", ref("ProblemType"))},
                (404,),
                parameters=[_path_param("code", {"type": "string"}, "The problem's `code`.")],
            ),
        },
        "/openapi.json": {
            "get": system(
                "getOpenAPI",
                "This document",
                {
                    "200": json_response(
                        "The OpenAPI 3.1 document.",
                        {"type": "object"},
                        headers={**_headers(), "ETag": {"schema": {"type": "string"}}},
                    ),
                    "304": {
                        "description": "Unchanged since the `If-None-Match` ETag.",
                        "headers": _headers(),
                    },
                },
            ),
        },
        "/": {
            "get": system(
                "catalogPage",
                "The catalog: every published prompt API (HTML)",
                {"200": {"description": "The page.", "headers": _headers(), "content": html}},
                parameters=[
                    _query("q", {"type": "string"}, "Search text."),
                    _query("tag", {"type": "string"}, "Only prompts with this tag."),
                    _query("model", {"type": "string"}, "Only prompts on this model alias."),
                ],
            ),
        },
        "/prompts/{name}": {
            "get": system(
                "catalogPromptPage",
                "One prompt's catalog page, with its try-it form (HTML)",
                {
                    "200": {"description": "The page.", "headers": _headers(), "content": html},
                    **{
                        str(status): {
                            "description": ERROR_TEXT[status] + " (an HTML page)",
                            "headers": _headers(),
                            "content": {
                                **html,
                                PROBLEM_JSON: {"schema": components.ref("Problem")},
                            },
                        }
                        for status in (404, 410)
                    },
                },
                parameters=[
                    NAME_PARAM,
                    _query("version", {"type": "string"}, "Show this version."),
                ],
            ),
        },
        "/docs": {
            "get": system(
                "getDocs",
                "Interactive API docs (served without any outside host)",
                {"200": {"description": "The docs page.", "headers": _headers(), "content": html}},
            ),
        },
        "/docs/assets/{file}": {
            "get": system(
                "getDocsAsset",
                "A file of the interactive API docs",
                {
                    "200": {
                        "description": "The file.",
                        "headers": _headers(),
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                            "image/png": {"schema": {}},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    }
                },
                (404,),
                parameters=[_path_param("file", {"enum": sorted(ASSETS)}, "The file name.")],
            ),
        },
    }


LABEL_PARAM = _path_param(
    "label", {"type": "string", "pattern": NAME_PATTERN}, "A label: `production`, `staging`, …"
)
_VERSION_NUMBER = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


def _transition_body(fields: dict[str, Any]) -> dict[str, Any]:
    # No body, or `null`, is the same as `{}`.
    schema = {"type": ["object", "null"], "properties": fields, "additionalProperties": False}
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def lifecycle_paths(c: Components) -> dict[str, dict[str, Any]]:
    """Version lifecycle, labels, diff and the audit log (all admin)."""

    def admin(
        op_id: str, summary: str, responses: dict[str, Any], errors: tuple[int, ...], **extra: Any
    ) -> dict[str, Any]:
        return _op(
            op_id, summary, "admin", responses, (*ADMIN_ERRORS, *errors), c, security=ADMIN, **extra
        )

    successor = {
        **_VERSION_NUMBER,
        "type": ["integer", "null"],
        "description": "The version callers should move to.",
    }
    bodies = {
        "publish": {},
        "deprecate": {
            "sunset": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When it will be retired (RFC 3339, with a time zone).",
            },
            "successor": successor,
        },
        "retire": {"successor": successor},
    }
    version_params = [NAME_PARAM, VERSION_PARAM]
    paths: dict[str, dict[str, Any]] = {
        f"/admin/v1/prompts/{{name}}/versions/{{version}}/{action}": {
            "post": admin(
                f"{action}Version",
                f"{action.capitalize()} a version",
                {"200": json_response("The version, in its new state.", c.ref("VersionDetail"))},
                (*WRITE_ERRORS, 404, 409, 422),
                parameters=version_params,
                requestBody=_transition_body(fields),
            )
        }
        for action, fields in bodies.items()
    }
    label_answer = {
        "name": {"type": "string"},
        "label": {"type": "string"},
        "version": {"type": "integer"},
    }
    paths["/admin/v1/prompts/{name}/labels/{label}"] = {
        "put": admin(
            "setLabel",
            "Point a label at a version (atomically)",
            {
                "200": json_response(
                    "Where the label points now, and before.",
                    _object(
                        {
                            **label_answer,
                            "previous": _nullable("integer"),
                            "changed": {"type": "boolean"},
                        }
                    ),
                )
            },
            (*WRITE_ERRORS, 404, 409, 422),
            parameters=[NAME_PARAM, LABEL_PARAM],
            requestBody=json_body(
                {
                    "type": "object",
                    "properties": {"version": _VERSION_NUMBER},
                    "required": ["version"],
                    "additionalProperties": False,
                }
            ),
        ),
        "delete": admin(
            "deleteLabel",
            "Remove a label",
            {
                "200": json_response(
                    "The removed label and the version it pointed at.", _object(label_answer)
                )
            },
            (400, 404),
            parameters=[NAME_PARAM, LABEL_PARAM],
        ),
    }
    paths["/admin/v1/prompts/{name}/diff"] = {
        "get": admin(
            "diffVersions",
            "What changed between two versions (template, schemas, model, params)",
            {
                "200": json_response(
                    "The changes.",
                    _object(
                        {
                            "name": {"type": "string"},
                            "from": {"type": "object"},
                            "to": {"type": "object"},
                            "identical": {"type": "boolean"},
                            "changes": {"type": "object"},
                        }
                    ),
                )
            },
            (400, 404),
            parameters=[
                NAME_PARAM,
                {**_query("from", _VERSION_NUMBER, "The older version."), "required": True},
                {**_query("to", _VERSION_NUMBER, "The newer version."), "required": True},
            ],
        )
    }
    record = _object(
        {
            "id": {"type": "integer"},
            "at": _nullable("string"),
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "target": {"type": "string"},
            "prompt": _nullable("string"),
            "before": {},
            "after": {},
        },
        ["id", "at", "actor", "action", "target"],
    )
    when = {"type": "string", "format": "date-time"}
    paths["/admin/v1/audit"] = {
        "get": admin(
            "listAudit",
            "The audit log of admin changes, newest first",
            {
                "200": json_response(
                    "One page of records.",
                    _object(
                        {
                            "records": {"type": "array", "items": c.claim("AuditRecord", record)},
                            "next_cursor": {
                                **_nullable("string"),
                                "description": "Pass as `cursor` for the next page.",
                            },
                        }
                    ),
                )
            },
            (400,),
            parameters=[
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    "How many records.",
                ),
                _query(
                    "cursor",
                    {"type": "integer", "minimum": 1, "maximum": 2**62},
                    "`next_cursor` of the previous page.",
                ),
                _query("action", _FILTER, "Only this action, e.g. `label.move`."),
                _query("actor", _FILTER, "Only changes by this credential."),
                _query("target", _FILTER, "Only changes to this target."),
                _query("prompt", _FILTER, "Only changes to this prompt."),
                _query("since", when, "From this time on (RFC 3339)."),
                _query("until", when, "Before this time (RFC 3339)."),
            ],
        )
    }
    return paths
