"""Response bytes: the head, chunk framing, the Date cache and brick's own error responses."""

from __future__ import annotations

import email.utils
import re

import pytest
from brick import __version__, response
from brick.response import (
    CHUNK_END,
    CONTINUE,
    SERVER_HEADER,
    build_head,
    chunk,
    date_header,
    error_response,
)

pytestmark = pytest.mark.unit


def test_build_head() -> None:
    head = build_head("201 Created", "X-A: 1\r\nX-B: \xe9\r\n")
    assert head == b"HTTP/1.1 201 Created\r\nX-A: 1\r\nX-B: \xe9\r\n\r\n"


def test_constants() -> None:
    assert f"Server: brick/{__version__}\r\n" == SERVER_HEADER
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert CHUNK_END == b"0\r\n\r\n"


@pytest.mark.parametrize("size", [1, 9, 10, 15, 16, 255, 4096, 1 << 20])
def test_chunk_framing(size: int) -> None:
    data = b"z" * size
    assert b"".join(chunk(data)) == f"{size:x}".encode() + b"\r\n" + data + b"\r\n"


def test_date_header_is_an_http_date_cached_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.25]
    monkeypatch.setattr(response.time, "time", lambda: now[0])
    first = date_header()
    assert first == "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
    now[0] += 0.5
    assert date_header() is first  # same second: the cached line
    now[0] += 1
    later = date_header()
    assert later == "Date: Tue, 14 Nov 2023 22:13:21 GMT\r\n"
    stamp = later[len("Date: ") : -2]
    assert email.utils.parsedate_to_datetime(stamp).timestamp() == 1_700_000_001


def parse(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert len(fields) == len(lines) - 1  # no field twice
    return lines[0], fields, body


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (400, "HTTP/1.1 400 Bad Request"),
        (408, "HTTP/1.1 408 Request Timeout"),
        (413, "HTTP/1.1 413 Content Too Large"),
        (500, "HTTP/1.1 500 Internal Server Error"),
        (505, "HTTP/1.1 505 HTTP Version Not Supported"),
        (599, "HTTP/1.1 599 Error"),
    ],
)
def test_error_response(status: int, line: str) -> None:
    status_line, fields, body = parse(error_response(status, "some internal detail"))
    assert status_line == line
    assert body == line[len("HTTP/1.1 ") :].encode() + b"\n"
    assert b"internal" not in body
    assert fields["Content-Length"] == str(len(body))
    assert fields["Content-Type"] == "text/plain; charset=utf-8"
    assert fields["Connection"] == "close"
    assert fields["Server"] == f"brick/{__version__}"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", fields["Date"])


def test_error_response_that_keeps_the_connection() -> None:
    _, fields, _ = parse(error_response(404, close=False))
    assert "Connection" not in fields


def test_error_response_to_head_has_no_body() -> None:
    full = error_response(500)
    head = error_response(500, head_only=True)
    assert full.startswith(head) and head.endswith(b"\r\n\r\n")
    _, fields, body = parse(head)
    assert body == b"" and fields["Content-Length"] == str(len(b"500 Internal Server Error\n"))
