"""The provider seam: the OpenAI adapter's streaming against the fake upstream on loopback, and
the mock provider. (Calls through HTTP are covered in test_invoke.py.)"""

from __future__ import annotations

import pytest

from promptapi.errors import ProviderUnavailable, UpstreamError
from promptapi.providers import CompletionRequest, ModelConfig
from promptapi.providers.mock import MockProvider
from promptapi.providers.openai import OpenAIProvider
from tests.conftest import UPSTREAM_KEY
from tests.fakes import Behaviour


def _provider(base_url: str) -> OpenAIProvider:
    return OpenAIProvider(
        ModelConfig(
            alias="default",
            provider="openai",
            model="gpt-4o-mini",
            base_url=base_url,
            api_key=UPSTREAM_KEY,
        )
    )


REQUEST = CompletionRequest(messages=[{"role": "user", "content": "hi"}], params={"max_tokens": 5})


async def test_stream_reassembles_text_split_across_reads(fake):
    pieces = ["Grüße ", "aus ", "Köln 🌍", " — ", "日本語"]
    fake.default = Behaviour(stream_chunks=pieces, usage=(9, 4))
    provider = _provider(fake.base_url)
    try:
        deltas = [d async for d in provider.stream(REQUEST)]
    finally:
        await provider.aclose()
    assert "".join(d.text for d in deltas) == "".join(pieces)
    assert deltas[-1].input_tokens == 9 and deltas[-1].output_tokens == 4
    assert any(d.finish_reason == "stop" for d in deltas)
    body = fake.requests[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_stream_maps_upstream_errors(fake):
    fake.default = Behaviour(status=500)
    provider = _provider(fake.base_url)
    try:
        with pytest.raises(UpstreamError):
            _ = [d async for d in provider.stream(REQUEST)]
    finally:
        await provider.aclose()


async def test_stream_from_unreachable_upstream_is_unavailable():
    provider = _provider("http://127.0.0.1:1/v1")
    try:
        with pytest.raises(ProviderUnavailable):
            _ = [d async for d in provider.stream(REQUEST)]
    finally:
        await provider.aclose()


async def test_mock_streams_the_same_text_it_completes():
    provider = MockProvider(ModelConfig(alias="mock", provider="mock", model="mock"))
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 3}},
        "required": ["n"],
    }
    request = CompletionRequest(
        messages=[{"role": "user", "content": "x"}], params={}, output_schema=schema
    )
    completion = await provider.complete(request)
    streamed = "".join([d.text async for d in provider.stream(request)])
    assert streamed == completion.text == '{"n":3}'
    assert completion.mock is True
