"""`wsgi.input` (PEP 3333 §"Input and Error Streams"), in memory and spooled to a temp file.

Each test uploads a body, reads it inside a validated app with one of the stream methods,
and answers what it read. The body is buffered by a real `BodyBuffer` with a threshold of
either a megabyte (stays in memory) or 16 bytes (spills to a temp file).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from test_wsgi import StartResponse, build_environ, exchange, request_bytes

pytestmark = pytest.mark.unit

BODY = b"first line\r\nsecond line\nthird\xff\x00 line\n\nlast, no newline"
LINES = [b"first line\r\n", b"second line\n", b"third\xff\x00 line\n", b"\n", b"last, no newline"]
MEMORY, SPOOLED = 1 << 20, 16
Reader = Callable[[Any], list[bytes]]


def upload(body: bytes = BODY, *, chunked: bool = False) -> bytes:
    headers = [("Host", "example.com"), ("Content-Type", "application/octet-stream")]
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        half = len(body) // 2
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p)
        return request_bytes("POST", "/", headers=headers, body=wire + b"0\r\n\r\n")
    headers.append(("Content-Length", str(len(body))))
    return request_bytes("POST", "/", headers=headers, body=body)


def read_with(reader: Reader, raw: bytes, threshold: int, *, validate: bool = True) -> list[bytes]:
    """Run an app that reads wsgi.input with `reader` and returns the pieces it got."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        pieces = reader(environ["wsgi.input"])
        assert all(type(p) is bytes for p in pieces)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([p.decode("latin-1") for p in pieces]).encode()]

    ex = exchange(app, raw, threshold=threshold, validate=validate)
    assert ex.response.status == 200, ex.response.body
    return [p.encode("latin-1") for p in json.loads(ex.response.body)]


def read_sized(n: int) -> Reader:
    def reader(stream: Any) -> list[bytes]:
        pieces = []
        for _ in range(len(BODY) + 2):
            piece = stream.read(n)
            pieces.append(piece)
            if not piece:
                return pieces
        raise AssertionError("read(n) never reached the end of the body")

    return reader


def readline_all(stream: Any) -> list[bytes]:
    lines = []
    for _ in range(len(BODY) + 2):
        line = stream.readline()
        lines.append(line)
        if not line:
            return lines
    raise AssertionError("readline() never reached the end of the body")


both = pytest.mark.parametrize("threshold", [MEMORY, SPOOLED], ids=["memory", "spooled"])


@both
def test_read_n_in_pieces(threshold: int) -> None:
    pieces = read_with(read_sized(7), upload(), threshold)
    assert b"".join(pieces) == BODY
    assert pieces[-1] == b"" and all(len(p) == 7 for p in pieces[:-2])


@both
def test_read_more_than_the_body_stops_at_its_end(threshold: int) -> None:
    pieces = read_with(lambda s: [s.read(10**6), s.read(10**6), s.read(1)], upload(), threshold)
    assert pieces == [BODY, b"", b""]


@both
def test_read_without_size_reads_everything(threshold: int) -> None:
    # The validator insists on a size, though PEP 3333 servers must accept read() too.
    pieces = read_with(lambda s: [s.read(), s.read()], upload(), threshold, validate=False)
    assert pieces == [BODY, b""]


@both
def test_read_negative_size_reads_everything(threshold: int) -> None:
    pieces = read_with(lambda s: [s.read(-1), s.read(5)], upload(), threshold)
    assert pieces == [BODY, b""]


@both
def test_readline(threshold: int) -> None:
    assert read_with(readline_all, upload(), threshold) == [*LINES, b""]


@both
def test_readline_with_size(threshold: int) -> None:
    def reader(s: Any) -> list[bytes]:
        return [s.readline(5), s.readline(5), s.readline(100), s.readline(0), s.readline(-1)]

    assert read_with(reader, upload(), threshold) == [
        b"first",
        b" line",
        b"\r\n",
        b"",
        b"second line\n",
    ]


@both
def test_readlines(threshold: int) -> None:
    assert read_with(lambda s: s.readlines(), upload(), threshold) == LINES


@both
def test_readlines_with_hint(threshold: int) -> None:
    # a hint stops after the line that reaches it; the rest is still there to read
    got = read_with(lambda s: [*s.readlines(13), b"|", *s.readlines()], upload(), threshold)
    assert got == [LINES[0], LINES[1], b"|", *LINES[2:]]


@both
def test_iteration(threshold: int) -> None:
    assert read_with(lambda s: list(s), upload(), threshold) == LINES


@both
def test_mixed_reads(threshold: int) -> None:
    def reader(s: Any) -> list[bytes]:
        return [s.read(3), s.readline(), s.read(6), *s]

    assert read_with(reader, upload(), threshold) == [
        b"fir",
        b"st line\r\n",
        b"second",
        b" line\n",
        *LINES[2:],
    ]


@both
def test_chunked_upload_reads_the_decoded_body(threshold: int) -> None:
    def reader(s: Any) -> list[bytes]:
        return [s.read(10**6)]

    assert read_with(reader, upload(chunked=True), threshold) == [BODY]


@both
def test_large_binary_body(threshold: int) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value, no line structure
    pieces = read_with(read_sized(65536), upload(body), threshold)
    assert b"".join(pieces) == body


@both
def test_the_body_ends_before_a_pipelined_request(threshold: int) -> None:
    # The next request on the connection is never part of this one's wsgi.input.
    raw = upload(b"abc") + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    _request, environ, body = build_environ(raw, threshold=threshold)
    assert environ["wsgi.input"].read(10**6) == b"abc"
    assert body is not None
    body.close()


def test_no_body_reads_empty() -> None:
    def reader(s: Any) -> list[bytes]:
        return [s.read(10), s.readline(), *s.readlines(), *s]

    assert read_with(reader, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", MEMORY) == [b"", b""]


def test_spooled_input_is_a_real_file() -> None:
    _request, environ, body = build_environ(upload(), threshold=SPOOLED)
    assert body is not None and body.spooled
    stream = environ["wsgi.input"]
    stream.fileno()  # a temp file, not memory
    assert stream.read(10**6) == BODY
    body.close()
    assert stream.closed


def test_small_input_stays_in_memory() -> None:
    _request, environ, body = build_environ(upload(), threshold=MEMORY)
    assert body is not None and not body.spooled
    assert environ["wsgi.input"].read(10**6) == BODY


def test_input_terminated_lets_an_app_read_to_the_end() -> None:
    # wsgi.input_terminated: an app may read until b"" without looking at CONTENT_LENGTH.
    def reader(s: Any) -> list[bytes]:
        out = b""
        for _ in range(100):
            piece = s.read(8192)
            if not piece:
                return [out]
            out += piece
        raise AssertionError("no end of input")

    raw = upload(chunked=True)
    assert read_with(reader, raw, SPOOLED) == [BODY]
