"""Focused tests of the sans-I/O request parser: limits, event order, death after an error,
pipelining, and properties that must hold for any input at all (hypothesis).

The corpus (test_corpus.py) covers the rules request by request; these tests cover what
the corpus cannot state as one file: default limits at their exact edges, when an event
comes out relative to the bytes fed, and behaviour over arbitrary byte streams.
"""

from __future__ import annotations

import itertools

import pytest
from brick.errors import HTTPError
from brick.parser import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_FIELD_SIZE,
    DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_REQUEST_LINE,
    END,
    MAX_BLANK_LINES,
    NEED_DATA,
    Limits,
    Request,
    RequestParser,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_corpus import STATUSES, Outcome, by_bytes, replay

pytestmark = pytest.mark.unit

HOST = b"Host: example.com\r\n"
GET = b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"


def events(parser: RequestParser) -> list[object]:
    """Every event up to NEED_DATA (bounded: a parser that never says NEED_DATA fails)."""
    out: list[object] = []
    for _ in range(10_000):
        event = parser.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
    raise AssertionError("the parser never asked for more data")


def parse(data: bytes, limits: Limits | None = None) -> list[object]:
    parser = RequestParser(limits)
    parser.feed(data)
    return events(parser)


def status_of(data: bytes, limits: Limits | None = None) -> int:
    with pytest.raises(HTTPError) as info:
        parse(data, limits)
    return info.value.status


def request_line(length: int) -> bytes:
    """A valid request line of exactly `length` bytes (without its CRLF)."""
    fixed = len(b"GET / HTTP/1.1")
    return b"GET /" + b"a" * (length - fixed) + b" HTTP/1.1"


# -- limits ----------------------------------------------------------------------------------


def test_default_limits_match_gunicorn() -> None:
    limits = Limits()
    assert limits.max_request_line == DEFAULT_MAX_REQUEST_LINE == 4094
    assert limits.max_header_count == DEFAULT_MAX_HEADER_COUNT == 100
    assert limits.max_field_size == DEFAULT_MAX_FIELD_SIZE == 8190
    assert limits.max_body == DEFAULT_MAX_BODY == 1 << 30


@pytest.mark.parametrize("limits", [None, Limits(max_request_line=100)], ids=["default", "100"])
def test_request_line_limit_edges(limits: Limits | None) -> None:
    limit = (limits or Limits()).max_request_line
    request = parse(request_line(limit) + b"\r\n" + HOST + b"\r\n", limits)[0]
    assert isinstance(request, Request)
    assert len(request.target) == limit - len(b"GET  HTTP/1.1")
    assert status_of(request_line(limit + 1) + b"\r\n" + HOST + b"\r\n", limits) == 414
    # Without waiting for the end of the line, or of the head:
    parser = RequestParser(limits)
    parser.feed(request_line(limit + 20)[: limit + 1])
    with pytest.raises(HTTPError) as info:
        parser.next_event()
    assert info.value.status == 414


@pytest.mark.parametrize("limits", [None, Limits(max_field_size=64)], ids=["default", "64"])
def test_field_size_limit_edges(limits: Limits | None) -> None:
    limit = (limits or Limits()).max_field_size
    at_limit = b"X: " + b"v" * (limit - 3)
    request = parse(b"GET / HTTP/1.1\r\n" + HOST + at_limit + b"\r\n\r\n", limits)[0]
    assert isinstance(request, Request)
    assert request.headers[-1] == (b"X", b"v" * (limit - 3))
    over = b"GET / HTTP/1.1\r\n" + HOST + at_limit + b"v\r\n\r\n"
    assert status_of(over, limits) == 431


@pytest.mark.parametrize("limits", [None, Limits(max_header_count=5)], ids=["default", "5"])
def test_header_count_limit_edges(limits: Limits | None) -> None:
    limit = (limits or Limits()).max_header_count
    fields = b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(limit - 1))
    request = parse(b"GET / HTTP/1.1\r\n" + HOST + fields + b"\r\n", limits)[0]
    assert isinstance(request, Request)
    assert len(request.headers) == limit
    assert status_of(b"GET / HTTP/1.1\r\n" + HOST + fields + b"Y: 1\r\n\r\n", limits) == 431


def test_header_count_limit_before_the_head_ends() -> None:
    parser = RequestParser(Limits(max_header_count=3))
    parser.feed(b"GET / HTTP/1.1\r\n" + HOST + b"A: 1\r\nB: 2\r\n")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"C: 3\r\n")  # a fourth complete field: no blank line needed to know
    with pytest.raises(HTTPError) as info:
        parser.next_event()
    assert info.value.status == 431


@pytest.mark.parametrize("limits", [None, Limits(max_body=10)], ids=["default", "10"])
def test_content_length_limit_is_decided_from_the_head(limits: Limits | None) -> None:
    limit = (limits or Limits()).max_body
    head = b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n"
    request = parse(head % limit, limits)[0]  # no body byte sent: the head is enough
    assert isinstance(request, Request)
    assert request.content_length == limit
    assert status_of(head % (limit + 1), limits) == 413


def test_limits_are_per_parser() -> None:
    small = RequestParser(Limits(max_request_line=20))
    small.feed(request_line(40) + b"\r\n" + HOST + b"\r\n")
    with pytest.raises(HTTPError):
        small.next_event()
    assert isinstance(parse(request_line(40) + b"\r\n" + HOST + b"\r\n")[0], Request)


def test_max_head_is_what_the_line_limits_allow() -> None:
    limits = Limits(max_request_line=10, max_header_count=2, max_field_size=5)
    assert limits.max_head == 10 + 2 + 2 * (5 + 2) + 2


# -- events ----------------------------------------------------------------------------------


def test_event_sequence_for_a_content_length_body() -> None:
    parser = RequestParser()
    parser.feed(b"POST /up HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nhel")
    request, piece = events(parser)
    assert isinstance(request, Request)
    assert (request.method, request.target, request.content_length) == ("POST", "/up", 10)
    assert request.has_body
    assert piece == b"hel"
    assert not parser.at_message_start
    parser.feed(b"lo")
    assert events(parser) == [b"lo"]
    parser.feed(b"world")
    assert events(parser) == [b"world", END]
    assert parser.at_message_start
    assert parser.buffered == 0


def test_event_sequence_for_a_chunked_body() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    (request,) = events(parser)
    assert isinstance(request, Request)
    assert request.chunked and request.content_length is None and request.has_body
    parser.feed(b"3\r\nab")
    assert events(parser) == [b"ab"]
    parser.feed(b"c\r\n0\r\n")
    assert events(parser) == [b"c"]  # the trailer section is not over yet
    parser.feed(b"Trailer-Field: x\r\n")
    assert events(parser) == []
    parser.feed(b"\r\n")
    assert events(parser) == [END]


@pytest.mark.parametrize(
    "data",
    [
        GET,
        b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\n" + HOST + b"Content-Length: 000\r\n\r\n",
    ],
    ids=["get", "head", "http10", "cl0", "cl000"],
)
def test_no_body_request_is_request_then_end(data: bytes) -> None:
    parser = RequestParser()
    parser.feed(data)
    request, end = events(parser)
    assert isinstance(request, Request)
    assert not request.has_body
    assert end is END
    assert parser.at_message_start


def test_empty_chunked_body_is_request_then_end() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    request, end = events(parser)
    assert isinstance(request, Request) and request.has_body
    assert end is END


def test_nothing_comes_out_of_an_incomplete_head() -> None:
    parser = RequestParser()
    for i in range(len(GET) - 1):
        parser.feed(GET[i : i + 1])
        assert parser.next_event() is NEED_DATA
    parser.feed(GET[-1:])
    assert isinstance(parser.next_event(), Request)


def test_expect_continue_is_known_before_any_body_byte() -> None:
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    (request,) = events(parser)
    assert isinstance(request, Request)
    assert request.expect_continue
    assert parser.buffered == 0  # nothing of the body arrived: the client waits for us
    parser.feed(b"abc")
    assert events(parser) == [b"abc", END]


def test_expect_continue_refused_first_when_too_large() -> None:
    head = b"PUT / HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\nContent-Length: 11\r\n\r\n"
    assert status_of(head, Limits(max_body=10)) == 413


def test_unknown_expectation_is_417() -> None:
    head = b"PUT / HTTP/1.1\r\n" + HOST + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\n"
    assert status_of(head) == 417


# -- errors ----------------------------------------------------------------------------------


def test_after_an_error_the_parser_is_dead() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n" + GET)
    with pytest.raises(HTTPError) as first:
        parser.next_event()
    assert first.value.status == 400
    assert parser.buffered == 0  # the pipelined GET is gone, never parsed
    assert not parser.at_message_start
    parser.feed(GET)
    assert parser.buffered == 0  # a dead parser keeps nothing
    for _ in range(3):
        with pytest.raises(HTTPError) as again:
            parser.next_event()
        assert again.value.status == 400


def test_an_error_in_a_body_kills_the_parser_too() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    parser.feed(b"2\r\nabXX" + GET)
    assert isinstance(parser.next_event(), Request)
    assert parser.next_event() == b"ab"
    with pytest.raises(HTTPError):
        parser.next_event()
    parser.feed(GET)
    with pytest.raises(HTTPError):
        parser.next_event()


def test_chunked_body_over_the_limit_is_413_before_the_chunk_arrives() -> None:
    parser = RequestParser(Limits(max_body=10))
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    parser.feed(b"6\r\nabcdef\r\n")
    request, piece = events(parser)
    assert isinstance(request, Request) and piece == b"abcdef"
    parser.feed(b"5\r\n")  # 6 + 5 > 10: known from the size line alone
    with pytest.raises(HTTPError) as info:
        parser.next_event()
    assert info.value.status == 413


def test_chunked_body_at_the_limit_is_fine() -> None:
    parser = RequestParser(Limits(max_body=10))
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    parser.feed(b"6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n")
    assert events(parser)[1:] == [b"abcdef", b"ghij", END]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ],
)
def test_statuses_other_than_400(data: bytes, status: int) -> None:
    assert status_of(data) == status


def test_blank_lines_before_a_request_are_bounded() -> None:
    assert isinstance(parse(b"\r\n" * MAX_BLANK_LINES + GET)[0], Request)
    assert status_of(b"\r\n" * (MAX_BLANK_LINES + 1) + GET) == 400
    # The count starts again for each request.
    parsed = parse((b"\r\n" * MAX_BLANK_LINES + GET) * 3)
    assert [type(e) for e in parsed] == [Request, type(END)] * 3


def test_absurd_content_length_is_413_not_a_crash() -> None:
    head = b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n"
    assert status_of(head) == 413
    zeros = b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"0" * 5000 + b"7\r\n\r\n"
    request = parse(zeros + b"1234567")[0]
    assert isinstance(request, Request) and request.content_length == 7


# -- pipelining, headers ---------------------------------------------------------------------


def test_pipelined_requests_come_out_in_order() -> None:
    stream = b"".join(b"GET /%d HTTP/1.1\r\n" % i + HOST + b"\r\n" for i in range(20))
    stream += b"POST /last HTTP/1.1\r\n" + HOST + b"Content-Length: 4\r\n\r\nbody"
    parser = RequestParser()
    parser.feed(stream)
    first = parser.next_event()
    assert isinstance(first, Request) and first.target == "/0"
    assert parser.next_event() is END
    assert parser.buffered == len(stream) - len(b"GET /0 HTTP/1.1\r\n" + HOST + b"\r\n")
    rest = events(parser)
    targets = [e.target for e in rest if isinstance(e, Request)]
    assert targets == [f"/{i}" for i in range(1, 20)] + ["/last"]
    assert rest[-2:] == [b"body", END]


def test_header_names_cached_or_not_behave_the_same() -> None:
    for _ in range(2):  # the second round hits the name cache
        assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n") == 400
        request = parse(b"GET / HTTP/1.1\r\nHOST: a\r\nX_Y: 1\r\nX-Y: 2\r\n\r\n")[0]
        assert isinstance(request, Request)
        assert request.host == "a"
        assert request.headers == [(b"HOST", b"a"), (b"X-Y", b"2")]


def test_trailers_fed_byte_by_byte() -> None:
    data = (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nContent-Length: 99\r\n\r\n" + GET
    )
    outcome = replay(by_bytes(data))
    assert outcome.status is None
    post, get = outcome.messages
    assert post.body == b"abc" and post.ended
    assert all(name.lower() != b"content-length" for name, _ in post.request.headers)
    assert get.request.target == "/" and get.ended


def test_http_1_minor_versions_are_read_as_1_1() -> None:
    request = parse(b"GET / HTTP/1.9\r\n" + HOST + b"\r\n")[0]
    assert isinstance(request, Request)
    assert request.version == "HTTP/1.1" and request.keep_alive
    assert status_of(b"GET / HTTP/1.9\r\n\r\n") == 400  # and so need a Host


# -- properties over any input ---------------------------------------------------------------

# Pieces of HTTP, good and bad, so that random streams reach deep into the grammar.
VOCABULARY = [
    b"GET",
    b"POST",
    b"OPTIONS",
    b"CONNECT",
    b" ",
    b"/",
    b"/p?q",
    b"*",
    b"http://h",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"\r\n",
    b"\r\n\r\n",
    b"\r",
    b"\n",
    b"\t",
    b"\x00",
    b"\x7f",
    b"\xff",
    b":",
    b"Host: h",
    b"Host:",
    b"Content-Length: ",
    b"0",
    b"3",
    b"12",
    b"-1",
    b"Transfer-Encoding: ",
    b"chunked",
    b"gzip, ",
    b",",
    b";e=1",
    b';q="\\""',
    b"abc",
    b"Expect: 100-continue",
    b"Connection: close",
    b"Connection: keep-alive",
    b"X_Y: 1",
    b"X: v",
    b" folded",
]


# (framing fields, body) pairs that agree, and other fields to mix in.
FRAMINGS = [
    ([], b""),
    ([b"Content-Length: 0"], b""),
    ([b"Content-Length: 3"], b"abc"),
    ([b"Transfer-Encoding: chunked"], b"0\r\n\r\n"),
    ([b"Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
    ([b"Transfer-Encoding: chunked"], b"1;e=1\r\na\r\n2\r\nbc\r\n0\r\nT: 1\r\n\r\n"),
]
FIELDS = [
    b"Content-Length: 3",
    b"Transfer-Encoding: chunked",
    b"Expect: 100-continue",
    b"Connection: close",
    b"Connection: keep-alive",
    b"X_Y: 1",
    b"X: y",
    b"Host: h",
]


@st.composite
def request_shaped(draw: st.DrawFn) -> bytes:
    """A plausible request (head and body), then maybe a few bytes inserted, deleted or
    replaced: streams that get deep into the grammar before they go wrong, if they do."""
    line = b" ".join(
        [
            draw(st.sampled_from([b"GET", b"POST", b"OPTIONS"])),
            draw(st.sampled_from([b"/", b"/a?b", b"http://h/x", b"/", b"*"])),
            draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])),
        ]
    )
    framing, body = draw(st.sampled_from(FRAMINGS))
    fields = [b"Host: h", *framing, *draw(st.lists(st.sampled_from(FIELDS), max_size=3))]
    fields = draw(st.permutations(fields))
    data = bytearray(b"\r\n".join([line, *fields, b"", body]))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from(b"\r\n\t\x00 :;0aZ\x7f\xff"))
        how = draw(st.sampled_from(["insert", "delete", "replace"]))
        if how == "insert":
            data.insert(at, byte)
        elif at < len(data):
            if how == "delete":
                del data[at]
            else:
                data[at] = byte
    return bytes(data)


pipelines = st.lists(request_shaped(), min_size=1, max_size=3).map(b"".join)
http_streams = st.one_of(
    st.binary(max_size=300),
    pipelines,
    pipelines,  # twice, to weigh it: most streams should get past the head
    st.lists(st.sampled_from(VOCABULARY), max_size=60).map(b"".join),
    st.lists(
        st.one_of(st.sampled_from(VOCABULARY), st.binary(min_size=1, max_size=4)), max_size=60
    ).map(b"".join),
)
small_limits = st.builds(
    Limits,
    max_request_line=st.integers(1, 40),
    max_header_count=st.integers(0, 6),
    max_field_size=st.integers(1, 40),
    max_body=st.integers(0, 8),
)
any_limits = st.one_of(st.just(Limits()), st.just(Limits()), small_limits)

PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [data]


@PROPERTY_SETTINGS
@given(data=http_streams, limits=any_limits)
def test_any_input_ends_in_events_or_an_http_error(data: bytes, limits: Limits) -> None:
    # replay() fails on any other exception, on a status outside 4xx/5xx, on events out of
    # order, and on a parser that produces events without consuming bytes.
    outcome = replay([data], limits)
    assert outcome.status is None or outcome.status in STATUSES


@PROPERTY_SETTINGS
@given(data=http_streams, limits=any_limits, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_whole_and_split_feeds_agree(data: bytes, limits: Limits, cuts: list[int]) -> None:
    whole = replay([data], limits)
    assert replay(split(data, cuts), limits) == whole
    stepwise: Outcome = replay(by_bytes(data), limits)
    assert stepwise == whole
    # Fed byte by byte, each Request and END comes out on the byte that completes it.
    assert [(kind, fed) for kind, fed, _ in stepwise.marks] == [
        (kind, consumed) for kind, _, consumed in whole.marks
    ]


@PROPERTY_SETTINGS
@given(data=http_streams, limits=any_limits)
def test_nothing_is_parsed_after_a_refusal(data: bytes, limits: Limits) -> None:
    parser = RequestParser(limits)
    parser.feed(data)
    try:
        events(parser)
    except HTTPError:
        parser.feed(GET)
        assert parser.buffered == 0
        with pytest.raises(HTTPError):
            parser.next_event()
