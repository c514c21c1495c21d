"""HTTP/1.1 on the wire: keep-alive, pipelining, chunked both ways, 100-continue, HEAD,
write(), file_wrapper, app errors, spooled bodies and app threads.

Every test talks to a real brick process over raw sockets (see conn_wire.py) so that exact
bytes, framing and connection closes are visible.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from conftest import Server
from conn_wire import Closed, Serve, Wire, chunked, pattern, request, serve_conn

pytestmark = pytest.mark.functional

HELLO = request("GET", "/hello")


@pytest.fixture
def server(serve: Serve) -> Server:
    return serve_conn(serve)


# -- keep-alive -----------------------------------------------------------------------------


def test_several_requests_on_one_connection(server: Server) -> None:
    with Wire.connect(server) as w:
        for i in range(5):
            w.send(request("POST", "/echo", body=b"request %d" % i))
            r = w.read_response()
            assert (r.status, r.body) == (200, b"request %d" % i)
            assert r.header("Connection") is None  # 1.1: persistent by default
        w.send(HELLO)
        assert w.read_response().body == b"hello\n"
        assert not w.closed_by_peer(within=0.5)


def test_http10_keep_alive_on_request(server: Server) -> None:
    with Wire.connect(server) as w:
        for _ in range(3):
            w.send(request("GET", "/hello", [("Connection", "keep-alive")], version="HTTP/1.0"))
            r = w.read_response()
            assert (r.status, r.body) == (200, b"hello\n")
            assert r.header("Connection") == "keep-alive"
        assert not w.closed_by_peer(within=0.5)


def test_http10_without_keep_alive_closes(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("GET", "/hello", version="HTTP/1.0", host=None))
        r = w.read_response()
        assert (r.status, r.body) == (200, b"hello\n")
        assert r.header("Connection") == "close"
        assert w.closed_by_peer()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_connection_close_from_client(serve: Serve, threads: str, tmp_path: Path) -> None:
    server = serve_conn(serve, "--threads", threads)
    marker = tmp_path / "after-close"
    with Wire.connect(server) as w:
        w.send(request("GET", "/hello", [("Connection", "close")]))
        w.send(request("GET", f"/mark?path={marker}"))  # must never be answered
        r = w.read_response()
        assert (r.status, r.body) == (200, b"hello\n")
        assert r.header("Connection") == "close"
        assert w.closed_by_peer()
    assert not marker.exists()


def test_connection_close_from_app(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "after-close"
    with Wire.connect(server) as w:
        w.send(request("GET", "/close") + request("GET", f"/mark?path={marker}"))
        r = w.read_response()
        assert (r.status, r.body) == (200, b"close\n")
        assert r.header("Connection") == "close"
        assert w.closed_by_peer()
    assert not marker.exists()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_close_with_unread_input_does_not_lose_the_response(serve: Serve, threads: str) -> None:
    # The server closes after a large Connection: close response while the client has sent
    # more it will never read. A plain close() would reset the connection and throw away the
    # part of the response still queued in the kernel; the server must linger instead.
    # (With threads the app's thread waits for the client; without, the loop does.)
    server = serve_conn(serve, "--threads", threads)
    size = 8 << 20
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(server.address)
    with Wire(sock) as w:
        w.send(request("GET", f"/big?size={size}", [("Connection", "close")]))
        head = w.read_head()
        w.send(HELLO * 3)  # arrives while the response is still being written
        assert head.header("Connection") == "close"
        assert w.read_exact(size) == pattern(size)
        assert w.closed_by_peer()


def segments_received(sock: socket.socket) -> int:
    """tcpi_segs_in of Linux's struct tcp_info: every segment this socket has received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[140:144], "little")


def packets_for(server: Server, data: bytes, *, closes: bool) -> int:
    """Segments a fresh connection receives up to the end of the response to `data`."""
    with Wire.connect(server) as w:
        w.send(data)
        r = w.read_response()
        assert r.complete
        if closes:
            assert w.closed_by_peer()
        return segments_received(w.sock)


@pytest.mark.parametrize("threads", ["1", "4"])
def test_the_fin_arrives_with_the_end_of_a_closing_response(serve: Serve, threads: str) -> None:
    # The server's FIN rides on the response's last segment instead of following it: the
    # client receives as many packets as for the same response on a keep-alive connection
    # (handshake, ack of the request, response), one fewer to send, receive and wake up for.
    server = serve_conn(serve, "--threads", threads)
    close = [("Connection", "close")]
    baseline = packets_for(server, HELLO, closes=False)
    assert packets_for(server, request("GET", "/hello", close), closes=True) == baseline
    assert packets_for(server, request("GET", "/boom", close), closes=True) == baseline  # 500
    bad = b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"  # 400: refused, lingers
    assert packets_for(server, bad, closes=True) == baseline
    streamed = request("GET", "/stream?n=3&size=5", close)  # chunked: the FIN rides on 0\r\n
    assert packets_for(server, streamed, closes=True) <= packets_for(
        server, request("GET", "/stream?n=3&size=5"), closes=False
    )


# -- pipelining -----------------------------------------------------------------------------


def pipeline() -> tuple[bytes, list[tuple[str, bytes]]]:
    """Five requests in one send, one with a body the app ignores, and what each answers."""
    data = (
        HELLO
        + request("POST", "/echo", body=b"first body")
        + request("POST", "/hello", body=b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        + request("POST", "/echo", [("Transfer-Encoding", "chunked")], chunked(b"chun", b"ked"))
        + request("GET", "/stream?n=2&size=3")
    )
    expected = [
        ("GET", b"hello\n"),
        ("POST", b"first body"),
        ("POST", b"hello\n"),  # the body looked like a request: it must not be parsed as one
        ("POST", b"chunked"),
        ("GET", b"000111"),
    ]
    return data, expected


@pytest.mark.parametrize("threads", ["1", "4"])
def test_pipelined_requests_answered_in_order(serve: Serve, threads: str) -> None:
    server = serve_conn(serve, "--threads", threads)
    data, expected = pipeline()
    with Wire.connect(server) as w:
        w.send(data)
        for method, body in expected:
            r = w.read_response(method)
            assert (r.status, r.body) == (200, body)
        w.send(HELLO)  # the connection is still in step
        assert w.read_response().body == b"hello\n"
        assert not w.closed_by_peer(within=0.3)


@pytest.mark.parametrize("threads", ["1", "4"])
def test_thousands_of_pipelined_requests_in_one_send_all_answered(
    serve: Serve, threads: str
) -> None:
    # The same small head 3000 times: the responses back up behind a client that reads
    # only at the end, and each is answered once, in order. (That taking a read-ahead head
    # never recurses is shown in tests/unit/test_connection_flow.py, where the test, not
    # the kernel, decides how much each send takes.)
    server = serve_conn(serve, "--threads", threads)
    count = 3000
    with Wire.connect(server, timeout=30) as w:
        w.send(HELLO * count)
        for n in range(count):
            r = w.read_response()
            assert (r.status, r.body) == (200, b"hello\n"), n
        assert not w.closed_by_peer(within=0.3)


def test_pipelined_requests_split_at_every_byte(server: Server) -> None:
    data, expected = pipeline()
    with Wire.connect(server) as w:
        w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 7):
            w.send(data[i : i + 7])
        for method, body in expected:
            r = w.read_response(method)
            assert (r.status, r.body) == (200, body)


# -- chunked both ways ------------------------------------------------------------------------


def test_chunked_upload_echoed(server: Server) -> None:
    pieces = [os.urandom(n) for n in (1, 100, 5000, 70000, 3)]
    body = b"".join(b"%x;name=value\r\n%s\r\n" % (len(p), p) for p in pieces)
    body += b"0\r\nX-Trailer: ignored\r\n\r\n"
    with Wire.connect(server) as w:
        w.send(request("POST", "/echo", [("Transfer-Encoding", "chunked")], body))
        r = w.read_response()
        assert r.status == 200
        assert r.body == b"".join(pieces)
        assert r.header("Content-Length") == str(len(r.body))
        w.send(HELLO)
        assert w.read_response().body == b"hello\n"


def test_streamed_response_is_chunked_on_http11(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("GET", "/stream?n=4&size=1000"))
        r = w.read_response()
        assert r.framing == "chunked" and r.complete
        assert r.header("Content-Length") is None
        assert r.body == b"".join((b"%d" % i) * 1000 for i in range(4))
        w.send(HELLO)
        assert w.read_response().body == b"hello\n"


def test_streamed_response_is_close_delimited_on_http10(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(
            request(
                "GET", "/stream?n=4&size=1000", [("Connection", "keep-alive")], version="HTTP/1.0"
            )
        )
        r = w.read_response()
        assert r.version == "HTTP/1.1"
        assert r.framing == "close"
        assert r.header("Transfer-Encoding") is None
        assert r.header("Connection") == "close"
        assert r.body == b"".join((b"%d" % i) * 1000 for i in range(4))
        assert w.eof


# -- Expect: 100-continue ---------------------------------------------------------------------


def test_100_continue_arrives_before_the_body_is_sent(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "5")]))
        # Nothing of the body is sent yet: the 100 must come first.
        assert w.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.send(b"hello")
        r = w.read_response("POST")
        assert (r.status, r.body) == (200, b"hello")


def test_100_continue_with_chunked_body(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(
            request("POST", "/echo", [("Expect", "100-continue"), ("Transfer-Encoding", "chunked")])
        )
        assert w.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.send(chunked(b"abc", b"def"))
        r = w.read_response("POST")
        assert (r.status, r.body) == (200, b"abcdef")


def test_no_100_continue_when_the_body_came_along(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("POST", "/echo", [("Expect", "100-continue")], body=b"hello"))
        r = w.read_response("POST")
        assert (r.status, r.body) == (200, b"hello")
        assert r.extra["informational"] == []


def test_over_limit_with_expect_gets_413_and_no_100(serve: Serve) -> None:
    server = serve_conn(serve, "--limit-request-body", "1000")
    with Wire.connect(server) as w:
        w.send(request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "1001")]))
        head = w.read_head()
        assert head.status == 413
        w.read_exact(int(head.header("Content-Length") or 0))
        assert w.closed_by_peer()
    with Wire.connect(server) as w:  # at the limit: 100, then served
        w.send(request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "1000")]))
        assert w.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.send(b"x" * 1000)
        assert w.read_response("POST").body == b"x" * 1000


# -- HEAD -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/hello", "/stream?n=3&size=10", "/big?size=5000"])
def test_head_has_headers_and_no_body(server: Server, path: str) -> None:
    with Wire.connect(server) as w:
        w.send(request("HEAD", path) + HELLO)
        r = w.read_response("HEAD")
        assert r.status == 200
        assert r.header("Transfer-Encoding") is None
        if path == "/hello":
            assert r.header("Content-Length") == "6"
        # If any body byte had been sent, this would not parse as the next response.
        nxt = w.read_response()
        assert (nxt.status, nxt.body) == (200, b"hello\n")


# -- the write() callable, file_wrapper, big bodies ------------------------------------------


def test_write_callable(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("GET", "/write"))
        r = w.read_response()
        assert (r.status, r.body, r.framing) == (200, b"one,two,three", "chunked")
        w.send(request("GET", "/write", version="HTTP/1.0", host=None))
        r = w.read_response()
        assert (r.status, r.body, r.framing) == (200, b"one,two,three", "close")


def test_file_wrapper_sends_a_large_file_intact(server: Server, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    with Wire.connect(server, timeout=30) as w:
        for _ in range(2):  # and the connection is reusable afterwards
            w.send(request("GET", f"/file?path={path}"))
            r = w.read_response()
            assert r.status == 200
            assert r.header("Content-Length") == str(len(data))
            assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()
        w.send(request("HEAD", f"/file?path={path}") + HELLO)
        r = w.read_response("HEAD")
        assert (r.status, r.header("Content-Length")) == (200, str(len(data)))
        assert w.read_response().body == b"hello\n"


def test_large_response_body_intact(server: Server) -> None:
    size = 20 * 1024 * 1024 + 3
    with Wire.connect(server, timeout=30) as w:
        w.send(request("GET", f"/big?size={size}") + HELLO)
        r = w.read_response()
        assert r.header("Content-Length") == str(size)
        assert r.body == pattern(size)
        assert w.read_response().body == b"hello\n"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_spooled_request_body_echoed_intact(serve: Serve, framing: str) -> None:
    server = serve_conn(serve, "--body-spool-threshold", "10000")
    data = os.urandom(3 * 1024 * 1024 + 5)
    if framing == "length":
        req = request("POST", "/echo", body=data)
    else:
        pieces = [data[i : i + 100000] for i in range(0, len(data), 100000)]
        req = request("POST", "/echo", [("Transfer-Encoding", "chunked")], chunked(*pieces))
    with Wire.connect(server, timeout=30) as w:
        w.send(req)
        r = w.read_response("POST")
        assert r.header("X-Input") == "file"
        assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()
        w.send(request("POST", "/echo", body=b"y" * 10000))  # at the threshold: memory
        r = w.read_response("POST")
        assert (r.header("X-Input"), r.body) == ("memory", b"y" * 10000)


# -- app errors -------------------------------------------------------------------------------


def test_exception_before_start_response_gives_500(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("GET", "/boom"))
        r = w.read_response()
        assert r.status == 500
        assert r.body == b"500 Internal Server Error\n"
        assert b"conn_app failed" not in r.raw_head + r.body
        # Either the connection stays usable, or it closes cleanly right after the 500.
        if r.header("Connection") == "close":
            assert w.closed_by_peer()
        else:
            w.send(HELLO)
            assert w.read_response().body == b"hello\n"
    assert "conn_app failed before start_response" in server.log()
    with Wire.connect(server) as w:
        w.send(HELLO)
        assert w.read_response().body == b"hello\n"


def test_exception_mid_stream_truncates_the_body(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("GET", "/boom-mid") + HELLO)
        r = w.read_response()
        assert r.status == 200 and r.framing == "chunked"
        assert not r.complete  # no terminating chunk: the client can tell it failed
        assert r.body == b"first piece\n"
        assert w.eof or w.closed_by_peer()
    assert "conn_app failed in the middle of the body" in server.log()
    with Wire.connect(server) as w:
        w.send(HELLO)
        assert w.read_response().body == b"hello\n"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_sys_exit_in_the_app_does_not_end_the_worker(serve: Serve, threads: str) -> None:
    server = serve_conn(serve, "--threads", threads)
    with Wire.connect(server) as w:
        w.send(request("GET", "/pid"))
        pid = w.read_response().body
        with Wire.connect(server) as other:  # another client of the same worker
            other.send(request("GET", "/exit"))
            try:
                assert other.read_response().status == 500
            except Closed:
                pass  # or closed without an answer; either way, not a fake success
        w.send(request("GET", "/pid"))
        assert w.read_response().body == pid  # same worker, and this connection survived
    assert "sys.exit" in server.log() or "SystemExit" in server.log()


# -- environ details the connection feeds -----------------------------------------------------


def test_underscore_headers_are_dropped(server: Server) -> None:
    with Wire.connect(server) as w:
        w.send(request("GET", "/env", [("X_Foo", "smuggled"), ("X-Foo", "real")]))
        body = w.read_response().body.decode()
        assert "HTTP_X_FOO=real\n" in body


# -- threads ----------------------------------------------------------------------------------


def test_threads_serve_concurrent_requests(serve: Serve) -> None:
    server = serve_conn(serve, "--threads", "4")
    wires = [Wire.connect(server, timeout=20) for _ in range(4)]
    try:
        for w in wires:
            w.send(request("GET", "/barrier?n=4"))
        # Each app call waits until all four are inside the app at once.
        for w in wires:
            r = w.read_response()
            assert (r.status, r.body) == (200, b"together\n")
        for w in wires:  # and every connection is still usable
            w.send(HELLO)
            assert w.read_response().body == b"hello\n"
    finally:
        for w in wires:
            w.close()


def test_single_thread_runs_one_request_at_a_time(server: Server) -> None:
    # The counterpart of the test above, so that one cannot pass by accident.
    with Wire.connect(server, timeout=20) as a, Wire.connect(server, timeout=20) as b:
        a.send(request("GET", "/barrier?n=2&wait=1"))
        b.send(request("GET", "/barrier?n=2&wait=1"))
        assert a.read_response().status == 503
        assert b.read_response().status == 503


def test_closed_socket_does_not_bother_the_server(server: Server) -> None:
    for data in (b"", b"GET /hel", request("POST", "/echo", [("Content-Length", "10")])):
        with Wire.connect(server) as w:
            w.send(data)
    with Wire.connect(server) as w:
        w.send(HELLO)
        assert w.read_response().body == b"hello\n"
    with pytest.raises(Closed), Wire.connect(server) as w:
        w.sock.shutdown(socket.SHUT_WR)
        w.read_response()


def test_a_repeated_head_still_gets_its_own_peer_and_a_fresh_environ(server: Server) -> None:
    # The same bytes from two clients, again and again: brick serves a head it has seen
    # before without parsing it again, and each answer must still be about its own client.
    head = request("GET", "/peer", [("User-Agent", "repeat")])
    with Wire.connect(server) as first, Wire.connect(server) as second:
        for _ in range(3):
            for w in (first, second):
                w.send(head)
                r = w.read_response()
                port = w.sock.getsockname()[1]
                assert (r.status, r.body) == (200, f"127.0.0.1 {port} \n".encode())
