"""The attack corpus (tests/attack) against brick itself, on raw sockets.

For each case, on a fresh connection: the statuses come back in order; a 4xx/5xx is the last
response and the server closes right after it; when every response is a 2xx the connection
is still usable (a probe on it gets its own answer first, so no extra response was queued) or
closed when the request asked for that; no response ever answers a smuggled request; and a
probe on a new connection afterwards is answered normally.

The same bytes also go through the parser alone, whole and split at every byte, which must
give the same events: where a request ends cannot depend on how the bytes arrived.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator

import pytest
from attack.corpus import CASES, PREFIX, SMUGGLED, Case
from attack.wire import Reader, Response, Silent, echo_request
from brick.errors import HTTPError
from brick.parser import END, NEED_DATA, Request, RequestParser
from conftest import BRICK, FIXTURE_APPS, Server, start_server

pytestmark = pytest.mark.functional

TIMEOUT = 10.0  # for any single response or close; generous for a loaded machine
HEADER_TIMEOUT = "4"  # a refusal that only comes from this timeout arrives as 408, not 400
_probe_ids = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_server(
        BRICK,
        [
            "hard_app:app",
            "--chdir",
            str(FIXTURE_APPS),
            "--workers",
            "2",
            "--header-timeout",
            HEADER_TIMEOUT,
            "--root-path",
            "/wsgi",
        ],
    )
    yield srv
    srv.stop()


def statuses(case: Case) -> str:
    return " ".join(str(e) for e in case.expect)


def probe(sock: socket.socket, reader: Reader) -> Response:
    marker = b"probe-%d" % next(_probe_ids)
    sock.sendall(echo_request(PREFIX, marker))
    resp = reader.response(TIMEOUT)
    assert resp.status == 200 and resp.body == marker, (
        f"the probe after the case got {resp!r}, not its own echo {marker!r}: "
        "a response was left over from the case (desync)"
    )
    return resp


def replay(address: tuple[str, int], case: Case) -> list[Response]:
    """Run one case on a fresh connection and check every rule of the corpus."""
    got: list[Response] = []
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        try:
            sock.sendall(case.raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before we finished sending; the answer is still readable
        reader = Reader(sock)
        for i, want in enumerate(case.expect):
            allowed = want if isinstance(want, tuple) else (want,)
            try:
                resp = reader.response(TIMEOUT)
            except Silent:
                pytest.fail(f"response {i + 1}: nothing within {TIMEOUT} s (got {got})")
            except Exception as exc:
                pytest.fail(f"response {i + 1}: {exc!r} (got {got}, expected {statuses(case)})")
            got.append(resp)
            assert resp.body != SMUGGLED, f"a smuggled request was answered: {got}"
            assert resp.status in allowed, f"response {i + 1}: {resp!r}, expected {want}"
            if i == 0 and resp.status < 300 and case.echo is not None:
                assert resp.body == case.echo, "the first request's body ends elsewhere"
            if resp.status >= 400:
                assert reader.closes(TIMEOUT), f"not closed after {resp!r}; buffered {reader.buf!r}"
                return got
        if case.closes:
            assert reader.closes(TIMEOUT), f"not closed after {got}"
        else:
            probe(sock, reader)
    return got


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(server: Server, case: Case) -> None:
    replay(server.address, case)
    # A fresh connection is served normally: the server is alive and nothing leaked across.
    with server.connect(TIMEOUT) as sock:
        probe(sock, Reader(sock))
    assert server.proc.poll() is None


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 100
    assert len({(c.group, c.name) for c in CASES}) == len(CASES), "case names must be unique"
    assert sum(1 for c in CASES if SMUGGLED in c.raw) >= 30


def test_no_traceback_in_the_log(server: Server) -> None:
    """Runs after the cases (same module, same server): no refusal was an unhandled error."""
    for case in CASES[:5]:
        replay(server.address, case)
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


# -- the parser alone: whole vs split feeds --------------------------------------------------


def events(pieces: list[bytes]) -> list[object]:
    """Every event the parser gives for `pieces` fed one after another, ending with the error
    status if it refused; body bytes are joined so that split points do not show."""
    parser = RequestParser()
    out: list[object] = []
    body = bytearray()
    try:
        for piece in pieces:
            parser.feed(piece)
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if type(event) is bytes:
                    body += event
                    continue
                if body:
                    out.append(bytes(body))
                    body.clear()
                if type(event) is Request:
                    out.append(
                        (
                            event.method,
                            event.target,
                            event.headers,
                            event.content_length,
                            event.chunked,
                            event.keep_alive,
                        )
                    )
                elif event is END:
                    out.append("END")
    except HTTPError as exc:
        if body:
            out.append(bytes(body))
        out.append(exc.status)
        assert 400 <= exc.status < 600
    else:
        if body:
            out.append(bytes(body))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_split_feeds(case: Case) -> None:
    raw = case.raw
    whole = events([raw])
    if len(raw) <= 20000:
        assert events([raw[i : i + 1] for i in range(len(raw))]) == whole
    for size in (2, 3, 7, 64, 1000):
        assert events([raw[i : i + size] for i in range(0, len(raw), size)]) == whole
