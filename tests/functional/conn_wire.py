"""Raw-socket HTTP/1.1 client pieces for the connection tests.

The tests need to see exact bytes and exactly when the server closes, which a client library
hides. `Wire` reads responses off one socket with the framing the server chose (Content-Length,
chunked, or close-delimited), remembers which it was, and can tell a clean close from silence.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conftest import BRICK, Server

APPS_DIR = Path(__file__).resolve().parent.parent / "apps"
APP = "conn_app:app"
TIMEOUT = 10.0


Serve = Callable[..., Server]  # the `serve` fixture of conftest.py


def serve_conn(serve: Serve, *options: str, env: dict[str, str] | None = None) -> Server:
    """Start brick on the connection fixture app with `options`."""
    return serve(BRICK, [APP, "--chdir", str(APPS_DIR), *options], env=env)


def pattern(size: int) -> bytes:
    """What conn_app's /big sends: bytes 0..255 repeated."""
    reps, rest = divmod(size, 256)
    return bytes(range(256)) * reps + bytes(range(rest))


def request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: str | None = "t",
) -> bytes:
    """The bytes of one request. A Content-Length is added when there is a body."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = set()
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """A chunked request body made of `pieces`."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + trailers + b"\r\n"


class Closed(Exception):
    """The server closed the connection before a whole response arrived."""


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    framing: str = "none"  # "length", "chunked", "close" or "none"
    complete: bool = True  # False when a chunked/length body was cut short by a close
    raw_head: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for n, v in self.headers if n.lower() == name]
        return ", ".join(values) if values else None


class Wire:
    """One client connection read with exact framing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    @classmethod
    def connect(cls, server: Server, timeout: float = TIMEOUT) -> Wire:
        return cls(server.connect(timeout))

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- reading -----------------------------------------------------------------------

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(1 << 20)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if not self._fill():
                raise Closed(f"closed before {marker!r}; got {bytes(self.buf[:200])!r}")

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise Closed(f"closed after {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_head(self) -> Response:
        raw = self.read_until(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        return Response(version, int(status), reason, headers, raw_head=raw)

    def read_response(self, method: str = "GET") -> Response:
        """The next final response (1xx responses are skipped, and kept in `extra`)."""
        informational: list[Response] = []
        while True:
            resp = self.read_head()
            if resp.status >= 200:
                break
            informational.append(resp)
        resp.extra["informational"] = informational
        te = (resp.header("Transfer-Encoding") or "").lower()
        length = resp.header("Content-Length")
        if method == "HEAD" or resp.status in (204, 304):
            resp.framing = "none"
        elif te:
            assert te == "chunked", te
            resp.framing = "chunked"
            self.read_chunked_body(resp)
        elif length is not None:
            resp.framing = "length"
            try:
                resp.body = self.read_exact(int(length))
            except Closed:
                resp.body = bytes(self.buf)
                self.buf.clear()
                resp.complete = False
        else:
            resp.framing = "close"
            resp.body = self.read_to_eof()
        return resp

    def read_chunked_body(self, resp: Response) -> None:
        body = bytearray()
        try:
            while True:
                size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n"
        except Closed:
            body += self.buf
            self.buf.clear()
            resp.complete = False
        resp.body = bytes(body)

    def closed_by_peer(self, within: float = TIMEOUT) -> bool:
        """True when the server closed (EOF or reset) with nothing more sent within `within`.

        False when the connection is still open after `within` seconds. Any unexpected
        byte is a failure: a closed-after-refusal connection must not answer anything else.
        """
        if self.buf:
            raise AssertionError(f"unexpected bytes from the server: {bytes(self.buf[:200])!r}")
        old = self.sock.gettimeout()
        self.sock.settimeout(within)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(old)
        if data:
            raise AssertionError(f"unexpected bytes from the server: {data[:200]!r}")
        self.eof = True
        return True


def wait_for_file(path: Path, within: float = TIMEOUT) -> bool:
    """Poll for a file an app writes as a side effect (bounded)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return True
        time.sleep(0.02)
    return False
