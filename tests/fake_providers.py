"""Fake Anthropic Messages and Gemini upstreams on loopback sockets, with scripted behaviours.

Like the fake OpenAI upstream (tests/fakes.py), each checks every request body against the
provider's official SDK's request types and parses every answer it builds with the SDK's
response models (tests/sdk_contract.py); headers, query and what the SDK has no type for are
checked against contracts written from the official documentation (tests/contracts/*.json).
Any violation is kept in `violations` for the tests to assert there are none.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests import contract, sdk_contract
from tests.fakes import Behaviour, FakeOpenAI, write_split

LEAK = "fake failure sk-secret-in-upstream-message"


@dataclass
class ProviderBehaviour(Behaviour):
    """Behaviour, plus what only these protocols can do."""

    finish: str | None = None  # stop_reason / finishReason (default: the normal one)
    blocked: str | None = None  # gemini: promptFeedback.blockReason
    thought: str | None = None  # gemini: a thought part before the answer
    error_type: str | None = None  # the provider's error type / status in the error body
    reason: str | None = None  # gemini: google.rpc.ErrorInfo reason (e.g. API_KEY_INVALID)
    stream_error: str | None = None  # anthropic: an error event after the first delta
    cut: bool = False  # the stream stops before its final event


class _ContractFake(FakeOpenAI):
    contract_name = ""
    provider = ""

    def check(self, definition: str, instance: Any, what: str) -> None:
        self.violations.extend(
            f"{what} {v}"
            for v in contract.provider_problems(self.contract_name, definition, instance)
        )

    def check_request(self, body: Any) -> None:
        self.violations.extend(sdk_contract.request_problems(self.provider, body))

    def check_answer(self, kind: str, data: Any) -> None:
        self.violations.extend(sdk_contract.answer_problems(self.provider, kind, data))

    async def _receive(self, request: web.Request) -> tuple[dict[str, Any], ProviderBehaviour]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_unparseable": raw.decode(errors="replace")}
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(
            {"body": body, "headers": headers, "path": request.path, "query": dict(request.query)}
        )
        self.check("RequestHeaders", headers, "request headers")
        behaviour = self.script.popleft() if self.script else self.default
        if not isinstance(behaviour, ProviderBehaviour):
            behaviour = ProviderBehaviour(**behaviour.__dict__)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        return body, behaviour

    async def answer(
        self, request: web.Request, behaviour: ProviderBehaviour, payload: Any
    ) -> web.StreamResponse:
        if behaviour.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        raw = behaviour.body if behaviour.body is not None else json.dumps(payload).encode()
        return await self.send(request, behaviour, raw)

    async def sse(
        self, request: web.Request, behaviour: ProviderBehaviour, events: list[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        return await write_split(response, b"".join(events), behaviour.trickle)


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeAnthropic(_ContractFake):
    contract_name = "anthropic-messages"
    provider = "anthropic"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._handle)

    def reset(self) -> None:
        super().reset()
        self.default = ProviderBehaviour(model="claude-sonnet-4-5-20250929")

    def error(self, behaviour: ProviderBehaviour) -> dict[str, Any]:
        kind = behaviour.error_type or _ANTHROPIC_ERRORS.get(behaviour.status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": LEAK}, "request_id": "req_1"}
        self.check_answer("error", body)
        return body

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body, behaviour = await self._receive(request)
        self.check_request(body)
        if behaviour.status != 200:
            return await self.answer(request, behaviour, self.error(behaviour))
        choice = body.get("tool_choice") or {}
        tool = choice.get("name") if choice.get("type") == "tool" else None
        if body.get("stream") and behaviour.body is None and not behaviour.drop:
            return await self._stream(request, behaviour, tool)
        if tool is not None:
            block = {
                "type": "tool_use",
                "id": "toolu_1",
                "name": tool,
                "input": json.loads(behaviour.content or "{}"),
            }
        else:
            block = {"type": "text", "text": behaviour.content or ""}
        message = self.message(behaviour, [block], tool)
        self.check_answer("answer", message)
        return await self.answer(request, behaviour, message)

    def message(
        self, behaviour: ProviderBehaviour, content: list[dict[str, Any]], tool: str | None
    ) -> dict[str, Any]:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": behaviour.model,
            "stop_reason": behaviour.finish or ("tool_use" if tool else "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": behaviour.usage[0],
                "output_tokens": behaviour.usage[1],
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    async def _stream(
        self, request: web.Request, behaviour: ProviderBehaviour, tool: str | None
    ) -> web.StreamResponse:
        start = self.message(behaviour, [], tool) | {"stop_reason": None}
        start["usage"] = {**start["usage"], "output_tokens": 1}
        if tool is not None:
            block: dict[str, Any] = {"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}
        else:
            block = {"type": "text", "text": ""}
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": block},
            {"type": "ping"},
        ]
        for n, piece in enumerate(behaviour.stream_chunks or [behaviour.content or ""]):
            delta = (
                {"type": "input_json_delta", "partial_json": piece}
                if tool is not None
                else {"type": "text_delta", "text": piece}
            )
            events.append({"type": "content_block_delta", "index": 0, "delta": delta})
            if n == 0 and behaviour.stream_error:
                events.append(
                    {"type": "error", "error": {"type": behaviour.stream_error, "message": LEAK}}
                )
                break
        if not behaviour.cut and not behaviour.stream_error:
            events += [
                {"type": "content_block_stop", "index": 0},
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": behaviour.finish or ("tool_use" if tool else "end_turn"),
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": behaviour.usage[1]},
                },
                {"type": "message_stop"},
            ]
        wire: list[bytes] = []
        for event in events:
            self.check_answer("event", event)
            data = json.dumps(event, ensure_ascii=False)
            wire.append(f"event: {event['type']}\ndata: {data}\n\n".encode())
        return await self.sse(request, behaviour, wire)


_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FakeGemini(_ContractFake):
    contract_name = "gemini-generate-content"
    provider = "gemini"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{target}", self._handle)

    def reset(self) -> None:
        super().reset()
        self.default = ProviderBehaviour(model="gemini-2.5-flash")

    def error(self, behaviour: ProviderBehaviour) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": behaviour.status,
            "message": LEAK,
            "status": behaviour.error_type or _GEMINI_STATUS.get(behaviour.status, "INTERNAL"),
        }
        if behaviour.reason:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": behaviour.reason,
                    "domain": "googleapis.com",
                }
            ]
        body = {"error": error}
        self.check("ErrorResponse", body, "error")
        return body

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body, behaviour = await self._receive(request)
        self.check_request(body)
        config = body.get("generationConfig") if isinstance(body, dict) else None
        if isinstance(config, dict) and "responseJsonSchema" in config:
            self.check("ResponseJsonSchema", config["responseJsonSchema"], "request")
        self.check("RequestQuery", dict(request.query), "request query")
        model, _, method = request.match_info["target"].partition(":")
        if method not in ("generateContent", "streamGenerateContent") or not model:
            self.violations.append(f"unknown method {request.match_info['target']!r}")
        if behaviour.status != 200:
            return await self.answer(request, behaviour, self.error(behaviour))
        if method == "streamGenerateContent" and behaviour.body is None and not behaviour.drop:
            if request.query.get("alt") != "sse":
                self.violations.append("streamGenerateContent without alt=sse")
            return await self._stream(request, behaviour)
        response = self.response(behaviour, behaviour.content, final=True)
        self.check_answer("answer", response)
        return await self.answer(request, behaviour, response)

    def response(
        self, behaviour: ProviderBehaviour, text: str | None, *, final: bool
    ) -> dict[str, Any]:
        prompt_tokens, output_tokens = behaviour.usage
        usage: dict[str, Any] = {"promptTokenCount": prompt_tokens}
        if behaviour.blocked:
            return {
                "promptFeedback": {"blockReason": behaviour.blocked, "safetyRatings": []},
                "usageMetadata": usage | {"totalTokenCount": prompt_tokens},
                "modelVersion": behaviour.model,
            }
        candidate: dict[str, Any] = {"index": 0}
        parts = []
        if behaviour.thought and final:
            parts.append({"text": behaviour.thought, "thought": True})
        if text:
            parts.append({"text": text})
        if parts:
            candidate["content"] = {"role": "model", "parts": parts}
        if final:
            candidate["finishReason"] = behaviour.finish or "STOP"
            usage["candidatesTokenCount"] = output_tokens
            usage["totalTokenCount"] = prompt_tokens + output_tokens
            if behaviour.thought:
                usage["thoughtsTokenCount"] = 5
                usage["totalTokenCount"] += 5
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": behaviour.model,
            "responseId": "resp-fake",
        }

    async def _stream(
        self, request: web.Request, behaviour: ProviderBehaviour
    ) -> web.StreamResponse:
        pieces = behaviour.stream_chunks or [behaviour.content or ""]
        chunks = [self.response(behaviour, piece, final=False) for piece in pieces[:-1]]
        if not behaviour.cut:
            chunks.append(self.response(behaviour, pieces[-1], final=True))
        wire: list[bytes] = []
        for chunk in chunks:
            self.check_answer("chunk", chunk)
            wire.append(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\r\n\r\n")
        return await self.sse(request, behaviour, wire)
