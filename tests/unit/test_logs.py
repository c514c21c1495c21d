"""The access log's atoms, log files that reopen for rotation, wsgi.errors, --debug-http."""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from brick import logs
from brick.logs import (
    ATOMS,
    AccessLog,
    LogFile,
    debug_http_printer,
    remote_user,
    reopen_logs,
    setup_error_log,
)
from brick.parser import Request
from brick.wsgi import Outcome

pytestmark = pytest.mark.unit


def make_request(headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request(
        method="GET",
        target="/shop/items?id=7",
        path="/shop/items",
        query="id=7",
        version="HTTP/1.1",
        headers=headers
        if headers is not None
        else [
            (b"Host", b"example.org"),
            (b"Referer", b"http://ref.example/"),
            (b"User-Agent", b"curl/8.0"),
            (b"X-Trace", b"abc"),
        ],
    )


ENVIRON: dict[str, Any] = {
    "REMOTE_ADDR": "203.0.113.9",
    "PATH_INFO": "/items",
    "SCRIPT_NAME": "/shop",
    "wsgi.url_scheme": "https",
}
OUTCOME = Outcome("200 OK", [("Content-Type", "text/plain"), ("X-Out", "yes")], 1234, True)


def log_line(
    fmt: str,
    tmp_path: Path,
    request: Request | None = None,
    environ: dict[str, Any] | None = None,
    outcome: Outcome = OUTCOME,
    duration: float = 1.2345678,
) -> str:
    path = tmp_path / "access.log"
    path.unlink(missing_ok=True)
    access = AccessLog(str(path), fmt)
    access(request or make_request(), ENVIRON if environ is None else environ, outcome, duration)
    access.file.close()
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    return text[:-1]


# -- atoms ---------------------------------------------------------------------------------


def test_default_format_is_gunicorns_combined_format(tmp_path: Path) -> None:
    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    line = log_line(fmt, tmp_path)
    assert re.fullmatch(
        r"203\.0\.113\.9 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
        r'"GET /shop/items\?id=7 HTTP/1\.1" 200 1234 "http://ref\.example/" "curl/8\.0"',
        line,
    ), line


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "203.0.113.9"),
        ("l", "-"),
        ("u", "-"),
        ("r", "GET /shop/items?id=7 HTTP/1.1"),
        ("m", "GET"),
        ("U", "/items"),
        ("q", "id=7"),
        ("H", "HTTP/1.1"),
        ("s", "200"),
        ("B", "1234"),
        ("b", "1234"),
        ("f", "http://ref.example/"),
        ("a", "curl/8.0"),
        ("T", "1"),
        ("M", "1234"),
        ("D", "1234567"),
        ("L", "1.234568"),
        ("{x-trace}i", "abc"),
        ("{X-TRACE}i", "abc"),
        ("{x-missing}i", "-"),
        ("{x-out}o", "yes"),
        ("{Content-Type}o", "text/plain"),
        ("{x-missing}o", "-"),
        ("{SCRIPT_NAME}e", "/shop"),
        ("{script_name}e", "/shop"),
        ("{wsgi.url_scheme}e", "https"),
        ("{NOT_SET}e", "-"),
        ("z", "-"),
    ],
)
def test_atoms(tmp_path: Path, atom: str, expected: str) -> None:
    assert log_line(f"%({atom})s", tmp_path) == expected


def test_every_documented_atom_has_a_value(tmp_path: Path) -> None:
    token = base64.b64encode(b"dora:pw").decode()
    environ = dict(ENVIRON, HTTP_AUTHORIZATION=f"Basic {token}")
    examples = {"{header}i": "{X-Trace}i", "{header}o": "{X-Out}o", "{variable}e": "{PATH_INFO}e"}
    for atom in ATOMS:
        name = examples.get(atom, atom)
        value = log_line(f"%({name})s", tmp_path, environ=environ)
        assert value != "-" or atom == "l", atom


def test_t_is_the_current_time(tmp_path: Path) -> None:
    line = log_line("%(t)s", tmp_path)
    parsed = time.strptime(line, "[%d/%b/%Y:%H:%M:%S %z]")
    assert abs(time.mktime(parsed) - time.mktime(time.localtime())) < 120


def test_t_is_formatted_once_a_second_and_moves_on_with_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_700_000_000.25]
    monkeypatch.setattr(logs.time, "time", lambda: now[0])
    formatted: list[float] = []
    real_strftime = time.strftime

    def strftime(fmt: str, when: time.struct_time) -> str:
        formatted.append(now[0])
        return real_strftime(fmt, when)

    monkeypatch.setattr(logs.time, "strftime", strftime)
    first = log_line("%(t)s", tmp_path)
    now[0] += 0.5
    assert log_line("%(t)s", tmp_path) == first  # the same second: not formatted again
    assert formatted == [1_700_000_000.25]
    assert first == real_strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(1_700_000_000))
    now[0] += 1
    later = log_line("%(t)s", tmp_path)
    assert later == real_strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(1_700_000_001))
    assert len(formatted) == 2


def test_names_are_read_from_the_format_as_percent_reads_them(tmp_path: Path) -> None:
    # "%(a(b)c)s" names "a(b)c" (parentheses nest), an unknown atom: "-"; an escaped "%"
    # is text, not a name; a name used twice is computed once and written twice.
    assert AccessLog("-", '%(h)s %(a(b)c)s "%(r)s" %%(u)s %(h)s').atoms[1][0] == "a(b)c"
    line = log_line('%(h)s %(a(b)c)s "%(r)s" %%(u)s %(h)s', tmp_path)
    assert line == '203.0.113.9 - "GET /shop/items?id=7 HTTP/1.1" %(u)s 203.0.113.9'


def test_an_environ_variable_set_to_none_is_a_dash(tmp_path: Path) -> None:
    environ = {**ENVIRON, "X_NONE": None, "X_ZERO": 0}
    assert log_line("%({X_NONE}e)s %({x_zero}e)s", tmp_path, environ=environ) == "- 0"


def test_numeric_atoms_work_with_d_as_in_gunicorn(tmp_path: Path) -> None:
    assert log_line("%(D)d %(M)d %(T)d %(B)d", tmp_path) == "1234567 1234 1 1234"


def test_empty_body_b_is_dash_and_big_b_is_zero(tmp_path: Path) -> None:
    outcome = Outcome("204 No Content", [], 0, True)
    assert log_line("%(b)s %(B)s %(s)s", tmp_path, outcome=outcome) == "- 0 204"


def test_user_from_basic_auth_or_remote_user(tmp_path: Path) -> None:
    token = base64.b64encode(b"alice:secret").decode()
    environ = dict(ENVIRON, HTTP_AUTHORIZATION=f"Basic {token}")
    assert log_line("%(u)s", tmp_path, environ=environ) == "alice"
    environ["REMOTE_USER"] = "bob"
    assert log_line("%(u)s", tmp_path, environ=environ) == "bob"


@pytest.mark.parametrize(
    "header", ["Bearer abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"\xff:x").decode()]
)
def test_unusable_authorization_gives_no_user(header: str) -> None:
    assert remote_user({"HTTP_AUTHORIZATION": header}) is None


def test_quotes_in_values_are_escaped_as_gunicorn_does(tmp_path: Path) -> None:
    request = make_request([(b"User-Agent", b'evil" "injected')])
    line = log_line('"%(a)s"', tmp_path, request=request)
    assert line == '"evil\\" \\"injected"'


def test_repeated_request_headers_are_joined(tmp_path: Path) -> None:
    request = make_request([(b"X-A", b"1"), (b"x-a", b"2")])
    assert log_line("%({x-a}i)s", tmp_path, request=request) == "1, 2"


def test_refused_request_without_environ(tmp_path: Path) -> None:
    """A request the server refused is logged with an empty environ."""
    outcome = Outcome("400 bad request", [], 0, False)
    line = log_line('%(h)s "%(r)s" %(s)s %(U)s', tmp_path, environ={}, outcome=outcome)
    assert line == '- "GET /shop/items?id=7 HTTP/1.1" 400 /shop/items'


def test_a_format_that_fails_at_run_time_logs_why(tmp_path: Path) -> None:
    line = log_line("%(h)d", tmp_path)
    assert line.startswith("invalid access log format:")


# -- log files -----------------------------------------------------------------------------


def test_dash_means_the_default_stream_and_is_flushed() -> None:
    stream = io.StringIO()
    logfile = LogFile("-", stream)
    logfile.write("one\n")
    logfile.writelines(["two\n", "three\n"])
    logfile.flush()
    logfile.reopen()  # nothing to reopen
    assert stream.getvalue() == "one\ntwo\nthree\n"


def test_file_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("before\n")
    logfile = LogFile(str(path), io.StringIO())
    logfile.write("after\n")  # line buffered: on disk now
    assert path.read_text() == "before\nafter\n"
    logfile.close()


def test_reopen_after_rename_writes_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    logfile = LogFile(str(path), io.StringIO())
    logfile.write("old\n")
    path.rename(tmp_path / "app.log.1")
    logfile.write("still old\n")
    logfile.reopen()
    logfile.write("new\n")
    assert (tmp_path / "app.log.1").read_text() == "old\nstill old\n"
    assert path.read_text() == "new\n"
    logfile.close()


def test_failed_reopen_keeps_the_old_file_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "app.log"
    logfile = LogFile(str(path), io.StringIO())
    path.rename(tmp_path / "moved.log")
    directory.rmdir()
    with caplog.at_level(logging.ERROR, logger="brick.error"):
        logfile.reopen()  # must not raise
    assert "cannot reopen log file" in caplog.text
    logfile.write("kept\n")
    assert (tmp_path / "moved.log").read_text() == "kept\n"
    logfile.close()


def test_log_file_is_a_valid_wsgi_errors_stream(tmp_path: Path) -> None:
    logfile = LogFile(str(tmp_path / "errors.log"), io.StringIO())

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        errors = environ["wsgi.errors"]
        errors.write("one\n")
        errors.writelines(["two\n"])
        errors.flush()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": logfile,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    result = validator(app)(environ, lambda status, headers, exc_info=None: None)
    assert b"".join(result) == b"ok"
    result.close()  # type: ignore[attr-defined]
    assert (tmp_path / "errors.log").read_text() == "one\ntwo\n"
    logfile.close()


def test_concurrent_writes_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "busy.log"
    logfile = LogFile(str(path), io.StringIO())
    line = "x" * 5000 + "\n"

    def writer() -> None:
        for _ in range(200):
            logfile.write(line)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    logfile.close()
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 800 and set(lines) == {line}


@pytest.fixture
def brick_logger() -> Iterator[None]:
    logger = logging.getLogger("brick")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        logfile = getattr(handler, "logfile", None)
        if isinstance(logfile, LogFile):
            logfile.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.mark.usefixtures("brick_logger")
def test_error_log_level_filtering_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    setup_error_log(str(path), "warning")
    log = logging.getLogger("brick.error")
    log.info("quiet info")
    log.warning("loud warning")
    path.rename(tmp_path / "error.log.1")
    reopen_logs()
    log.error("after rotation")
    old, new = (tmp_path / "error.log.1").read_text(), path.read_text()
    assert "loud warning" in old and "quiet info" not in old
    assert "after rotation" in new and "loud warning" not in new
    assert re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[ERROR\] ", new)


# -- --debug-http --------------------------------------------------------------------------


def test_debug_http_prints_heads_the_series_way() -> None:
    stream = io.StringIO()
    show = debug_http_printer(stream)
    show("<", b"GET /hello HTTP/1.1\r\nHost: localhost\r\n")
    show(">", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n")
    assert stream.getvalue() == (
        "< GET /hello HTTP/1.1\n< Host: localhost\n\n> HTTP/1.1 200 OK\n> Content-Length: 6\n\n"
    )


def test_debug_http_works_on_the_error_log_file(tmp_path: Path) -> None:
    logfile = LogFile(str(tmp_path / "e.log"), io.StringIO())
    debug_http_printer(logfile)("<", b"GET / HTTP/1.1\r\n")  # type: ignore[arg-type]
    assert (tmp_path / "e.log").read_text() == "< GET / HTTP/1.1\n\n"
    logfile.close()
