"""brick next to gunicorn behind nginx: same environ, real client, keep-alive, concurrency."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import pytest
import requests

from .conftest import APPS, HTTP_TIMEOUT, ROUTES, THREADS, WORKERS, Route, Stack

pytestmark = pytest.mark.e2e

# What both servers must agree on for the same request (SCRIPT_NAME differs by design:
# each server reports its own mount prefix).
SAME = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "wsgi.url_scheme")


def environ(stack: Stack, route: Route, query: str = "", **kwargs: object) -> dict[str, str]:
    response = stack.get(f"{route.prefix}/environ{query}", **kwargs)
    assert response.status_code == 200, response.text
    result: dict[str, str] = json.loads(response.text)
    return result


@pytest.mark.parametrize("app", APPS)
def test_brick_and_gunicorn_give_the_app_the_same_environ(stack: Stack, app: str) -> None:
    query = "?x=1&y=%C3%A9t%C3%A9&z"
    brick = environ(stack, Route(app, "brick"), query)
    gunicorn = environ(stack, Route(app, "gunicorn"), query)
    assert {key: brick[key] for key in SAME} == {key: gunicorn[key] for key in SAME}
    assert brick["QUERY_STRING"] == query[1:]
    assert brick["SCRIPT_NAME"] == f"/{app}"
    assert gunicorn["SCRIPT_NAME"] == f"/gunicorn/{app}"
    # nginx names the client it saw in X-Forwarded-For; brick trusts nginx and makes that
    # REMOTE_ADDR. (gunicorn leaves REMOTE_ADDR as nginx's own address: it uses
    # X-Forwarded-For for nothing.)
    client = gunicorn["HTTP_X_FORWARDED_FOR"]
    assert brick["HTTP_X_FORWARDED_FOR"] == client
    assert brick["REMOTE_ADDR"] == client


@pytest.mark.parametrize("app", APPS)
def test_a_client_cannot_forge_its_address(stack: Stack, app: str) -> None:
    real = environ(stack, Route(app, "brick"))["REMOTE_ADDR"]
    forged = environ(
        stack,
        Route(app, "brick"),
        headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
    )
    # nginx replaces the client's X-Forwarded-* headers rather than appending to them.
    assert forged["REMOTE_ADDR"] == real
    assert forged["HTTP_X_FORWARDED_FOR"] == real
    assert forged["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_nginx_keeps_upstream_connections_alive(stack: Stack, route: Route) -> None:
    # REMOTE_PORT is nginx's end of the upstream connection. Over one client connection the
    # requests go to one nginx worker, which takes its upstream connection from its
    # keep-alive pool each time instead of opening a new one.
    with requests.Session() as session:
        ports = set()
        for _ in range(6):
            response = session.get(stack.url(f"{route.prefix}/environ"), timeout=HTTP_TIMEOUT)
            assert response.status_code == 200
            ports.add(json.loads(response.text)["REMOTE_PORT"])
    assert len(ports) <= 2, f"a new upstream connection for most requests: {ports}"


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_requests_run_concurrently(stack: Stack, route: Route) -> None:
    # WORKERS=2 and THREADS=2: four requests that each sleep 1 s finish together in about
    # 1 s; one at a time they would take 4 s.
    slots = WORKERS * THREADS
    url = stack.url(f"{route.prefix}/sleep?seconds=1")
    start = time.monotonic()
    with ThreadPoolExecutor(slots) as pool:
        responses = list(pool.map(lambda _: requests.get(url, timeout=HTTP_TIMEOUT), range(slots)))
    elapsed = time.monotonic() - start
    assert [r.status_code for r in responses] == [200] * slots
    assert all(r.text == "slept 1\n" for r in responses)
    assert elapsed < 0.75 * slots, f"{slots} requests of 1 s took {elapsed:.2f} s"


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.forms: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))
        if tag == "form" and values.get("action"):
            self.forms.append(str(values["action"]))


def test_index_page_links_every_route_of_every_app_on_both_servers(stack: Stack) -> None:
    response = stack.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    links = Links()
    links.feed(response.text)
    routes = {"hello", "healthz", "environ", "stream", "sleep", "file", "url"}
    for route in ROUTES:
        linked = {
            re.sub(r"\?.*", "", href)[len(route.prefix) + 1 :]
            for href in links.hrefs
            if href.startswith(route.prefix + "/")
        }
        assert linked == routes, route
        assert f"{route.prefix}/echo" in links.forms
    for href in links.hrefs:
        answer = stack.get(href)
        assert answer.status_code == 200, href


def test_unknown_paths_are_not_found(stack: Stack) -> None:
    assert stack.get("/nowhere").status_code == 404
    assert stack.get("/gunicorn/nowhere").status_code == 404
