"""Every request brick refuses, seen on the wire: the status line, then the connection closes,
and a request pipelined right behind the refused one is never answered nor run.

Each case is sent in one piece together with a `/mark` request that would create a file if the
app ever saw it. Limits are set small through their options so each boundary is checked from
both sides (at the limit: served; one past it: refused).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from conftest import Server
from conn_wire import Serve, Wire, chunked, request, serve_conn

pytestmark = pytest.mark.functional

H = "Host: t\r\n"
POST = "POST /echo HTTP/1.1\r\n" + H

# (case id, raw request, status)
CASES: list[tuple[str, bytes, int]] = [
    # request line and method (RFC 9112 §3)
    ("no-version", b"GET /\r\n" + H.encode() + b"\r\n", 400),
    ("double-space", b"GET  / HTTP/1.1\r\n" + H.encode() + b"\r\n", 400),
    ("trailing-space", b"GET / HTTP/1.1 \r\n" + H.encode() + b"\r\n", 400),
    ("bad-method-token", b"G(T / HTTP/1.1\r\n" + H.encode() + b"\r\n", 400),
    ("lower-case-version", b"GET / http/1.1\r\n" + H.encode() + b"\r\n", 400),
    ("bare-lf", b"GET / HTTP/1.1\n" + H.encode() + b"\r\n", 400),
    # version
    ("http-2", b"GET / HTTP/2.0\r\n" + H.encode() + b"\r\n", 505),
    ("http-0.9-style", b"GET / HTTP/0.9\r\n\r\n", 505),
    # target form (RFC 9112 §3.2)
    ("relative-target", b"GET foo HTTP/1.1\r\n" + H.encode() + b"\r\n", 400),
    ("asterisk-not-options", b"GET * HTTP/1.1\r\n" + H.encode() + b"\r\n", 400),
    ("bad-scheme", b"GET ftp://t/ HTTP/1.1\r\n" + H.encode() + b"\r\n", 400),
    ("userinfo", b"GET http://u@t/ HTTP/1.1\r\n" + H.encode() + b"\r\n", 400),
    ("control-in-target", b"GET /a\x01b HTTP/1.1\r\n" + H.encode() + b"\r\n", 400),
    # header fields (RFC 9112 §5)
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    ("bad-field-name", b"GET / HTTP/1.1\r\n" + H.encode() + b"X(a): 1\r\n\r\n", 400),
    ("empty-field-name", b"GET / HTTP/1.1\r\n" + H.encode() + b": 1\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H.encode() + b"Nocolon\r\n\r\n", 400),
    ("cr-in-value", b"GET / HTTP/1.1\r\n" + H.encode() + b"X-A: a\rb\r\n\r\n", 400),
    ("lf-in-value", b"GET / HTTP/1.1\r\n" + H.encode() + b"X-A: a\nb\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H.encode() + b"X-A: a\x00b\r\n\r\n", 400),
    ("control-in-value", b"GET / HTTP/1.1\r\n" + H.encode() + b"X-A: a\x1bb\r\n\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H.encode() + b"X-A: a\x7fb\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H.encode() + b"X-A: a\r\n  b\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H.encode() + b"X-A: a\r\n\tb\r\n\r\n", 400),
    # Host (RFC 9112 §3.2)
    ("missing-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("repeated-host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("bad-host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    # Content-Length (RFC 9112 §6.3)
    ("cl-plus", (POST + "Content-Length: +3\r\n\r\nabc").encode(), 400),
    ("cl-minus", (POST + "Content-Length: -3\r\n\r\nabc").encode(), 400),
    ("cl-hex", (POST + "Content-Length: 0x3\r\n\r\nabc").encode(), 400),
    ("cl-space-inside", (POST + "Content-Length: 1 2\r\n\r\nabc").encode(), 400),
    ("cl-list", (POST + "Content-Length: 3, 3\r\n\r\nabc").encode(), 400),
    ("cl-empty", (POST + "Content-Length: \r\n\r\nabc").encode(), 400),
    ("cl-conflict", (POST + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd").encode(), 400),
    ("cl-repeated", (POST + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc").encode(), 400),
    ("cl-huge", (POST + "Content-Length: 99999999999999999999999\r\n\r\n").encode(), 413),
    # Transfer-Encoding (RFC 9112 §6.1)
    (
        "te-and-cl",
        (POST + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n").encode()
        + chunked(b"abc"),
        400,
    ),
    (
        "cl-and-te",
        (POST + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        + chunked(b"abc"),
        400,
    ),
    (
        "chunked-not-final",
        (POST + "Transfer-Encoding: chunked, gzip\r\n\r\n").encode() + chunked(b"abc"),
        400,
    ),
    ("te-unknown-only", (POST + "Transfer-Encoding: foo\r\n\r\nabc").encode(), 400),
    (
        "chunked-twice",
        (POST + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        + chunked(b"abc"),
        400,
    ),
    (
        "unknown-coding",
        (POST + "Transfer-Encoding: foo, chunked\r\n\r\n").encode() + chunked(b"abc"),
        501,
    ),
    (
        "gzip-coding",
        (POST + "Transfer-Encoding: gzip, chunked\r\n\r\n").encode() + chunked(b"abc"),
        501,
    ),
    (
        "te-on-http10",
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abc"),
        400,
    ),
    # chunked framing (RFC 9112 §7.1)
    ("chunk-size-not-hex", (POST + "Transfer-Encoding: chunked\r\n\r\nzz\r\n").encode(), 400),
    ("chunk-size-empty", (POST + "Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n").encode(), 400),
    (
        "chunk-size-sign",
        (POST + "Transfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n").encode(),
        400,
    ),
    (
        "chunk-size-space",
        (POST + "Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n").encode(),
        400,
    ),
    (
        "chunk-size-too-long",
        (POST + "Transfer-Encoding: chunked\r\n\r\n" + "0" * 17 + "3\r\nabc\r\n0\r\n\r\n").encode(),
        400,
    ),
    (
        "chunk-ext-bad",
        (POST + "Transfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n0\r\n\r\n").encode(),
        400,
    ),
    (
        "chunk-ext-bad-quote",
        (POST + 'Transfer-Encoding: chunked\r\n\r\n3;a="x\r\nabc\r\n0\r\n\r\n').encode(),
        400,
    ),
    (
        "chunk-terminator-missing",
        (POST + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n").encode(),
        400,
    ),
    (
        "chunk-terminator-bare-lf",
        (POST + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n").encode(),
        400,
    ),
    (
        "chunk-size-bare-lf",
        (POST + "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n").encode(),
        400,
    ),
    (
        "bad-trailer",
        (POST + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nbad trailer\r\n\r\n").encode(),
        400,
    ),
    # expectations other than 100-continue (RFC 9110 §10.1.1)
    ("expect-unknown", (POST + "Expect: something\r\nContent-Length: 3\r\n\r\nabc").encode(), 417),
]


@pytest.fixture
def server(serve: Serve) -> Server:
    return serve_conn(serve)


def refused(server: Server, data: bytes, status: int, marker: Path) -> None:
    """Send `data` plus a pipelined /mark request; expect `status`, a close, and no mark."""
    follow = request("GET", f"/mark?path={marker}")
    with Wire.connect(server) as w:
        w.send(data + follow)
        r = w.read_head()
        assert r.status == status, (r.raw_head, server.log()[-2000:])
        assert r.header("Connection") == "close"
        body = w.read_exact(int(r.header("Content-Length") or "0"))
        assert body.startswith(b"%d " % status)
        assert w.closed_by_peer()  # and nothing else was answered
    assert not marker.exists()


@pytest.mark.parametrize(("data", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_and_closed(server: Server, tmp_path: Path, data: bytes, status: int) -> None:
    refused(server, data, status, tmp_path / "mark")


def test_server_still_serves_after_every_refusal(server: Server, tmp_path: Path) -> None:
    for i, (_, data, status) in enumerate(CASES):
        refused(server, data, status, tmp_path / f"mark{i}")
    with Wire.connect(server) as w:
        w.send(request("GET", "/hello"))
        assert w.read_response().body == b"hello\n"


def test_refusal_after_a_good_request(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "mark"
    with Wire.connect(server) as w:
        w.send(
            request("GET", "/hello")
            + b"GET / HTTP/1.1\r\n\r\n"
            + request("GET", f"/mark?path={marker}")
        )
        assert w.read_response().body == b"hello\n"
        assert w.read_response().status == 400
        assert w.closed_by_peer()
    assert not marker.exists()


# -- limits through options ------------------------------------------------------------------


def at_and_over(server: Server, good: bytes, bad: bytes, status: int, tmp_path: Path) -> None:
    with Wire.connect(server) as w:
        w.send(good)
        r = w.read_response("GET" if good.startswith(b"GET") else "POST")
        assert r.status in (200, 404), r.raw_head
    refused(server, bad, status, tmp_path / "mark")


def test_limit_request_line(serve: Serve, tmp_path: Path) -> None:
    server = serve_conn(serve, "--limit-request-line", "100")
    # "GET <target> HTTP/1.1" is 13 bytes plus the target.
    good = request("GET", "/hello?" + "a" * (100 - 13 - 7))
    bad = request("GET", "/hello?" + "a" * (101 - 13 - 7))
    assert len(good.split(b"\r\n")[0]) == 100
    at_and_over(server, good, bad, 414, tmp_path)


def test_limit_request_line_before_the_line_ends(serve: Serve, tmp_path: Path) -> None:
    # A line that never ends is refused as soon as it is too long, not after a timeout.
    server = serve_conn(serve, "--limit-request-line", "100", "--header-timeout", "60")
    with Wire.connect(server) as w:
        w.send(b"GET /" + b"a" * 200)
        r = w.read_head()
        assert r.status == 414
        w.read_exact(int(r.header("Content-Length") or "0"))
        assert w.closed_by_peer()


def test_limit_request_fields(serve: Serve, tmp_path: Path) -> None:
    server = serve_conn(serve, "--limit-request-fields", "5")
    fields = [(f"X-{i}", "v") for i in range(4)]  # with Host: 5 fields
    good = request("GET", "/hello", fields)
    bad = request("GET", "/hello", [*fields, ("X-4", "v")])
    at_and_over(server, good, bad, 431, tmp_path)


def test_limit_request_field_size(serve: Serve, tmp_path: Path) -> None:
    server = serve_conn(serve, "--limit-request-field_size", "100")
    good = request("GET", "/hello", [("X-Big", "v" * (100 - 7))])  # "X-Big: " is 7 bytes
    bad = request("GET", "/hello", [("X-Big", "v" * (101 - 7))])
    at_and_over(server, good, bad, 431, tmp_path)


def test_limit_request_field_size_dashed_spelling(serve: Serve, tmp_path: Path) -> None:
    server = serve_conn(serve, "--limit-request-field-size", "100")
    refused(server, request("GET", "/hello", [("X-Big", "v" * 200)]), 431, tmp_path / "m")


def test_huge_head_refused_before_it_ends(serve: Serve, tmp_path: Path) -> None:
    server = serve_conn(serve, "--limit-request-fields", "5", "--limit-request-field_size", "100")
    with Wire.connect(server) as w:
        w.send(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000)  # no end of head in sight
        r = w.read_head()
        assert r.status == 431
        w.read_exact(int(r.header("Content-Length") or "0"))
        assert w.closed_by_peer()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_limit_request_body(serve: Serve, tmp_path: Path, framing: str) -> None:
    server = serve_conn(serve, "--limit-request-body", "1000")
    if framing == "length":
        good = request("POST", "/echo", body=b"x" * 1000)
        bad = request("POST", "/echo", body=b"x" * 1001)
    else:
        te = [("Transfer-Encoding", "chunked")]
        good = request("POST", "/echo", te, chunked(b"x" * 600, b"x" * 400))
        bad = request("POST", "/echo", te, chunked(b"x" * 600, b"x" * 401))
    at_and_over(server, good, bad, 413, tmp_path)


def test_client_reads_the_refusal_while_still_sending(serve: Serve) -> None:
    """Lingering close: a client busy uploading a refused body still gets to read the 413."""
    server = serve_conn(serve, "--limit-request-body", "1000")
    with Wire.connect(server) as w:
        w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        w.send(request("POST", "/echo", [("Content-Length", str(8 << 20))]))
        time.sleep(0.2)  # let the refusal go out while the body is still coming
        piece = b"x" * 65536
        for _ in range(128):  # 8 MiB: far more than the socket buffers hold
            w.send(piece)
        r = w.read_head()
        assert r.status == 413
        assert w.read_exact(int(r.header("Content-Length") or "0")).startswith(b"413 ")
        assert w.closed_by_peer()


def unfinished_head(size: int) -> bytes:
    """A request head of about `size` bytes whose blank line never comes."""
    field = b"X-Pad: " + b"p" * 7990 + b"\r\n"
    return b"GET /hello HTTP/1.1\r\n" + H.encode() + field * (size // len(field))


def test_unfinished_heads_past_the_worker_budget_shed_the_largest_with_503(
    serve: Serve,
) -> None:
    # 48 + 80 + 120 kB of unfinished heads against a 200 kB budget: refusing the largest
    # (120 kB) brings the rest under it, so the other two are kept and served once their
    # heads end.
    server = serve_conn(serve, "--limit-pending-heads", "200000")
    sizes = (48_000, 80_000, 120_000)
    wires = [Wire.connect(server) for _ in sizes]
    try:
        for wire, size in zip(wires, sizes, strict=True):
            wire.send(unfinished_head(size))
        largest = wires[2]
        assert largest.read_to_eof().startswith(b"HTTP/1.1 503 ")
        with Wire.connect(server) as other:  # a new client is served meanwhile
            other.send(request("GET", "/hello"))
            assert other.read_response().status == 200
        for wire in wires[:2]:
            wire.send(b"\r\n")
            response = wire.read_response()
            assert (response.status, response.body) == (200, b"hello\n")
    finally:
        for wire in wires:
            wire.close()
    assert "--limit-pending-heads (200000 bytes)" in server.log()


def test_unfinished_heads_within_the_budget_are_all_kept(serve: Serve) -> None:
    server = serve_conn(serve, "--limit-pending-heads", "400000")
    wires = [Wire.connect(server) for _ in range(3)]
    try:
        for wire in wires:
            wire.send(unfinished_head(120_000))
        time.sleep(0.5)  # five sweeps of the worker: none may refuse anyone
        for wire in wires:
            wire.send(b"\r\n")
            assert wire.read_response().status == 200
    finally:
        for wire in wires:
            wire.close()
    assert "limit-pending-heads" not in server.log()
