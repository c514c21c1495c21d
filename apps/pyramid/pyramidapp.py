"""The Pyramid demo app: the app contract (DESIGN.md §5) as Pyramid routes and views.

Run it from this folder: `brick pyramidapp:app` or `gunicorn pyramidapp:app`. Mounted under
a prefix, the server puts the prefix in SCRIPT_NAME and `request.route_url` carries it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from pyramid.config import Configurator
from pyramid.httpexceptions import (
    HTTPBadRequest,
    HTTPMethodNotAllowed,
    HTTPRequestEntityTooLarge,
)
from pyramid.request import Request
from pyramid.response import FileResponse, Response

HELLO = "Hello world from Pyramid!\n"
FILE = Path(__file__).resolve().parent / "static" / "hello.txt"

# Bounds on what a request may ask for, so one request cannot hold a worker for long
# (gunicorn's default worker timeout is 30 s) or make us buffer an unbounded body.
MAX_BODY = 10 * 1024 * 1024
MAX_CHUNKS = 1000
MAX_DELAY = 1.0
MAX_STREAM_SECONDS = 10.0
MAX_SLEEP = 10.0


def number(
    request: Request, name: str, kind: type[int] | type[float], default: float, maximum: float
) -> float:
    """Query parameter `name` as `kind`, from 0 to `maximum`; 400 when it is anything else."""
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # NaN fails both comparisons, infinity fails the second.
    if value is None or not 0 <= value <= maximum:
        what = "an integer" if kind is int else "a number"
        raise HTTPBadRequest(f"{name} must be {what} from 0 to {maximum:g}")
    return value


def hello(request: Request) -> Response:
    return Response(HELLO, content_type="text/plain")


def healthz(request: Request) -> Response:
    return Response("ok", content_type="text/plain")


def echo(request: Request) -> Response:
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise HTTPRequestEntityTooLarge()
    # body_file is limited to Content-Length, or runs to EOF when the server sets
    # wsgi.input_terminated (a chunked upload); read one byte past the limit to notice excess.
    body = request.body_file.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise HTTPRequestEntityTooLarge()
    response = Response(body)
    # request.content_type is the bare media type; echo the header as it was sent.
    response.headers["Content-Type"] = request.headers.get(
        "Content-Type", "application/octet-stream"
    )
    return response


def echo_not_allowed(request: Request) -> Response:
    # Without this view a GET /echo would be a 404 ("predicate mismatch").
    raise HTTPMethodNotAllowed(headers={"Allow": "POST"})


def environ(request: Request) -> Response:
    strings = {key: value for key, value in request.environ.items() if isinstance(value, str)}
    return Response(json_body=strings)


def stream(request: Request) -> Response:
    chunks = int(number(request, "chunks", int, 5, MAX_CHUNKS))
    delay = number(request, "delay", float, 0.0, MAX_DELAY)
    if chunks * delay > MAX_STREAM_SECONDS:
        raise HTTPBadRequest(f"chunks * delay must be at most {MAX_STREAM_SECONDS:g} s")

    def lines() -> Iterator[bytes]:
        for count in range(1, chunks + 1):
            if count > 1:
                time.sleep(delay)
            yield f"chunk {count} of {chunks}\n".encode()

    # An app_iter is handed to the server as is, so each line goes out as it is produced.
    return Response(app_iter=lines(), content_type="text/plain")


def sleep(request: Request) -> Response:
    seconds = number(request, "seconds", float, 1.0, MAX_SLEEP)
    time.sleep(seconds)
    return Response(f"slept {seconds:g}\n", content_type="text/plain")


def file(request: Request) -> FileResponse:
    # FileResponse wraps the open file in environ["wsgi.file_wrapper"] when the server has one.
    return FileResponse(str(FILE), request=request, content_type="text/plain")


def url(request: Request) -> Response:
    return Response(request.route_url("hello") + "\n", content_type="text/plain")


def make_app() -> object:
    with Configurator() as config:
        for name, method, view in [
            ("hello", "GET", hello),
            ("healthz", "GET", healthz),
            ("echo", "POST", echo),
            ("environ", None, environ),
            ("stream", "GET", stream),
            ("sleep", "GET", sleep),
            ("file", "GET", file),
            ("url", "GET", url),
        ]:
            config.add_route(name, f"/{name}")
            # A GET view also answers HEAD.
            config.add_view(view, route_name=name, request_method=method)
        # Views with a request_method predicate win over this one, which has none.
        config.add_view(echo_not_allowed, route_name="echo")
        return config.make_wsgi_app()


app = make_app()
