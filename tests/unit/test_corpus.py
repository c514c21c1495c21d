"""Replay the raw-request corpus (tests/corpus) through the parser, fed in every way.

Each case is fed whole, line by line, one byte at a time and in seeded random chunks. All
feeds must give the same outcome (the requests, their bodies, the refusal status), and that
outcome must match the case's expectations. Fed one byte at a time, every Request and END
must come out exactly when its last byte arrives: never before (the parser guessed), never
later (it sat on a complete message). tests/corpus/README.md describes the file format.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from brick.errors import HTTPError
from brick.parser import END, NEED_DATA, Limits, Request, RequestParser

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
STATUSES = {400, 413, 414, 417, 431, 501, 505}
RANDOM_SEEDS = range(6)

_ESCAPE = re.compile(rb"\\(?:x([0-9a-fA-F]{2})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\x00", b"\\": b"\\"}
_REQUEST_KEYS = {
    "method",
    "target",
    "version",
    "path",
    "query",
    "host",
    "scheme",
    "keep_alive",
    "expect_continue",
    "chunked",
    "content_length",
    "headers",
    "absent",
    "names",
    "header_count",
    "body",
}
_CASE_KEYS = {"about", "limits", "requests", "status", "head_accepted", "partial_body"}


# -- the corpus files ----------------------------------------------------------------------


def decode_http(text: bytes, where: str = "") -> bytes:
    """The bytes a .http file stands for: its line breaks are layout, escapes are bytes."""
    for number, line in enumerate(text.split(b"\n"), 1):
        if line.rstrip(b"\r").endswith((b" ", b"\t")):
            raise ValueError(f"{where}:{number}: trailing whitespace; write it as \\x20 or \\t")
    if any(byte >= 0x80 for byte in text):
        raise ValueError(f"{where}: non-ASCII byte; write it as \\xHH")
    flat = text.replace(b"\r", b"").replace(b"\n", b"")

    def unescape(match: re.Match[bytes]) -> bytes:
        if match.group(1) is not None:
            return bytes([int(match.group(1), 16)])
        simple = _SIMPLE_ESCAPES.get(match.group(2))
        if simple is None:
            raise ValueError(f"{where}: unknown escape \\{match.group(2).decode('latin-1')}")
        return simple

    return _ESCAPE.sub(unescape, flat)


@dataclass
class Case:
    name: str  # "valid/get_minimal"
    data: bytes
    expect: dict[str, Any]

    @property
    def valid(self) -> bool:
        return self.name.startswith("valid/")

    def limits(self) -> Limits:
        return Limits(**self.expect.get("limits", {}))


def load_corpus() -> list[Case]:
    cases = []
    for kind in ("valid", "invalid"):
        for http in sorted((CORPUS / kind).glob("*.http")):
            name = f"{kind}/{http.stem}"
            expect = json.loads(http.with_suffix(".json").read_text(encoding="utf-8"))
            cases.append(Case(name, decode_http(http.read_bytes(), name), expect))
    return cases


CASES = load_corpus()


# -- replaying -----------------------------------------------------------------------------


@dataclass
class Message:
    request: Request
    body: bytes = b""
    ended: bool = False


@dataclass
class Outcome:
    """What a parser made of a byte stream; equal for equal parses however it was fed."""

    messages: list[Message]
    status: int | None  # the refusal, if any
    leftover: int  # bytes still buffered at the end (0 after a refusal)
    # (event, bytes fed when it came out, bytes consumed by then) for each Request and END
    marks: list[tuple[str, int, int]] = field(default_factory=list, compare=False)


def replay(pieces: list[bytes], limits: Limits | None = None) -> Outcome:
    """Feed `pieces` one after the other, pulling every event after each."""
    parser = RequestParser(limits)
    messages: list[Message] = []
    marks: list[tuple[str, int, int]] = []
    fed = 0
    # Every event but END consumes at least one byte, and END follows one that did.
    budget = 2 * sum(len(piece) for piece in pieces) + 2 * len(pieces) + 4
    for piece in pieces:
        parser.feed(piece)
        fed += len(piece)
        while True:
            budget -= 1
            assert budget > 0, "the parser produces events without consuming bytes"
            try:
                event = parser.next_event()
            except HTTPError as exc:
                assert exc.status in STATUSES, exc
                assert parser.buffered == 0
                return Outcome(messages, exc.status, 0, marks)
            if event is NEED_DATA:
                break
            if type(event) is Request:
                assert not messages or messages[-1].ended, "a Request inside a message"
                messages.append(Message(event))
                marks.append(("request", fed, fed - parser.buffered))
            elif type(event) is bytes:
                assert event, "an empty body piece"
                assert messages and not messages[-1].ended, "body bytes outside a message"
                messages[-1].body += event
            elif event is END:
                assert messages and not messages[-1].ended, "END outside a message"
                messages[-1].ended = True
                marks.append(("end", fed, fed - parser.buffered))
            else:
                raise AssertionError(f"unknown event {event!r}")
    return Outcome(messages, None, parser.buffered, marks)


def by_lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [data]


def by_bytes(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))] or [data]


def by_random_chunks(data: bytes, seed: str) -> list[bytes]:
    rng = random.Random(seed)
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max(2, len(data) // 3))
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces or [data]


def feeds(name: str, data: bytes) -> dict[str, list[bytes]]:
    ways = {"whole": [data], "lines": by_lines(data), "bytes": by_bytes(data)}
    for seed in RANDOM_SEEDS:
        ways[f"random-{seed}"] = by_random_chunks(data, f"{name}-{seed}")
    return ways


# -- checking ------------------------------------------------------------------------------


def check_request(message: Message, want: dict[str, Any], where: str) -> None:
    unknown = set(want) - _REQUEST_KEYS
    assert not unknown, f"{where}: unknown expectation keys {unknown}"
    request = message.request
    for key in (
        "method",
        "target",
        "version",
        "path",
        "query",
        "host",
        "scheme",
        "keep_alive",
        "chunked",
        "content_length",
    ):
        if key in want:
            assert getattr(request, key) == want[key], f"{where}: {key}"
    assert request.expect_continue == want.get("expect_continue", False), where
    fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers]
    for name, values in want.get("headers", {}).items():
        expected = values if isinstance(values, list) else [values]
        got = [v for n, v in fields if n.lower() == name]
        assert got == expected, f"{where}: header {name}"
    for name in want.get("absent", []):
        assert all(n.lower() != name for n, _ in fields), f"{where}: {name} present"
    if "names" in want:
        assert [n for n, _ in fields] == want["names"], f"{where}: names as sent"
    if "header_count" in want:
        assert len(fields) == want["header_count"], f"{where}: header count"
    assert message.body == want.get("body", "").encode("latin-1"), f"{where}: body"


def check_expectations(case: Case, outcome: Outcome) -> None:
    expect = case.expect
    unknown = set(expect) - _CASE_KEYS
    assert not unknown, f"unknown case keys {unknown}"
    assert expect.get("about"), "every case says why it exists"
    wanted = expect.get("requests", [])
    messages = outcome.messages
    if case.valid:
        assert "status" not in expect
        assert wanted, "a valid case expects at least one request"
        assert outcome.status is None, f"refused with {outcome.status}"
        assert outcome.leftover == 0, "bytes left over after the last request"
        assert len(messages) == len(wanted)
        assert all(m.ended for m in messages), "a message did not end"
    else:
        assert expect["status"] in STATUSES
        assert outcome.status == expect["status"], f"status {outcome.status}"
        complete = [m for m in messages if m.ended]
        assert len(complete) == len(wanted), "requests before the refused one"
        if expect.get("head_accepted", False):
            # The refusal is in the body: its head came out, its END never does.
            assert len(messages) == len(wanted) + 1
            assert not messages[-1].ended
            assert messages[-1].body == expect.get("partial_body", "").encode("latin-1")
        else:
            assert "partial_body" not in expect
            assert len(messages) == len(wanted), "a Request came out for a refused head"
    for index, want in enumerate(wanted):
        check_request(messages[index], want, f"request {index}")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_corpus_case(case: Case) -> None:
    limits = case.limits()
    whole = replay([case.data], limits)
    check_expectations(case, whole)

    for way, pieces in feeds(case.name, case.data).items():
        assert b"".join(pieces) == case.data
        outcome = replay(pieces, limits)
        assert outcome == whole, f"fed {way}: {outcome} != whole {whole}"

    # One byte at a time: each Request and END comes out exactly when its last byte is fed,
    # i.e. where the whole feed says its bytes end.
    stepwise = replay(by_bytes(case.data), limits)
    assert [(kind, fed) for kind, fed, _ in stepwise.marks] == [
        (kind, consumed) for kind, _, consumed in whole.marks
    ]


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c.valid], ids=[c.name for c in CASES if not c.valid]
)
def test_corpus_refusal_kills_the_parser(case: Case) -> None:
    parser = RequestParser(case.limits())
    parser.feed(case.data)
    with pytest.raises(HTTPError):
        while parser.next_event() is not NEED_DATA:
            pass
    # Whatever comes next, even a perfect request, is never parsed.
    parser.feed(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert parser.buffered == 0
    with pytest.raises(HTTPError):
        parser.next_event()


def test_corpus_is_complete() -> None:
    names = {case.name for case in CASES}
    for kind in ("valid", "invalid"):
        stems = {p.stem for p in (CORPUS / kind).iterdir() if p.suffix in (".http", ".json")}
        for stem in stems:
            assert (CORPUS / kind / f"{stem}.http").exists(), f"{kind}/{stem}.http missing"
            assert (CORPUS / kind / f"{stem}.json").exists(), f"{kind}/{stem}.json missing"
            assert f"{kind}/{stem}" in names
    assert len(CASES) >= 100
    statuses = {case.expect["status"] for case in CASES if not case.valid}
    assert statuses == STATUSES, "every refusal status has a case"


def test_decode_http_escapes() -> None:
    text = b"GET / HTTP/1.1\\r\\n\nA:\\tb\\0\\x7f\\\\\\x20\\n\n"
    assert decode_http(text) == b"GET / HTTP/1.1\r\nA:\tb\x00\x7f\\ \n"
    # A file checked out with CRLF line ends stands for the same bytes.
    assert decode_http(text.replace(b"\n", b"\r\n")) == decode_http(text)
    for bad in (b"trailing space \n", b"\\q", b"caf\xc3\xa9", b"\\x4"):
        with pytest.raises(ValueError):
            decode_http(bad)
