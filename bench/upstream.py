"""Fake OpenAI upstream for the benchmark: an nginx config using the echo module.

nginx answers ``POST /v1/chat/completions`` with a fixed chat completion after a
fixed delay. One ``server`` block is generated per simulated latency, each on its
own port, so a single nginx process (one worker) serves every scenario.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
CHAT_PATH = "/v1/chat/completions"

CHAT_COMPLETION: dict[str, object] = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "positive"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}
CHAT_COMPLETION_BODY = json.dumps(CHAT_COMPLETION, separators=(",", ":"))
EXPECTED_CONTENT = "positive"


def _server_block(port: int, latency_ms: int) -> str:
    # echo_read_request_body makes nginx consume the request body before the
    # response is written, so the keep-alive connection stays in sync.
    sleep = f"            echo_sleep {latency_ms / 1000:g};\n" if latency_ms > 0 else ""
    # The JSON contains neither single quotes nor '$', so it is safe verbatim
    # inside a single-quoted nginx string (no variable interpolation happens).
    return _server(
        port,
        f"simulated upstream latency: {latency_ms} ms",
        "application/json",
        f"{sleep}            echo -n '{CHAT_COMPLETION_BODY}';\n",
    )


def _server(port: int, comment: str, content_type: str, answer: str) -> str:
    """A server block answering POST CHAT_PATH with the `answer` directives."""
    return (
        "    server {\n"
        f"        listen 127.0.0.1:{port} backlog=4096;\n"
        f"        # {comment}\n"
        f"        location = {CHAT_PATH} {{\n"
        "            limit_except POST { deny all; }\n"
        f"            default_type {content_type};\n"
        "            echo_read_request_body;\n"
        f"{answer}"
        "        }\n"
        "        location / { return 404; }\n"
        "    }\n"
    )


# Streaming: a chat completion stream (stream=true, with usage) of STREAM_CHUNKS content
# chunks, each flushed on its own, with a fixed pause between them.
STREAM_CHUNKS = 20
STREAM_PIECES = [f"tok{i} " for i in range(STREAM_CHUNKS)]
STREAM_EXPECTED = "".join(STREAM_PIECES)


def _stream_chunk(delta: dict[str, object], finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        },
        separators=(",", ":"),
    )


STREAM_USAGE_CHUNK = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": STREAM_CHUNKS, "total_tokens": 32},
    },
    separators=(",", ":"),
)


# The data of every event, in order (then `[DONE]`): the role, the content, the finish reason,
# the usage.
STREAM_EVENTS = [
    _stream_chunk({"role": "assistant", "content": ""}),
    *(_stream_chunk({"content": piece}) for piece in STREAM_PIECES),
    _stream_chunk({}, "stop"),
    STREAM_USAGE_CHUNK,
]


def _stream_server_block(port: int, interval_ms: int) -> str:
    """One chunk per `echo` + `echo_flush` (nginx escapes \\n in quoted strings), so every
    event leaves nginx as its own write, like a model's tokens."""

    def event(data: str) -> str:
        return f"            echo -n 'data: {data}\\n\\n';\n            echo_flush;\n"

    sleep = f"            echo_sleep {interval_ms / 1000:g};\n" if interval_ms > 0 else ""
    role, *pieces, finish, usage = STREAM_EVENTS
    body = event(role)
    for piece in pieces:
        body += sleep + event(piece)
    body += event(finish) + event(usage) + event("[DONE]")
    comment = f"streamed answer: {STREAM_CHUNKS} chunks, {interval_ms} ms apart"
    return _server(port, comment, "text/event-stream", body)


def nginx_config(
    workdir: Path,
    ports_by_latency_ms: Mapping[int, int],
    stream_ports_by_interval_ms: Mapping[int, int] | None = None,
) -> str:
    """Render a self-contained nginx.conf keeping every path inside ``workdir``."""
    for text in (CHAT_COMPLETION_BODY, *STREAM_EVENTS):
        if "'" in text or "$" in text:
            raise ValueError("response body cannot be embedded in the nginx config")
    servers = "".join(
        _server_block(port, latency) for latency, port in sorted(ports_by_latency_ms.items())
    )
    servers += "".join(
        _stream_server_block(port, interval)
        for interval, port in sorted((stream_ports_by_interval_ms or {}).items())
    )
    return (
        f"load_module {ECHO_MODULE};\n"
        "worker_processes 1;\n"
        "daemon off;\n"
        "master_process on;\n"
        f"pid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/nginx-error.log warn;\n"
        "events {\n"
        "    worker_connections 8192;\n"
        "    multi_accept on;\n"
        "}\n"
        "http {\n"
        "    access_log off;\n"
        "    server_tokens off;\n"
        "    keepalive_requests 1000000;\n"
        "    keepalive_timeout 120s;\n"
        f"    client_body_temp_path {workdir}/client_body;\n"
        f"    proxy_temp_path {workdir}/proxy;\n"
        f"    fastcgi_temp_path {workdir}/fastcgi;\n"
        f"    uwsgi_temp_path {workdir}/uwsgi;\n"
        f"    scgi_temp_path {workdir}/scgi;\n"
        f"{servers}"
        "}\n"
    )


def write_nginx_config(
    workdir: Path,
    ports_by_latency_ms: Mapping[int, int],
    stream_ports_by_interval_ms: Mapping[int, int] | None = None,
) -> Path:
    """Write ``nginx.conf`` into ``workdir`` and return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "nginx.conf"
    path.write_text(nginx_config(workdir, ports_by_latency_ms, stream_ports_by_interval_ms))
    return path


def nginx_argv(nginx: str, workdir: Path, config: Path) -> list[str]:
    """Command line running nginx in the foreground with everything under ``workdir``."""
    return [nginx, "-p", f"{workdir}/", "-e", f"{workdir}/nginx-error.log", "-c", str(config)]
