"""Fixture app for the hardening tests: the attack corpus, floods, faults and the soak.

Every answer says which worker gave it (`X-Pid`), so a test can tell the workers apart.

Routes (query parameters in brackets); any other path is `/echo`:
    /echo                   the request body back, exactly; X-Method and X-Target say what the
                            app saw, X-Length how many body bytes wsgi.input gave
    /hello                  b"hello\\n"
    /digest                 reads the body in 64 KiB pieces (never holding it whole) and answers
                            "<length> <sha256>"; X-Input says "file" for a spooled body
    /big [size, marker]     `size` bytes from a generator in 64 KiB pieces; its close() writes
                            the number of bytes produced to the file `marker`
    /blob [size]            `size` bytes as one bytes object in a list (an "ordinary" response)
    /file [size]            `size` bytes (zeros) from a temporary file, sent by wsgi.file_wrapper
    /boom                   raises before start_response
    /boom-mid               yields one piece, then raises
    /sleep [s]              sleeps s seconds (at most 30)
    /rss                    this worker's peak resident set size in KiB (VmHWM), then resets
                            nothing: the peak is the peak of the process so far
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

PIECE = 64 * 1024
_PIECE_DATA = bytes(range(256)) * (PIECE // 256)


def _body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        return stream.read(int(length))
    return stream.read()


def _big(size: int, marker: str | None) -> Iterator[bytes]:
    produced = 0
    try:
        while produced < size:
            piece = _PIECE_DATA[: min(PIECE, size - produced)]
            produced += len(piece)
            yield piece
    finally:
        if marker:
            with open(marker, "w") as f:
                f.write(str(produced))


def _boom_mid() -> Iterator[bytes]:
    yield b"first piece\n"
    raise RuntimeError("hard_app failed inside its iterator")


def _vm(key: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1]
    return "0"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    pid = ("X-Pid", str(os.getpid()))
    text = ("Content-Type", "text/plain")

    if path == "/hello":
        start_response("200 OK", [text, ("Content-Length", "6"), pid])
        return [b"hello\n"]
    if path == "/digest":
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        length = 0
        while True:
            data = stream.read(PIECE)
            if not data:
                break
            length += len(data)
            digest.update(data)
        try:
            stream.fileno()
            kind = "file"
        except (AttributeError, OSError, ValueError):
            kind = "memory"
        out = f"{length} {digest.hexdigest()}".encode()
        start_response("200 OK", [text, ("Content-Length", str(len(out))), ("X-Input", kind), pid])
        return [out]
    if path == "/big":
        size = int(query.get("size", "0"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), pid])
        return _big(size, query.get("marker"))
    if path == "/blob":
        size = int(query.get("size", "0"))
        reps, rest = divmod(size, len(_PIECE_DATA))
        blob = _PIECE_DATA * reps + _PIECE_DATA[:rest]
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(size)), pid],
        )
        return [blob]
    if path == "/file":
        size = int(query.get("size", "0"))
        file = tempfile.TemporaryFile()  # noqa: SIM115 (the server closes it after sending)
        file.truncate(size)
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(size)), pid],
        )
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](file, PIECE)
        return wrapper
    if path == "/boom":
        raise RuntimeError("hard_app failed before start_response")
    if path == "/boom-mid":
        start_response("200 OK", [text, pid])
        return _boom_mid()
    if path == "/sleep":
        time.sleep(min(float(query.get("s", "0")), 30.0))
        start_response("200 OK", [text, ("Content-Length", "6"), pid])
        return [b"slept\n"]
    if path == "/rss":
        out = _vm("VmHWM").encode()
        start_response("200 OK", [text, ("Content-Length", str(len(out))), pid])
        return [out]

    body = _body(environ)
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
            ("X-Method", environ["REQUEST_METHOD"]),
            ("X-Target", environ.get("RAW_URI", "")),
            ("X-Length", str(len(body))),
            pid,
        ],
    )
    return [body]
