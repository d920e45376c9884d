"""A provider that answers without any network: deterministic, schema-satisfying, marked mock.

It makes a fresh server useful before any provider key exists. For a prompt with an output
schema it returns the output of the example whose input matches (else the first example with an
output, else a sample instance of the schema); for a text prompt it echoes the last message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from promptapi.providers.base import Completion, CompletionRequest, ModelConfig, StreamDelta
from promptapi.samples import sample


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class MockProvider:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def answer(self, request: CompletionRequest) -> str:
        with_output = [e for e in request.examples if "output" in e]
        chosen = next((e for e in with_output if e.get("input") == request.input), None)
        if chosen is None and with_output:
            chosen = with_output[0]
        if chosen is not None:
            output = chosen["output"]
            # With an output schema the answer is parsed as JSON, so even a string is encoded.
            if isinstance(output, str) and request.output_schema is None:
                return output
            return orjson.dumps(output).decode()
        if request.output_schema is not None:
            return orjson.dumps(sample(request.output_schema)).decode()
        last = request.messages[-1]["content"] if request.messages else ""
        return f"[mock answer] {last[:500]}"

    async def complete(self, request: CompletionRequest) -> Completion:
        text = self.answer(request)
        prompt_text = "".join(m["content"] for m in request.messages)
        return Completion(
            text=text,
            model=self.config.model,
            input_tokens=_tokens(prompt_text),
            output_tokens=_tokens(text),
            finish_reason="stop",
            mock=True,
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        completion = await self.complete(request)
        text = completion.text
        for start in range(0, len(text), 16):
            yield StreamDelta(text=text[start : start + 16], model=completion.model)
        yield StreamDelta(
            model=completion.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            finish_reason="stop",
        )

    async def aclose(self) -> None:
        return None
