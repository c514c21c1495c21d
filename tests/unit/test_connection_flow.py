"""A Connection's own flow, over a socket and a loop that only record what they are asked.

The functional tests drive real sockets, where the kernel decides how much a send takes;
here the test decides, so states that are hard to reach on a real socket (the whole of a
long pipeline answered after one flush) are reached every time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

import pytest
from brick import connection
from brick.connection import LINGERING, READING, WRITING, Connection, Service
from brick.loop import EVENT_READ, EVENT_WRITE
from brick.parser import IdleParser, Request, RequestParser
from test_wsgi import ClosingIterable, StartResponse, make_builder

pytestmark = pytest.mark.unit

HELLO = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"
BIG = b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n"
BIG_SIZE = 100_000


def must_not_block(flags: int) -> None:
    # A worker's accepted socket is blocking at the kernel level: only the flag keeps a
    # recv or send from stalling the whole worker.
    assert flags & socket.MSG_DONTWAIT, "a recv or send without MSG_DONTWAIT"


class ScriptedSocket:
    """Hands out `incoming` once; takes at most `room` bytes per send (None: everything)."""

    def __init__(self, incoming: bytes, fd: int = 99) -> None:
        self.incoming = incoming
        self.fd = fd
        self.room: int | None = 0
        self.sent = bytearray()
        self.closed = False
        self.shut = False

    def fileno(self) -> int:
        return self.fd

    def recv(self, size: int, flags: int = 0) -> bytes:
        must_not_block(flags)
        if not self.incoming:
            raise BlockingIOError
        data, self.incoming = self.incoming[:size], self.incoming[size:]
        return data

    def send(self, data: bytes, flags: int = 0) -> int:
        must_not_block(flags)
        taken = len(data) if self.room is None else min(self.room, len(data))
        if not taken:
            raise BlockingIOError
        self.sent += data[:taken]
        return taken

    def sendmsg(self, parts: Iterable[bytes], ancdata: object = (), flags: int = 0) -> int:
        return self.send(b"".join(parts), flags)

    def shutdown(self, how: int) -> None:
        self.shut = True

    def close(self) -> None:
        self.closed = True


class RecordingLoop:
    def __init__(self) -> None:
        self.events: dict[int, int] = {}
        self.events_left = 1  # as if the turn had more to do: whole responses are held

    def register(self, fd: int, events: int, handler: object) -> None:
        self.events[fd] = events

    def modify(self, fd: int, events: int, handler: object) -> None:
        self.events[fd] = events

    def unregister(self, fd: int) -> None:
        self.events.pop(fd, None)

    def forget(self, fd: int) -> None:
        self.events.pop(fd, None)


def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    body = b"x" * BIG_SIZE if environ["PATH_INFO"] == "/big" else b"hello\n"
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    if environ["PATH_INFO"] == "/close":
        headers.append(("Connection", "close"))
    start_response("200 OK", headers)
    return [body]


def test_a_long_pipeline_behind_a_large_response_is_answered_after_one_flush() -> None:
    # The large response fills the socket, so the loop flushes it later; by then 1500
    # requests, all seen before, wait in the buffer, and this time the socket takes
    # everything at once. Each is answered, in order, without the call chain growing with
    # every one of them.
    count = 1500  # all in one read (64 KiB)
    seen_before = RequestParser()  # (an earlier client sent the same head)
    seen_before.feed(HELLO)
    assert isinstance(seen_before.next_event(), Request)
    sock = ScriptedSocket(BIG + HELLO * count)
    loop = RecordingLoop()
    service = Service(app=app, loop=loop)  # type: ignore[arg-type]
    conn = Connection(service, sock, ("127.0.0.1", "5555"), make_builder())  # type: ignore[arg-type]
    assert loop.events[99] == EVENT_WRITE and not sock.sent  # the large response waits
    sock.room = None
    conn.handle_event(EVENT_WRITE)
    responses = bytes(sock.sent).split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(responses) == 1 + count
    assert responses[0].endswith(b"x" * BIG_SIZE)
    assert all(r.endswith(b"\r\n\r\nhello\n") for r in responses[1:])
    assert not sock.closed and conn.parser.buffered == 0


def seen_before(head: bytes) -> bytes:
    """`head`, parsed once by an earlier client, as the worker's head cache then holds it."""
    parser = RequestParser()
    parser.feed(head)
    assert isinstance(parser.next_event(), Request)
    return head


BIG_CLOSE = b"GET /big HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


@pytest.fixture
def kernel_asked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each time a Connection asks the kernel for unread input; the answer is always yes
    (the client sent more), so a connection that asks shuts its side and lingers."""
    asked: list[int] = []

    def unread_input(conn: Connection) -> bool:
        asked.append(conn.fd)
        return True

    monkeypatch.setattr(Connection, "_unread_input", unread_input)
    return asked


def serve(
    incoming: bytes, room: int | None, draining: bool = False
) -> tuple[Connection, ScriptedSocket]:
    sock = ScriptedSocket(incoming)
    sock.room = room
    service = Service(app=app, loop=RecordingLoop(), draining=draining)  # type: ignore[arg-type]
    conn = Connection(service, sock, ("127.0.0.1", "5555"), make_builder())  # type: ignore[arg-type]
    return conn, sock


@pytest.mark.parametrize("seen", [False, True], ids=["new head", "head seen before"])
def test_after_a_response_that_waited_for_the_client_the_close_asks_and_lingers(
    kernel_asked: list[int], seen: bool
) -> None:
    # While the loop was sending the rest, the client may have sent more despite its
    # close: closing over unread input would reset the connection and could destroy the
    # end of the response, so the connection asks and lingers. (A head seen before is
    # taken from the cache; what it says of unread input must not outlast the wait.)
    conn, sock = serve(seen_before(BIG_CLOSE) if seen else BIG_CLOSE, room=0)
    assert not sock.sent  # the response waits for the client
    sock.room = None
    conn.handle_event(EVENT_WRITE)
    assert sock.sent.endswith(b"x" * BIG_SIZE)
    assert kernel_asked == [99]
    assert sock.shut and not sock.closed and conn.state == LINGERING


def test_a_close_the_server_decides_asks_for_unread_input(kernel_asked: list[int]) -> None:
    # A keep-alive client of a draining worker may send its next request at any moment.
    conn, sock = serve(HELLO, room=None, draining=True)
    assert sock.sent.endswith(b"\r\n\r\nhello\n") and b"Connection: close" in sock.sent
    assert kernel_asked == [99]
    assert sock.shut and conn.state == LINGERING


HELLO_CLOSE = b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    "head",
    [HELLO_CLOSE, b"GET /hello HTTP/1.0\r\n\r\n"],
    ids=["close", "http/1.0"],
)
def test_a_last_request_answered_at_once_closes_without_asking(
    kernel_asked: list[int], head: bytes
) -> None:
    # The client said this request is its last and sent nothing else: once its response
    # is out, a plain close, with no system call to ask the kernel for more input.
    _conn, sock = serve(seen_before(head), room=None)
    assert sock.sent.endswith(b"\r\n\r\nhello\n") and b"Connection: close" in sock.sent
    assert kernel_asked == []
    assert sock.closed and not sock.shut


def test_a_close_the_app_decides_asks_for_unread_input(kernel_asked: list[int]) -> None:
    # The client meant to go on and may have sent its next request already.
    conn, sock = serve(seen_before(b"GET /close HTTP/1.1\r\nHost: test\r\n\r\n"), room=None)
    assert b"Connection: close" in sock.sent
    assert kernel_asked == [99]
    assert sock.shut and conn.state == LINGERING


def test_a_last_request_with_more_bytes_behind_it_lingers(kernel_asked: list[int]) -> None:
    # Bytes after the last request, in the same read: unread input, known without asking.
    conn, sock = serve(seen_before(HELLO_CLOSE) + HELLO, room=None)
    assert sock.sent.endswith(b"\r\n\r\nhello\n") and b"Connection: close" in sock.sent
    assert sock.shut and conn.state == LINGERING


def test_a_connection_of_heads_seen_before_makes_no_parser_of_its_own() -> None:
    # Every request is looked up whole in the head cache, so the connection keeps the
    # worker's shared idle parser: no parser object per connection.
    conn, sock = serve(seen_before(HELLO), room=None)
    sock.incoming = HELLO
    conn.handle_event(EVENT_READ)
    assert bytes(sock.sent).count(b"\r\n\r\nhello\n") == 2
    assert conn.parser is conn.service.idle_parser


def test_bytes_to_keep_give_the_connection_its_own_parser() -> None:
    # A head in two pieces must be kept between reads: the connection makes its own
    # parser, and the shared one stays empty for the others.
    conn, sock = serve(HELLO[:10], room=None)
    shared = conn.service.idle_parser
    assert conn.parser is not shared and conn.parser.buf == HELLO[:10]
    sock.incoming = HELLO[10:]
    conn.handle_event(EVENT_READ)
    assert sock.sent.endswith(b"\r\n\r\nhello\n")
    assert not shared.buf


def test_the_idle_parser_refuses_bytes() -> None:
    with pytest.raises(RuntimeError):
        IdleParser().feed(HELLO)


@pytest.mark.parametrize(
    ("incoming", "timeout"),
    [
        (b"", "keepalive_timeout"),  # nothing yet
        (b"\r\n\r\n", "keepalive_timeout"),  # the empty lines a request may follow
        (HELLO[:10], "header_timeout"),  # part of a head
    ],
    ids=["nothing", "empty lines", "part of a head"],
)
def test_a_new_connection_waits_under_the_deadline_of_what_it_sent(
    incoming: bytes, timeout: str
) -> None:
    service = Service(app=app, loop=RecordingLoop(), keepalive_timeout=5.0, header_timeout=9.0)  # type: ignore[arg-type]
    before = time.monotonic()
    conn = Connection(service, ScriptedSocket(incoming), ("127.0.0.1", "5555"), make_builder())  # type: ignore[arg-type]
    assert conn.state == READING and service.loop.events[99] == EVENT_READ  # type: ignore[attr-defined]
    assert before <= conn.started <= time.monotonic()
    assert conn.deadline == conn.started + getattr(service, timeout)
    service.sweep(conn.started + 4.9)
    assert conn.state == READING  # not timed out early


def echo_remote_addr(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    body = environ["REMOTE_ADDR"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_each_connection_from_a_peer_gets_the_trust_of_its_address() -> None:
    # Trust is decided once per address and kept: later connections from the same
    # address are trusted, or not, exactly as the first.
    builder = make_builder(forwarded_trusted_ips=frozenset({"10.0.0.0/8"}))
    service = Service(app=echo_remote_addr, loop=RecordingLoop())  # type: ignore[arg-type]
    forwarded = b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n"
    for _ in range(3):
        for peer, seen in [("10.1.2.3", b"198.51.100.7"), ("192.0.2.1", b"192.0.2.1")]:
            sock = ScriptedSocket(forwarded)
            sock.room = None
            Connection(service, sock, (peer, "5555"), builder)  # type: ignore[arg-type]
            assert sock.sent.endswith(b"\r\n\r\n" + seen)
    assert builder.peer_trust == {"10.1.2.3": True, "192.0.2.1": False}


def test_the_idle_parser_finds_heads_seen_before_and_only_those() -> None:
    idle = IdleParser()
    head = seen_before(b"GET /idle HTTP/1.1\r\nHost: test\r\n\r\n")
    request = idle.cached_head(head)
    assert isinstance(request, Request) and request.target == "/idle"
    assert idle.cached_head(b"GET /other HTTP/1.1\r\nHost: test\r\n\r\n") is None
    assert idle.cached_head(head + head) is None  # two pipelined heads: parsed as usual
    assert not idle.buf


def held_service() -> Service:
    return Service(app=app_or_stream, loop=RecordingLoop(), held=[])  # type: ignore[arg-type]


def app_or_stream(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one", b"two"])
    if path in ("/iterated", "/generated"):
        # The whole announced body in one piece, from an iterable or a generator.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        # (An iterable object with close(), as Flask and Django return, or a generator.)
        if path == "/iterated":
            return ClosingIterable([b"hello\n"])
        return (c for c in [b"hello\n"])
    return app(environ, start_response)


def open_with(service: Service, incoming: bytes, room: int | None = None) -> ScriptedSocket:
    sock = ScriptedSocket(incoming, fd=100 + len(service.connections))
    sock.room = room
    Connection(service, sock, ("127.0.0.1", "5555"), make_builder())  # type: ignore[arg-type]
    return sock


def test_whole_keep_alive_responses_wait_for_the_end_of_the_loops_turn() -> None:
    service = held_service()
    first = open_with(service, HELLO)
    second = open_with(service, HELLO)
    assert not first.sent and not second.sent  # held while the turn goes on
    assert service.loop.events == {}  # type: ignore[attr-defined]  # no epoll call for them
    service.send_held()
    assert first.sent.endswith(b"\r\n\r\nhello\n") and second.sent == first.sent
    for sock in (first, second):
        assert service.connections[sock.fd].state == READING
        assert service.loop.events[sock.fd] == EVENT_READ  # type: ignore[attr-defined]
    assert service.held == []


def test_pipelined_requests_held_are_all_answered_before_the_loop_waits() -> None:
    service = held_service()
    sock = open_with(service, HELLO + HELLO + HELLO)
    assert not sock.sent
    service.send_held()
    assert bytes(sock.sent).count(b"\r\n\r\nhello\n") == 3 and service.held == []


def test_a_held_response_the_kernel_takes_in_part_is_finished_by_the_loop() -> None:
    service = held_service()
    sock = open_with(service, HELLO, room=10)
    conn = service.connections[sock.fd]
    service.send_held()
    assert len(sock.sent) == 10 and conn.state == WRITING
    assert service.loop.events[sock.fd] == EVENT_WRITE  # type: ignore[attr-defined]
    sock.room = None
    conn.handle_event(EVENT_WRITE)
    assert sock.sent.endswith(b"\r\n\r\nhello\n") and conn.state == READING


@pytest.mark.parametrize(
    "head",
    [
        HELLO_CLOSE,
        b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /generated HTTP/1.1\r\nHost: test\r\n\r\n",
    ],
    ids=["close", "stream", "generator"],
)
def test_closing_and_streamed_responses_are_never_held(head: bytes) -> None:
    service = held_service()
    sock = open_with(service, head, room=None)
    assert sock.sent.startswith(b"HTTP/1.1 200 OK\r\n") and service.held == []
    assert b"hello\n" in sock.sent or b"one" in sock.sent


def test_a_whole_body_from_an_iterable_object_is_held() -> None:
    service = held_service()
    sock = open_with(service, b"GET /iterated HTTP/1.1\r\nHost: test\r\n\r\n", room=None)
    assert not sock.sent and len(service.held) == 1  # type: ignore[arg-type]
    service.send_held()
    assert sock.sent.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 6\r\n" in sock.sent and sock.sent.endswith(b"\r\n\r\nhello\n")


def test_a_held_response_of_a_closed_connection_is_dropped() -> None:
    service = held_service()
    sock = open_with(service, HELLO)
    service.connections[sock.fd].close()
    service.send_held()
    assert not sock.sent and sock.closed


def test_no_app_runs_while_a_response_has_been_held_too_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow turn must not keep a computed response from its client: once one has waited
    # HOLD_MAX, it goes out before the next app runs.
    now = [100.0]
    monkeypatch.setattr(connection.time, "monotonic", lambda: now[0])
    service = held_service()
    first = open_with(service, HELLO)
    now[0] += connection.HOLD_MAX / 2
    second = open_with(service, HELLO)
    assert not first.sent and not second.sent  # both young: held together
    now[0] += connection.HOLD_MAX
    third = open_with(service, HELLO)
    assert first.sent.endswith(b"hello\n") and second.sent.endswith(b"hello\n")
    assert not third.sent
    service.send_held()
    assert third.sent.endswith(b"hello\n")


def test_the_turns_last_response_is_sent_at_once() -> None:
    # Nothing comes after it in the turn: holding it would only cost.
    service = held_service()
    service.loop.events_left = 0  # type: ignore[attr-defined]
    sock = open_with(service, HELLO)
    assert sock.sent.endswith(b"\r\n\r\nhello\n") and service.held == []
