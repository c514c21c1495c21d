"""The bare WSGI demo app: the app contract (DESIGN.md §5) with no framework.

Everything a framework would do for us is spelled out against PEP 3333: routing on
PATH_INFO, reading `wsgi.input` (by CONTENT_LENGTH, or to EOF when the server says
`wsgi.input_terminated`, as it does for a chunked upload), streaming by returning a
generator, sending a file through `wsgi.file_wrapper`, and rebuilding the request URL
from the environ (`wsgiref.util.application_uri` follows PEP 3333's "URL Reconstruction").

Run it from this folder: `brick wsgiapp:app` or `gunicorn wsgiapp:app`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.util import FileWrapper, application_uri

HELLO = "Hello world from a simple WSGI application!\n"
FILE = Path(__file__).resolve().parent / "static" / "hello.txt"

# Bounds on what a request may ask for, so one request cannot hold a worker for long
# (gunicorn's default worker timeout is 30 s) or make us buffer an unbounded body.
MAX_BODY = 10 * 1024 * 1024
MAX_CHUNKS = 1000
MAX_DELAY = 1.0
MAX_STREAM_SECONDS = 10.0
MAX_SLEEP = 10.0
READ_SIZE = 64 * 1024

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class HTTPError(Exception):
    """An error answer: the status and a one-line reason for the client."""

    def __init__(self, status: HTTPStatus, reason: str = "") -> None:
        super().__init__(reason or status.phrase)
        self.status = status
        self.reason = reason or status.phrase


def _status(status: HTTPStatus) -> str:
    return f"{status.value} {status.phrase}"


def _text(
    start_response: StartResponse, body: str, status: HTTPStatus = HTTPStatus.OK
) -> list[bytes]:
    data = body.encode()
    start_response(
        _status(status),
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _number(environ: Environ, name: str, kind: type, default: float, maximum: float) -> Any:
    """Query parameter `name` as `kind`, from 0 to `maximum`; 400 when it is anything else."""
    values = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get(name)
    if not values:
        return default
    try:
        value = kind(values[0])
    except ValueError:
        value = None
    # NaN fails both comparisons, infinity fails the second.
    if value is None or not 0 <= value <= maximum:
        what = "an integer" if kind is int else "a number"
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"{name} must be {what} from 0 to {maximum:g}")
    return value


def _read_body(environ: Environ) -> bytes:
    """The request body: CONTENT_LENGTH bytes, or everything up to EOF for a chunked upload."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH", "")
    if length:
        try:
            remaining = int(length)
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if remaining > MAX_BODY:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    elif environ.get("wsgi.input_terminated"):
        # The server ends the stream at the end of the body, so reading to EOF is safe.
        remaining = MAX_BODY + 1
    else:
        return b""
    parts = []
    while remaining > 0:
        data = stream.read(min(remaining, READ_SIZE))
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    return body


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _text(start_response, HELLO)


def healthz(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _text(start_response, "ok")


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = _read_body(environ)
    content_type = environ.get("CONTENT_TYPE") or "application/octet-stream"
    start_response(
        _status(HTTPStatus.OK),
        [("Content-Type", content_type), ("Content-Length", str(len(body)))],
    )
    return [body]


def show_environ(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    strings = {key: value for key, value in environ.items() if isinstance(value, str)}
    data = json.dumps(strings, indent=2, sort_keys=True).encode() + b"\n"
    start_response(
        _status(HTTPStatus.OK),
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def stream(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    chunks = _number(environ, "chunks", int, 5, MAX_CHUNKS)
    delay = _number(environ, "delay", float, 0.0, MAX_DELAY)
    if chunks * delay > MAX_STREAM_SECONDS:
        raise HTTPError(
            HTTPStatus.BAD_REQUEST, f"chunks * delay must be at most {MAX_STREAM_SECONDS:g} s"
        )

    def lines() -> Iterator[bytes]:
        for number in range(1, chunks + 1):
            if number > 1:
                time.sleep(delay)
            yield f"chunk {number} of {chunks}\n".encode()

    # No Content-Length: the server frames the body (chunked on HTTP/1.1) and sends
    # each line as the generator yields it.
    start_response(_status(HTTPStatus.OK), [("Content-Type", "text/plain; charset=utf-8")])
    return lines()


def sleep(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    seconds = _number(environ, "seconds", float, 1.0, MAX_SLEEP)
    time.sleep(seconds)
    return _text(start_response, f"slept {seconds:g}\n")


def send_file(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    file = FILE.open("rb")
    size = FILE.stat().st_size
    start_response(
        _status(HTTPStatus.OK),
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(size))],
    )
    # The server's wrapper may send the file with sendfile(); it closes the file when done.
    wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
    return wrapper(file, READ_SIZE)  # type: ignore[no-any-return]


def url(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    # application_uri is scheme://host + SCRIPT_NAME, so a mounted app gets its prefix.
    return _text(start_response, application_uri(environ).rstrip("/") + "/hello\n")


GET = ("GET", "HEAD")
ROUTES: dict[str, tuple[tuple[str, ...], Callable[[Environ, StartResponse], Iterable[bytes]]]] = {
    "/hello": (GET, hello),
    "/healthz": (GET, healthz),
    "/echo": (("POST",), echo),
    "/environ": (("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"), show_environ),
    "/stream": (GET, stream),
    "/sleep": (GET, sleep),
    "/file": (GET, send_file),
    "/url": (GET, url),
}


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI callable: route on PATH_INFO and REQUEST_METHOD."""
    path = environ.get("PATH_INFO") or "/"
    try:
        if path not in ROUTES:
            raise HTTPError(HTTPStatus.NOT_FOUND)
        methods, handler = ROUTES[path]
        if environ["REQUEST_METHOD"] not in methods:
            start_response(
                _status(HTTPStatus.METHOD_NOT_ALLOWED),
                [("Content-Type", "text/plain; charset=utf-8"), ("Allow", ", ".join(methods))],
            )
            return [b"method not allowed\n"]
        return handler(environ, start_response)
    except HTTPError as error:
        return _text(start_response, error.reason + "\n", error.status)
