"""brick and gunicorn give an app the same CGI/WSGI variables for the same request.

Each app runs under both servers at once; the same raw request bytes go to both, and the
app's /environ answers are compared on the variables an app routes and reasons with:
REQUEST_METHOD, SCRIPT_NAME, PATH_INFO, QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH,
SERVER_PROTOCOL, REMOTE_ADDR, wsgi.url_scheme and every HTTP_* key either server set.
(SERVER_NAME, SERVER_PORT, REMOTE_PORT and SERVER_SOFTWARE differ by nature.)

Where the servers differ on purpose, DIFFERENCES names the request, the key, both values
and the reason, and the test asserts that exact difference, so the list cannot go stale.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import APPS, BRICK, GUNICORN, Server, start_server

pytestmark = pytest.mark.functional

TIMEOUT = 10.0
APP_NAMES = ["flask", "pyramid", "django", "wsgi"]
COMPARED = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "wsgi.url_scheme",
)
# Requests name the host "localhost" so HTTP_HOST does not carry either server's port.
APP_ENV = {"DJANGO_SECRET_KEY": "differential-test-key", "DJANGO_ALLOWED_HOSTS": "localhost"}

# Raw requests; {mount} is the prefix the servers were told ("" when not mounted).
REQUESTS = {
    "plain": (
        "GET {mount}/environ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "User-Agent: differential-test\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n"
        "\r\n"
    ),
    "query": (
        "GET {mount}/environ?a=1&b=two%20words&c=%E2%9C%93&empty=&flag HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "Connection: close\r\n"
        "\r\n"
    ),
    "encoded-path": (
        "GET {mount}/%65nviron HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ),
    "http-1.0": "GET {mount}/environ HTTP/1.0\r\nHost: localhost\r\n\r\n",
    # RFC 9112 §3.2.2: a server must accept the absolute form of the request target.
    "absolute-form": (
        "GET http://localhost{mount}/environ?x=1 HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "Connection: close\r\n"
        "\r\n"
    ),
    "content-length": (
        "POST {mount}/environ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Length: 11\r\n"
        "Connection: close\r\n"
        "\r\n"
        "hello world"
    ),
    "chunked": (
        "POST {mount}/environ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Connection: close\r\n"
        "\r\n"
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ),
    "expect-continue": (
        "POST {mount}/environ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "Expect: 100-continue\r\n"
        "Content-Length: 2\r\n"
        "Connection: close\r\n"
        "\r\n"
        "hi"
    ),
    "forwarded": (
        "GET {mount}/environ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "X-Forwarded-For: 203.0.113.7\r\n"
        "X-Forwarded-Proto: https\r\n"
        "Connection: close\r\n"
        "\r\n"
    ),
    "header-forms": (
        "GET {mount}/environ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "x-MiXeD-CaSe: mixed\r\n"
        "X-Padded:    padded value   \r\n"
        "X-Empty:\r\n"
        "X-Repeated: one\r\n"
        "X-Repeated: two\r\n"
        "Connection: close\r\n"
        "\r\n"
    ),
    # A header spelled with "_" would map to the same key as its "-" twin; both servers
    # drop it rather than let a client pass it off as the twin (gunicorn header_map=drop).
    "underscore": (
        "GET {mount}/environ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "X-Twin: dash\r\n"
        "X_Twin: underscore\r\n"
        "X_Only_Underscore: dropped\r\n"
        "Connection: close\r\n"
        "\r\n"
    ),
}


@dataclass(frozen=True)
class Difference:
    """An intended difference: what each server sets (None: not set), and why."""

    brick: str | None
    gunicorn: str | None
    reason: str


# (request name, or "*" for every request; environ key) -> the difference.
DIFFERENCES: dict[tuple[str, str], Difference] = {
    ("chunked", "CONTENT_LENGTH"): Difference(
        "11",
        None,
        "brick buffers the whole body before calling the app, so it knows the decoded length "
        "of a chunked upload and sets CONTENT_LENGTH to it (RFC 3875 §4.1.2: the length after "
        "transfer-codings are removed), which frameworks that only trust CONTENT_LENGTH "
        "(Django) need; gunicorn streams the body and sets none (PEP 3333 allows absent)",
    ),
    ("forwarded", "REMOTE_ADDR"): Difference(
        "203.0.113.7",
        "127.0.0.1",
        "from a trusted proxy (forwarded-allow-ips) brick takes the client address from "
        "X-Forwarded-For, so behind nginx the app sees the real client; gunicorn does not "
        "read X-Forwarded-For and leaves REMOTE_ADDR as the peer's address",
    ),
    ("header-forms", "HTTP_X_REPEATED"): Difference(
        "one, two",
        "one,two",
        "repeated field lines are joined into one list value: RFC 9110 §5.3 allows a comma "
        "with optional whitespace; brick writes ', ', gunicorn ','. Same meaning",
    ),
}


@dataclass
class Pair:
    app: str
    mount: str
    brick: Server
    gunicorn: Server


def start(command: list[str], app: str, mount: str, server: str) -> Server:
    args = [f"{app}app:app"]
    env = dict(APP_ENV)
    if mount and server == "brick":
        args += ["--root-path", mount]
    elif mount:
        env["SCRIPT_NAME"] = mount
    return start_server(command, args, cwd=APPS / app, env=env)


PAIRS = [(app, mounted) for app in APP_NAMES for mounted in (False, True)]


@pytest.fixture(
    scope="module",
    params=PAIRS,
    ids=[f"{app}{'-mounted' if mounted else ''}" for app, mounted in PAIRS],
)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    app, mounted = request.param
    mount = f"/{app}" if mounted else ""
    brick = start(BRICK, app, mount, "brick")
    try:
        gunicorn = start(GUNICORN, app, mount, "gunicorn")
        try:
            yield Pair(app, mount, brick, gunicorn)
        finally:
            gunicorn.stop()
    finally:
        brick.stop()


def environ_from(server: Server, raw: bytes) -> dict[str, str]:
    """Send `raw` on a new connection; the app's /environ answer as a dict."""
    with server.connect(TIMEOUT) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=raw.split(b" ", 1)[0].decode())
        try:
            response.begin()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            pytest.fail(f"no answer from {server.url}: {error!r}\n{server.log()[-4000:]}")
        finally:
            response.close()
    assert response.status == 200, (
        f"{server.url} -> {response.status}\n{body[:2000]!r}\n{server.log()[-4000:]}"
    )
    environ: dict[str, str] = json.loads(body)
    return environ


def compared_keys(*environs: dict[str, str]) -> list[str]:
    http_keys = {key for environ in environs for key in environ if key.startswith("HTTP_")}
    return [*COMPARED, *sorted(http_keys)]


@pytest.mark.parametrize("name", REQUESTS)
def test_same_environ(pair: Pair, name: str) -> None:
    raw = REQUESTS[name].format(mount=pair.mount).encode("latin-1")
    brick = environ_from(pair.brick, raw)
    gunicorn = environ_from(pair.gunicorn, raw)
    unexplained = {}
    for key in compared_keys(brick, gunicorn):
        values = (brick.get(key), gunicorn.get(key))
        known = DIFFERENCES.get((name, key)) or DIFFERENCES.get(("*", key))
        if known is not None:
            assert values == (known.brick, known.gunicorn), (
                f"{key}: expected the known difference ({known.reason}), got {values}"
            )
        elif values[0] != values[1]:
            unexplained[key] = {"brick": values[0], "gunicorn": values[1]}
    assert unexplained == {}


def test_differences_are_explained() -> None:
    for (name, key), difference in DIFFERENCES.items():
        assert name == "*" or name in REQUESTS, name
        assert key in COMPARED or key.startswith("HTTP_"), key
        assert difference.brick != difference.gunicorn, key
        assert difference.reason, key


def test_requests_are_well_formed() -> None:
    # Guard against a typo in REQUESTS making both servers reject it the same way.
    for name, text in REQUESTS.items():
        head, _, _ = text.partition("\r\n\r\n")
        assert head.split("\r\n")[0].endswith((" HTTP/1.1", " HTTP/1.0")), name
        assert "Host: localhost" in head, name
