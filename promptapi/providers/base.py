"""The one interface every model provider implements, and the model alias configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 60.0
    deadline: float = 60.0


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
