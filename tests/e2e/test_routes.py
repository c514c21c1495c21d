"""The app contract (DESIGN.md §5) through nginx: every route of every app, on both servers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from .conftest import ROOT, ROUTES, Route, Stack

pytestmark = pytest.mark.e2e

GREETINGS = {
    "flask": "Hello world from Flask!\n",
    "pyramid": "Hello world from Pyramid!\n",
    "django": "Hello world from Django!\n",
    "wsgi": "Hello world from a simple WSGI application!\n",
}


@pytest.fixture(params=ROUTES, ids=str)
def route(request: pytest.FixtureRequest) -> Route:
    return request.param  # type: ignore[no-any-return]


def test_hello(stack: Stack, route: Route) -> None:
    response = stack.get(f"{route.prefix}/hello")
    assert response.status_code == 200
    assert response.text == GREETINGS[route.app]
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Length"] == str(len(GREETINGS[route.app]))


def test_server_header_names_the_server(stack: Stack, route: Route) -> None:
    response = stack.get(f"{route.prefix}/hello")
    server = response.headers.get("Server", "")
    if route.server == "brick":
        assert server.startswith("brick/"), server
    else:
        assert server.startswith("gunicorn"), server
    assert response.headers["X-Upstream"] == route.upstream


def test_healthz(stack: Stack, route: Route) -> None:
    response = stack.get(f"{route.prefix}/healthz")
    assert response.status_code == 200
    assert response.text.strip() == "ok"


def test_echo_content_length(stack: Stack, route: Route) -> None:
    body = os.urandom(256 * 1024)
    response = stack.post(
        f"{route.prefix}/echo", data=body, headers={"Content-Type": "application/x-brick-test"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-brick-test")
    assert response.content == body


def test_echo_chunked(stack: Stack, route: Route) -> None:
    pieces = [b"first piece\n", os.urandom(100_000), b"", b"last piece\n"]

    def chunks() -> Iterator[bytes]:
        yield from (piece for piece in pieces if piece)

    # A generator body makes requests send Transfer-Encoding: chunked. nginx reads the whole
    # body first (request buffering) and passes it on with a Content-Length.
    response = stack.post(
        f"{route.prefix}/echo", data=chunks(), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.content == b"".join(pieces)


def test_environ(stack: Stack, route: Route) -> None:
    response = stack.get(f"{route.prefix}/environ?a=1&b=two%20words")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    environ = json.loads(response.text)
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == route.prefix
    assert environ["PATH_INFO"] == "/environ"
    assert environ["QUERY_STRING"] == "a=1&b=two%20words"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_HOST"] == f"127.0.0.1:{stack.port}"


def test_stream(stack: Stack, route: Route) -> None:
    response = stack.get(f"{route.prefix}/stream?chunks=7&delay=0.01")
    assert response.status_code == 200
    assert response.text.splitlines() == [f"chunk {n} of 7" for n in range(1, 8)]


def test_stream_arrives_piece_by_piece(stack: Stack, route: Route) -> None:
    # 3 lines 0.4 s apart: through both servers and nginx, the first line arrives well
    # before the last one is produced.
    arrivals = []
    with stack.get(f"{route.prefix}/stream?chunks=3&delay=0.4", stream=True) as response:
        assert response.status_code == 200
        start = time.monotonic()
        for line in response.iter_lines():
            arrivals.append((time.monotonic() - start, line))
    assert [line for _, line in arrivals] == [f"chunk {n} of 3".encode() for n in (1, 2, 3)]
    assert arrivals[-1][0] - arrivals[0][0] > 0.6, arrivals


def test_sleep(stack: Stack, route: Route) -> None:
    response = stack.get(f"{route.prefix}/sleep?seconds=0.2")
    assert response.status_code == 200
    assert response.text == "slept 0.2\n"
    assert response.elapsed.total_seconds() >= 0.2


def test_file(stack: Stack, route: Route) -> None:
    expected = (ROOT / "apps" / route.app / "static" / "hello.txt").read_bytes()
    response = stack.get(f"{route.prefix}/file")
    assert response.status_code == 200
    assert response.content == expected
    assert response.headers["Content-Length"] == str(len(expected))


def test_url_carries_the_mount_prefix(stack: Stack, route: Route) -> None:
    response = stack.get(f"{route.prefix}/url")
    assert response.status_code == 200
    assert response.text.strip() == f"http://127.0.0.1:{stack.port}{route.prefix}/hello"
