"""Fixture app for the connection tests: one route per behaviour the tests look at.

Routes (query parameters in brackets):
    /hello                  b"hello\\n" with a Content-Length
    /echo                   the request body back; X-Input says "file" when wsgi.input is a
                            spooled temp file, "memory" otherwise
    /env                    a few environ values as "KEY=value" lines
    /stream [n, size]       n pieces of `size` bytes from a generator (no Content-Length)
    /close                  a response whose headers say Connection: close
    /boom                   raises before start_response
    /boom-mid               a generator that yields one piece, then raises
    /write                  pieces through the write() callable, then from the iterable
    /file [path]            wsgi.file_wrapper over the file at `path`
    /big [size]             one bytes object of `size` bytes (the PATTERN, repeated)
    /forever [marker]       an endless stream; its close() writes the file `marker`
    /mark [path]            creates the file `path`, proving the request was processed
    /barrier [n, wait]      waits until n requests are inside the app at once (`wait` s at most)
    /sleep [s]              sleeps s seconds
    /pid                    the worker's process id
    /exit                   calls sys.exit(3)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

PATTERN = bytes(range(256))
CHUNK = 64 * 1024
_barriers: dict[int, threading.Barrier] = {}
_barrier_lock = threading.Lock()


def pattern(size: int) -> bytes:
    """`size` bytes of 0..255 repeated: any lost, duplicated or reordered block shows."""
    reps, rest = divmod(size, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


class Forever:
    """An endless response body whose close() leaves a trace on disk."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.piece = pattern(CHUNK)
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.sent > 1 << 32:  # a bound, so a broken test cannot run forever
            raise StopIteration
        self.sent += len(self.piece)
        return self.piece

    def close(self) -> None:
        with open(self.marker, "w") as f:
            f.write(str(self.sent))


def _stream(n: int, size: int) -> Iterator[bytes]:
    for i in range(n):
        yield (b"%d" % (i % 10)) * size


def _boom_mid() -> Iterator[bytes]:
    yield b"first piece\n"
    raise RuntimeError("conn_app failed in the middle of the body")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    text = [("Content-Type", "text/plain")]

    if path == "/hello":
        start_response("200 OK", [*text, ("Content-Length", "6")])
        return [b"hello\n"]
    if path == "/echo":
        stream = environ["wsgi.input"]
        body = stream.read()
        try:
            stream.fileno()
            kind = "file"
        except (AttributeError, OSError, ValueError):
            kind = "memory"
        start_response("200 OK", [*text, ("Content-Length", str(len(body))), ("X-Input", kind)])
        return [body]
    if path == "/env":
        keys = ("SERVER_PROTOCOL", "CONTENT_LENGTH", "HTTP_X_FOO", "REQUEST_METHOD")
        lines = "".join(f"{k}={environ.get(k, '')}\n" for k in keys)
        start_response("200 OK", text)
        return [lines.encode("latin-1")]
    if path == "/peer":
        # Who asked, and whether anything an earlier request left in its environ leaked in.
        leaked = environ.get("conn_app.mark", "")
        environ["conn_app.mark"] = "set"
        environ["PATH_INFO"] = "/changed"
        body = f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']} {leaked}\n".encode()
        start_response("200 OK", text)
        return [body]
    if path == "/stream":
        start_response("200 OK", text)
        return _stream(int(query.get("n", "3")), int(query.get("size", "4")))
    if path == "/close":
        start_response("200 OK", [*text, ("Content-Length", "6"), ("Connection", "close")])
        return [b"close\n"]
    if path == "/boom":
        raise RuntimeError("conn_app failed before start_response")
    if path == "/boom-mid":
        start_response("200 OK", text)
        return _boom_mid()
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"one,")
        write(b"two,")
        return [b"three"]
    if path == "/file":
        f = open(query["path"], "rb")  # noqa: SIM115 - closed by the server via close()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](f, 65536)
        return wrapper
    if path == "/big":
        body = pattern(int(query["size"]))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/forever":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Forever(query["marker"])
    if path == "/mark":
        with open(query["path"], "w") as f:
            f.write("processed")
        start_response("200 OK", [*text, ("Content-Length", "5")])
        return [b"mark\n"]
    if path == "/barrier":
        n = int(query["n"])
        with _barrier_lock:
            barrier = _barriers.setdefault(n, threading.Barrier(n))
        try:
            barrier.wait(timeout=float(query.get("wait", "10")))
        except threading.BrokenBarrierError:
            start_response("503 Service Unavailable", text)
            return [b"not concurrent\n"]
        start_response("200 OK", text)
        return [b"together\n"]
    if path == "/sleep":
        time.sleep(float(query["s"]))
        start_response("200 OK", text)
        return [b"slept\n"]
    if path == "/pid":
        start_response("200 OK", text)
        return [str(os.getpid()).encode()]
    if path == "/exit":
        sys.exit(3)
    start_response("404 Not Found", text)
    return [b"not found\n"]
