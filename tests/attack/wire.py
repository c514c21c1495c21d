"""Reading responses off a raw socket, and replaying a corpus case against a server.

A client library would hide exactly what these tests look at: how many responses came back,
where each one ends, and whether the server closed the connection. `Reader` parses responses
with the framing the server chose (Content-Length, chunked, or close-delimited) and reports a
clean close separately from silence.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


class Closed(Exception):
    """The server closed the connection (before a response began, or in the middle of one)."""

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__(f"connection closed ({len(partial)} bytes of a response pending)")
        self.partial = partial


class Silent(Exception):
    """Nothing (more) arrived before the deadline."""


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this one

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def __repr__(self) -> str:
        return f"<{self.status} {self.reason} body={self.body[:60]!r}>"


class Reader:
    """Responses from one socket. Every read is bounded by a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.received = bytearray()  # every byte read from the socket, for inspection
        self.eof = False
        self.reset = False

    def _fill(self, deadline: float) -> None:
        if self.eof:
            raise Closed(bytes(self.buf))
        left = deadline - time.monotonic()
        if left <= 0:
            raise Silent()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise Silent() from None
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
            raise Closed(bytes(self.buf))
        self.buf += data
        self.received += data

    def _until(self, sep: bytes, deadline: float) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(sep)]
                return out
            self._fill(deadline)

    def _exactly(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def response(self, timeout: float = 10.0, head_request: bool = False) -> Response:
        """The next final response; 1xx responses before it are recorded in `.interim`."""
        deadline = time.monotonic() + timeout
        interim: list[int] = []
        while True:
            if not self.buf:
                self._fill(deadline)
            head = self._until(b"\r\n\r\n", deadline)
            lines = head.decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            if not version.startswith("HTTP/1."):
                raise AssertionError(f"not an HTTP/1.x status line: {lines[0]!r}")
            code, _, reason = rest.partition(" ")
            status = int(code)
            headers = []
            for item in lines[1:]:
                name, _, value = item.partition(":")
                headers.append((name.strip(), value.strip()))
            if 100 <= status < 200:
                interim.append(status)
                continue
            resp = Response(status, reason, headers, interim=interim)
            break
        if head_request or status in (204, 304):
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        length = resp.header("Content-Length")
        if te == "chunked":
            parts = []
            while True:
                size_line = self._until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n", deadline):
                        pass  # trailer fields, up to the empty line
                    break
                parts.append(self._exactly(size, deadline))
                self._exactly(2, deadline)
            resp.body = b"".join(parts)
        elif length is not None:
            resp.body = self._exactly(int(length), deadline)
        else:
            while True:
                try:
                    self._fill(deadline)
                except Closed:
                    break
            resp.body = bytes(self.buf)
            self.buf.clear()
        return resp

    def closes(self, timeout: float = 10.0) -> bool:
        """True when the server closes (FIN or RST) with no further bytes before `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while not self.buf:
                self._fill(deadline)
        except Closed:
            return not self.buf
        except Silent:
            return False
        return False


def echo_request(root: bytes, marker: bytes) -> bytes:
    """A well-formed POST whose response must be exactly `marker` (a desync probe)."""
    return (
        b"POST " + root + b"/echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % len(marker)
    ) + marker


@dataclass
class Outcome:
    """What came back for one corpus case on one connection."""

    responses: list[Response]
    closed: bool  # the server closed once the responses were read
    ended_by: str  # "closed", "silent" or "limit": what stopped the reading
    extra: bytes = b""  # bytes after the last whole response that are not a response


def exchange(
    address: tuple[str, int],
    raw: bytes,
    max_responses: int,
    *,
    timeout: float = 10.0,
    settle: float = 0.0,
) -> Outcome:
    """Send `raw` on a fresh connection and read up to `max_responses` + 1 responses.

    Reading stops at a close, after `max_responses` + 1 responses (one more than expected, so
    an extra one shows), or when nothing arrives for `timeout` seconds. With `settle` > 0,
    once `max_responses` have arrived the reader waits only that long for anything more.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early and closed; its answer may still be readable
        reader = Reader(sock)
        responses: list[Response] = []
        ended_by = "limit"
        while len(responses) <= max_responses:
            wait = settle if settle and len(responses) >= max_responses else timeout
            try:
                responses.append(reader.response(wait))
            except Closed as exc:
                ended_by = "closed"
                return Outcome(responses, True, ended_by, exc.partial)
            except Silent:
                ended_by = "silent"
                return Outcome(responses, False, ended_by, bytes(reader.buf))
        return Outcome(responses, reader.closes(0.2), ended_by, bytes(reader.buf))
