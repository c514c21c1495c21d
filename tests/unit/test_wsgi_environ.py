"""The environ brick builds (PEP 3333 §"environ Variables"), checked through wsgiref's validator.

Every request here is parsed by the real parser and handed to a validated app that records
the environ it received, so the validator's own environ checks run on each one as well.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pytest
from brick import __version__, wsgi
from brick.wsgi import EnvironBuilder, FileWrapper
from test_wsgi import (
    PEER,
    StartResponse,
    build_environ,
    exchange,
    make_builder,
    request_bytes,
)

pytestmark = pytest.mark.unit

CGI_KEYS = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "RAW_URI",
    "REQUEST_URI",
)


def environ_of(
    raw: bytes,
    builder: EnvironBuilder | None = None,
    *,
    peer: tuple[str, str] = PEER,
    trusted: bool = False,
) -> dict[str, Any]:
    """The environ a validated app receives for `raw` (a copy, taken inside the app)."""
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    ex = exchange(app, raw, builder=builder, peer=peer, trusted=trusted)
    assert ex.response.status == 200 and ex.response.body == b"ok"
    return seen[0]


def get(target: str = "/", *headers: tuple[str, str], host: str | None = "example.com") -> bytes:
    fields = ([("Host", host)] if host is not None else []) + list(headers)
    return request_bytes("GET", target, headers=fields)


# -- the required keys ----------------------------------------------------------------------------


def test_every_required_key_with_native_string_values() -> None:
    errors = io.StringIO()
    builder = make_builder(errors=errors, multithread=True, multiprocess=False)
    env = environ_of(get("/a/b?x=1&y=2", ("Accept", "*/*")), builder)
    for key in CGI_KEYS:
        assert type(env[key]) is str, key
    for key, value in env.items():
        if "." not in key:
            assert type(value) is str, key
            value.encode("latin-1")  # PEP 3333: native strings holding latin-1 characters
    assert env["REQUEST_METHOD"] == "GET"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/a/b", "x=1&y=2")
    assert env["RAW_URI"] == env["REQUEST_URI"] == "/a/b?x=1&y=2"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "80")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_SOFTWARE"] == f"brick/{__version__}"
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == PEER
    assert env["HTTP_HOST"] == "example.com" and env["HTTP_ACCEPT"] == "*/*"
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["wsgi.errors"].errors is errors  # under the validator's wrapper


def test_wsgi_errors_takes_text() -> None:
    errors = io.StringIO()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.errors"].write("one line\n")
        environ["wsgi.errors"].writelines(["two\n", "three\n"])
        environ["wsgi.errors"].flush()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    exchange(app, builder=make_builder(errors=errors))
    assert errors.getvalue() == "one line\ntwo\nthree\n"


def test_http10_without_host_uses_the_listener_name_and_port() -> None:
    env = environ_of(b"GET /x HTTP/1.0\r\n\r\n", make_builder(server_name="10.1.2.3"))
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("10.1.2.3", "8000")
    assert "HTTP_HOST" not in env


def test_each_request_gets_its_own_environ() -> None:
    builder = make_builder()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        assert "app.mark" not in environ
        environ["app.mark"] = True
        environ["SCRIPT_NAME"] = "/changed"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    exchange(app, builder=builder)
    exchange(app, builder=builder)
    _, env, _ = build_environ(get(), builder)
    assert env["SCRIPT_NAME"] == "" and "app.mark" not in env


# -- the path, the query, the raw URI -------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path_info", "query"),
    [
        ("/", "/", ""),
        ("/a%20b", "/a b", ""),
        ("/a%2Fb", "/a/b", ""),  # %2F decodes like any other escape (PEP 3333, CGI)
        ("/caf%C3%A9", "/caf\xc3\xa9", ""),  # UTF-8 bytes as latin-1 characters
        ("/%FF%00x", "/\xff\x00x", ""),
        ("/p%3Fq?a=%20b&c", "/p?q", "a=%20b&c"),  # the query stays undecoded
        ("/x?", "/x", ""),
        ("/a+b", "/a+b", ""),  # "+" is not a space in a path
        ("/bad%zz%", "/bad%zz%", ""),  # invalid escapes stay as they are
    ],
)
def test_path_info_is_decoded_and_raw_uri_is_not(target: str, path_info: str, query: str) -> None:
    env = environ_of(get(target))
    assert env["PATH_INFO"] == path_info
    assert env["QUERY_STRING"] == query
    assert env["RAW_URI"] == env["REQUEST_URI"] == target


def test_absolute_form_target() -> None:
    raw = get("http://other.example:81/p%20q?x=1", host="ignored.example")
    env = environ_of(raw)
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/p q", "x=1")
    assert env["RAW_URI"] == "http://other.example:81/p%20q?x=1"
    # RFC 9112 §3.2.2: the target's authority wins over the Host header
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("other.example", "81")
    assert env["HTTP_HOST"] == "ignored.example"


def test_absolute_form_https_without_host_header() -> None:
    env = environ_of(b"GET https://secure.example/x HTTP/1.0\r\n\r\n")
    assert env["wsgi.url_scheme"] == "https"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("secure.example", "443")
    assert env["HTTP_HOST"] == "secure.example"


# -- SERVER_NAME and SERVER_PORT from Host --------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "name", "port"),
    [
        ("example.com", "example.com", "80"),
        ("example.com:8080", "example.com", "8080"),
        ("example.com:", "example.com", "80"),
        ("example.com:x1", "example.com", "80"),
        ("[::1]", "[::1]", "80"),
        ("[::1]:9000", "[::1]", "9000"),
        ("[2001:db8::7]:443", "[2001:db8::7]", "443"),
        ("192.0.2.1:81", "192.0.2.1", "81"),
        ("", "127.0.0.1", "8000"),  # an empty Host: the listener's
    ],
)
def test_server_name_and_port_from_host(host: str, name: str, port: str) -> None:
    env = environ_of(get(host=host))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, port)
    assert env["HTTP_HOST"] == host


def test_default_port_follows_a_trusted_https_proto() -> None:
    raw = get("/", ("X-Forwarded-Proto", "https"))
    env = environ_of(raw, trusted=True)
    assert (env["wsgi.url_scheme"], env["SERVER_PORT"]) == ("https", "443")


# -- headers --------------------------------------------------------------------------------------


def test_content_type_and_length_have_no_http_prefix() -> None:
    raw = request_bytes(
        "POST",
        "/upload",
        headers=[
            ("Host", "a"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", "5"),
        ],
        body=b"hello",
    )
    env = environ_of(raw)
    assert env["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_chunked_upload_gets_the_buffered_length() -> None:
    # brick buffers the whole body before the app runs, so it knows the length: frameworks
    # that only trust CONTENT_LENGTH (Django) then see the body.
    raw = request_bytes(
        "POST",
        "/",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked"), ("Content-Type", "x/y")],
        body=b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer-Field: t\r\n\r\n",
    )
    env = environ_of(raw)
    assert env["CONTENT_LENGTH"] == "11"
    assert env["CONTENT_TYPE"] == "x/y"
    assert "HTTP_CONTENT_LENGTH" not in env
    assert "HTTP_TRAILER_FIELD" not in env  # trailers are never merged into the headers


def test_zero_length_body_gives_content_length_zero() -> None:
    raw = request_bytes("POST", "/", headers=[("Host", "a"), ("Content-Length", "0")])
    assert environ_of(raw)["CONTENT_LENGTH"] == "0"


def test_repeated_headers_are_joined_with_comma_space() -> None:
    raw = get("/", ("Accept", "text/html"), ("X-Trace", "a"), ("Accept", "*/*"), ("accept", "x/y"))
    env = environ_of(raw)
    assert env["HTTP_ACCEPT"] == "text/html, */*, x/y"
    assert env["HTTP_X_TRACE"] == "a"


def test_header_names_map_to_http_keys() -> None:
    env = environ_of(get("/", ("x-lower-case", "1"), ("X-MiXeD-Case", "2"), ("X.Dotted", "3")))
    assert (env["HTTP_X_LOWER_CASE"], env["HTTP_X_MIXED_CASE"]) == ("1", "2")
    assert env["HTTP_X.DOTTED"] == "3"


def test_header_values_are_latin1() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n"
    assert environ_of(raw)["HTTP_X_NAME"] == "caf\xc3\xa9 \xff"


def test_underscore_headers_never_reach_the_environ() -> None:
    raw = get(
        "/",
        ("X_Forwarded_For", "6.6.6.6"),
        ("X-Custom_Header", "evil"),
        ("Content_Type", "evil/type"),
        ("X-Custom-Header", "good"),
    )
    env = environ_of(raw, trusted=True)
    assert env["HTTP_X_CUSTOM_HEADER"] == "good"
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["REMOTE_ADDR"] == PEER[0]
    assert "CONTENT_TYPE" not in env
    assert not any("evil" in v for v in env.values() if isinstance(v, str))


def test_a_content_length_header_never_overrides_the_framing() -> None:
    # The value comes from the parsed framing, never from the raw field.
    raw = request_bytes(
        "POST", "/", headers=[("Host", "a"), ("Content-Length", "0003")], body=b"abc"
    )
    assert environ_of(raw)["CONTENT_LENGTH"] == "3"


# -- proxies --------------------------------------------------------------------------------------

FORWARDED = (
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Prefix", "/mount"),
)


def test_forwarded_headers_from_an_untrusted_peer_are_only_headers() -> None:
    env = environ_of(get("/mount/x", *FORWARDED), trusted=False)
    assert env["REMOTE_ADDR"] == PEER[0]
    assert env["wsgi.url_scheme"] == "http"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/mount/x")
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"  # still there for the app to see


def test_forwarded_headers_from_a_trusted_peer() -> None:
    env = environ_of(get("/mount/x", *FORWARDED), trusted=True)
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mount", "/x")


def test_trust_is_decided_by_the_peer_address() -> None:
    builder = make_builder(forwarded_trusted_ips=frozenset({"127.0.0.1", "::1"}))
    assert builder.is_trusted("127.0.0.1") and builder.is_trusted("::1")
    assert not builder.is_trusted("10.0.0.1")
    assert builder.is_trusted("")  # a unix-socket peer has no address: it is local
    everyone = make_builder(forwarded_trust_all=True)
    assert everyone.is_trusted("198.51.100.1")
    nobody = make_builder()
    assert not nobody.is_trusted("127.0.0.1")


@pytest.mark.parametrize(
    ("allowed", "peer", "trusted"),
    [
        ({"127.0.0.0/8"}, "127.0.0.1", True),
        ({"127.0.0.0/8"}, "127.200.3.4", True),
        ({"127.0.0.0/8"}, "128.0.0.1", False),
        ({"10.0.0.0/8", "::1"}, "::1", True),
        ({"fd00::/8"}, "fd12::7", True),
        ({"fd00::/8"}, "fe80::1", False),
        ({"10.0.0.0/8"}, "::ffff:10.1.2.3", True),  # IPv4-mapped on a dual-stack socket
        ({"10.1.2.3"}, "::ffff:10.1.2.3", True),
        ({"10.1.2.3"}, "::ffff:10.1.2.4", False),
        ({"10.0.0.0/8"}, "not-an-address", False),
        ({"*"}, "198.51.100.1", True),
    ],
)
def test_trusted_networks(allowed: set[str], peer: str, trusted: bool) -> None:
    builder = make_builder(forwarded_trusted_ips=frozenset(allowed))
    assert builder.is_trusted(peer) is trusted


def test_x_forwarded_for_steps_past_trusted_networks() -> None:
    builder = make_builder(forwarded_trusted_ips=frozenset({"10.0.0.0/8", "192.0.2.7"}))
    raw = get("/", ("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 10.3.3.3, 10.0.0.1"))
    assert environ_of(raw, builder, trusted=True)["REMOTE_ADDR"] == "198.51.100.9"


@pytest.mark.parametrize(
    ("trusted_ips", "trust_all", "xff", "remote"),
    [
        ((), True, "1.1.1.1, 2.2.2.2, 3.3.3.3", "3.3.3.3"),  # '*': the right-most hop
        ((), True, "1.1.1.1,2.2.2.2", "2.2.2.2"),
        (("10.0.0.1",), False, "1.1.1.1, 6.6.6.6, 10.0.0.1", "6.6.6.6"),
        (("10.0.0.1", "10.0.0.2"), False, "1.1.1.1, 10.0.0.2, 10.0.0.1", "1.1.1.1"),
        (("10.0.0.1",), False, "10.0.0.1", "10.0.0.1"),
        (("10.0.0.1",), False, " , ", PEER[0]),  # nothing usable: the peer stays
    ],
)
def test_x_forwarded_for_hops(
    trusted_ips: tuple[str, ...], trust_all: bool, xff: str, remote: str
) -> None:
    builder = make_builder(
        forwarded_trusted_ips=frozenset(trusted_ips), forwarded_trust_all=trust_all
    )
    env = environ_of(get("/", ("X-Forwarded-For", xff)), builder, trusted=True)
    assert env["REMOTE_ADDR"] == remote


def test_x_forwarded_for_over_several_lines_uses_the_last_hop() -> None:
    builder = make_builder(forwarded_trust_all=True)
    raw = get("/", ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2"))
    assert environ_of(raw, builder, trusted=True)["REMOTE_ADDR"] == "2.2.2.2"


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [
        ("https", "https"),
        ("HTTPS", "https"),
        ("http", "http"),
        ("ftp", "http"),
        ("http, https", "https"),
    ],
)
def test_x_forwarded_proto(proto: str, scheme: str) -> None:
    env = environ_of(get("/", ("X-Forwarded-Proto", proto)), trusted=True)
    assert env["wsgi.url_scheme"] == scheme


@pytest.mark.parametrize(
    ("prefix", "target", "script_name", "path_info"),
    [
        ("/app", "/app/x", "/app", "/x"),
        ("/app", "/app", "/app", ""),
        ("/app", "/app/", "/app", "/"),
        ("/app", "/application", "/app", "/application"),  # not a path-segment match
        ("/app", "/x", "/app", "/x"),  # the proxy already stripped it
        ("/app/", "/app/x", "/app", "/x"),
        ("/my%20app", "/my%20app/x", "/my app", "/x"),
        ("/", "/x", "", "/x"),
        ("relative", "/x", "/root", "/x"),  # not a path: ignored, the static root stays
    ],
)
def test_x_forwarded_prefix(prefix: str, target: str, script_name: str, path_info: str) -> None:
    builder = make_builder(root_path="/root")
    env = environ_of(get(target, ("X-Forwarded-Prefix", prefix)), builder, trusted=True)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)


@pytest.mark.parametrize("root_path", ["/app", "/app/"])
@pytest.mark.parametrize(
    ("target", "script_name", "path_info"),
    [
        ("/app/x/y", "/app", "/x/y"),
        ("/app", "/app", ""),
        ("/app/", "/app", "/"),
        ("/application", "/app", "/application"),
        ("/app%2Fx", "/app", "/x"),  # compared after decoding, like PATH_INFO itself
        ("/other", "/app", "/other"),
        ("/", "/app", "/"),
    ],
)
def test_static_root_path(root_path: str, target: str, script_name: str, path_info: str) -> None:
    env = environ_of(get(target), make_builder(root_path=root_path))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)


def test_root_path_of_slash_is_no_mount() -> None:
    env = environ_of(get("/x"), make_builder(root_path="/"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/x")


def test_untrusted_forwarded_prefix_keeps_the_static_root() -> None:
    env = environ_of(
        get("/root/x", ("X-Forwarded-Prefix", "/evil")), make_builder(root_path="/root")
    )
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/root", "/x")


def test_the_trust_kept_per_address_is_bounded() -> None:
    builder = make_builder(forwarded_trusted_ips=frozenset({"10.0.0.0/8"}))
    for n in range(3 * wsgi._PEER_TRUST_MAX):
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        assert builder.is_trusted(address)
        assert not builder.is_trusted(f"192.0.{n >> 8 & 255}.{n & 255}")
    assert len(builder.peer_trust) <= wsgi._PEER_TRUST_MAX
