"""One worker, one loop thread: idle, slow and vanishing clients never hold up the others.

All of these run a single worker with --threads 1 unless they say otherwise, so the only
thing that can serve the second client while the first one dawdles is the event loop. The
tests order events rather than time them: the prompt client must be answered *while* the slow
one is still unfinished, which the test controls.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from pathlib import Path

import pytest
from conftest import Server
from conn_wire import Serve, Wire, pattern, request, serve_conn, wait_for_file

pytestmark = pytest.mark.functional

HELLO = request("GET", "/hello")
PROMPT = 5.0  # what "promptly" means for the other client: far below any stall we provoke


def hello_now(server: Server) -> None:
    """A fresh client is answered within PROMPT seconds."""
    with Wire.connect(server, timeout=PROMPT) as w:
        w.send(HELLO)
        r = w.read_response()
        assert (r.status, r.body) == (200, b"hello\n")


def small_window_socket(server: Server) -> socket.socket:
    """A client with a tiny receive buffer, so a large response backs up in the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(server.address)
    return sock


# -- many idle connections ----------------------------------------------------------------


def test_many_idle_connections_while_another_client_is_served(serve: Serve) -> None:
    server = serve_conn(serve, "--keep-alive", "120", "--header-timeout", "120")
    idle: list[Wire] = []
    try:
        for i in range(300):
            w = Wire.connect(server, timeout=20)
            if i % 3 == 1:  # idle after a request (keep-alive)
                w.send(HELLO)
                assert w.read_response().body == b"hello\n"
            elif i % 3 == 2:  # idle in the middle of a request head
                w.send(b"GET /hello HTTP/1.1\r\n")
            idle.append(w)
        hello_now(server)
        # Every idle connection was really held open, and each is still served.
        for i, w in enumerate(idle):
            w.send(b"Host: t\r\n\r\n" if i % 3 == 2 else HELLO)
        for w in idle:
            assert w.read_response().body == b"hello\n"
    finally:
        for w in idle:
            w.close()


# -- a slow sender ------------------------------------------------------------------------


def test_slow_body_sender_does_not_block_others(serve: Serve) -> None:
    server = serve_conn(serve)
    body = b"0123456789" * 2
    with Wire.connect(server, timeout=20) as slow:
        slow.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slow.send(request("POST", "/echo", [("Content-Length", str(len(body)))]))
        for i in range(0, len(body), 2):  # ~2 s in all
            slow.send(body[i : i + 2])
            if i in (4, 12):
                hello_now(server)  # answered while the slow body is still incomplete
            time.sleep(0.2)
        r = slow.read_response("POST")
        assert (r.status, r.body) == (200, body)


def test_slow_head_sender_does_not_block_others(serve: Serve) -> None:
    server = serve_conn(serve)
    data = request("GET", "/hello", [("X-Slow", "yes")])
    with Wire.connect(server, timeout=20) as slow:
        slow.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = len(data) // 8 + 1
        for n, i in enumerate(range(0, len(data), step)):
            slow.send(data[i : i + step])
            if n in (1, 5):
                hello_now(server)
            time.sleep(0.2)
        assert slow.read_response().body == b"hello\n"


# -- a slow reader ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "file", "stream"])
def test_large_response_to_a_slow_reader_does_not_stall_others(
    serve: Serve, tmp_path: Path, kind: str
) -> None:
    server = serve_conn(serve, "--threads", "1")
    size = 16 << 20
    if kind == "bytes":
        target = f"/big?size={size}"
        expected = pattern(size)
    elif kind == "stream":  # a generator: the loop must pause it, not wait inside it
        piece = 64 * 1024
        target = f"/stream?n={size // piece}&size={piece}"
        expected = b"".join((b"%d" % (i % 10)) * piece for i in range(size // piece))
    else:
        expected = os.urandom(size)
        path = tmp_path / "blob.bin"
        path.write_bytes(expected)
        target = f"/file?path={path}"
    slow = small_window_socket(server)
    with Wire(slow) as w:
        w.send(request("GET", target) + HELLO)
        head = w.read_head()  # the app ran; most of the body is still in the server
        hello_now(server)
        hello_now(server)
        if kind == "stream":
            w.read_chunked_body(head)
            assert head.complete
            body = head.body
        else:
            assert head.header("Content-Length") == str(size)
            body = w.read_exact(size)
        assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
        assert w.read_response().body == b"hello\n"  # the pipelined request, in order


def test_pipelined_requests_behind_a_large_response_wait_their_turn(serve: Serve) -> None:
    server = serve_conn(serve)
    size = 8 << 20
    slow = small_window_socket(server)
    with Wire(slow) as w:
        w.send(request("GET", f"/big?size={size}") + request("POST", "/echo", body=b"next"))
        head = w.read_head()
        hello_now(server)
        assert head.status == 200
        assert w.read_exact(size) == pattern(size)
        assert w.read_response("POST").body == b"next"


# -- clients that disconnect --------------------------------------------------------------


@pytest.mark.parametrize("threads", ["1", "4"])
def test_client_closing_mid_stream_closes_the_app_iterator(
    serve: Serve, tmp_path: Path, threads: str
) -> None:
    server = serve_conn(serve, "--threads", threads)
    marker = tmp_path / "closed"
    with Wire.connect(server, timeout=20) as w:
        w.send(request("GET", f"/forever?marker={marker}"))
        r = w.read_head()
        assert r.header("Transfer-Encoding") == "chunked"
        w.read_exact(1 << 20)  # a good part of the endless body
    # The client is gone: the server must notice, stop, and call close() on the iterator.
    assert wait_for_file(marker), server.log()[-2000:]
    assert int(marker.read_text()) >= 1 << 20
    hello_now(server)
    assert server.proc.poll() is None


def test_client_closing_while_a_large_response_is_pending(serve: Serve) -> None:
    server = serve_conn(serve)
    for _ in range(3):
        slow = small_window_socket(server)
        with Wire(slow) as w:
            w.send(request("GET", f"/big?size={16 << 20}"))
            assert w.read_head().status == 200
        hello_now(server)
    assert server.proc.poll() is None


@pytest.mark.parametrize("threads", ["1", "2"])
def test_client_closing_before_the_response(serve: Serve, threads: str) -> None:
    server = serve_conn(serve, "--threads", threads)
    for path in ("/sleep?s=0.5", "/big?size=8000000", "/stream?n=50&size=100000"):
        with Wire.connect(server) as w:
            w.send(request("GET", path))
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # closed with a reset while the app runs; the server shrugs and serves on
        hello_now(server)
    time.sleep(0.6)
    hello_now(server)
    assert server.proc.poll() is None


def test_many_clients_pipelining_at_once_each_get_their_answers_in_order(serve: Serve) -> None:
    # Whole keep-alive responses wait for the end of the loop's turn and go out together:
    # every client still gets exactly its own answers, in order, and can go on.
    server = serve_conn(serve)
    wires = [Wire.connect(server) for _ in range(16)]
    try:
        for round_ in range(2):
            for n, w in enumerate(wires):
                w.send(b"".join(request("POST", "/echo", body=f"{n}.{round_}.{i}".encode())
                                for i in range(4)))  # fmt: skip
            for n, w in enumerate(wires):
                bodies = [w.read_response().body for _ in range(4)]
                assert bodies == [f"{n}.{round_}.{i}".encode() for i in range(4)]
    finally:
        for w in wires:
            w.close()
