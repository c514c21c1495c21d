"""The WSGI layer end to end without sockets: raw request bytes in, response bytes out.

Each test parses a raw request with the real parser, buffers its body in a real
`BodyBuffer`, builds the environ with `EnvironBuilder.build`, runs the app with `run_app`
against an in-memory `Output`, and parses the bytes it produced the way a strict client
would. Well-behaved test apps are wrapped in `wsgiref.validate.validator`, so the
server's side of PEP 3333 (environ, start_response, write, input, close) is checked too;
under pytest's warnings-as-errors a validator complaint fails the test.

Apps that break the WSGI contract on purpose (to check that brick refuses them) and apps
returning `wsgi.file_wrapper` (which any wrapping middleware turns into a plain iterator,
PEP 3333 §"Optional Platform-Specific File Handling") are run unwrapped.

The helpers here are shared with the other tests/unit/test_wsgi_*.py modules.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from brick import __version__
from brick.body import BodyBuffer
from brick.parser import END, NEED_DATA, Request, RequestParser
from brick.wsgi import ClientDisconnected, EnvironBuilder, FileWrapper, Outcome, run_app

pytestmark = pytest.mark.unit

GENERIC_500 = b"500 Internal Server Error\n"
PEER = ("192.0.2.7", "50123")
GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
TEXT = [("Content-Type", "text/plain")]

StartResponse = Callable[..., Callable[[bytes], None]]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


# -- the in-memory Output --------------------------------------------------------------------


class MemoryOutput:
    """Records what `run_app` sends. `disconnect_on` makes that call (1-based) fail."""

    def __init__(self, disconnect_on: int | None = None) -> None:
        self.data = bytearray()
        self.calls: list[tuple[str, int]] = []
        self.disconnect_on = disconnect_on
        self.paused = False  # never: it takes everything at once

    def _call(self, kind: str, data: bytes) -> None:
        # Only the close follows a write marked last: the server holds those bytes back
        # until then, so anything written after them would go out behind the FIN.
        assert "write_last" not in self.kinds, f"{kind} after the last write"
        self.calls.append((kind, len(data)))
        if self.disconnect_on is not None and len(self.calls) >= self.disconnect_on:
            raise ClientDisconnected("connection reset by peer")
        self.data += data

    def write(self, data: bytes, last: bool = False, whole: bool = False) -> None:
        assert type(data) is bytes
        assert not (last and whole)
        self._call("write_last" if last else "write_whole" if whole else "write", data)

    def writev(self, parts: list[bytes]) -> None:
        assert all(type(p) is bytes for p in parts)
        self._call("writev", b"".join(parts))

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        data = os.pread(fd, count, offset)
        self._call("sendfile", data)
        return len(data)

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


# -- a strict response parser -------------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-9][0-9]{2}) ([\t -~\x80-\xff]*)")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ?([\t -~\x80-\xff]*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"[0-9a-f]+")


@dataclass
class Response:
    """One response as a client reads it. `complete` is False when the body was cut short."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked", "close" or "none"
    complete: bool = True
    rest: bytes = b""  # bytes after the end of this response

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None


def parse_response(data: bytes, method: str = "GET") -> Response:
    """Parse bytes the way a strict HTTP/1.1 client does; malformed bytes fail the test."""
    end = data.find(b"\r\n\r\n")
    assert end >= 0, f"no complete head in {bytes(data)!r}"
    lines = bytes(data[:end]).split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    assert match, f"malformed status line {lines[0]!r}"
    status = int(match.group(1))
    headers = []
    for line in lines[1:]:
        field_match = _FIELD.fullmatch(line)
        assert field_match, f"malformed header line {line!r}"
        headers.append((field_match.group(1).decode(), field_match.group(2).decode("latin-1")))
    response = Response(status, match.group(2).decode("latin-1"), headers, b"", "none")
    rest = bytes(data[end + 4 :])
    te = response.get("Transfer-Encoding")
    cl = response.get("Content-Length")
    assert te is None or cl is None, "both Transfer-Encoding and Content-Length"
    if method == "HEAD" or status in (204, 304):
        assert te is None or method == "HEAD"
        response.rest = rest
        return response
    if te is not None:
        assert te == "chunked", te
        response.framing = "chunked"
        body = bytearray()
        while True:
            eol = rest.find(b"\r\n")
            if eol < 0:
                response.complete = False
                break
            size_line = rest[:eol]
            assert _CHUNK_SIZE.fullmatch(size_line), f"bad chunk size line {size_line!r}"
            size = int(size_line, 16)
            if size == 0:
                assert rest[eol + 2 : eol + 4] == b"\r\n", "no CRLF after the last chunk"
                rest = rest[eol + 4 :]
                break
            piece = rest[eol + 2 : eol + 2 + size]
            if len(piece) < size:
                body += piece
                rest = b""
                response.complete = False
                break
            assert rest[eol + 2 + size : eol + 4 + size] == b"\r\n", "chunk not ended by CRLF"
            body += piece
            rest = rest[eol + 4 + size :]
        response.body = bytes(body)
    elif cl is not None:
        assert cl.isdigit(), cl
        response.framing = "length"
        length = int(cl)
        response.body = rest[:length]
        response.complete = len(response.body) == length
        rest = rest[length:]
    else:
        response.framing = "close"
        response.body = rest
        rest = b""
    response.rest = rest
    return response


# -- running one exchange -----------------------------------------------------------------------


def parse_request(raw: bytes, threshold: int = 1 << 16) -> tuple[Request, BodyBuffer | None]:
    """The request head and its body, buffered the way the connection buffers it."""
    parser = RequestParser()
    parser.feed(raw)
    request = parser.next_event()
    assert isinstance(request, Request), request
    body = BodyBuffer(threshold) if request.has_body else None
    for _ in range(len(raw) + 2):
        event = parser.next_event()
        if event is END:
            break
        assert event is not NEED_DATA, "the raw request is incomplete"
        assert type(event) is bytes and body is not None
        body.write(event)
    else:
        raise AssertionError("the request never ended")
    return request, body


def make_builder(**kwargs: Any) -> EnvironBuilder:
    kwargs.setdefault("server_name", "127.0.0.1")
    kwargs.setdefault("server_port", "8000")
    kwargs.setdefault("errors", io.StringIO())
    return EnvironBuilder(**kwargs)


def build_environ(
    raw: bytes,
    builder: EnvironBuilder | None = None,
    *,
    peer: tuple[str, str] = PEER,
    trusted: bool = False,
    threshold: int = 1 << 16,
) -> tuple[Request, dict[str, Any], BodyBuffer | None]:
    request, body = parse_request(raw, threshold)
    if body is not None:
        wsgi_input, length = body.open(), body.length
    else:
        wsgi_input, length = io.BytesIO(), 0
    environ = (builder or make_builder()).build(request, wsgi_input, length, peer, trusted)
    return request, environ, body


@dataclass
class Exchange:
    response: Response
    outcome: Outcome
    environ: dict[str, Any]
    out: MemoryOutput
    raw: bytes = field(repr=False, default=b"")


def exchange(
    app: App,
    raw: bytes = GET,
    *,
    validate: bool = True,
    builder: EnvironBuilder | None = None,
    out: MemoryOutput | None = None,
    peer: tuple[str, str] = PEER,
    trusted: bool = False,
    threshold: int = 1 << 16,
    suspendable: bool = False,
) -> Exchange:
    """Run `app` for one raw request and parse what a client would receive.
    `suspendable`: as the loop thread runs it with --threads 1."""
    request, environ, body = build_environ(
        raw, builder, peer=peer, trusted=trusted, threshold=threshold
    )
    out = out if out is not None else MemoryOutput()
    try:
        wsgi_app = validator(app) if validate else app
        outcome = run_app(
            wsgi_app, environ, request, out, request.keep_alive, suspendable=suspendable
        )
        assert isinstance(outcome, Outcome)  # (MemoryOutput never pauses)
    finally:
        if body is not None:
            body.close()
    response = parse_response(bytes(out.data), request.method)
    return Exchange(response, outcome, environ, out, bytes(out.data))


def request_bytes(
    method: str = "GET",
    target: str = "/",
    version: str = "HTTP/1.1",
    headers: Iterable[tuple[str, str]] = (("Host", "example.com"),),
    body: bytes = b"",
) -> bytes:
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


@pytest.fixture
def errlog(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Records of the `brick.error` logger, whatever an earlier test did to logging."""
    monkeypatch.setattr(logging.getLogger("brick"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("brick.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="brick")
    return caplog


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "brick.error" and r.levelno >= logging.ERROR]


class ClosingIterable:
    """An app iterable that records `close()` and can fail after some items."""

    def __init__(self, items: list[bytes | str], fail_at: int | None = None) -> None:
        self.items = items
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for i, item in enumerate(self.items):
            if i == self.fail_at:
                raise RuntimeError("the app broke mid-body")
            yield item  # type: ignore[misc]
        if self.fail_at == len(self.items):
            raise RuntimeError("the app broke at the end")

    def close(self) -> None:
        self.closed += 1


def text_app(*chunks: bytes, status: str = "200 OK", headers: Any = None) -> App:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, list(TEXT if headers is None else headers))
        return list(chunks)

    return app


def generator_app(*chunks: bytes, status: str = "200 OK", headers: Any = None) -> App:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response(status, list(TEXT if headers is None else headers))
        yield from chunks

    return app


# -- the basics ---------------------------------------------------------------------------------


def test_list_response_has_date_server_and_content_length() -> None:
    ex = exchange(text_app(b"hello"), validate=False)  # the validator would hide the list
    r = ex.response
    assert (r.status, r.reason, r.body, r.framing, r.rest) == (200, "OK", b"hello", "length", b"")
    assert r.get("Content-Length") == "5"
    assert r.get("Content-Type") == "text/plain"
    assert r.get("Server") == f"brick/{__version__}"
    date = r.get("Date")
    assert date is not None and re.fullmatch(
        r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", date
    )
    assert r.get("Connection") is None  # HTTP/1.1 persists by default
    assert ex.outcome.keep_alive
    assert ex.outcome.status == "200 OK"
    assert ex.outcome.body_bytes == 5
    assert ("Content-Type", "text/plain") in ex.outcome.headers


def test_app_date_and_server_headers_are_not_duplicated() -> None:
    headers = [*TEXT, ("server", "custom/1"), ("DATE", "Thu, 01 Jan 1970 00:00:00 GMT")]
    r = exchange(text_app(b"x", headers=headers)).response
    assert r.all("Server") == ["custom/1"]
    assert r.all("Date") == ["Thu, 01 Jan 1970 00:00:00 GMT"]


def test_header_lines_are_the_same_on_every_response() -> None:
    # Checked header lines are cached: the second response must carry exactly the same
    # fields, and a new value for a known name is its own line.
    headers = [*TEXT, ("Cache-Control", "no-store"), ("X-Id", "1")]
    first = exchange(text_app(b"x", headers=headers)).response
    second = exchange(text_app(b"x", headers=headers)).response
    assert [h for h in first.headers if h[0] != "Date"] == [
        h for h in second.headers if h[0] != "Date"
    ]
    third = exchange(text_app(b"x", headers=[*TEXT, ("X-Id", "2")])).response
    assert third.all("X-Id") == ["2"] and third.get("Cache-Control") is None


def test_many_distinct_header_values() -> None:
    from brick import wsgi

    for i in range(wsgi._LINE_CACHE_MAX + 10):
        value = f"session={i}"
        r = exchange(text_app(b"", headers=[*TEXT, ("Set-Cookie", value)])).response
        assert r.all("Set-Cookie") == [value]
    assert len(wsgi._LINE_CACHE) <= wsgi._LINE_CACHE_MAX


def test_status_with_empty_reason_is_allowed() -> None:
    # RFC 9112 §4: the reason phrase may be empty; the space after the code may not.
    r = exchange(text_app(b"x", status="299 "), validate=False).response
    assert (r.status, r.reason, r.body) == (299, "", b"x")


# -- start_response and exc_info --------------------------------------------------------------


def test_exc_info_before_the_head_replaces_the_status() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [*TEXT, ("X-First", "1")])
        try:
            raise ValueError("while rendering")
        except ValueError:
            start_response("503 Try Later", [*TEXT, ("X-Second", "2")], sys.exc_info())
        return [b"sorry"]

    ex = exchange(app)
    r = ex.response
    assert (r.status, r.reason, r.body) == (503, "Try Later", b"sorry")
    assert r.get("X-Second") == "2" and r.get("X-First") is None
    assert ex.outcome.status == "503 Try Later"
    assert ex.outcome.keep_alive


def test_exc_info_on_first_call_is_accepted() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        try:
            raise KeyError("x")
        except KeyError:
            start_response("500 Handled", TEXT, sys.exc_info())
        return [b"handled"]

    r = exchange(app).response
    assert (r.status, r.body) == (500, b"handled")


def test_second_start_response_without_exc_info_is_an_error(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        start_response("201 Created", TEXT)
        return [b"never"]

    ex = exchange(app)
    assert (ex.response.status, ex.response.body) == (500, GENERIC_500)
    assert not ex.outcome.keep_alive
    assert ex.out.data.count(b"HTTP/1.1") == 1
    assert any("second time" in r.getMessage() for r in error_records(errlog))


def test_exc_info_after_the_head_was_sent_reraises_and_closes(errlog: Any) -> None:
    seen: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"partial"
        try:
            raise ValueError("late failure")
        except ValueError:
            try:
                start_response("500 Oops", TEXT, sys.exc_info())
            except ValueError as exc:
                seen.append(exc)
                raise

    ex = exchange(app)
    assert len(seen) == 1 and str(seen[0]) == "late failure"
    r = ex.response
    assert r.status == 200 and r.framing == "chunked"
    assert r.body == b"partial" and not r.complete  # no terminating chunk: the client sees a cut
    assert ex.out.data.count(b"HTTP/1.1 ") == 1  # never a second head
    assert not ex.outcome.keep_alive
    records = error_records(errlog)
    assert records and records[0].exc_info is not None


# -- write() ------------------------------------------------------------------------------------


def test_write_sends_the_head_before_the_first_write() -> None:
    out = MemoryOutput()
    snapshots: list[bytes] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        snapshots.append(bytes(out.data))
        write(b"one ")
        snapshots.append(bytes(out.data))
        write(b"two ")
        return [b"three"]

    ex = exchange(app, out=out)
    assert snapshots[0] == b""  # start_response alone sends nothing
    assert snapshots[1].startswith(b"HTTP/1.1 200 OK\r\n") and snapshots[1].endswith(b"one \r\n")
    r = ex.response
    assert (r.framing, r.body, r.complete, r.rest) == ("chunked", b"one two three", True, b"")
    assert ex.outcome.keep_alive and ex.outcome.body_bytes == len(b"one two three")


@pytest.mark.parametrize("result", [[b"three"], (b"th", b"ree"), []], ids=repr)
def test_write_then_a_list(result: list[bytes]) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"one,")
        write(b"two,")
        return result

    ex = exchange(app, validate=False)  # unwrapped: the list reaches the server as a list
    assert ex.out.data.count(b"HTTP/1.1 ") == 1
    body = b"one,two," + b"".join(result)
    assert (ex.response.framing, ex.response.body, ex.response.complete) == ("chunked", body, True)
    assert ex.response.rest == b"" and ex.outcome.keep_alive


def test_write_then_a_generator() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"a")
        yield b"b"
        yield b""
        yield b"c"

    r = exchange(app).response
    assert (r.framing, r.body, r.complete) == ("chunked", b"abc", True)


def test_write_with_content_length() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [*TEXT, ("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    ex = exchange(app)
    assert (ex.response.framing, ex.response.body, ex.response.rest) == ("length", b"abcdef", b"")
    assert ex.outcome.keep_alive


def test_empty_chunks_do_not_send_the_head_early() -> None:
    # PEP 3333: headers go out with the first non-empty body string, so an app may still
    # replace them (exc_info) after yielding empty strings.
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b""
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("404 Not Found", TEXT, sys.exc_info())
        yield b"gone"

    r = exchange(app).response
    assert (r.status, r.body) == (404, b"gone")


def test_only_empty_chunks_give_an_empty_body() -> None:
    ex = exchange(generator_app(b"", b""))
    r = ex.response
    assert (r.framing, r.get("Content-Length"), r.body, r.rest) == ("length", "0", b"", b"")
    assert ex.outcome.keep_alive


# -- close() on the app iterable ----------------------------------------------------------------


def iterable_app(iterable: ClosingIterable, headers: Any = None) -> App:
    def app(environ: dict[str, Any], start_response: StartResponse) -> ClosingIterable:
        start_response("200 OK", list(TEXT if headers is None else headers))
        return iterable

    return app


def test_close_is_called_after_a_normal_response() -> None:
    it = ClosingIterable([b"a", b"b"])
    ex = exchange(iterable_app(it))
    assert it.closed == 1
    assert ex.response.body == b"ab"


def test_close_is_called_when_iteration_raises_before_the_head(errlog: Any) -> None:
    it = ClosingIterable([b"a"], fail_at=0)
    ex = exchange(iterable_app(it))
    assert it.closed == 1
    assert (ex.response.status, ex.response.body) == (500, GENERIC_500)


def test_close_is_called_when_iteration_raises_after_the_head(errlog: Any) -> None:
    it = ClosingIterable([b"a", b"b"], fail_at=1)
    ex = exchange(iterable_app(it))
    assert it.closed == 1
    assert ex.response.status == 200 and not ex.response.complete
    assert not ex.outcome.keep_alive


@pytest.mark.parametrize("disconnect_on", [1, 2, 3])
def test_close_is_called_when_the_client_disconnects(disconnect_on: int) -> None:
    it = ClosingIterable([b"a", b"b", b"c"])
    out = MemoryOutput(disconnect_on=disconnect_on)
    with pytest.raises(ClientDisconnected):
        exchange(iterable_app(it), out=out)
    assert it.closed == 1
    assert len(out.calls) == disconnect_on


def test_close_is_called_when_the_500_cannot_be_sent(errlog: Any) -> None:
    it = ClosingIterable([b"a"], fail_at=0)
    out = MemoryOutput(disconnect_on=1)
    with pytest.raises(ClientDisconnected):
        exchange(iterable_app(it), out=out)
    assert it.closed == 1


def test_close_errors_are_logged_not_raised(errlog: Any) -> None:
    class BadClose(ClosingIterable):
        def close(self) -> None:
            super().close()
            raise OSError("close failed")

    it = BadClose([b"ok"])
    ex = exchange(iterable_app(it))
    assert it.closed == 1
    assert ex.response.body == b"ok" and ex.response.complete
    assert any("closing the app iterator" in r.getMessage() for r in error_records(errlog))


# -- framing --------------------------------------------------------------------------------------


def test_generator_without_length_is_chunked_on_http11() -> None:
    ex = exchange(generator_app(b"hello", b" ", b"world!" * 3))
    body = ex.raw[ex.raw.index(b"\r\n\r\n") + 4 :]
    assert body == b"5\r\nhello\r\n1\r\n \r\n12\r\n" + b"world!" * 3 + b"\r\n0\r\n\r\n"
    assert ex.response.get("Transfer-Encoding") == "chunked"
    assert ex.response.get("Content-Length") is None
    assert ex.outcome.keep_alive
    assert ex.outcome.body_bytes == 24


def test_generator_without_length_is_close_delimited_on_http10() -> None:
    raw = b"GET / HTTP/1.0\r\n\r\n"
    ex = exchange(generator_app(b"hello", b" world"), raw)
    r = ex.response
    assert (r.framing, r.body) == ("close", b"hello world")
    assert r.get("Connection") == "close" and r.get("Transfer-Encoding") is None
    assert not ex.outcome.keep_alive


def test_http10_keep_alive_gets_connection_keep_alive() -> None:
    raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    ex = exchange(text_app(b"hi", headers=[*TEXT, ("Content-Length", "2")]), raw)
    assert ex.response.get("Connection") == "keep-alive"
    assert (ex.response.framing, ex.response.body) == ("length", b"hi")
    assert ex.outcome.keep_alive


def test_http10_keep_alive_list_gets_a_content_length() -> None:
    raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    ex = exchange(text_app(b"hi"), raw, validate=False)
    assert ex.response.get("Connection") == "keep-alive"
    assert (ex.response.framing, ex.response.body) == ("length", b"hi")
    assert ex.outcome.keep_alive


def test_http10_without_keep_alive_closes() -> None:
    ex = exchange(text_app(b"hi"), b"GET / HTTP/1.0\r\n\r\n", validate=False)
    assert ex.response.get("Connection") == "close"
    assert (ex.response.framing, ex.response.body) == ("length", b"hi")
    assert not ex.outcome.keep_alive


def test_http10_keep_alive_without_length_closes() -> None:
    raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    ex = exchange(generator_app(b"hi"), raw)
    assert ex.response.get("Connection") == "close"
    assert not ex.outcome.keep_alive


def test_client_connection_close_is_answered_with_close() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    request, environ, _ = build_environ(raw)
    out = MemoryOutput()
    outcome = run_app(validator(text_app(b"x")), environ, request, out, request.keep_alive)
    r = parse_response(bytes(out.data))
    assert r.get("Connection") == "close"
    assert not outcome.keep_alive


def test_app_connection_close_is_honoured_once() -> None:
    ex = exchange(text_app(b"x", headers=[*TEXT, ("Connection", "close")]))
    assert ex.response.all("Connection") == ["close"]
    assert not ex.outcome.keep_alive


CLOSE_GET = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
HTTP10_GET = b"GET / HTTP/1.0\r\n\r\n"
LENGTH_5 = [*TEXT, ("Content-Length", "5")]


@pytest.mark.parametrize(
    ("app", "raw", "kinds"),
    [
        (text_app(b"hello"), CLOSE_GET, ["write_last"]),
        (text_app(b"hel", b"lo"), b"GET / HTTP/1.0\r\n\r\n", ["write_last"]),
        (text_app(b"hello", headers=[*TEXT, ("Connection", "close")]), GET, ["write_last"]),
        (text_app(b"x" * 20000), CLOSE_GET, ["writev"]),  # too big to join: no hold-back
        (iterable_app(ClosingIterable([b"hello"]), LENGTH_5), CLOSE_GET, ["write_last"]),
        (
            iterable_app(ClosingIterable([b"hel", b"lo"]), LENGTH_5),
            CLOSE_GET,
            ["writev", "write_last"],
        ),
        (iterable_app(ClosingIterable([b"hel", b"lo"]), LENGTH_5), GET, ["writev", "write"]),
        # A generator may work on after its last piece: that piece is not held back.
        (generator_app(b"hello", headers=LENGTH_5), CLOSE_GET, ["write"]),
        (generator_app(b"hel", b"lo", headers=LENGTH_5), CLOSE_GET, ["writev", "write"]),
        (generator_app(b"hel", b"lo"), CLOSE_GET, ["writev", "writev", "write_last"]),
        (generator_app(b"hel", b"lo"), b"GET / HTTP/1.0\r\n\r\n", ["writev", "write"]),
        (generator_app(), CLOSE_GET, ["write_last"]),
        (text_app(b"hello"), GET, ["write_whole"]),  # may wait for the loop's turn to end
        (generator_app(b"hello"), GET, ["writev", "write"]),  # never held: a stream
        # The first piece is the whole announced body: nothing after it can follow.
        (iterable_app(ClosingIterable([b"hello"]), LENGTH_5), GET, ["write_whole"]),
        (iterable_app(ClosingIterable([b"hello", b""]), LENGTH_5), GET, ["write_whole"]),
        (iterable_app(ClosingIterable([b"hello"]), LENGTH_5), HTTP10_GET, ["write_last"]),
        (generator_app(b"hello", headers=LENGTH_5), GET, ["write"]),
    ],
    ids=[
        "list",
        "list-http10",
        "app-says-close",
        "big-list",
        "whole-body-iterated",
        "body-reaching-its-length",
        "keep-alive-body-reaching-its-length",
        "whole-body-generated",
        "generated-body-reaching-its-length",
        "chunked",
        "close-delimited",
        "empty",
        "keep-alive-list",
        "keep-alive-chunked",
        "keep-alive-whole-body-iterated",
        "keep-alive-whole-body-then-empty",
        "http10-whole-body-iterated",
        "keep-alive-whole-body-generated",
    ],
)
@pytest.mark.parametrize("suspendable", [False, True], ids=["thread", "loop"])
def test_the_end_of_a_response_before_a_close_is_marked_last(
    app: App, raw: bytes, kinds: list[str], suspendable: bool
) -> None:
    # The connection sends the final bytes with MSG_MORE so the FIN leaves with them. Only
    # a write known to complete a response on a closing connection may be marked: a
    # close-delimited body cannot know it has ended, and keep-alive has no FIN to wait for.
    ex = exchange(app, raw, validate=False, suspendable=suspendable)
    assert ex.out.kinds == kinds
    assert ex.response.complete or ex.response.framing == "close"


@pytest.mark.parametrize("suspendable", [False, True], ids=["thread", "loop"])
@pytest.mark.parametrize("raw", [GET, CLOSE_GET], ids=["keep-alive", "close"])
@pytest.mark.parametrize("how", ["generator", "write"])
def test_an_app_working_after_its_last_piece_has_sent_the_response_first(
    raw: bytes, how: str, suspendable: bool
) -> None:
    # "Send the response, then clean up": the client must not wait for the clean-up. A
    # write marked last or whole may wait (for our FIN, for the loop's turn to end).
    out = MemoryOutput()
    seen: list[tuple[bytes, list[str]]] = []

    def generated(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", LENGTH_5)
        yield b"hello"
        seen.append((bytes(out.data), out.kinds))  # the clean-up: what was sent by now

    def written(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", LENGTH_5)(b"hello")  # the write() callable
        seen.append((bytes(out.data), out.kinds))
        return []

    app = generated if how == "generator" else written
    ex = exchange(app, raw, validate=False, out=out, suspendable=suspendable)
    assert ex.response.body == b"hello" and ex.response.complete
    [(sent, kinds)] = seen
    assert sent == ex.raw and sent.endswith(b"\r\n\r\nhello")
    assert not {"write_last", "write_whole"} & set(kinds)


def test_a_500_before_the_close_is_marked_last(errlog: Any) -> None:
    def broken(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("boom")

    ex = exchange(broken, validate=False)
    assert ex.response.status == 500 and ex.out.kinds == ["write_last"]


def test_single_element_list_is_one_write_with_content_length() -> None:
    ex = exchange(text_app(b"small body"), validate=False)
    assert ex.out.kinds == ["write_whole"]  # one syscall for a small response
    assert ex.response.get("Content-Length") == "10"


def test_list_of_several_items_gets_content_length() -> None:
    ex = exchange(text_app(b"a", b"bc", b"def"), validate=False)
    assert len(ex.out.calls) == 1
    assert (ex.response.framing, ex.response.body) == ("length", b"abcdef")


def test_validated_list_is_framed_correctly() -> None:
    # The validator hides the list behind an iterator: brick must fall back to chunking.
    ex = exchange(text_app(b"a", b"bc"))
    assert ex.response.body == b"abc" and ex.response.complete and ex.response.rest == b""


def test_app_content_length_is_never_exceeded(errlog: Any) -> None:
    headers = [*TEXT, ("Content-Length", "5")]
    ex = exchange(generator_app(b"hel", b"lo world", headers=headers))
    assert (ex.response.body, ex.response.rest) == (b"hello", b"")
    assert ex.outcome.keep_alive  # the framing is still right
    ex = exchange(text_app(b"hello world", headers=headers), validate=False)
    assert (ex.response.body, ex.response.rest) == (b"hello", b"")
    assert error_records(errlog)
    # The whole body in the first piece went out at once; what came after is dropped.
    ex = exchange(iterable_app(ClosingIterable([b"hello", b" world"]), headers), validate=False)
    assert (ex.response.body, ex.response.rest) == (b"hello", b"")
    assert ex.out.kinds == ["write_whole"] and ex.outcome.keep_alive


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("chunks", [[b"hello"], [], [b""]])
def test_short_body_closes_the_connection(chunks: list[bytes], validate: bool, errlog: Any) -> None:
    ex = exchange(text_app(*chunks, headers=[*TEXT, ("Content-Length", "10")]), validate=validate)
    assert ex.response.get("Content-Length") == "10"
    assert not ex.response.complete
    assert not ex.outcome.keep_alive
    assert error_records(errlog)
    if not (validate and chunks == [b"hello"]):
        # known to be short before the head went out: the head says so
        assert ex.response.get("Connection") == "close"


def test_short_generator_body_closes_the_connection(errlog: Any) -> None:
    ex = exchange(generator_app(b"abc", headers=[*TEXT, ("Content-Length", "10")]))
    assert ex.response.body == b"abc" and not ex.response.complete
    assert not ex.outcome.keep_alive


@pytest.mark.parametrize(
    "app",
    [text_app(b"body!"), generator_app(b"bo", b"dy!")],
    ids=["list", "generator"],
)
def test_head_sends_no_body(app: App) -> None:
    raw = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
    ex = exchange(app, raw)
    assert ex.response.rest == b""  # nothing after the head
    assert ex.response.get("Transfer-Encoding") is None
    assert ex.outcome.keep_alive
    assert ex.outcome.body_bytes == 0


def test_head_keeps_the_content_length_of_a_list() -> None:
    raw = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
    ex = exchange(text_app(b"body!"), raw, validate=False)
    assert ex.response.get("Content-Length") == "5" and ex.response.rest == b""


def test_head_keeps_the_app_content_length() -> None:
    raw = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
    ex = exchange(generator_app(b"12345", headers=[*TEXT, ("Content-Length", "5")]), raw)
    assert ex.response.get("Content-Length") == "5" and ex.response.rest == b""
    assert ex.outcome.keep_alive


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
@pytest.mark.parametrize("factory", [text_app, generator_app])
def test_no_body_statuses(status: str, factory: Callable[..., App]) -> None:
    ex = exchange(factory(b"ignored", status=status, headers=[]), validate=False)
    assert ex.response.status == int(status[:3])
    assert ex.response.rest == b""
    assert ex.response.get("Transfer-Encoding") is None
    assert ex.response.get("Content-Length") is None
    assert ex.outcome.keep_alive
    # and the same app, validated, when it yields nothing
    ex = exchange(factory(status=status, headers=[]))
    assert ex.response.rest == b"" and ex.outcome.keep_alive


# -- wsgi.file_wrapper ----------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 40)  # 10240 bytes, more than one block
    return path


def file_app(
    path: Path, *, seek: int = 0, read: int = 0, headers: Any = None, opened: list[Any]
) -> App:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        f = path.open("rb")
        opened.append(f)
        f.seek(seek)
        if read:
            f.read(read)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), *(headers or [])])
        result: Iterable[bytes] = environ["wsgi.file_wrapper"](f, 4096)
        return result

    return app


def test_file_wrapper_is_sent_with_sendfile(data_file: Path) -> None:
    opened: list[Any] = []
    ex = exchange(file_app(data_file, opened=opened), validate=False)
    content = data_file.read_bytes()
    assert ex.response.body == content and ex.response.rest == b""
    assert ex.response.get("Content-Length") == str(len(content))
    assert "sendfile" in ex.out.kinds
    assert ex.outcome.body_bytes == len(content) and ex.outcome.keep_alive
    assert opened[0].closed  # FileWrapper.close closes the file


def test_file_wrapper_honours_a_smaller_content_length(data_file: Path) -> None:
    opened: list[Any] = []
    app = file_app(data_file, headers=[("Content-Length", "1000")], opened=opened)
    ex = exchange(app, validate=False)
    assert ex.response.body == data_file.read_bytes()[:1000] and ex.response.rest == b""
    assert ex.outcome.keep_alive


def test_file_wrapper_shorter_than_its_content_length_closes(data_file: Path, errlog: Any) -> None:
    opened: list[Any] = []
    app = file_app(data_file, headers=[("Content-Length", "20000")], opened=opened)
    ex = exchange(app, validate=False)
    assert ex.response.body == data_file.read_bytes() and not ex.response.complete
    assert ex.response.get("Connection") == "close"
    assert not ex.outcome.keep_alive
    assert error_records(errlog)


@pytest.mark.parametrize(("seek", "read"), [(1000, 0), (0, 10), (100, 5000)])
def test_file_wrapper_starts_at_the_current_position(data_file: Path, seek: int, read: int) -> None:
    opened: list[Any] = []
    ex = exchange(file_app(data_file, seek=seek, read=read, opened=opened), validate=False)
    start = seek + read
    assert ex.response.body == data_file.read_bytes()[start:]
    assert ex.response.get("Content-Length") == str(10240 - start)


def test_file_wrapper_at_end_of_file_sends_an_empty_body(data_file: Path) -> None:
    opened: list[Any] = []
    ex = exchange(file_app(data_file, seek=10240, opened=opened), validate=False)
    assert ex.response.get("Content-Length") == "0" and ex.response.body == b""
    assert ex.outcome.keep_alive


def test_file_wrapper_head_sends_no_body(data_file: Path) -> None:
    opened: list[Any] = []
    raw = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
    ex = exchange(file_app(data_file, opened=opened), raw, validate=False)
    assert ex.response.get("Content-Length") == "10240"
    assert ex.response.rest == b""
    assert "sendfile" not in ex.out.kinds
    assert ex.outcome.keep_alive and opened[0].closed


def test_file_wrapper_is_closed_when_the_client_disconnects(data_file: Path) -> None:
    opened: list[Any] = []
    out = MemoryOutput(disconnect_on=2)  # the head goes out, sendfile fails
    with pytest.raises(ClientDisconnected):
        exchange(file_app(data_file, opened=opened), validate=False, out=out)
    assert out.kinds == ["write", "sendfile"]
    assert opened[0].closed


def test_file_wrapper_over_a_non_file_iterates() -> None:
    stream = io.BytesIO(b"x" * 10000)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        result: Iterable[bytes] = environ["wsgi.file_wrapper"](stream, 4096)
        return result

    ex = exchange(app, validate=False)
    assert ex.response.body == b"x" * 10000 and ex.response.complete
    assert "sendfile" not in ex.out.kinds
    assert stream.closed


def test_file_wrapper_under_the_validator_still_works(data_file: Path) -> None:
    opened: list[Any] = []
    ex = exchange(file_app(data_file, opened=opened))
    assert ex.response.body == data_file.read_bytes() and ex.response.complete
    assert opened[0].closed


def test_file_wrapper_after_write_sends_one_head(data_file: Path) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"prefix:")
        result: Iterable[bytes] = environ["wsgi.file_wrapper"](data_file.open("rb"))
        return result

    ex = exchange(app, validate=False)
    assert ex.out.data.count(b"HTTP/1.1 ") == 1
    assert ex.response.body == b"prefix:" + data_file.read_bytes() and ex.response.complete


def test_file_wrapper_iterates_in_blocks() -> None:
    wrapper = FileWrapper(io.BytesIO(b"abcdefg"), 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]


# -- validation of what the app gives ---------------------------------------------------------


def bad_app(status: Any = "200 OK", headers: Any = None, body: Any = None) -> App:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response(status, TEXT if headers is None else headers)
        return [b"ok"] if body is None else body

    return app


BAD_STATUSES = [
    b"200 OK",
    200,
    "200",
    "20 OK",
    "2000 OK",
    "abc OK",
    "200 OK\r\nX-Injected: 1",
    "200 OK\n",
    "200\tOK",
    "099 Too Low",
    "100 Continue",
    "200 \u2713",
]
BAD_HEADERS = [
    [("X-Bad\r\nInjected", "1")],
    [("X-Bad", "1\r\nInjected: 1")],
    [("X-Bad", "1\nInjected: 1")],
    [("X-Bad", "1\rInjected: 1")],
    [("X-Bad", "nul\x00")],
    [("X Bad", "space in name")],
    [("X-Bad:", "colon in name")],
    [("", "empty name")],
    [(b"X-Bytes", "1")],
    [("X-Bytes", b"1")],
    [("X-Int", 1)],
    [["X-List", "1"]],
    [("X-Three", "1", "2")],
    (("X-Tuple-Headers", "1"),),
    [("X-Unicode", "\u2713")],
    [("Transfer-Encoding", "chunked")],
    [("Keep-Alive", "timeout=5")],
    [("Upgrade", "websocket")],
    [("Content-Length", "abc")],
    [("Content-Length", "-1")],
    [("Content-Length", "1"), ("Content-Length", "2")],
]


@pytest.mark.parametrize("status", BAD_STATUSES, ids=repr)
def test_bad_status_gives_a_500(status: Any, errlog: Any) -> None:
    ex = exchange(bad_app(status=status), validate=False)
    assert_generic_500(ex)
    assert error_records(errlog)


@pytest.mark.parametrize("headers", BAD_HEADERS, ids=repr)
def test_bad_headers_give_a_500(headers: Any, errlog: Any) -> None:
    ex = exchange(bad_app(headers=headers), validate=False)
    assert_generic_500(ex)
    assert error_records(errlog)


@pytest.mark.parametrize(
    "body", [["text"], [b"ok", "text"], "text", b"bytes", [1], [None], None, 42], ids=repr
)
def test_non_bytes_body_gives_a_500(body: Any, errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response("200 OK", TEXT)
        return body

    # (iterating bytes gives ints: refused like any other non-bytes item)
    assert_generic_500(exchange(app, validate=False))
    assert error_records(errlog)


def test_non_bytes_to_write_gives_a_500(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        write("text")  # type: ignore[arg-type]
        return []

    assert_generic_500(exchange(app, validate=False))


def test_non_bytes_after_the_head_closes_without_a_second_head(errlog: Any) -> None:
    ex = exchange(generator_app(b"good", "bad"), validate=False)  # type: ignore[arg-type]
    assert ex.out.data.count(b"HTTP/1.1 ") == 1
    assert ex.response.status == 200 and ex.response.body == b"good"
    assert not ex.response.complete
    assert not ex.outcome.keep_alive
    assert error_records(errlog)


def test_no_start_response_gives_a_500(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        return [b"forgot"]

    def generated(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        yield b"forgot"

    assert_generic_500(exchange(app, validate=False))
    assert error_records(errlog)
    errlog.clear()
    assert_generic_500(exchange(generated, validate=False, suspendable=True))
    assert [r.getMessage() for r in error_records(errlog)] == [
        "WSGI contract violation in GET /: the app returned without calling start_response"
    ]


def test_headers_changed_after_start_response_are_not_sent_unchecked(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        headers = list(TEXT)
        start_response("200 OK", headers)
        headers.append(("X-Evil", "1\r\nSet-Cookie: x=1"))
        yield b"body"

    ex = exchange(app, validate=False)
    assert (ex.response.status, ex.response.body) == (200, b"body")
    assert b"X-Evil" not in ex.out.data  # what was checked is what is sent


def assert_generic_500(ex: Exchange) -> None:
    r = ex.response
    assert (r.status, r.reason, r.body, r.rest) == (500, "Internal Server Error", GENERIC_500, b"")
    assert r.get("Content-Length") == str(len(GENERIC_500))
    assert r.get("Connection") == "close"
    assert ex.out.data.count(b"HTTP/1.1 ") == 1
    assert not ex.outcome.keep_alive
    assert ex.outcome.status.startswith("500")


# -- app exceptions ------------------------------------------------------------------------------


def test_exception_before_start_gives_a_generic_500(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("secret-database-password")

    ex = exchange(app, validate=False)
    assert_generic_500(ex)
    assert b"secret" not in ex.out.data and b"Traceback" not in ex.out.data
    records = error_records(errlog)
    assert len(records) == 1 and records[0].exc_info is not None
    assert "secret-database-password" in errlog.text
    assert "Traceback" in errlog.text


def test_sys_exit_in_the_app_is_a_500_not_the_end_of_the_worker(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        sys.exit(3)

    ex = exchange(app, validate=False)  # would raise SystemExit out of run_app if not caught
    assert_generic_500(ex)
    assert ex.outcome.keep_alive is False
    assert "SystemExit" in errlog.text


def test_sys_exit_inside_the_iterator_after_the_head_closes(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"first"
        sys.exit(0)

    ex = exchange(app, validate=False)
    assert ex.raw.startswith(b"HTTP/1.1 200 OK")
    assert ex.raw.count(b"HTTP/1.1") == 1  # no second head after the body started
    assert ex.outcome.keep_alive is False


def test_exception_after_start_response_before_body_gives_a_500(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [*TEXT, ("X-Not-Sent", "1")])
        raise RuntimeError("boom")
        yield b""  # pragma: no cover

    ex = exchange(app)
    assert_generic_500(ex)
    assert ex.response.get("X-Not-Sent") is None


def test_exception_on_head_request_gives_a_500_without_body(errlog: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("boom")

    ex = exchange(app, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", validate=False)
    assert ex.response.status == 500 and ex.response.rest == b""
    assert not ex.outcome.keep_alive


def test_exception_after_the_head_closes(errlog: Any) -> None:
    it = ClosingIterable([b"first", b"second"], fail_at=1)
    ex = exchange(iterable_app(it, headers=[*TEXT, ("Content-Length", "11")]))
    assert ex.response.body == b"first" and not ex.response.complete
    assert ex.out.data.count(b"HTTP/1.1 ") == 1
    assert not ex.outcome.keep_alive
    assert error_records(errlog)[0].exc_info is not None
