"""What brick remembers about requests and responses that repeat, and that it never shows.

A head seen before is served from the parser's head cache, its environ is copied from a
kept template, a status and header list seen before reuse their checked header block, and
a response head repeated within its second is sent again as it was built.
Each cache must give exactly what the work it saves would have given: these tests compare
the cached answer with a freshly computed one, and check the cases that must not be cached.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from typing import Any

import pytest
from brick import response, wsgi
from brick.errors import HTTPError
from brick.parser import END, NEED_DATA, Limits, Request, RequestParser
from brick.response import SERVER_HEADER
from brick.wsgi import EnvironBuilder, run_app
from test_wsgi import (  # noqa: F401 (errlog is a fixture)
    PEER,
    MemoryOutput,
    StartResponse,
    errlog,
    make_builder,
    parse_response,
)

pytestmark = pytest.mark.unit

HEAD = b"GET /cache/a?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: repeat\r\n\r\n"


def first_parse(data: bytes, limits: Limits | None = None) -> Request:
    """Parse `data` the ordinary way, as the first time a head is seen."""
    parser = RequestParser(limits)
    parser.feed(data)
    request = parser.next_event()
    assert isinstance(request, Request)
    return request


def kept(data: bytes) -> Request:
    """The Request the head cache holds for `data` (parsing it first if need be)."""
    first_parse(data)
    request = RequestParser().cached_head(data)
    assert request is not None and request.cached
    return request


# -- the head cache ---------------------------------------------------------------------------


def test_a_repeated_bodyless_head_is_the_same_request_without_parsing() -> None:
    request = kept(HEAD)
    parser = RequestParser()
    assert parser.cached_head(HEAD) is request
    assert dataclasses.replace(request, cached=False) == first_parse(HEAD)
    # The message is complete: the parser waits for the next request as after an END.
    assert parser.at_message_start and parser.next_event() is NEED_DATA
    parser.feed(HEAD)
    assert isinstance(parser.next_event(), Request) and parser.next_event() is END


def test_a_repeated_head_behind_other_bytes_is_the_kept_request_too() -> None:
    # Pipelined, or read ahead while an app thread ran the request before it: the head is
    # found in the buffer, and the kept Request is used instead of parsing it again.
    request = kept(HEAD)
    parser = RequestParser()
    post = b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    parser.feed(b"\r\n" + HEAD + post + HEAD)
    assert parser.next_event() is request and parser.next_event() is END
    posted = parser.next_event()
    assert isinstance(posted, Request) and posted.method == "POST" and not posted.cached
    assert parser.next_event() == b"abc" and parser.next_event() is END
    assert parser.next_event() is request and parser.next_event() is END
    assert parser.next_event() is NEED_DATA and parser.buffered == 0


def test_a_buffer_holding_exactly_one_kept_head_is_taken_whole() -> None:
    # The next keep-alive request, read ahead while an app thread ran the one before.
    request = kept(HEAD)
    parser = RequestParser()
    parser.feed(HEAD)
    assert parser.take_cached_head() is request
    assert parser.buffered == 0 and parser.next_event() is NEED_DATA
    parser.feed(HEAD)  # and the parser goes on as after any other message
    assert parser.next_event() is request and parser.next_event() is END


@pytest.mark.parametrize(
    "buffered",
    [
        HEAD + HEAD,  # pipelined: parsed one by one, in order
        HEAD[:-2],  # not a whole head yet
        b"\r\n" + HEAD,  # the blank line before it is the parser's to skip
        HEAD.replace(b"/cache/a", b"/cache/never-seen"),
    ],
    ids=["two-heads", "partial", "leading-crlf", "not-kept"],
)
def test_anything_but_exactly_one_kept_head_is_left_to_the_parser(buffered: bytes) -> None:
    kept(HEAD)
    parser = RequestParser()
    parser.feed(buffered)
    assert parser.take_cached_head() is None
    assert parser.buffered == len(buffered)


def test_a_kept_head_in_a_body_is_body() -> None:
    kept(HEAD)
    parser = RequestParser()
    parser.feed(b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(HEAD))
    assert isinstance(parser.next_event(), Request)
    parser.feed(HEAD)
    assert parser.take_cached_head() is None
    assert parser.next_event() == HEAD


@pytest.mark.parametrize(
    "data",
    [
        b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /c HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 3000 + b"\r\n\r\n",
    ],
    ids=["content-length", "chunked", "large-head"],
)
def test_heads_with_a_body_or_too_large_are_not_kept(data: bytes) -> None:
    first_parse(data)
    assert RequestParser().cached_head(data) is None


def test_only_a_whole_head_between_messages_is_looked_up() -> None:
    first_parse(HEAD)
    partial = RequestParser()
    partial.feed(b"GET ")
    assert partial.cached_head(HEAD) is None  # it would join the bytes already buffered
    in_body = RequestParser()
    in_body.feed(b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
    assert isinstance(in_body.next_event(), Request)
    assert in_body.cached_head(HEAD) is None  # these bytes are body, not a head
    assert RequestParser().cached_head(HEAD + HEAD) is None  # pipelined: parsed as usual


def test_a_head_cached_under_some_limits_is_judged_again_under_others() -> None:
    long_line = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    lenient = Limits()
    request = first_parse(long_line, lenient)
    strict_limits = Limits(max_request_line=100)
    strict = RequestParser(strict_limits)
    assert strict.cached_head(long_line) is None
    strict.feed(long_line)
    with pytest.raises(HTTPError) as refused:
        strict.next_event()
    assert refused.value.status == 414
    # Parsers alternating between the two keep to their own caches.
    assert RequestParser(lenient).cached_head(long_line) is request
    assert RequestParser(strict_limits).cached_head(long_line) is None
    assert RequestParser(Limits()).cached_head(long_line) is request  # equal limits: shared


# -- the environ template ---------------------------------------------------------------------


def environ_for(
    builder: EnvironBuilder, request: Request, peer: tuple[str, str], trusted: bool = False
) -> dict[str, Any]:
    return builder.build(request, io.BytesIO(), 0, peer, trusted)


def uncached(request: Request) -> Request:
    return dataclasses.replace(request, cached=False)


def comparable(environ: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in environ.items() if k != "wsgi.input"}


def test_a_cached_environ_equals_a_freshly_built_one_for_each_peer() -> None:
    request = kept(HEAD)
    builder = make_builder()
    for peer in [PEER, ("198.51.100.9", "4444"), PEER]:
        cached = environ_for(builder, request, peer)
        fresh = environ_for(builder, uncached(request), peer)
        assert comparable(cached) == comparable(fresh)
        assert (cached["REMOTE_ADDR"], cached["REMOTE_PORT"]) == peer


def test_what_an_app_does_to_its_environ_stays_in_that_request() -> None:
    request = kept(HEAD)
    builder = make_builder()
    first = environ_for(builder, request, PEER)
    first["PATH_INFO"] = "/rewritten"
    first["app.state"] = object()
    second = environ_for(builder, request, PEER)
    assert second["PATH_INFO"] == "/cache/a" and "app.state" not in second
    assert second["wsgi.input"] is not first["wsgi.input"]


def test_forwarded_headers_count_only_for_a_trusted_peer_whatever_came_first() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n"
    request = kept(head)
    builder = make_builder()
    proxy, stranger = ("10.0.0.2", "1000"), ("192.0.2.99", "2000")
    for _ in range(2):
        assert environ_for(builder, request, stranger)["REMOTE_ADDR"] == "192.0.2.99"
        via_proxy = environ_for(builder, request, proxy, trusted=True)
        assert via_proxy["REMOTE_ADDR"] == "203.0.113.5"
        assert via_proxy["REMOTE_PORT"] == "1000"


# -- the checked header list ------------------------------------------------------------------


def respond(
    headers: list[tuple[str, str]], method: str = "GET", status: str = "200 OK"
) -> tuple[bytes, Any]:
    """Run an app answering with `status` and a copy of `headers`; the bytes and the outcome."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, list(headers))
        return [b"hello"]

    request = kept(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    out = MemoryOutput()
    environ = environ_for(make_builder(), request, PEER)
    outcome = run_app(app, environ, request, out)
    return bytes(out.data), outcome


def test_a_repeated_header_list_gives_the_same_response() -> None:
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-Kind", "a")]
    first, _ = respond(headers)
    again, _ = respond(headers)
    assert parse_response(again) == parse_response(first)
    assert parse_response(again).body == b"hello"
    head_only = parse_response(respond(headers, method="HEAD")[0], method="HEAD")
    assert head_only.get("Content-Length") == "5" and head_only.body == b""


@pytest.mark.usefixtures("errlog")
def test_a_repeated_header_list_with_one_bad_value_is_still_refused() -> None:
    good = [("Content-Type", "text/plain"), ("X-Kind", "a")]
    assert parse_response(respond(good)[0]).status == 200
    for bad in (("X-Kind", "a\r\nInjected: 1"), ("X-Kind", 5), ["X-Kind", "a"]):
        data, outcome = respond([good[0], bad])  # type: ignore[list-item]
        assert parse_response(data).status == 500 and not outcome.keep_alive
    assert b"Injected" not in respond([good[0], ("X-Kind", "a\r\nInjected: 1")])[0]


@pytest.mark.usefixtures("errlog")
def test_a_repeated_status_is_checked_with_its_headers() -> None:
    headers = [("Content-Type", "text/plain")]
    assert parse_response(respond(headers, status="201 Created")[0]).status == 201
    assert parse_response(respond(headers, status="201 Created\r\nX: y")[0]).status == 500
    assert parse_response(respond(headers, status="204 No Content")[0]).body == b""


# -- response heads -------------------------------------------------------------------------


def test_a_repeated_head_is_kept_for_its_second_and_its_date_moves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_700_000_000.25]
    monkeypatch.setattr(response.time, "time", lambda: now[0])
    block = "Content-Type: text/plain\r\nContent-Length: 6\r\n"
    first = response.usual_head("200 OK", block, False)
    assert first == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n" + SERVER_HEADER.encode() + b"\r\n"
    )
    now[0] += 0.5
    assert response.usual_head("200 OK", block, False) is first  # the same second: kept
    assert response.usual_head("404 Not Found", block, False).startswith(
        b"HTTP/1.1 404 Not Found\r\n"
    )
    closing = response.usual_head("200 OK", block, True)
    assert closing == first[:-2] + b"Connection: close\r\n\r\n"
    now[0] += 1
    later = response.usual_head("200 OK", block, False)
    assert b"Date: Tue, 14 Nov 2023 22:13:21 GMT\r\n" in later
    assert later.replace(b":21 GMT", b":20 GMT") == first


def test_an_app_answers_heads_follow_the_clock_both_ways(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The heads kept for one checked answer carry the Date of the second they were made
    # in; a clock set back gets the earlier second's Date again, not a Date from the future.
    now = [1_700_000_000.75]
    monkeypatch.setattr(response.time, "time", lambda: now[0])
    kept = response.KeptHeads("200 OK", "Content-Length: 2\r\n")
    first = kept.head(False)
    assert b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n" in first
    assert kept.head(True) == first[:-2] + b"Connection: close\r\n\r\n"
    now[0] += 0.2
    assert kept.head(False) is first
    now[0] += 0.1
    assert b":21 GMT" in kept.head(False) and b":21 GMT" in kept.head(True)
    now[0] -= 10
    assert b":11 GMT" in kept.head(False) and b":11 GMT" in kept.head(True)


def test_the_heads_kept_are_bounded() -> None:
    for n in range(3 * response._HEADS_MAX):
        head = response.usual_head("200 OK", f"Content-Length: {n}\r\n", n % 2 == 0)
        assert head.startswith(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nDate: ".encode())
    assert len(response._heads) <= response._HEADS_MAX


def test_only_http_1_1_heads_without_the_apps_date_or_server_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        response.KeptHeads,
        "head",
        lambda self, close: kept.append((self.block, close)) or b"",
    )
    cases = [
        ("HTTP/1.1", [], True),
        ("HTTP/1.0", [], True),
        ("HTTP/1.1", [("Date", "Tue, 14 Nov 2023 22:13:20 GMT")], True),
        ("HTTP/1.1", [("Server", "app")], True),
        ("HTTP/1.1", [], False),
    ]
    for version, extra, keep_alive in cases:
        parser = RequestParser()
        parser.feed(f"GET / {version}\r\nHost: t\r\n\r\n".encode())
        request = parser.next_event()
        assert isinstance(request, Request)
        out = MemoryOutput()
        headers = [("Content-Length", "2"), *extra]
        cycle = wsgi._Cycle(request, out, keep_alive)
        cycle.start_response("200 OK", headers)
        cycle.send_whole([b"ok"])
    assert kept == [("Content-Length: 2\r\n", False), ("Content-Length: 2\r\n", True)]


DATE = "Tue, 14 Nov 2023 22:13:20 GMT"


def whole_answer(
    headers: list[tuple[str, str]],
    body: list[bytes],
    *,
    keep_alive: bool = True,
    method: str = "GET",
    status: str = "200 OK",
    general: bool = False,
) -> tuple[bytes, list[tuple[str, int]], bool]:
    """send_whole for one HTTP/1.1 response: the bytes, the output calls, and keep-alive.
    `general` makes the cycle take the general path (through `_head`)."""
    request = kept(f"{method} / HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    out = MemoryOutput()
    cycle = wsgi._Cycle(request, out, keep_alive)
    cycle.start_response(status, list(headers))
    if general:
        cycle.usual = None
    cycle.send_whole(body)
    return bytes(out.data), out.calls, cycle.keep_alive


@pytest.mark.parametrize("keep_alive", [True, False])
def test_the_usual_answer_skips_the_framing_decision_and_sends_what_it_would_have(
    monkeypatch: pytest.MonkeyPatch, keep_alive: bool
) -> None:
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5")]
    general = whole_answer(headers, [b"hello"], keep_alive=keep_alive, general=True)

    def no_head(self: Any, known_length: int | None) -> bytes:
        raise AssertionError("the usual answer took the general path")

    monkeypatch.setattr(wsgi._Cycle, "_head", no_head)
    assert whole_answer(headers, [b"hello"], keep_alive=keep_alive) == general
    # A closing answer holds its FIN with it; a keep-alive one may wait for the turn's end.
    kind = "write_whole" if keep_alive else "write_last"
    assert general[1] == [(kind, len(general[0]))]
    assert (b"Connection: close\r\n" in general[0]) is not keep_alive


@pytest.mark.parametrize(
    ("headers", "body", "method", "status"),
    [
        ([("Content-Length", "5")], [b"hell"], "GET", "200 OK"),  # shorter than announced
        ([("Content-Length", "5")], [b"hello!"], "GET", "200 OK"),  # longer: cut
        ([("Content-Length", "5"), ("Connection", "close")], [b"hello"], "GET", "200 OK"),
        ([("Content-Length", "5")], [b"hello"], "HEAD", "200 OK"),
        ([("Content-Length", "0")], [b""], "GET", "204 No Content"),
        ([("Content-Length", "5"), ("Date", DATE)], [b"hello"], "GET", "200 OK"),  # app's Date
        ([("Content-Length", "20000")], [b"x" * 20000], "GET", "200 OK"),  # sent scattered
        ([], [b"hello"], "GET", "200 OK"),  # no Content-Length: the server frames it
    ],
)
def test_every_other_whole_answer_takes_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
    headers: list[tuple[str, str]],
    body: list[bytes],
    method: str,
    status: str,
) -> None:
    general = whole_answer(headers, body, method=method, status=status, general=True)
    heads: list[int | None] = []
    real_head = wsgi._Cycle._head

    def counted(self: Any, known_length: int | None) -> bytes:
        heads.append(known_length)
        return real_head(self, known_length)

    monkeypatch.setattr(wsgi._Cycle, "_head", counted)
    assert whole_answer(headers, body, method=method, status=status) == general
    assert len(heads) == 1
