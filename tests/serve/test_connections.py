"""Slow and idle clients against a real uvicorn server on 127.0.0.1, set up as `digitgan serve`
sets it up (``make_server``) but with short timeouts, so that the tests take a second or two."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

from digitgan.serve import create_app
from digitgan.serve.app import KEEP_ALIVE, MAX_CONNECTIONS, REQUEST_TIMEOUT, make_server

TIMEOUT = 0.5  # request_timeout and keep_alive of the servers here
SLACK = 2.5  # seconds a closed connection may take to be seen as closed, on a busy machine


@pytest.fixture(scope="module")
def url(gan, running):
    with running(create_app(gan), request_timeout=TIMEOUT, keep_alive=TIMEOUT) as u:
        yield u


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_after(sock: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (reading and discarding any answer), while
    sending ``trickle`` one byte every 50 ms; fails if it stays open 10 s."""
    t0 = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - t0 < 10:
        if trickle:
            try:
                sock.sendall(trickle[:1])
            except OSError:  # reset: closed
                return time.monotonic() - t0
            trickle = trickle[1:]
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    pytest.fail("the server kept a connection open for 10 s")


def get(url: str, path: str = "/api/info") -> tuple[int, bytes]:
    """Status and body of a GET over a new connection (which the server then closes)."""
    with connect(url) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_connection_that_sends_nothing_is_closed_within_the_timeout(url):
    with connect(url) as sock:
        assert closed_after(sock) < TIMEOUT + SLACK


@pytest.mark.parametrize(
    "trickle",
    [
        b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200,  # headers never end
        b"POST /api/samples HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b" " * 200,  # the body never ends
        b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" + b" " * 200,
    ],
    ids=["head", "post-body", "get-body"],
)
def test_a_request_sent_a_byte_at_a_time_is_cut_off(url, trickle):
    """Sending a byte now and then does not keep a connection open: the whole request must
    arrive within the timeout."""
    with connect(url) as sock:
        assert closed_after(sock, trickle) < TIMEOUT + SLACK


def test_an_idle_connection_is_closed_after_a_request(url):
    with connect(url) as sock:
        sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
        assert closed_after(sock) < TIMEOUT + SLACK


def test_an_answer_left_unread_is_dropped(gan, running):
    """A client that asks for a large answer and never reads it does not keep the connection
    (and the answer in memory): it is dropped once the answer has waited TIMEOUT."""
    from digitgan.serve.app import _listen

    listener = _listen("127.0.0.1", 0)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # inherited when accepting
    with running(create_app(gan), sock=listener, request_timeout=TIMEOUT) as u:
        host, port = u.removeprefix("http://").rsplit(":", 1)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            body = b'{"n": 256, "format": "json"}'  # about 600 KB of answer
            sock.sendall(
                b"POST /api/samples HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            time.sleep(TIMEOUT + SLACK)  # reading nothing meanwhile
            received = b""
            sock.settimeout(10)
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass
        head, _, content = received.partition(b"\r\n\r\n")
        if head:
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert length > 300_000 and len(content) < length  # cut off
        assert get(u)[0] == 200  # and the server goes on


def test_request_headers_over_16_kib_get_a_400(url):
    with connect(url) as sock:  # 14 KB: served
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 14_000 + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    with connect(url) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
        assert closed_after(sock) < SLACK


def test_many_slow_connections_are_all_closed_and_others_are_served_meanwhile(url, gan):
    with ExitStack() as stack:
        silent = [stack.enter_context(connect(url)) for _ in range(30)]
        status, body = get(url)  # served while 30 connections hang
        assert status == 200 and json.loads(body)["step"] == gan.step
        with ThreadPoolExecutor(8) as pool:
            times = list(pool.map(closed_after, silent))
    assert max(times) < TIMEOUT + SLACK, times


def test_connections_beyond_the_limit_get_a_503_until_others_close(gan, running):
    with running(create_app(gan), request_timeout=TIMEOUT, max_connections=3) as u:
        with ExitStack() as stack:
            held = [stack.enter_context(connect(u)) for _ in range(2)]
            time.sleep(0.1)  # let the server see them
            assert get(u)[0] == 503  # 2 held + this one: at the limit
            for sock in held:
                closed_after(sock)
        assert get(u)[0] == 200


def test_the_server_digitgan_serve_runs_has_these_bounds(gan):
    config = make_server(create_app(gan)).config
    assert config.timeout_keep_alive == KEEP_ALIVE == 5
    assert config.limit_concurrency == MAX_CONNECTIONS == 64
    assert config.http.request_timeout == REQUEST_TIMEOUT == 10
    assert config.ws == "none"
