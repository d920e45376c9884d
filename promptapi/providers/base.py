"""The one interface every model provider implements, and the model alias configuration."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from promptapi.errors import PromptAPIError, ProviderUnavailable, UpstreamAuthError, UpstreamError


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 60.0
    deadline: float = 60.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(max, base * 2**n))."""

    base: float = 0.5
    max: float = 8.0


@dataclass(frozen=True, slots=True)
class CircuitConfig:
    failures: int = 5  # consecutive failed attempts that open the circuit
    error_rate: float | None = None  # also open at this failed share of the window's attempts
    window: float = 60.0  # seconds over which the error rate is measured
    min_calls: int = 10  # attempts in the window before the error rate may open the circuit
    open_seconds: float = 30.0  # how long it stays open before one probe is let through


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream behind an alias: the alias's fields overridden by the deployment's."""

    name: str  # not secret: shown in envelopes, call records and /admin/v1/models
    weight: float
    config: ModelConfig


@dataclass(frozen=True, slots=True)
class Routing:
    """How the router calls an alias: attempts, the overall deadline, fallbacks, deployments."""

    retries: int = 2
    deadline: float = 60.0  # seconds for the whole call: every attempt and every wait
    backoff: Backoff = field(default_factory=Backoff)
    fallbacks: tuple[str, ...] = ()
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    deployments: tuple[Deployment, ...] = ()  # empty: the alias itself is the one deployment


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A model alias: which provider, which model id, where, and at what price."""

    alias: str
    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    structured_output: str = "json_schema"  # json_schema | json_object | none
    headers: dict[str, str] = field(default_factory=dict)
    deployment: str | None = None  # azure: the deployment name (defaults to model)
    api_version: str | None = None  # azure api-version, anthropic-version, gemini v1beta/v1
    max_tokens_field: str = "max_completion_tokens"  # openai, azure: or max_tokens (older servers)
    routing: Routing = field(default_factory=Routing)

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return self.routing.deployments or (Deployment(f"{self.alias}#0", 1.0, self),)

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        if self.price_input_per_mtok is None or self.price_output_per_mtok is None:
            return None
        return round(
            (input_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok)
            / 1_000_000,
            10,
        )

    def public(self) -> dict[str, Any]:
        """What may be shown to an admin: never the key itself."""
        return {
            "alias": self.alias,
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "api_key_set": bool(self.api_key),
            "params": self.params,
            "timeouts": {
                "connect": self.timeouts.connect,
                "read": self.timeouts.read,
                "deadline": self.timeouts.deadline,
            },
            "prices_per_mtok": {
                "input": self.price_input_per_mtok,
                "output": self.price_output_per_mtok,
            },
            "structured_output": self.structured_output,
            "deployment": self.deployment,
            "api_version": self.api_version,
            "max_tokens_field": self.max_tokens_field,
            "retries": self.routing.retries,
            "deadline": self.routing.deadline,
            "backoff": {"base": self.routing.backoff.base, "max": self.routing.backoff.max},
            "fallbacks": list(self.routing.fallbacks),
            "circuit": {
                "failures": self.routing.circuit.failures,
                "error_rate": self.routing.circuit.error_rate,
                "window": self.routing.circuit.window,
                "min_calls": self.routing.circuit.min_calls,
                "open_seconds": self.routing.circuit.open_seconds,
            },
        }


@dataclass(slots=True)
class CompletionRequest:
    messages: list[dict[str, str]]
    params: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    examples: list[dict[str, Any]] = field(default_factory=list)
    input: Any = None


@dataclass(slots=True)
class Completion:
    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    mock: bool = False


@dataclass(slots=True)
class StreamDelta:
    """One piece of a streamed answer; the last one carries the usage and finish reason."""

    text: str = ""
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


class Provider(Protocol):
    """A model API. `complete` and `stream` raise PromptAPIError subclasses only, and finish
    within `config.timeouts.deadline` seconds (DeadlineExceeded otherwise)."""

    config: ModelConfig

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]: ...

    async def aclose(self) -> None: ...


OVERLOADED = 529  # Anthropic's "overloaded_error": capacity, like a 429


def retry_after(headers: Any) -> float | None:
    """Seconds the provider asks us to wait: `retry-after-ms`, else `Retry-After` as seconds
    (fractions allowed, as OpenAI-compatible servers send) or an HTTP date; at most an hour."""
    value: float | None = None
    try:
        if headers.get("retry-after-ms") is not None:
            value = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after") is not None:
            raw = str(headers["retry-after"]).strip()
            try:
                value = float(raw)
            except ValueError:
                when = parsedate_to_datetime(raw)
                value = (when - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if value is None or math.isnan(value):
        return None
    return max(0.0, min(3600.0, value))


def status_error(
    alias: str, status: int, wait: float | None = None, *, auth: bool = False
) -> PromptAPIError:
    """The error for a provider's non-success HTTP status, marked for the router: 429, 529 and
    5xx are retryable (with the provider's requested wait); 401/403 (or `auth`: the provider's
    error body says the key is bad) mean our credential is bad."""
    error: PromptAPIError
    if status in (401, 403) or auth:
        error = UpstreamAuthError(
            f"The provider for model alias {alias!r} refused the configured credential "
            f"(HTTP {status})."
        )
    elif status in (429, OVERLOADED):
        why = "is rate-limiting us" if status == 429 else "is overloaded"
        error = ProviderUnavailable(
            f"The provider for model alias {alias!r} {why} (HTTP {status}).",
            headers={"Retry-After": str(max(1, math.ceil(wait or 1)))},
        )
    elif status >= 500:
        error = UpstreamError(f"The provider for model alias {alias!r} failed (HTTP {status}).")
    else:
        error = UpstreamError(
            f"The provider for model alias {alias!r} refused the request (HTTP {status})."
        )
    error.upstream_status = status
    error.retryable = not isinstance(error, UpstreamAuthError) and (
        status in (429, OVERLOADED) or status >= 500
    )
    error.retry_after = wait if error.retryable else None
    return error


def unreachable(alias: str, what: str = "is unreachable") -> ProviderUnavailable:
    """A connect error: nothing reached the provider, so another attempt is always safe."""
    error = ProviderUnavailable(f"The provider for model alias {alias!r} {what}.")
    error.retryable = True
    return error
