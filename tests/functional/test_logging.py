"""Logs from a real server: the access log (stdout or a file, gunicorn's atoms), the error
log (stderr or a file, level filtering), --debug-http, and USR1 log rotation."""

from __future__ import annotations

import base64
import http.client
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BRICK, FIXTURE_APPS, Server

pytestmark = pytest.mark.functional

Serve = Callable[..., Server]
APP = ["cli_app", "--chdir", str(FIXTURE_APPS)]
CLF_TIME = r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"


def get(server: Server, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for_text(read: Callable[[], str], needle: str, timeout: float = 10.0) -> str:
    """A log line is written just after the response; give it a bounded moment to land."""
    deadline = time.monotonic() + timeout
    text = read()
    while needle not in text and time.monotonic() < deadline:
        time.sleep(0.05)
        text = read()
    assert needle in text, text
    return text


def read(path: Path) -> Callable[[], str]:
    return lambda: path.read_text() if path.exists() else ""


# -- the access log ------------------------------------------------------------------------


def test_access_log_to_stdout_in_the_default_format(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--access-logfile", "-"])
    headers = {"User-Agent": "probe/1.0", "Referer": "http://from.example/"}
    assert get(server, "/hello?x=1", headers) == (200, b"hello\n")
    assert server.stop() == 0
    lines = [line for line in server.stdout().splitlines() if "GET" in line]
    assert len(lines) == 1, server.stdout()
    assert re.fullmatch(
        rf'127\.0\.0\.1 - - {CLF_TIME} "GET /hello\?x=1 HTTP/1\.1" 200 6 '
        r'"http://from\.example/" "probe/1\.0"',
        lines[0],
    ), lines[0]
    assert "GET" not in server.log()  # the access log is not the error log


def test_access_log_format_atoms(serve: Serve, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    atoms = ["h", "l", "u", "t", "r", "s", "b", "f", "a", "T", "D", "M", "m", "U", "q", "H"]
    atoms += ["B", "p", "{X-Trace}i", "{x-out}o", "{SERVER_PROTOCOL}e"]
    fmt = "|".join(f"{atom}=%({atom})s" for atom in atoms)
    server = serve(BRICK, [*APP, "--access-logfile", str(log), "--access-logformat", fmt])
    auth = base64.b64encode(b"carol:pw").decode()
    headers = {"X-Trace": "t-42", "Authorization": f"Basic {auth}", "User-Agent": "ua"}
    assert get(server, "/status?code=201", headers)[0] == 201
    line = wait_for_text(read(log), "\n").strip()
    fields = dict(part.split("=", 1) for part in line.split("|"))
    assert fields["h"] == "127.0.0.1" and fields["l"] == "-" and fields["u"] == "carol"
    assert re.fullmatch(CLF_TIME, fields["t"])
    assert fields["r"] == "GET /status?code=201 HTTP/1.1"
    assert fields["s"] == "201" and fields["b"] == "6" and fields["B"] == "6"
    assert fields["f"] == "-" and fields["a"] == "ua"
    assert fields["m"] == "GET" and fields["U"] == "/status" and fields["q"] == "code=201"
    assert fields["H"] == "HTTP/1.1"
    assert fields["{X-Trace}i"] == "t-42" and fields["{x-out}o"] == "out-value"
    assert fields["{SERVER_PROTOCOL}e"] == "HTTP/1.1"
    assert re.fullmatch(r"<\d+>", fields["p"])
    assert fields["p"] != f"<{server.proc.pid}>"  # the worker, not the master
    t, d, m = int(fields["T"]), int(fields["D"]), int(fields["M"])
    assert 0 <= t <= 5 and 0 <= m <= 5000 and m == d // 1000


def test_refused_requests_are_logged_with_the_peer(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--access-logfile", "-", "--limit-request-body", "10"])
    with server.connect() as sock:
        # The head is fine; the chunked body passes the limit after the request began.
        sock.sendall(
            b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"20\r\n" + b"x" * 32 + b"\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
    with server.connect() as sock:
        # A refused HEAD gets the status and headers only: a body would desync the client.
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 99\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 413 ") and data.endswith(b"\r\n\r\n"), data
    assert server.stop() == 0
    lines = [line for line in server.stdout().splitlines() if " 413 " in line]
    assert len(lines) == 1, server.stdout()  # the HEAD was refused before its head was whole
    assert lines[0].startswith("127.0.0.1 - - [") and '"POST /up HTTP/1.1" 413' in lines[0]


def test_no_access_log_by_default(serve: Serve) -> None:
    server = serve(BRICK, APP)
    assert get(server, "/hello")[0] == 200
    assert server.stop() == 0
    assert "GET /hello" not in server.stdout() + server.log()


# -- the error log -------------------------------------------------------------------------


def test_error_log_to_a_file(serve: Serve, tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    server = serve(BRICK, [*APP, "--error-logfile", str(log)])
    assert get(server, "/errors?text=from-the-app") == (200, b"logged")
    assert server.stop() == 0
    text = log.read_text()
    assert "[INFO] Listening at: " in text and "[INFO] Booting worker with pid: " in text
    assert "from-the-app\n" in text  # wsgi.errors is the error log
    assert server.log() == ""  # nothing on stderr


def send_bad_request(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")


def test_log_level_info_is_the_default(serve: Serve) -> None:
    server = serve(BRICK, APP)
    send_bad_request(server)
    assert server.stop() == 0
    assert "[INFO] Listening at:" in server.log()
    assert "[DEBUG]" not in server.log()


def test_log_level_warning_hides_info(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--log-level", "warning"])
    send_bad_request(server)
    assert get(server, "/hello")[0] == 200
    assert server.stop() == 0
    assert "[INFO]" not in server.log() and "[DEBUG]" not in server.log()


def test_log_level_debug_shows_debug(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--log-level", "debug"])
    send_bad_request(server)
    assert server.stop() == 0
    assert re.search(r"\[DEBUG\] refused request from 127\.0\.0\.1: 400", server.log())


# -- --debug-http --------------------------------------------------------------------------


def test_debug_http_prints_request_and_response_heads(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--debug-http"])
    with server.connect() as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: example\r\nX-Probe: 1\r\n\r\n")
        sock.settimeout(10)
        data = b""
        while not data.endswith(b"hello\n"):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    assert server.stop() == 0
    log = server.log()
    request_head = "< GET /hello HTTP/1.1\n< Host: example\n< X-Probe: 1\n\n"
    assert request_head in log
    response = re.search(r"> HTTP/1\.1 200 OK\n(> [^\n]+\n)+\n", log)
    assert response, log
    head = response.group(0)
    assert "> Content-Length: 6\n" in head and "> Server: brick/" in head
    assert log.index(request_head) < response.start()
    assert "hello" not in head  # heads only, not bodies


def test_no_debug_http_by_default(serve: Serve) -> None:
    server = serve(BRICK, APP)
    assert get(server, "/hello")[0] == 200
    assert server.stop() == 0
    assert "< GET" not in server.log() and "> HTTP/1.1" not in server.log()


# -- USR1: reopen the log files ------------------------------------------------------------


def test_usr1_reopens_log_files(serve: Serve, tmp_path: Path) -> None:
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    server = serve(
        BRICK,
        [*APP, "-w", "2", "--access-logfile", str(access), "--error-logfile", str(errors)],
    )
    assert get(server, "/before")[0] == 200
    wait_for_text(read(access), "GET /before")
    access.rename(tmp_path / "access.log.1")
    errors.rename(tmp_path / "error.log.1")

    os.kill(server.proc.pid, signal.SIGUSR1)
    # The master forwards USR1 to the workers; each reopens at its next loop turn. Until
    # then a line may still go to the old file, so keep asking (bounded) until new files fill.
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline:
        n += 1
        assert get(server, f"/after-{n}")[0] == 200
        assert get(server, f"/errors?text=after-{n}")[0] == 200
        time.sleep(0.05)
        if read(access)().count("GET /after-") >= 2 and read(errors)().count("after-") >= 2:
            break
    assert server.stop() == 0

    old_access, new_access = (tmp_path / "access.log.1").read_text(), access.read_text()
    assert "GET /before" in old_access and "GET /before" not in new_access
    assert new_access.count("GET /after-") >= 2
    new_errors = errors.read_text()
    assert "Listening at" in (tmp_path / "error.log.1").read_text()
    assert "Listening at" not in new_errors
    assert "Handling signal: USR1" in new_errors  # the master reopened its error log
    assert "after-" in new_errors  # and so did the workers (their wsgi.errors)


def test_usr1_with_logs_on_stdout_and_stderr_is_harmless(serve: Serve) -> None:
    server = serve(BRICK, [*APP, "--access-logfile", "-"])
    assert get(server, "/up")[0] == 200  # the master has its signal handlers by now
    os.kill(server.proc.pid, signal.SIGUSR1)
    wait_for_text(server.log, "USR1")
    assert get(server, "/still-here")[0] == 200
    assert server.proc.poll() is None
    assert server.stop() == 0
    assert "GET /still-here" in server.stdout()
    assert "Traceback" not in server.log()
