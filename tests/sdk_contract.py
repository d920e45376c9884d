"""The providers' official Python SDKs (pinned test dependencies) as the contract for what our
adapters send and what our fakes answer.

Requests are checked against the SDKs' own request parameter types, with unknown keys refused
at every level: the TypedDicts `openai.types.chat.completion_create_params.*` and
`anthropic.types.message_create_params.*`, and for Gemini the REST request assembled from
`google.genai.types` models (`Content`, `GenerationConfig`, `SafetySetting`, `Tool`, ...),
whose wire names are camelCase aliases. Answers are parsed with the SDKs' response models
(`ChatCompletion`, `ChatCompletionChunk`, `anthropic.types.Message`,
`RawMessageStreamEvent`, `GenerateContentResponse`); a field the model does not know counts as
a problem even where the SDK would keep it as an extra.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

import anthropic
import anthropic.types
import openai
import openai.types.chat
import pydantic
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from google.genai import types as genai
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from pydantic.alias_generators import to_camel
from typing_extensions import is_typeddict

ANTHROPIC_VERSION: str = anthropic._constants.ANTHROPIC_API_VERSION
_STRICT = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def _forbid_extra_keys(prefixes: tuple[str, ...]) -> None:
    """TypedDicts ignore unknown keys by default; the API refuses them, so refuse them too."""
    for name, module in list(sys.modules.items()):
        if not name.startswith(prefixes):
            continue
        for value in list(vars(module).values()):
            ours = isinstance(value, type) and value.__module__.startswith(prefixes)
            if ours and is_typeddict(value):
                value.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]


_forbid_extra_keys(("anthropic.types", "openai.types"))


class GeminiRequest(pydantic.BaseModel):
    """The body of models.generateContent / streamGenerateContent, made of the SDK's types."""

    model_config = pydantic.ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=False
    )

    contents: list[genai.Content]
    system_instruction: genai.Content | None = None
    generation_config: genai.GenerationConfig | None = None
    safety_settings: list[genai.SafetySetting] | None = None
    tools: list[genai.Tool] | None = None
    tool_config: genai.ToolConfig | None = None
    cached_content: str | None = None
    labels: dict[str, str] | None = None


@cache
def _adapter(kind: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(kind)


def _drain(value: Any) -> None:
    """Iterable[...] fields are validated lazily: walk them so every item is checked."""
    if isinstance(value, dict):
        for item in value.values():
            _drain(item)
    elif isinstance(value, list | tuple) or type(value).__name__ == "ValidatorIterator":
        for item in value:
            _drain(item)


def _extras(model: Any, where: str = "") -> list[str]:
    """Fields an SDK model kept as extras (openai and anthropic models allow them)."""
    found: list[str] = []
    if isinstance(model, pydantic.BaseModel):
        for key in model.__pydantic_extra__ or {}:
            found.append(f"{where}/{key}: not a field of {type(model).__name__}")
        for name in type(model).model_fields:
            found += _extras(getattr(model, name), f"{where}/{name}")
    elif isinstance(model, list | tuple):
        for i, item in enumerate(model):
            found += _extras(item, f"{where}/{i}")
    elif isinstance(model, dict):
        for key, item in model.items():
            found += _extras(item, f"{where}/{key}")
    return found


def _problems(error: pydantic.ValidationError, what: str) -> list[str]:
    return [
        f"{what} /{'/'.join(map(str, e['loc']))}: {e['msg']}"
        for e in error.errors(include_url=False)
    ]


def request_problems(provider: str, body: Any) -> list[str]:
    """What the provider's SDK would refuse in a request body we built."""
    try:
        if provider in ("openai", "azure"):
            kind = (
                CompletionCreateParamsStreaming
                if body.get("stream")
                else CompletionCreateParamsNonStreaming
            )
            _drain(_adapter(kind).validate_python(body))
        elif provider == "anthropic":
            kind = (
                MessageCreateParamsStreaming
                if body.get("stream")
                else MessageCreateParamsNonStreaming
            )
            _drain(_adapter(kind).validate_python(body))
        elif provider == "gemini":
            GeminiRequest.model_validate(body)
        else:
            raise ValueError(provider)
    except pydantic.ValidationError as error:
        return _problems(error, f"{provider} request")
    return []


_ANSWERS: dict[tuple[str, str], Any] = {
    ("openai", "answer"): openai.types.chat.ChatCompletion,
    ("openai", "chunk"): openai.types.chat.ChatCompletionChunk,
    ("anthropic", "answer"): anthropic.types.Message,
    ("anthropic", "event"): anthropic.types.RawMessageStreamEvent,
    ("anthropic", "error"): anthropic.types.ErrorResponse,
    ("gemini", "answer"): genai.GenerateContentResponse,
    ("gemini", "chunk"): genai.GenerateContentResponse,
}


def answer_problems(provider: str, kind: str, data: Any) -> list[str]:
    """What the provider's SDK cannot read in an answer (kind: answer, chunk, event, error)."""
    what = f"{provider} {kind}"
    if (provider, kind) == ("anthropic", "event") and isinstance(data, dict):
        # The SDK's stream reader skips `ping` and reads an `error` event as an error body.
        if data.get("type") == "ping":
            return [] if data == {"type": "ping"} else [f"{what}: a ping carries only its type"]
        if data.get("type") == "error":
            return answer_problems("anthropic", "error", data)
    try:
        parsed = _adapter(_ANSWERS[(provider, kind)]).validate_python(data)
    except pydantic.ValidationError as error:
        return _problems(error, what)
    return [f"{what} {extra}" for extra in _extras(parsed)]
