"""The app contract (DESIGN.md §5): every app, under brick and under gunicorn, as real processes.

Each (app, server, mount) combination gets one server process, started on a socket the test
bound (see tests/conftest.py), and every route test runs against it. "Mounted" means the
server was told the prefix (brick `--root-path /flask`, gunicorn `SCRIPT_NAME=/flask`) and
the client asks for /flask/hello: the server moves the prefix into SCRIPT_NAME, and the URLs
the framework builds must carry it.
"""

from __future__ import annotations

import http.client
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from conftest import APPS, BRICK, GUNICORN, Server, start_server

pytestmark = pytest.mark.functional

TIMEOUT = 10.0

HELLO = {
    "flask": "Hello world from Flask!\n",
    "pyramid": "Hello world from Pyramid!\n",
    "django": "Hello world from Django!\n",
    "wsgi": "Hello world from a simple WSGI application!\n",
}
SERVERS = {"brick": BRICK, "gunicorn": GUNICORN}
# Every app answers for 127.0.0.1; Django checks the Host header against its allow-list.
APP_ENV = {"DJANGO_SECRET_KEY": "contract-test-key", "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}


def app_command(server: str, app: str, mount: str) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment that serve `app` under `server`, mounted at `mount`."""
    args = [f"{app}app:app"]
    env = dict(APP_ENV)
    if mount and server == "brick":
        args += ["--root-path", mount]
    elif mount:
        env["SCRIPT_NAME"] = mount
    return args, env


@dataclass
class Site:
    """One app served by one server, as the client sees it: `base` includes the mount."""

    app: str
    server_name: str
    mount: str
    server: Server

    @property
    def base(self) -> str:
        return self.server.url + self.mount

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.base + path, timeout=TIMEOUT, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.base + path, timeout=TIMEOUT, **kwargs)

    def check(self, response: requests.Response, status: int = 200) -> None:
        """Assert the status; on failure show the answer and the server's log."""
        assert response.status_code == status, (
            f"{response.request.method} {response.url} -> {response.status_code}\n"
            f"{response.text[:2000]}\n--- server log ---\n{self.server.log()[-4000:]}"
        )


COMBINATIONS = [
    (app, server, mounted) for app in HELLO for server in SERVERS for mounted in (False, True)
]


@pytest.fixture(
    scope="module",
    params=COMBINATIONS,
    ids=[f"{app}-{server}{'-mounted' if mounted else ''}" for app, server, mounted in COMBINATIONS],
)
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    app, server_name, mounted = request.param
    mount = f"/{app}" if mounted else ""
    args, env = app_command(server_name, app, mount)
    server = start_server(SERVERS[server_name], args, cwd=APPS / app, env=env)
    try:
        site = Site(app, server_name, mount, server)
        # A first request: when the server cannot serve at all, every test of this
        # combination fails here at once with the log, instead of one timeout each.
        try:
            response = site.get("/healthz")
        except requests.RequestException as error:
            pytest.fail(f"{server_name} serving {app}: {error}\n{server.log()[-4000:]}")
        site.check(response)
        yield site
    finally:
        server.stop()


def test_hello(site: Site) -> None:
    response = site.get("/hello")
    site.check(response)
    assert response.headers["Content-Type"].split(";")[0] == "text/plain"
    assert response.content == HELLO[site.app].encode()


def test_healthz(site: Site) -> None:
    response = site.get("/healthz")
    site.check(response)
    assert response.text == "ok"


def test_unknown_route_is_404(site: Site) -> None:
    site.check(site.get("/no-such-route"), 404)


def test_echo_with_content_length(site: Site) -> None:
    body = bytes(range(256)) * 256
    content_type = "application/x-contract-test; charset=latin-1"
    response = site.post("/echo", data=body, headers={"Content-Type": content_type})
    assert response.request.headers["Content-Length"] == str(len(body))
    site.check(response)
    assert response.headers["Content-Type"] == content_type
    assert response.content == body


def test_echo_chunked_upload(site: Site) -> None:
    pieces = [b"x", b"chunked upload\n", bytes(range(256)) * 300, b"end\n"]
    content_type = "text/plain; charset=utf-8"
    # A generator has no length, so requests sends it with Transfer-Encoding: chunked.
    response = site.post("/echo", data=iter(pieces), headers={"Content-Type": content_type})
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    site.check(response)
    assert response.headers["Content-Type"] == content_type
    assert response.content == b"".join(pieces)


def test_echo_empty_body(site: Site) -> None:
    response = site.post("/echo", data=b"", headers={"Content-Type": "text/plain"})
    site.check(response)
    assert response.content == b""


def test_echo_needs_post(site: Site) -> None:
    site.check(site.get("/echo"), 405)


def test_environ(site: Site) -> None:
    response = site.get("/environ?x=1&y=two%20words", headers={"X-Contract": "yes"})
    site.check(response)
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    environ = response.json()
    assert all(isinstance(value, str) for value in environ.values())
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == site.mount
    assert environ["PATH_INFO"] == "/environ"
    assert environ["QUERY_STRING"] == "x=1&y=two%20words"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_HOST"] == f"127.0.0.1:{site.server.port}"
    assert environ["HTTP_X_CONTRACT"] == "yes"
    # PEP 3333 requires these; their values are the server's to choose.
    assert environ["SERVER_NAME"]
    assert environ["SERVER_PORT"]


def test_environ_of_a_request_with_a_body(site: Site) -> None:
    response = site.post("/environ", data=b"a=1", headers={"Content-Type": "text/plain"})
    site.check(response)
    environ = response.json()
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


def test_stream_sends_each_line_as_it_is_produced(site: Site) -> None:
    chunks, delay = 4, 0.25
    connection = http.client.HTTPConnection(site.server.host, site.server.port, timeout=TIMEOUT)
    try:
        connection.request("GET", f"{site.mount}/stream?chunks={chunks}&delay={delay}")
        response = connection.getresponse()
        assert response.status == 200
        lines, arrivals = [], []
        for _ in range(chunks):
            lines.append(response.readline())
            arrivals.append(time.monotonic())
        assert response.read() == b""
    finally:
        connection.close()
    assert lines == [f"chunk {n} of {chunks}\n".encode() for n in range(1, chunks + 1)]
    # The app sleeps `delay` between lines. Had the server buffered the body, the lines
    # would arrive together; streamed, they arrive about `delay` apart. (A third of it
    # leaves room for a loaded machine.)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) > delay / 3, gaps


@pytest.mark.parametrize("chunks", [0, 1, 3])
def test_stream_line_count(site: Site, chunks: int) -> None:
    response = site.get(f"/stream?chunks={chunks}")
    site.check(response)
    assert response.headers["Content-Type"].split(";")[0] == "text/plain"
    assert response.text == "".join(f"chunk {n} of {chunks}\n" for n in range(1, chunks + 1))


@pytest.mark.parametrize(
    "query",
    [
        "chunks=many",
        "chunks=1.5",
        "chunks=-1",
        "chunks=1001",
        "delay=soon",
        "delay=-0.1",
        "delay=nan",
        "delay=inf",
        "delay=2",
        "chunks=100&delay=0.5",
    ],
)
def test_stream_rejects_bad_numbers(site: Site, query: str) -> None:
    site.check(site.get(f"/stream?{query}"), 400)


def test_sleep(site: Site) -> None:
    started = time.monotonic()
    response = site.get("/sleep?seconds=0.3")
    elapsed = time.monotonic() - started
    site.check(response)
    assert response.text == "slept 0.3\n"
    assert elapsed >= 0.3


@pytest.mark.parametrize(
    "query", ["seconds=later", "seconds=-1", "seconds=nan", "seconds=inf", "seconds=11"]
)
def test_sleep_rejects_bad_numbers(site: Site, query: str) -> None:
    site.check(site.get(f"/sleep?{query}"), 400)


def test_file(site: Site) -> None:
    expected = (APPS / site.app / "static" / "hello.txt").read_bytes()
    response = site.get("/file")
    site.check(response)
    assert response.headers["Content-Type"].split(";")[0] == "text/plain"
    assert response.headers["Content-Length"] == str(len(expected))
    assert response.content == expected


def test_url(site: Site) -> None:
    response = site.get("/url")
    site.check(response)
    assert response.text == f"{site.base}/hello\n"


def test_url_behind_a_tls_proxy(site: Site) -> None:
    # Both servers trust X-Forwarded-Proto from 127.0.0.1 (forwarded-allow-ips) and set
    # wsgi.url_scheme from it, so the framework builds an https URL.
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    response = site.get("/url", headers=headers)
    site.check(response)
    host = f"{site.server.host}:{site.server.port}"
    assert response.text == f"https://{host}{site.mount}/hello\n"


# Django's settings come from the environment; these start their own servers.


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("key", ["", "a-real-secret"])
def test_django_warns_when_the_secret_key_is_the_default(
    serve: Any, server_name: str, key: str
) -> None:
    env = {"DJANGO_SECRET_KEY": key, "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}
    server = serve(SERVERS[server_name], ["djangoapp:app"], cwd=APPS / "django", env=env)
    # The app has been imported once it has answered.
    response = requests.get(f"{server.url}/healthz", timeout=TIMEOUT)
    assert response.status_code == 200, server.log()
    warned = "DJANGO_SECRET_KEY is not set" in server.log()
    assert warned == (not key), server.log()


@pytest.mark.parametrize("server_name", SERVERS)
def test_django_answers_only_allowed_hosts(serve: Any, server_name: str) -> None:
    env = {"DJANGO_SECRET_KEY": "x", "DJANGO_ALLOWED_HOSTS": "example.test, www.example.test"}
    server = serve(SERVERS[server_name], ["djangoapp:app"], cwd=APPS / "django", env=env)
    for host, status in [("example.test", 200), ("www.example.test", 200), ("127.0.0.1", 400)]:
        response = requests.get(f"{server.url}/hello", headers={"Host": host}, timeout=TIMEOUT)
        assert response.status_code == status, (host, server.log())
