"""Response bytes: the status line, the header block and body framing (RFC 9112 §4, §6, §7).

This module knows nothing of the app: it turns a status, headers and a framing decision into
bytes. Validation of what the app gave happens before anything here is called, so every
head built is well-formed by construction.

Speed: the `Date` value is formatted once per second, the `Server` line is a constant, and
a small response is one `bytes` object (head + body) so the connection can send it with a
single syscall (DESIGN.md §4).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Final

from brick import __version__
from brick.errors import REASONS

SERVER_HEADER: Final = f"Server: brick/{__version__}\r\n"
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNK_END: Final = b"0\r\n\r\n"
CRLF: Final = b"\r\n"

# Statuses whose responses never carry a body (RFC 9110 §6.4.1).
NO_BODY_STATUSES: Final = frozenset({204, 304})

_date_second = 0
_date_line = ""


def date_header() -> str:
    """`Date: ...\\r\\n` for the current second, formatted at most once per second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n"
        _date_second = now
    return _date_line


def build_head(status: str, header_block: str) -> bytes:
    """The response head. `header_block` is already `Name: value\\r\\n` lines."""
    return f"HTTP/1.1 {status}\r\n{header_block}\r\n".encode("latin-1")


class KeptHeads:
    """The usual heads of one status and header block, for the current second: the head
    of an HTTP/1.1 response whose app set neither Date nor Server, with our Date and
    Server added, kept with keep-alive and with `Connection: close`. A response repeated
    within the second (the same app answer to the same request) reuses its head instead
    of building and encoding it again; the clock leaving the second renews both."""

    __slots__ = ("block", "closing", "open", "since", "status", "until")

    def __init__(self, status: str, header_block: str) -> None:
        self.status = status
        self.block = header_block
        self.since = self.until = 0.0  # the second the heads carry: none yet
        self.open = self.closing = b""

    def head(self, close: bool) -> bytes:
        """The head, ending with `Connection: close` if `close`."""
        if not self.since <= time.time() < self.until:
            self._renew()
        return self.closing if close else self.open

    def _renew(self) -> None:
        date = date_header()  # the line of the second it finds, which the heads then carry
        self.since = float(_date_second)
        self.until = self.since + 1.0
        block = f"{self.block}{date}{SERVER_HEADER}"
        self.open = build_head(self.status, block)
        self.closing = build_head(self.status, block + "Connection: close\r\n")


# Kept heads of header blocks no app answer keeps its own of (see `usual_head`).
_heads: dict[tuple[str, str], KeptHeads] = {}
_HEADS_MAX: Final = 256


def usual_head(status: str, header_block: str, close: bool) -> bytes:
    """`build_head` with our Date and Server added, and `Connection: close` if `close`: the
    head of an HTTP/1.1 response whose app set neither Date nor Server."""
    key = (status, header_block)
    kept = _heads.get(key)
    if kept is None:
        if len(_heads) >= _HEADS_MAX:
            _heads.clear()
        kept = _heads[key] = KeptHeads(status, header_block)
    return kept.head(close)


def chunk(data: bytes) -> list[bytes]:
    """One piece of a chunked body (RFC 9112 §7.1), as parts for a vectored write."""
    return [b"%x\r\n" % len(data), data, CRLF]


def error_response(
    status: int, detail: str = "", *, close: bool = True, head_only: bool = False
) -> bytes:
    """A short, generic plain-text response for a refused request or a failed app.

    The body never carries internals (no tracebacks): only the reason phrase. `detail` is
    for the caller's log, never for the client. `head_only`: the answer to a HEAD request
    (the same head, no body; RFC 9110 §9.3.2).
    """
    reason = REASONS.get(status, "Error")
    body = f"{status} {reason}\n".encode("ascii")
    headers = (
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{date_header()}{SERVER_HEADER}"
    )
    if close:
        headers += "Connection: close\r\n"
    head = build_head(f"{status} {reason}", headers)
    return head if head_only else head + body
