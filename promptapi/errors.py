"""The error hierarchy. Each error knows its HTTP status and its problem type.

`promptapi.web.errors` turns any of these into an RFC 9457 problem+json response;
nothing else in the code base builds error responses.
"""

from __future__ import annotations

from typing import Any


class PromptAPIError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"
    description: str = "The server failed to handle the request. The request id is in the log."
    # Set by provider adapters for the router, never shown to callers: worth another attempt
    # (connect error, 429, 5xx), how long the provider asked us to wait, and the provider's HTTP
    # status when a provider's answer caused this (retries tell 5xx from other 4xx by it).
    retryable: bool = False
    retry_after: float | None = None
    upstream_status: int | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class MalformedRequest(PromptAPIError):
    status = 400
    code = "malformed_request"
    title = "Malformed request"
    description = "The request body could not be parsed, or a parameter has the wrong form."


class Unauthorized(PromptAPIError):
    status = 401
    code = "unauthorized"
    title = "Missing or invalid credential"
    description = "Send a valid credential as `Authorization: Bearer <token>`."

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="promptapi"'})
        super().__init__(detail, **kwargs)


class Forbidden(PromptAPIError):
    status = 403
    code = "forbidden"
    title = "Not allowed"
    description = "The credential is valid but does not allow this operation."


class NotFound(PromptAPIError):
    status = 404
    code = "not_found"
    title = "Not found"
    description = "No such route, prompt, version or resource."


class MethodNotAllowed(PromptAPIError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"
    description = "The route exists but does not accept this HTTP method; see the Allow header."


class Conflict(PromptAPIError):
    status = 409
    code = "conflict"
    title = "Conflict"
    description = "The write conflicts with what is stored, e.g. a version that already exists."


class Gone(PromptAPIError):
    status = 410
    code = "gone"
    title = "Gone"
    description = "The resource existed but has been retired."


class TransitionRefused(Conflict):
    code = "transition_refused"
    title = "Lifecycle transition not allowed"
    description = (
        "The version's current state does not allow this transition. `state` is the current "
        "state and `allowed` lists the transitions it does allow (retired is final)."
    )


class LabelRefused(Conflict):
    code = "label_refused"
    title = "Label cannot point at this version"
    description = (
        "A label may not point at a retired version, and `production` may not point at a "
        "draft; `state` is the version's state."
    )


class VersionRetired(Gone):
    code = "version_retired"
    title = "Prompt version retired"
    description = (
        "This version of the prompt has been retired and is no longer served. `successor` names "
        'the version to call instead (also in the `Link` header, rel="successor-version").'
    )

    def __init__(self, name: str, version: int, successor: int | None) -> None:
        url = f"/v1/prompts/{name}/versions/{successor}" if successor is not None else None
        instead = f"; call version {successor} instead ({url})" if url else ""
        super().__init__(
            f"Version {version} of prompt {name!r} is retired{instead}.",
            headers={"Link": f'<{url}>; rel="successor-version"'} if url else None,
            version=version,
            successor=successor,
            successor_url=url,
        )


class RequestTimeout(PromptAPIError):
    status = 408
    code = "request_timeout"
    title = "Request not received in time"
    description = (
        "The request's headers or body did not arrive within PROMPTAPI_HEADER_TIMEOUT or "
        "PROMPTAPI_BODY_TIMEOUT seconds; the connection is closed."
    )


class HeadersTooLarge(PromptAPIError):
    status = 431
    code = "headers_too_large"
    title = "Request headers too large"
    description = (
        "The request line and headers exceed PROMPTAPI_MAX_HEADER_BYTES; the connection is closed."
    )


class PayloadTooLarge(PromptAPIError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"
    description = "The request body exceeds the configured limit (PROMPTAPI_MAX_BODY_BYTES)."


class UnsupportedMediaType(PromptAPIError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"
    description = "Send the body as JSON with `Content-Type: application/json`."


class InputInvalid(PromptAPIError):
    status = 422
    code = "input_invalid"
    title = "Input does not match the prompt's input schema"
    description = (
        "The body failed the prompt's input_schema. `errors` lists every problem, each with a "
        "JSON pointer `path` into the body."
    )


class RequestInvalid(PromptAPIError):
    status = 422
    code = "request_invalid"
    title = "The request body is not valid for this operation"
    description = (
        "An admin request's body (a key, a label move, a lifecycle transition) has a missing, "
        "unknown or wrong field. `errors` lists every problem, each with a JSON pointer `path` "
        "into the body."
    )


class DefinitionInvalid(PromptAPIError):
    status = 422
    code = "definition_invalid"
    title = "Invalid prompt definition"
    description = (
        "The prompt definition was refused. `errors` lists every problem, each with a JSON "
        "pointer `path` into the definition."
    )


class PolicyViolation(DefinitionInvalid):
    code = "policy_violation"
    title = "The prompt definition breaks the governance policy"
    description = (
        "The definition is valid but breaks error-severity rules of the policy in force "
        "(PROMPTAPI_POLICY_FILE, else the built-in defaults). `errors` lists every violation, "
        "each with a JSON pointer `path`, the `rule` id and its `severity`."
    )


class RenderFailed(PromptAPIError):
    status = 422
    code = "render_failed"
    title = "The template could not be rendered with this input"
    description = "The input passed the schema, but the prompt's template failed to render with it."


class RenderLimitExceeded(RenderFailed):
    code = "render_limit"
    title = "Rendering the template with this input goes past a bound"
    description = (
        "The input passed the schema, but rendering the prompt's template with it would take "
        "more loop iterations, output, work, nesting or time than the server allows; `limit` "
        "names the setting (PROMPTAPI_RENDER_*)."
    )


class AuthThrottled(PromptAPIError):
    status = 429
    code = "auth_throttled"
    title = "Too many failed authentications"
    description = (
        "This client address sent too many wrong credentials (PROMPTAPI_AUTH_FAILURE_LIMIT "
        "within PROMPTAPI_AUTH_FAILURE_WINDOW seconds); wrong ones are refused until "
        "`Retry-After`. A valid credential is still accepted."
    )


class UpstreamError(PromptAPIError):
    status = 502
    code = "upstream_error"
    title = "The model provider failed"
    description = "The model provider answered with an error or an answer that could not be used."


class UpstreamAuthError(UpstreamError):
    code = "provider_auth"
    title = "The model provider refused our credential"
    description = (
        "The provider answered 401 or 403: the provider key configured for this model alias is "
        "missing, wrong or lacks access. An operator must fix the server's configuration."
    )


class UpstreamRedirect(UpstreamError):
    code = "upstream_redirect"
    title = "The model provider answered with a redirect"
    description = (
        "The provider answered with an HTTP redirect (3xx). Redirects are never followed: the "
        "prompt would be sent to an address nobody configured. Fix the model alias's base URL."
    )


class OutputInvalid(UpstreamError):
    code = "output_invalid"
    title = "The model's answer does not match the output schema"
    description = (
        "The model's answer was not valid JSON or failed the prompt's output_schema; `errors` "
        "says why."
    )


class ProviderUnavailable(PromptAPIError):
    status = 503
    code = "provider_unavailable"
    title = "No usable model provider"
    description = "The model provider is unreachable, rate-limited or not configured."


class CircuitOpen(ProviderUnavailable):
    code = "circuit_open"
    title = "The model provider is failing; calls are paused"
    description = (
        "Every deployment of this model alias (and of its fallbacks) failed repeatedly, so its "
        "circuit breaker is open and calls fail at once without reaching the provider. "
        "`Retry-After` says when the next probe is allowed."
    )


class StoreUnavailable(PromptAPIError):
    status = 503
    code = "database_unavailable"
    title = "The database is unavailable"
    description = (
        "The database could not be reached or failed; the request made no change. Retry after "
        "`Retry-After` seconds (PROMPTAPI_DB_RETRY_AFTER). Calls to prompts keep working, served "
        "from memory."
    )


class DeadlineExceeded(PromptAPIError):
    status = 504
    code = "deadline_exceeded"
    title = "The model did not answer in time"
    description = "The call to the model provider passed its deadline."


def all_problem_types() -> dict[str, type[PromptAPIError]]:
    seen: dict[str, type[PromptAPIError]] = {}
    stack: list[type[PromptAPIError]] = [PromptAPIError]
    while stack:
        cls = stack.pop()
        seen[cls.code] = cls
        stack.extend(cls.__subclasses__())
    return seen


class ConfigError(Exception):
    """The server's configuration is wrong; raised at start, never answered over HTTP."""
