"""Slow and guessing clients: header and body read deadlines (408 or a close), and failed
authentications throttled per client address (429 with Retry-After)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, ECHO
from tests.helpers import assert_problem, sqlite_only
from tests.hostile import while_responsive


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    seen = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        piece = sock.recv(65536)
        if not piece:
            return seen
        seen += piece
    raise AssertionError(f"the server did not close the connection: {seen!r}")


def problem_of(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


# -- headers ---------------------------------------------------------------------------------


@sqlite_only
def test_half_sent_headers_get_a_408_and_a_close_within_the_timeout(make_server):
    server = make_server(header_timeout=0.5)

    def send() -> tuple[float, bytes]:
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(b"POST /v1/prompts/echo HTTP/1.1\r\nHost: x\r\nContent-Type: app")
        answer = read_all(sock)
        sock.close()
        return time.monotonic() - started, answer

    took, answer = while_responsive(server, send)
    assert 0.4 <= took < 1.5
    status, headers, body = problem_of(answer)
    assert status == 408 and headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    assert body["code"] == "request_timeout" and body["status"] == 408


@sqlite_only
def test_trickled_headers_do_not_reset_the_deadline(make_server):
    server = make_server(header_timeout=0.5)
    sock = connect(server.port)
    started = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    closed = False
    for byte in request:  # one byte every 20 ms: 4.6 s in all, were it allowed to finish
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.02)
        if time.monotonic() - started > 2:
            break
    if not closed:
        assert read_all(sock).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 1.5
    sock.close()


@sqlite_only
def test_the_next_request_on_a_kept_alive_connection_has_a_deadline_too(make_server):
    server = make_server(header_timeout=0.5)
    sock = connect(server.port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
    assert read_all(sock).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 1.5
    sock.close()


@sqlite_only
def test_a_silent_connection_is_closed_and_a_prompt_one_is_served(make_server):
    server = make_server(header_timeout=0.5)
    silent = connect(server.port)
    started = time.monotonic()
    assert read_all(silent) == b""  # nothing was asked, so nothing is answered
    assert 0.4 <= time.monotonic() - started < 1.5
    silent.close()
    # Keep-alive: a request after the first one on the same connection has its own deadline.
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.3)  # more than the timeout in all, less than it between requests
        assert client.get("/healthz").status_code == 200


@sqlite_only
def test_endless_headers_get_a_431_and_a_close_with_memory_bounded(make_server):
    server = make_server(header_timeout=30, max_header_bytes=16 * 1024)

    def flood() -> bytes:
        sock = connect(server.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        answer = b""
        try:
            for _ in range(4096):  # up to 256 MiB, were it allowed
                sock.sendall(b"a" * 65536)
            answer = read_all(sock)
        except OSError:
            pass  # closed while we were still sending: a reset may beat the 431 to us
        sock.close()
        return answer

    answer = while_responsive(server, flood, memory_mb=50)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")

    # Just over the limit, then silence: the 431 problem is read in full.
    sock = connect(server.port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17_000)
    status, headers, body = problem_of(read_all(sock))
    sock.close()
    assert status == 431 and headers["connection"] == "close"
    assert body["code"] == "headers_too_large"
    # Headers under the limit are fine.
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz", headers={"X-Fill": "a" * 8000}).status_code == 200


# -- body ------------------------------------------------------------------------------------


@sqlite_only
def test_half_sent_body_gets_a_408_problem(make_server):
    server = make_server(body_timeout=0.5)
    with server.consumer() as consumer:
        key = consumer.headers["authorization"].removeprefix("Bearer ")
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201

    def send() -> tuple[float, bytes]:
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(
            f"POST /v1/prompts/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"text": "only part'
        )
        answer = read_all(sock)
        sock.close()
        return time.monotonic() - started, answer

    took, answer = while_responsive(server, send)
    assert 0.4 <= took < 1.5
    status, headers, body = problem_of(answer)
    assert status == 408 and headers["connection"] == "close"
    assert body["code"] == "request_timeout"
    assert body["request_id"] == headers["x-request-id"]


@sqlite_only
def test_a_trickled_body_is_cut_at_the_deadline(make_server):
    server = make_server(body_timeout=0.5)
    sock = connect(server.port)
    payload = json.dumps({"name": "x" * 400}).encode()
    sock.sendall(
        f"POST /admin/v1/prompts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
    )
    started = time.monotonic()
    for index in range(0, len(payload), 10):
        try:
            sock.sendall(payload[index : index + 10])
        except OSError:
            break
        time.sleep(0.05)
        if time.monotonic() - started > 1.5:
            break
    assert read_all(sock).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 1.6
    sock.close()


@sqlite_only
def test_a_body_sent_in_time_in_pieces_is_served(make_server):
    server = make_server(body_timeout=2)
    sock = connect(server.port)
    payload = json.dumps(ECHO).encode()
    sock.sendall(
        f"POST /admin/v1/prompts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
    )
    half = len(payload) // 2
    sock.sendall(payload[:half])
    time.sleep(0.3)
    sock.sendall(payload[half:])
    assert sock.recv(65536).startswith(b"HTTP/1.1 201")
    sock.close()


# -- guessing --------------------------------------------------------------------------------


@sqlite_only
def test_wrong_admin_tokens_are_throttled_and_the_right_one_still_works(make_server):
    server = make_server(auth_failure_limit=10, auth_failure_window=60)
    statuses = []
    with httpx.Client(base_url=server.url, timeout=10) as guesser:
        for attempt in range(30):
            response = guesser.get(
                "/admin/v1/keys", headers={"Authorization": f"Bearer wrong-token-{attempt:04d}"}
            )
            statuses.append(response.status_code)
        body = assert_problem(response, 429, "auth_throttled")
        assert 50 <= int(response.headers["retry-after"]) <= 60
        assert "retry" in body["detail"]
        started = time.monotonic()
        valid = guesser.get("/admin/v1/keys", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert valid.status_code == 200
        assert time.monotonic() - started < 0.5
    assert statuses == [401] * 10 + [429] * 20


@sqlite_only
def test_bad_consumer_keys_are_throttled_and_good_keys_still_work(make_server, fake):
    server = make_server(auth_failure_limit=5)
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
    consumer = server.consumer()
    statuses = []
    with httpx.Client(base_url=server.url, timeout=10) as guesser:
        for attempt in range(12):
            response = guesser.post(
                "/v1/prompts/echo",
                json={"text": "x"},
                headers={"Authorization": f"Bearer pk_wrong_{attempt:04d}"},
            )
            statuses.append(response.status_code)
        assert_problem(response, 429, "auth_throttled")
        assert int(response.headers["retry-after"]) >= 1
        assert (
            guesser.get("/v1/prompts", headers={"Authorization": "Bearer nope"}).status_code == 429
        )
    assert statuses == [401] * 5 + [429] * 7
    # The throttled address's valid key is served, plain and listed.
    assert consumer.post("/v1/prompts/echo", json={"text": "x"}).status_code == 200
    assert consumer.get("/v1/prompts").status_code == 200
    # The admin token is not a consumer key, but it is no guess either: never counted.
    assert server.admin.get("/admin/v1/keys").status_code == 200
    consumer.close()


@sqlite_only
def test_the_window_ends_and_other_addresses_are_not_throttled(make_server):
    server = make_server(auth_failure_limit=2, auth_failure_window=0.5)
    wrong = {"Authorization": "Bearer wrong-token"}

    def from_address(host: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=host)
        return httpx.Client(base_url=server.url, transport=transport, timeout=10)

    with from_address("127.0.0.2") as first, from_address("127.0.0.3") as second:
        assert [first.get("/admin/v1/keys", headers=wrong).status_code for _ in range(3)] == [
            401,
            401,
            429,
        ]
        assert second.get("/admin/v1/keys", headers=wrong).status_code == 401
        time.sleep(0.6)
        assert first.get("/admin/v1/keys", headers=wrong).status_code == 401


@sqlite_only
def test_the_address_table_stays_bounded(make_server):
    server = make_server(auth_failure_limit=2, auth_throttle_addresses=3)
    wrong = {"Authorization": "Bearer wrong-token"}

    def fail_from(host: str, times: int = 1) -> list[int]:
        transport = httpx.HTTPTransport(local_address=host)
        with httpx.Client(base_url=server.url, transport=transport, timeout=10) as client:
            return [client.get("/admin/v1/keys", headers=wrong).status_code for _ in range(times)]

    assert fail_from("127.0.0.10", 3) == [401, 401, 429]
    for last in range(11, 31):
        assert fail_from(f"127.0.0.{last}") == [401]
        assert len(server.app.state.auth_throttle) <= 3
    # The oldest address was forgotten to make room (bounded memory, at that price).
    assert fail_from("127.0.0.10") == [401]


# -- `promptapi serve` applies the header deadline, with several workers too ------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_applies_the_header_timeout(tmp_path: Path, workers: str):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PROMPTAPI_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "PROMPTAPI_PROMPTS_DIR": str(tmp_path),
        "PROMPTAPI_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROMPTAPI_HEADER_TIMEOUT": "0.5",
        "PROMPTAPI_WORKERS": workers,
        "PROMPTAPI_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "promptapi", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        for _ in range(int(workers)):  # each worker may take the connection
            sock = connect(port)
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert read_all(sock).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 1.5
            sock.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


@sqlite_only
def test_the_h11_protocol_has_the_same_header_deadline(database_url, tmp_path):
    from promptapi.config import Settings
    from promptapi.web.timeouts import H11HTTPProtocol
    from tests.conftest import Server

    settings = Settings(database_url=database_url, prompts_dir=tmp_path, header_timeout=0.5)
    server = Server(settings)
    server._server.config.http = H11HTTPProtocol
    try:
        server.start()
        assert server.client.get("/healthz").status_code == 200
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 408")
        assert 0.4 <= time.monotonic() - started < 1.5
        sock.close()
    finally:
        server.stop()
