"""Every timeout, with 1 s values: keep-alive idle, header (slowloris), body, send.

Timing bounds are generous (a 1 s timeout must fire between 0.5 and 5 s) because several test
runs share two cores; what the tests pin down is which timeout fires, what the client sees
(408 where a request was started, a silent close otherwise) and that nothing fires early on a
connection that is making progress or whose request is in the app.
"""

from __future__ import annotations

import select
import socket
import time

import pytest
from conn_wire import Serve, Wire, request, serve_conn

pytestmark = pytest.mark.functional

EARLIEST, LATEST = 0.5, 5.0
LONG = "60"  # for the timeouts a test is not about


def timeouts(keep_alive: str = LONG, header: str = LONG, body: str = LONG) -> list[str]:
    return ["--keep-alive", keep_alive, "--header-timeout", header, "--body-timeout", body]


def wait_closed(w: Wire, since: float) -> float:
    """Seconds from `since` until the server closed `w` without sending anything."""
    assert w.closed_by_peer(within=LATEST + 5), "the connection was never closed"
    return time.monotonic() - since


def read_refusal(w: Wire) -> int:
    r = w.read_head()
    w.read_exact(int(r.header("Content-Length") or "0"))
    assert r.header("Connection") == "close"
    return r.status


# -- keep-alive ---------------------------------------------------------------------------


def test_idle_keep_alive_connection_closed_silently(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(keep_alive="1"))
    with Wire.connect(server, timeout=20) as w:
        w.send(request("GET", "/hello"))
        assert w.read_response().body == b"hello\n"
        elapsed = wait_closed(w, time.monotonic())
        assert EARLIEST <= elapsed <= LATEST, elapsed


def test_connection_that_never_sends_is_closed_silently(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(keep_alive="1"))
    with Wire.connect(server, timeout=20) as w:
        start = time.monotonic()
        w.send(b"")
        elapsed = wait_closed(w, start)
        assert elapsed <= LATEST, elapsed


def test_empty_lines_do_not_keep_an_idle_connection_open(serve: Serve) -> None:
    # Empty lines before a request line are ignored (RFC 9112 §2.2); they are not activity.
    server = serve_conn(serve, *timeouts(keep_alive="1"))
    with Wire.connect(server, timeout=20) as w:
        w.send(request("GET", "/hello"))
        assert w.read_response().body == b"hello\n"
        start = time.monotonic()
        while time.monotonic() - start < LATEST + 5:
            readable, _, _ = select.select([w.sock], [], [], 0.2)
            if readable:
                break
            try:
                w.send(b"\r\n")
            except OSError:  # closed (or reset) between the select and the send
                break
        assert w.closed_by_peer(within=1)
        assert EARLIEST <= time.monotonic() - start <= LATEST


def test_keep_alive_timer_restarts_with_each_request(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(keep_alive="2"))
    with Wire.connect(server, timeout=20) as w:
        start = time.monotonic()
        while time.monotonic() - start < 4.0:  # twice the timeout, in small steps
            w.send(request("GET", "/hello"))
            assert w.read_response().body == b"hello\n"
            time.sleep(0.4)


# -- header timeout (slowloris) -------------------------------------------------------------


def test_slowloris_gets_408_and_close(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(header="1"))
    with Wire.connect(server, timeout=20) as w:
        start = time.monotonic()
        w.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
        # Trickle a header line every 0.2 s, well inside keep-alive and body timeouts.
        i = 0
        while time.monotonic() - start < LATEST + 5:
            readable, _, _ = select.select([w.sock], [], [], 0.2)
            if readable:
                break
            w.send(b"X-%d: v\r\n" % i)
            i += 1
        elapsed = time.monotonic() - start
        assert read_refusal(w) == 408
        assert EARLIEST <= elapsed <= LATEST, elapsed
        assert w.closed_by_peer()


def test_header_timeout_counts_from_the_first_byte_of_a_later_request(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(header="1"))
    with Wire.connect(server, timeout=20) as w:
        w.send(request("GET", "/hello"))
        assert w.read_response().body == b"hello\n"
        time.sleep(1.5)  # idle longer than the header timeout: that is keep-alive's business
        w.send(request("GET", "/hello"))
        assert w.read_response().body == b"hello\n"
        start = time.monotonic()
        w.send(b"GET /hello HTTP/1.1\r\n")
        assert read_refusal(w) == 408
        assert EARLIEST <= time.monotonic() - start <= LATEST


# -- body timeout ---------------------------------------------------------------------------


def test_stalled_body_gets_408_and_close(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(body="1"))
    with Wire.connect(server, timeout=20) as w:
        w.send(request("POST", "/echo", [("Content-Length", "10")]) + b"abc")
        start = time.monotonic()
        assert read_refusal(w) == 408
        assert EARLIEST <= time.monotonic() - start <= LATEST
        assert w.closed_by_peer()


def test_stalled_chunked_body_gets_408(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(body="1"))
    with Wire.connect(server, timeout=20) as w:
        w.send(request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"5\r\nab")
        start = time.monotonic()
        assert read_refusal(w) == 408
        assert EARLIEST <= time.monotonic() - start <= LATEST


def test_body_timeout_counts_silence_not_total_time(serve: Serve) -> None:
    server = serve_conn(serve, *timeouts(body="1"))
    with Wire.connect(server, timeout=20) as w:
        w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        w.send(request("POST", "/echo", [("Content-Length", "12")]))
        for i in range(12):  # 12 * 0.25 s: three times the timeout in all
            time.sleep(0.25)
            w.send(b"%x" % i)
        r = w.read_response("POST")
        assert (r.status, r.body) == (200, b"0123456789ab")


# -- a request in the app is never timed out ------------------------------------------------


@pytest.mark.parametrize("threads", ["1", "2"])
def test_busy_connection_is_not_timed_out(serve: Serve, threads: str) -> None:
    server = serve_conn(serve, "--threads", threads, *timeouts("1", "1", "1"))
    with Wire.connect(server, timeout=20) as w:
        w.send(request("GET", "/sleep?s=2.5"))
        r = w.read_response()
        assert (r.status, r.body) == (200, b"slept\n")
        w.send(request("GET", "/hello"))  # and the keep-alive timer starts afresh
        assert w.read_response().body == b"hello\n"


# -- send timeout ---------------------------------------------------------------------------


def test_reader_that_stalls_is_dropped_after_the_send_timeout(serve: Serve) -> None:
    # One connection slot: a second client is only accepted once the stalled one is dropped.
    server = serve_conn(serve, "--send-timeout", "1", "--worker-connections", "1")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(20)
    stalled.connect(server.address)
    try:
        stalled.sendall(request("GET", f"/big?size={16 << 20}"))
        assert stalled.recv(10) == b"HTTP/1.1 2"  # the response started; then stop reading
        start = time.monotonic()
        with Wire.connect(server, timeout=20) as w:
            w.send(request("GET", "/hello"))
            assert w.read_response().body == b"hello\n"
        assert time.monotonic() - start <= LATEST + 5
    finally:
        stalled.close()


def test_slow_but_steady_reader_is_not_dropped(serve: Serve) -> None:
    server = serve_conn(serve, "--send-timeout", "1")
    size = 4 << 20
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(server.address)
    with Wire(sock) as w:
        w.send(request("GET", f"/big?size={size}"))
        head = w.read_head()
        got = len(w.buf)
        w.buf.clear()
        start = time.monotonic()
        while got < size:  # 2.5 s or more in all, never silent for long
            data = sock.recv(65536)
            assert data, f"dropped after {got} bytes"
            got += len(data)
            if time.monotonic() - start < 2.5:
                time.sleep(0.01)
        assert head.status == 200 and got == size
