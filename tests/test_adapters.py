"""The Anthropic, Gemini and Azure OpenAI adapters against fake upstreams on loopback that check
every request against each provider's documented format: request mapping, answers, streams,
and every failure mapped to our errors without leaking a secret. (Calls through a live server
are in test_adapters_http.py.)"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from promptapi.errors import (
    DeadlineExceeded,
    PromptAPIError,
    ProviderUnavailable,
    UpstreamAuthError,
    UpstreamError,
)
from promptapi.providers import ADAPTERS, CompletionRequest, ModelConfig, Provider, Timeouts
from promptapi.providers.gemini import response_json_schema, response_schema
from tests import sdk_contract
from tests.conftest import SENTIMENT, UPSTREAM_KEY
from tests.fake_providers import ProviderBehaviour as B
from tests.helpers import SECRETS

SENTIMENT_SCHEMA: dict[str, Any] = SENTIMENT["output_schema"]
PIECES = ["Grüße ", "aus ", "Köln 🌍", " — ", "日本語"]


def make(kind: str, base_url: str, **overrides: Any) -> Provider:
    values: dict[str, Any] = {
        "alias": f"my-{kind}",
        "provider": kind,
        "model": {
            "anthropic": "claude-sonnet-4-5",
            "gemini": "gemini-2.5-flash",
            "azure": "gpt-4o-mini",
            "openai": "gpt-4o-mini",
        }[kind],
        "base_url": base_url,
        "api_key": UPSTREAM_KEY,
    }
    values.update(overrides)
    return ADAPTERS[kind](ModelConfig(**values))


def request(
    messages: list[dict[str, str]] | None = None,
    params: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
) -> CompletionRequest:
    return CompletionRequest(
        messages=messages or [{"role": "user", "content": "hi"}],
        params=params or {},
        output_schema=schema,
        schema_name="sentiment",
    )


async def complete(provider: Provider, req: CompletionRequest | None = None) -> Any:
    try:
        return await provider.complete(req or request())
    finally:
        await provider.aclose()


async def stream(provider: Provider, req: CompletionRequest | None = None) -> list[Any]:
    try:
        return [d async for d in provider.stream(req or request())]
    finally:
        await provider.aclose()


def assert_clean(caplog: pytest.LogCaptureFixture, error: PromptAPIError | None = None) -> None:
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    if error is not None:
        text += json.dumps(error.problem())
    for secret in SECRETS:
        assert secret not in text


# -- Anthropic ------------------------------------------------------------------------------


async def test_anthropic_maps_messages_params_and_headers(anthropic):
    anthropic.default = B(content="Bonjour", usage=(12, 3), model="claude-sonnet-4-5-20250929")
    native = {"metadata": {"user_id": "u-1"}, "service_tier": "auto"}
    provider = make(
        "anthropic", anthropic.base_url, params={**native, "top_k": 5, "temperature": 0.2}
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "system", "content": "Answer in French."},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Say hello"},
        {"role": "user", "content": "now"},
    ]
    params = {
        "temperature": 1.5,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": "END",
        "presence_penalty": 0.5,
        "frequency_penalty": 0.1,
        "seed": 7,
    }
    completion = await complete(provider, request(messages, params))
    sent = anthropic.requests[0]
    assert sent["path"] == "/v1/messages"
    assert sent["body"] == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Say hello\n\nnow"},
        ],
        # The current Messages API has no temperature, top_p or top_k: they are dropped.
        **native,
        "stop_sequences": ["END"],
    }
    assert sent["headers"]["x-api-key"] == UPSTREAM_KEY
    # The official SDK's version by default (an alias's api_version overrides it, below).
    assert sent["headers"]["anthropic-version"] == sdk_contract.ANTHROPIC_VERSION
    assert "authorization" not in sent["headers"]
    assert completion.text == "Bonjour"
    assert (completion.input_tokens, completion.output_tokens) == (12, 3)
    assert completion.model == "claude-sonnet-4-5-20250929"
    assert completion.finish_reason == "stop"


async def test_anthropic_max_tokens_comes_from_prompt_then_alias_then_default(anthropic):
    await complete(make("anthropic", anthropic.base_url))
    await complete(make("anthropic", anthropic.base_url, params={"max_tokens": 300}))
    await complete(
        make("anthropic", anthropic.base_url, params={"max_tokens": 300}),
        request(params={"max_tokens": 20}),
    )
    await complete(make("anthropic", anthropic.base_url, api_version="2024-01-01"))
    assert [r["body"]["max_tokens"] for r in anthropic.requests] == [1024, 300, 20, 1024]
    assert anthropic.requests[-1]["headers"]["anthropic-version"] == "2024-01-01"


async def test_anthropic_structured_output_is_a_forced_tool_call(anthropic):
    anthropic.default = B(content='{"label": "positive", "score": 0.9}', usage=(30, 12))
    completion = await complete(
        make("anthropic", anthropic.base_url), request(schema=SENTIMENT_SCHEMA)
    )
    body = anthropic.requests[0]["body"]
    assert body["tools"] == [
        {
            "name": "sentiment",
            "description": "Give the answer by calling this tool with it as the input.",
            "input_schema": SENTIMENT_SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "sentiment"}
    assert json.loads(completion.text) == {"label": "positive", "score": 0.9}
    assert (completion.input_tokens, completion.output_tokens) == (30, 12)
    assert completion.finish_reason == "stop"


async def test_anthropic_wraps_a_schema_that_is_not_an_object(anthropic):
    schema = {
        "type": "array",
        "items": {"$ref": "#/$defs/tag"},
        "$defs": {"tag": {"type": "string"}},
    }
    anthropic.default = B(content='{"value": ["a", "b"]}')
    completion = await complete(make("anthropic", anthropic.base_url), request(schema=schema))
    input_schema = anthropic.requests[0]["body"]["tools"][0]["input_schema"]
    assert input_schema == {
        "type": "object",
        "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/tag"}}},
        "required": ["value"],
        "$defs": {"tag": {"type": "string"}},
    }
    assert json.loads(completion.text) == ["a", "b"]

    anthropic.default = B(stream_chunks=['{"val', 'ue": ["a",', ' "é"]}'], usage=(4, 6))
    deltas = await stream(make("anthropic", anthropic.base_url), request(schema=schema))
    assert json.loads("".join(d.text for d in deltas)) == ["a", "é"]
    assert deltas[-1].output_tokens == 6 and deltas[-1].input_tokens == 4


@pytest.mark.parametrize("mode", ["json_object", "none"])
async def test_anthropic_without_native_structured_output_asks_for_text(anthropic, mode):
    anthropic.default = B(content='{"label": "neutral", "score": 0.5}')
    provider = make("anthropic", anthropic.base_url, structured_output=mode)
    completion = await complete(provider, request(schema=SENTIMENT_SCHEMA))
    assert "tools" not in anthropic.requests[0]["body"]
    assert json.loads(completion.text)["label"] == "neutral"


async def test_anthropic_stream_reassembles_text_split_across_reads(anthropic):
    anthropic.default = B(stream_chunks=PIECES, usage=(9, 4), model="claude-x")
    deltas = await stream(make("anthropic", anthropic.base_url))
    assert "".join(d.text for d in deltas) == "".join(PIECES)
    assert anthropic.requests[0]["body"]["stream"] is True
    final = deltas[-1]
    assert (final.input_tokens, final.output_tokens, final.finish_reason) == (9, 4, "stop")
    assert final.model == "claude-x"


async def test_anthropic_stream_of_a_tool_call_streams_its_json(anthropic):
    anthropic.default = B(stream_chunks=['{"label": "neg', 'ative", "score"', ": 0.1}"])
    deltas = await stream(make("anthropic", anthropic.base_url), request(schema=SENTIMENT_SCHEMA))
    assert len([d for d in deltas if d.text]) == 3
    assert json.loads("".join(d.text for d in deltas)) == {"label": "negative", "score": 0.1}


@pytest.mark.parametrize(
    ("behaviour", "error", "code"),
    [
        (B(stream_error="overloaded_error"), ProviderUnavailable, "provider_unavailable"),
        (B(stream_error="api_error"), UpstreamError, "upstream_error"),
        (B(stream_error="authentication_error"), UpstreamAuthError, "provider_auth"),
        (B(stream_chunks=["a", "b"], cut=True), UpstreamError, "upstream_error"),
    ],
)
async def test_anthropic_stream_failures_are_mapped(anthropic, caplog, behaviour, error, code):
    caplog.set_level(logging.DEBUG)
    anthropic.default = behaviour
    with pytest.raises(error) as raised:
        await stream(make("anthropic", anthropic.base_url))
    assert raised.value.code == code
    assert_clean(caplog, raised.value)


async def test_anthropic_refusal_is_an_upstream_error(anthropic):
    anthropic.default = B(content="", finish="refusal")
    with pytest.raises(UpstreamError) as raised:
        await complete(make("anthropic", anthropic.base_url))
    assert raised.value.problem()["reason"] == "refusal"


async def test_anthropic_max_tokens_finish_is_length(anthropic):
    anthropic.default = B(content="cut sh", finish="max_tokens")
    completion = await complete(make("anthropic", anthropic.base_url))
    assert (completion.text, completion.finish_reason) == ("cut sh", "length")


# -- Gemini ---------------------------------------------------------------------------------


async def test_gemini_maps_messages_params_and_headers(gemini):
    gemini.default = B(content="Hallo", usage=(14, 2), model="gemini-2.5-flash-001")
    provider = make(
        "gemini",
        gemini.base_url,
        params={
            "thinkingConfig": {"thinkingBudget": 0},
            "safetySettings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
            ],
        },
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Say hello"},
    ]
    params = {
        "temperature": 1.5,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["END", "STOP"],
        "presence_penalty": 0.5,
        "frequency_penalty": -0.1,
        "seed": 7,
    }
    completion = await complete(provider, request(messages, params))
    sent = gemini.requests[0]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["query"] == {}
    assert sent["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    assert UPSTREAM_KEY not in sent["path"]
    assert sent["body"] == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}]},
            {"role": "model", "parts": [{"text": "Hi"}]},
            {"role": "user", "parts": [{"text": "Say hello"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "safetySettings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
        ],
        "generationConfig": {
            "thinkingConfig": {"thinkingBudget": 0},
            "temperature": 1.5,
            "topP": 0.9,
            "maxOutputTokens": 50,
            "stopSequences": ["END", "STOP"],
            "presencePenalty": 0.5,
            "frequencyPenalty": -0.1,
            "seed": 7,
        },
    }
    assert completion.text == "Hallo"
    assert (completion.input_tokens, completion.output_tokens) == (14, 2)
    assert completion.model == "gemini-2.5-flash-001"
    assert completion.finish_reason == "stop"


async def test_gemini_structured_output_sends_a_supported_json_schema(gemini):
    gemini.default = B(content='{"label": "positive", "score": 1}')
    completion = await complete(make("gemini", gemini.base_url), request(schema=SENTIMENT_SCHEMA))
    config = gemini.requests[0]["body"]["generationConfig"]
    assert config == {
        "responseMimeType": "application/json",
        "responseJsonSchema": SENTIMENT_SCHEMA,
    }
    assert json.loads(completion.text)["label"] == "positive"


async def test_gemini_json_object_mode_sends_only_the_mime_type(gemini):
    provider = make("gemini", gemini.base_url, structured_output="json_object")
    await complete(provider, request(schema=SENTIMENT_SCHEMA))
    provider = make("gemini", gemini.base_url, structured_output="none")
    await complete(provider, request(schema=SENTIMENT_SCHEMA))
    configs = [r["body"].get("generationConfig") for r in gemini.requests]
    assert configs == [{"responseMimeType": "application/json"}, None]


def test_gemini_schema_is_cut_down_to_the_supported_keywords():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "kind": {"const": "order"},
            "name": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[a-z]+$"},
            "maybe": {"enum": ["a", None]},
            "item": {"$ref": "#/definitions/item", "description": "dropped beside $ref"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "properties": {"type": "integer", "exclusiveMinimum": 0},
        },
        "required": ["kind"],
        "additionalProperties": False,
        "definitions": {"item": {"type": "object", "patternProperties": {"^x": {}}}},
    }
    assert response_json_schema(schema) == {
        "type": "object",
        "properties": {
            "kind": {"enum": ["order"]},
            "name": {"type": "string"},
            "maybe": {},
            "item": {"$ref": "#/$defs/item"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "properties": {"type": "integer"},
        },
        "required": ["kind"],
        "additionalProperties": False,
        "$defs": {"item": {"type": "object"}},
    }


async def test_gemini_response_schema_mode_sends_the_openapi_subset(gemini):
    gemini.default = B(content='{"label": "negative", "score": 0.2}')
    provider = make("gemini", gemini.base_url, structured_output="response_schema")
    completion = await complete(provider, request(schema=SENTIMENT_SCHEMA))
    assert gemini.requests[0]["body"]["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {
                "label": {
                    "type": "STRING",
                    "format": "enum",
                    "enum": ["positive", "negative", "neutral"],
                },
                "score": {"type": "NUMBER", "minimum": 0, "maximum": 1},
            },
            "required": ["label", "score"],
        },
    }
    assert json.loads(completion.text)["label"] == "negative"


def test_gemini_openapi_schema_inlines_refs_and_maps_null():
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "kind": {"const": "order"},
            "size": {"enum": ["S", "M", None]},
            "count": {"enum": [1, 2]},
            "note": {"oneOf": [{"type": "string", "maxLength": 9}, {"type": "null"}]},
            "either": {"type": ["integer", "boolean"]},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
            "base": {"allOf": [{"$ref": "#/definitions/base"}], "description": "kept"},
        },
        "additionalProperties": False,
        "$defs": {"line": {"type": "object", "properties": {"next": {"$ref": "#/$defs/line"}}}},
        "definitions": {"base": {"type": "object", "properties": {"x": {"type": "number"}}}},
    }
    converted = response_schema(schema)
    properties = converted.pop("properties")
    assert converted == {"type": "OBJECT"}
    assert properties["id"] == {"type": "STRING"}
    assert properties["at"] == {"type": "STRING", "nullable": True, "format": "date-time"}
    assert properties["kind"] == {"type": "STRING", "format": "enum", "enum": ["order"]}
    assert properties["size"] == {
        "nullable": True,
        "type": "STRING",
        "format": "enum",
        "enum": ["S", "M"],
    }
    assert properties["count"] == {}
    assert properties["note"] == {"nullable": True, "anyOf": [{"type": "STRING", "maxLength": 9}]}
    assert properties["either"] == {"anyOf": [{"type": "INTEGER"}, {"type": "BOOLEAN"}]}
    assert properties["base"] == {
        "type": "OBJECT",
        "properties": {"x": {"type": "NUMBER"}},
        "description": "kept",
    }
    line = properties["lines"]["items"]
    depth = 0
    while line:
        assert line["type"] == "OBJECT"
        line, depth = line["properties"]["next"], depth + 1
    assert depth == 8  # a cycle is cut after a few levels
    body = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {"responseSchema": response_schema(schema)},
    }
    assert sdk_contract.request_problems("gemini", body) == []


async def test_gemini_skips_thoughts_and_bills_thinking_tokens_as_output(gemini):
    gemini.default = B(content="42", thought="Let me think...", usage=(8, 1))
    completion = await complete(make("gemini", gemini.base_url))
    assert completion.text == "42"
    assert (completion.input_tokens, completion.output_tokens) == (8, 1 + 5)


@pytest.mark.parametrize(
    "behaviour", [B(blocked="SAFETY"), B(content=None, finish="SAFETY")], ids=["prompt", "answer"]
)
async def test_gemini_blocked_content_is_502_with_the_reason(gemini, caplog, behaviour):
    caplog.set_level(logging.DEBUG)
    gemini.default = behaviour
    for run in (complete, stream):
        with pytest.raises(UpstreamError) as raised:
            await run(make("gemini", gemini.base_url))
        problem = raised.value.problem()
        assert problem["status"] == 502 and problem["reason"] == "blocked"
        assert "SAFETY" in problem["detail"]
    assert "reason=SAFETY" in caplog.text
    assert_clean(caplog, raised.value)


async def test_gemini_stream_reassembles_text_split_across_reads(gemini):
    gemini.default = B(stream_chunks=PIECES, usage=(9, 4), model="gemini-x")
    deltas = await stream(make("gemini", gemini.base_url))
    assert gemini.requests[0]["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert gemini.requests[0]["query"] == {"alt": "sse"}
    assert "".join(d.text for d in deltas) == "".join(PIECES)
    final = deltas[-1]
    assert (final.input_tokens, final.output_tokens, final.finish_reason) == (9, 4, "stop")
    assert final.model == "gemini-x"


async def test_gemini_stream_cut_before_the_finish_is_502(gemini):
    gemini.default = B(stream_chunks=["a", "b", "c"], cut=True)
    with pytest.raises(UpstreamError):
        await stream(make("gemini", gemini.base_url))


async def test_gemini_bad_key_400_is_provider_auth(gemini, caplog):
    caplog.set_level(logging.DEBUG)
    gemini.default = B(status=400, reason="API_KEY_INVALID")
    with pytest.raises(UpstreamAuthError) as raised:
        await complete(make("gemini", gemini.base_url))
    assert "status=INVALID_ARGUMENT reason=API_KEY_INVALID" in caplog.text
    assert "my-gemini" in caplog.text
    assert_clean(caplog, raised.value)


async def test_gemini_api_version_and_model_prefix(gemini):
    provider = make("gemini", gemini.base_url + "/v1beta", model="models/gemini-2.0-flash")
    await complete(provider)
    assert gemini.requests[0]["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"


async def test_a_prompt_of_system_messages_only_is_sent_as_a_user_turn(anthropic, gemini):
    only_system = request([{"role": "system", "content": "List three colours."}])
    await complete(make("anthropic", anthropic.base_url), only_system)
    await complete(make("gemini", gemini.base_url), only_system)
    sent = anthropic.requests[0]["body"]
    assert "system" not in sent
    assert sent["messages"] == [{"role": "user", "content": "List three colours."}]
    sent = gemini.requests[0]["body"]
    assert "systemInstruction" not in sent
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "List three colours."}]}]


# -- Azure OpenAI ---------------------------------------------------------------------------


async def test_azure_calls_the_deployment_url_with_api_key(fake):
    provider = make("azure", f"http://127.0.0.1:{fake.port}", deployment="prod-4o")
    completion = await complete(provider, request(params={"max_tokens": 5}))
    sent = fake.requests[0]
    assert sent["path"] == "/openai/deployments/prod-4o/chat/completions"
    assert sent["query"] == {"api-version": "2024-10-21"}
    assert sent["headers"]["api-key"] == UPSTREAM_KEY
    assert "Authorization" not in sent["headers"]
    assert sent["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert completion.text == "ok"

    provider = make("azure", f"http://127.0.0.1:{fake.port}/", api_version="2025-01-01-preview")
    deltas = await stream(provider, request(schema=SENTIMENT_SCHEMA))
    sent = fake.requests[1]
    assert sent["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert sent["query"] == {"api-version": "2025-01-01-preview"}
    assert sent["body"]["response_format"]["type"] == "json_schema"
    assert "".join(d.text for d in deltas) == "ok"


# -- failures, the same for every provider --------------------------------------------------

PROVIDERS = ["anthropic", "gemini", "azure"]


@pytest.fixture
def upstream_for(anthropic, gemini, fake):
    def pick(kind: str) -> tuple[Any, str]:
        if kind == "anthropic":
            return anthropic, anthropic.base_url
        if kind == "gemini":
            return gemini, gemini.base_url
        return fake, f"http://127.0.0.1:{fake.port}"

    return pick


FAILURES = [
    pytest.param(B(status=500), UpstreamError, "upstream_error", id="500"),
    pytest.param(B(status=401), UpstreamAuthError, "provider_auth", id="401"),
    pytest.param(B(status=403), UpstreamAuthError, "provider_auth", id="403"),
    pytest.param(B(status=404), UpstreamError, "upstream_error", id="404"),
    pytest.param(B(body=b"<html>oops</html>"), UpstreamError, "upstream_error", id="garbage"),
    pytest.param(B(body=b""), UpstreamError, "upstream_error", id="empty"),
    pytest.param(B(body=b'{"x": []}'), UpstreamError, "upstream_error", id="wrong-shape"),
    pytest.param(B(drop=True), UpstreamError, "upstream_error", id="dropped"),
]


@pytest.mark.parametrize("kind", PROVIDERS)
@pytest.mark.parametrize(("behaviour", "error", "code"), FAILURES)
async def test_failures_are_mapped_without_leaking(
    upstream_for, caplog, kind, behaviour, error, code
):
    caplog.set_level(logging.DEBUG)
    upstream, base_url = upstream_for(kind)
    for run in (complete, stream):
        upstream.default = behaviour
        with pytest.raises(error) as raised:
            await run(make(kind, base_url))
        assert raised.value.code == code
        assert raised.value.upstream_status == (
            behaviour.status if behaviour.status != 200 else None
        )
        assert "upstream_status" not in raised.value.problem()
        assert_clean(caplog, raised.value)
    if behaviour.status in (401, 403):
        assert f"alias=my-{kind} status={behaviour.status}" in caplog.text


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_429_is_503_with_retry_after(upstream_for, caplog, kind):
    caplog.set_level(logging.DEBUG)
    upstream, base_url = upstream_for(kind)
    upstream.default = B(status=429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderUnavailable) as raised:
        await complete(make(kind, base_url))
    assert raised.value.status == 503
    assert raised.value.headers == {"Retry-After": "7"}
    assert raised.value.upstream_status == 429
    assert_clean(caplog, raised.value)


async def test_anthropic_529_overloaded_is_503(anthropic, caplog):
    caplog.set_level(logging.DEBUG)
    anthropic.default = B(status=529)
    with pytest.raises(ProviderUnavailable) as raised:
        await complete(make("anthropic", anthropic.base_url))
    assert "overloaded" in raised.value.detail
    assert "type=overloaded_error" in caplog.text
    assert_clean(caplog, raised.value)


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_huge_body_is_refused(upstream_for, monkeypatch, kind):
    monkeypatch.setattr("promptapi.providers.http.MAX_RESPONSE_BYTES", 4096)
    upstream, base_url = upstream_for(kind)
    upstream.default = B(content="x" * 10_000, stream_chunks=["y" * 100] * 100)
    for run in (complete, stream):
        with pytest.raises(UpstreamError) as raised:
            await run(make(kind, base_url))
        assert "too large" in raised.value.detail


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_connection_refused_is_503(kind, caplog):
    caplog.set_level(logging.DEBUG)
    for run in (complete, stream):
        with pytest.raises(ProviderUnavailable):
            await run(make(kind, "http://127.0.0.1:1"))
    assert f"provider unreachable: alias=my-{kind}" in caplog.text


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_trickling_body_hits_the_deadline(upstream_for, kind):
    upstream, base_url = upstream_for(kind)
    upstream.default = B(content="z" * 400, trickle=0.02)
    for run in (complete, stream):
        provider = make(kind, base_url, timeouts=Timeouts(connect=1, read=5, deadline=0.4))
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await run(provider)
        assert 0.3 < time.monotonic() - started < 1.5


# -- the contracts themselves ---------------------------------------------------------------


def test_contracts_catch_what_the_providers_would_refuse():
    """The SDK contracts are not vacuous: each refuses what its API refuses."""
    from tests.contract import provider_problems

    def anthropic(body: dict[str, Any]) -> list[str]:
        return sdk_contract.request_problems("anthropic", body)

    def gemini(body: dict[str, Any]) -> list[str]:
        return sdk_contract.request_problems("gemini", body)

    def openai(body: dict[str, Any]) -> list[str]:
        return sdk_contract.request_problems("openai", body)

    good = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    assert anthropic(good) == []
    assert anthropic({**good, "stream": True}) == []
    assert anthropic({k: v for k, v in good.items() if k != "max_tokens"})
    assert anthropic({**good, "presence_penalty": 0.1})
    assert anthropic({**good, "temperature": 0.5})  # the current API has no sampling params
    assert anthropic({**good, "top_p": 0.5})
    assert anthropic({**good, "messages": [{"role": "robot", "content": "x"}]})
    assert anthropic({**good, "stop_sequences": "END"})
    assert anthropic({**good, "tool_choice": {"type": "tool"}})
    headers = {
        "x-api-key": "k",
        "anthropic-version": sdk_contract.ANTHROPIC_VERSION,
        "content-type": "application/json",
    }
    assert provider_problems("anthropic-messages", "RequestHeaders", headers) == []
    assert provider_problems(
        "anthropic-messages", "RequestHeaders", {**headers, "authorization": "Bearer k"}
    )

    good = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert openai({**good, "max_completion_tokens": 5}) == []
    assert openai({**good, "top_k": 5})
    assert openai({**good, "messages": [{"role": "robot", "content": "x"}]})
    assert openai({**good, "response_format": {"type": "json_schema", "json_schema": {}}})
    assert openai({**good, "stream": True, "stream_options": {"usage": True}})

    good = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    assert gemini(good) == []
    assert gemini({"contents": [{"role": "user", "parts": [{"txt": "x"}]}]})
    assert gemini({**good, "generationConfig": {"max_tokens": 5}})
    assert gemini({**good, "generation_config": {"maxOutputTokens": 5}})
    assert gemini({**good, "generationConfig": {"responseSchema": {"type": "STRING", "x": 1}}})
    assert gemini({**good, "temperature": 0.5})
    assert provider_problems("gemini-generate-content", "RequestQuery", {"key": "k"})
    schema = {"type": "string", "minLength": 1}
    assert provider_problems("gemini-generate-content", "ResponseJsonSchema", schema)

    # Answers: a field the SDK's model does not know, or a missing one, is a problem.
    assert sdk_contract.answer_problems("anthropic", "event", {"type": "ping", "x": 1})
    assert sdk_contract.answer_problems("anthropic", "answer", {"type": "message"})
    assert sdk_contract.answer_problems("openai", "chunk", {"id": "c", "choices": "no"})
    assert sdk_contract.answer_problems("gemini", "answer", {"candidates": [{"finish": "STOP"}]})


# -- the SSE reader -------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_sse_events_survive_any_split(step):
    from promptapi.providers.http import SSEEvent, SSEParser

    wire = (
        ": keep-alive\r\n"
        "event: content_block_delta\r\n"
        'data: {"text": "Köln 🌍"}\r\n'
        "\r\n"
        "data: first line\n"
        "data:second line\n"
        "\n"
        "event: ping\n"
        "\n"
        "data: 日本語 without a final blank line"
    ).encode()
    parser = SSEParser()
    events: list[SSEEvent] = []
    for start in range(0, len(wire), step):
        events += parser.feed(wire[start : start + step])
    events += parser.close()
    assert events == [
        SSEEvent("content_block_delta", '{"text": "Köln 🌍"}'.encode()),
        SSEEvent("message", b"first line\nsecond line"),
        SSEEvent("message", "日本語 without a final blank line".encode()),
    ]
