"""Proxies and mounting on real sockets: X-Forwarded-* from trusted peers only
(--forwarded-allow-ips, $FORWARDED_ALLOW_IPS, '*'), and a static mount prefix from
--root-path or $SCRIPT_NAME. The test client connects from 127.0.0.1."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import pytest
from conftest import BRICK, FIXTURE_APPS, Server

pytestmark = pytest.mark.functional

Serve = Callable[..., Server]
APP = ["cli_app", "--chdir", str(FIXTURE_APPS)]
FORWARDED = {
    "X-Forwarded-For": "203.0.113.50",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Prefix": "/proxied",
}


def environ(server: Server, path: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        values: dict[str, str] = json.loads(body)
        return values
    finally:
        conn.close()


def assert_forwarded_applied(env: dict[str, str]) -> None:
    assert env["REMOTE_ADDR"] == "203.0.113.50"
    assert env["wsgi.url_scheme"] == "https"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/proxied", "/environ")


def assert_forwarded_ignored(env: dict[str, str]) -> None:
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/proxied/environ")


# -- trusted peers -------------------------------------------------------------------------


def test_default_trusts_loopback(serve: Serve) -> None:
    server = serve(BRICK, APP)
    assert_forwarded_applied(environ(server, "/proxied/environ", FORWARDED))


def test_without_forwarded_headers_nothing_changes(serve: Serve) -> None:
    env = environ(serve(BRICK, APP), "/environ")
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["SCRIPT_NAME"]) == (
        "127.0.0.1",
        "http",
        "",
    )
    assert env["PATH_INFO"] == "/environ"


def test_default_trusts_ipv6_loopback(serve: Serve) -> None:
    server = serve(BRICK, APP, host="::1")
    assert_forwarded_applied(environ(server, "/proxied/environ", FORWARDED))


def test_ipv6_peer_not_in_the_list_is_untrusted(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", "127.0.0.1"], host="::1")
    env = environ(server, "/proxied/environ", FORWARDED)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["SCRIPT_NAME"]) == ("::1", "http", "")


def test_star_trusts_everyone(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", "*"])
    assert_forwarded_applied(environ(server, "/proxied/environ", FORWARDED))


def test_explicit_list_including_the_peer(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", "10.9.9.9,127.0.0.1"])
    assert_forwarded_applied(environ(server, "/proxied/environ", FORWARDED))


def test_network_including_the_peer(serve: Serve) -> None:
    """gunicorn accepts networks in --forwarded-allow-ips; 127.0.0.0/8 covers the client."""
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", "127.0.0.0/8"])
    assert_forwarded_applied(environ(server, "/proxied/environ", FORWARDED))


def test_environment_variable_star(serve: Serve) -> None:
    server = serve(BRICK, APP, env={"FORWARDED_ALLOW_IPS": "*"})
    assert_forwarded_applied(environ(server, "/proxied/environ", FORWARDED))


def test_rightmost_untrusted_hop_is_the_client(serve: Serve) -> None:
    """Hops left of the first untrusted one were written by the client: never believe them."""
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", "127.0.0.1,10.0.0.2"])
    env = environ(server, "/environ", {"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.0.0.2"})
    assert env["REMOTE_ADDR"] == "198.51.100.7"


def test_unknown_proto_is_ignored(serve: Serve) -> None:
    server = serve(BRICK, APP)
    env = environ(server, "/environ", {"X-Forwarded-Proto": "gopher"})
    assert env["wsgi.url_scheme"] == "http"


# -- untrusted peers -----------------------------------------------------------------------


def test_untrusted_peer_headers_are_ignored(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", "10.9.9.9"])
    env = environ(server, "/proxied/environ", FORWARDED)
    assert_forwarded_ignored(env)
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.50"  # still visible as a plain header


def test_untrusted_by_environment_variable(serve: Serve) -> None:
    server = serve(BRICK, APP, env={"FORWARDED_ALLOW_IPS": "10.9.9.9"})
    assert_forwarded_ignored(environ(server, "/proxied/environ", FORWARDED))


def test_command_line_beats_environment_variable(serve: Serve) -> None:
    server = serve(
        BRICK, [*APP, "--forwarded-allow-ips", "10.9.9.9"], env={"FORWARDED_ALLOW_IPS": "*"}
    )
    assert_forwarded_ignored(environ(server, "/proxied/environ", FORWARDED))


def test_empty_list_trusts_nobody(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", ""])
    assert_forwarded_ignored(environ(server, "/proxied/environ", FORWARDED))


def test_network_excluding_the_peer(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--forwarded-allow-ips", "10.0.0.0/8"])
    assert_forwarded_ignored(environ(server, "/proxied/environ", FORWARDED))


# -- a static mount prefix -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "environment"])
def test_root_path(serve: Serve, how: str) -> None:
    if how == "option":
        server = serve(BRICK, [*APP, "--root-path", "/mnt/app"])
    else:
        server = serve(BRICK, APP, env={"SCRIPT_NAME": "/mnt/app"})
    env = environ(server, "/mnt/app/environ")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt/app", "/environ")


def test_root_path_with_trailing_slash(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--root-path", "/mnt/"])
    env = environ(server, "/mnt/environ")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "/environ")


def test_root_path_is_not_stripped_from_a_longer_segment(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--root-path", "/mnt"])
    env = environ(server, "/mntx/environ")
    assert env["PATH_INFO"] == "/mntx/environ"


def test_option_beats_script_name_variable(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--root-path", "/a"], env={"SCRIPT_NAME": "/b"})
    env = environ(server, "/a/environ")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/a", "/environ")


def test_forwarded_prefix_from_untrusted_peer_keeps_root_path(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--root-path", "/mnt", "--forwarded-allow-ips", "10.9.9.9"])
    env = environ(server, "/mnt/environ", {"X-Forwarded-Prefix": "/evil"})
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "/environ")
