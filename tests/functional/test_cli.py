"""The `brick` command end to end: loading the app, every way that can fail, options and
their precedence, gunicorn command lines, and the listeners (TCP, IPv6, unix, fd://N)."""

from __future__ import annotations

import http.client
import os
import queue
import re
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from brick import __version__
from brick.config import Config
from conftest import BRICK, FIXTURE_APPS, ROOT, Server

pytestmark = pytest.mark.functional

Serve = Callable[..., Server]
TIMEOUT = 60.0
APPS = ["--chdir", str(FIXTURE_APPS)]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PORT", "WEB_CONCURRENCY", "BRICK_CMD_ARGS", "FORWARDED_ALLOW_IPS", "SCRIPT_NAME"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def run_brick(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | str = ROOT,
    command: list[str] = BRICK,
) -> subprocess.CompletedProcess[str]:
    """Run brick to completion (it must end by itself within TIMEOUT)."""
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def get(server: Server, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def raw_get(sock: socket.socket, path: str = "/hello") -> bytes:
    """One request with Connection: close over an already connected socket."""
    with sock:
        sock.settimeout(10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The run failed with `code` and said why in exactly one line on stderr."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("brick: error: "), result.stderr
    return lines[0]


# -- running the command -------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version_from_python_m_brick(flag: str) -> None:
    result = run_brick([flag])
    assert (result.returncode, result.stdout.strip()) == (0, f"brick {__version__}")


def test_the_brick_script_is_installed_and_runs() -> None:
    script = Path(sys.executable).parent / "brick"
    result = run_brick(["--version"], command=[str(script)])
    assert (result.returncode, result.stdout.strip()) == (0, f"brick {__version__}")
    result = run_brick(["cli_app", *APPS, "--check-config"], command=[str(script)])
    assert result.returncode == 0, result.stderr


def test_help_lists_every_option_with_its_help_text() -> None:
    result = run_brick(["--help"], env={"COLUMNS": "10000"})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for f in fields(Config):
        for flag in f.metadata["flags"]:
            assert flag in text, flag
        assert " ".join(f.metadata["help"].split()) in text, f.name
    for flag in ("--config", "--check-config", "--print-config", "--version"):
        assert flag in text


def test_no_app_is_one_line_and_exit_2() -> None:
    assert "no app given" in one_error_line(run_brick([]), 2)


# -- loading the app -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "body"),
    [
        ("cli_app", b"hello\n"),  # MODULE alone means MODULE:application
        ("cli_app:application", b"hello\n"),
        ("cli_app:factory()", b"made by factory\n"),
        ("cli_app:factory('hi', suffix='!')", b"hi!\n"),
    ],
)
def test_app_forms(serve: Serve, spec: str, body: bytes) -> None:
    server = serve(BRICK, [spec, *APPS])
    assert get(server, "/hello") == (200, body)


def test_pythonpath(serve: Serve, tmp_path: Path) -> None:
    server = serve(BRICK, ["cli_app:application", "--pythonpath", str(FIXTURE_APPS)], cwd=tmp_path)
    assert get(server, "/hello") == (200, b"hello\n")


def test_relative_pythonpath_is_relative_to_chdir(serve: Serve) -> None:
    server = serve(
        BRICK, ["cli_app:application", "--chdir", str(FIXTURE_APPS.parent), "--pythonpath", "apps"]
    )
    assert get(server, "/hello") == (200, b"hello\n")


def test_chdir_applies_to_relative_paths(serve: Serve, tmp_path: Path) -> None:
    server = serve(
        BRICK,
        ["cli_app", "--pythonpath", str(FIXTURE_APPS), "--chdir", str(tmp_path), "--pid", "p.pid"],
    )
    assert get(server, "/hello")[0] == 200
    assert (tmp_path / "p.pid").read_text().strip() == str(server.proc.pid)


def test_check_config_ok() -> None:
    result = run_brick(["cli_app:factory('x')", *APPS, "--check-config"])
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert result.stderr == ""


LOAD_FAILURES = [
    ("cli_no_such_module", "no module named 'cli_no_such_module'"),
    ("cli_app:nope", "module 'cli_app' has no attribute 'nope'"),
    ("cli_app:not_callable", "cli_app:not_callable is not callable"),
    ("cli_boom", "error importing 'cli_boom': RuntimeError: cli_boom fails on import"),
    ("cli_exit", "error importing 'cli_exit': SystemExit: 3"),
    ("cli_needs_dep", "No module named 'cli_no_such_dependency'"),
    ("cli_app:broken_factory()", "app factory cli_app:broken_factory failed: RuntimeError"),
    ("cli_app:factory(", "invalid app"),
]
MODES = {
    "check-config": ["--check-config"],
    "preload": ["--preload", "-b", "127.0.0.1:0"],
    "worker": ["-b", "127.0.0.1:0"],
    "two-workers": ["-w", "2", "-b", "127.0.0.1:0"],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("spec", "message"), LOAD_FAILURES)
def test_app_that_cannot_load(spec: str, message: str, mode: str) -> None:
    """Exit 1, the reason as the last line, no traceback; in the master (--check-config,
    --preload) that line is all there is, and when the worker loads the app the master
    still ends by itself (run_brick would time out otherwise)."""
    result = run_brick([spec, *APPS, *MODES[mode]])
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("brick: error: ") and message in last, result.stderr
    assert "Traceback" not in result.stderr
    if mode in ("check-config", "preload"):
        assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_traceback_only_at_debug_level(mode: str) -> None:
    result = run_brick(["cli_boom", *APPS, *MODES[mode], "--log-level", "debug"])
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'cli_boom.py", line 3' in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last == "brick: error: " + last.split("brick: error: ", 1)[1]
    assert "RuntimeError: cli_boom fails on import" in last


# -- invalid options: one line, exit 2 -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "-1"], "invalid value for --workers: '-1'"),
        (["--timeout", "abc"], "invalid value for --timeout: 'abc'"),
        (["--defer-accept", "-1"], "invalid value for --defer-accept: '-1'"),
        (["--defer-accept", "0.5"], "invalid value for --defer-accept: '0.5'"),
        (["-b", "127.0.0.1:notaport"], "invalid value for --bind: '127.0.0.1:notaport'"),
        (["-b", "::1:8000"], "IPv6 address needs brackets"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--log-level", "chatty"], "invalid value for --log-level: 'chatty'"),
        (["-c", "/nonexistent/brick.conf.py"], "config file not found: /nonexistent/brick.conf.py"),
        (["--chdir", "/nonexistent/dir"], "cannot change to directory '/nonexistent/dir'"),
        (["--access-logfile", "/nonexistent/dir/a.log"], "cannot open the access log"),
        (["--error-logfile", "/nonexistent/dir/e.log"], "cannot open the error log"),
        (["--access-logformat", "%(h)s %"], "invalid value for --access-logformat"),
    ],
)
def test_invalid_options(args: list[str], message: str) -> None:
    line = one_error_line(run_brick(["cli_app", *APPS, *args]), 2)
    assert message in line
    assert "usage:" not in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = (\n", "syntax error in config file"),
        ("workers = 'several'\n", "invalid value for workers in config file"),
        ("timeout = [1]\n", "invalid value for timeout in config file"),
        ("raise RuntimeError('nope')\n", "error in config file"),
    ],
)
def test_bad_config_file(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "brick.conf.py"
    conf.write_text(text)
    assert message in one_error_line(run_brick(["cli_app", *APPS, "-c", str(conf)]), 2)


def test_bad_environment_values_exit_2() -> None:
    line = one_error_line(run_brick(["cli_app", *APPS], env={"WEB_CONCURRENCY": "lots"}), 2)
    assert "$WEB_CONCURRENCY" in line
    line = one_error_line(run_brick(["cli_app", *APPS], env={"BRICK_CMD_ARGS": "--bogus"}), 2)
    assert "BRICK_CMD_ARGS" in line


# -- precedence and environment defaults (via --print-config) ------------------------------


def printed(args: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    result = run_brick([*args, "--print-config"], env=env)
    assert result.returncode == 0, result.stderr
    values = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition(" = ")
        values[name.strip()] = value
    return values


def test_precedence_with_one_option_at_every_level(tmp_path: Path) -> None:
    conf = tmp_path / "brick.conf.py"
    conf.write_text("workers = 3\n")
    assert printed(["cli_app"])["workers"] == "1"
    env = {"WEB_CONCURRENCY": "2"}
    assert printed(["cli_app"], env)["workers"] == "2"
    assert printed(["cli_app", "-c", str(conf)], env)["workers"] == "3"
    env["BRICK_CMD_ARGS"] = "-w 4"
    assert printed(["cli_app", "-c", str(conf)], env)["workers"] == "4"
    assert printed(["cli_app", "-c", str(conf), "-w", "5"], env)["workers"] == "5"


def test_default_bind_and_port_from_the_environment() -> None:
    assert printed(["cli_app"])["bind"] == "['127.0.0.1:8000']"
    assert printed(["cli_app"], {"PORT": "8123"})["bind"] == "['0.0.0.0:8123']"
    assert printed(["cli_app", "-b", "unix:/tmp/s"], {"PORT": "8123"})["bind"] == "['unix:/tmp/s']"


def test_other_environment_defaults() -> None:
    env = {"WEB_CONCURRENCY": "3", "FORWARDED_ALLOW_IPS": "10.1.1.1,*", "SCRIPT_NAME": "/m"}
    values = printed(["cli_app"], env)
    assert values["workers"] == "3"
    assert values["forwarded_allow_ips"] == "['10.1.1.1', '*']"
    assert values["root_path"] == "'/m'"


def test_print_config_is_a_config_file(tmp_path: Path) -> None:
    result = run_brick(["cli_app", "-w", "3", "--root-path", "/x", "--print-config"])
    conf = tmp_path / "printed.conf.py"
    conf.write_text(result.stdout)
    values = printed(["-c", str(conf)])
    assert (values["wsgi_app"], values["workers"], values["root_path"]) == (
        "'cli_app'",
        "3",
        "'/x'",
    )


# -- a gunicorn command line ---------------------------------------------------------------


def gunicorn_line(tmp_path: Path) -> list[str]:
    return shlex.split(
        "-w 2 --threads 2 -b 127.0.0.1:0 --timeout 20 --graceful-timeout 5 --keep-alive 5 "
        "--max-requests 100 --max-requests-jitter 10 --access-logfile - --error-logfile - "
        "--log-level info --limit-request-line 4094 --limit-request-fields 100 "
        "--limit-request-field_size 8190 --forwarded-allow-ips '*' --backlog 64 "
        f"--pid {tmp_path / 'brick.pid'} --chdir {FIXTURE_APPS} --pythonpath {FIXTURE_APPS} "
        "-n NAME --preload --reuse-port"
    )


def test_gunicorn_command_line_parses(tmp_path: Path) -> None:
    values = printed(["cli_app:application", *gunicorn_line(tmp_path)])
    assert values["workers"] == "2" and values["threads"] == "2"
    assert values["timeout"] == "20.0" and values["graceful_timeout"] == "5.0"
    assert values["max_requests"] == "100" and values["max_requests_jitter"] == "10"
    assert values["accesslog"] == "'-'" and values["errorlog"] == "'-'"
    assert values["limit_request_field_size"] == "8190" and values["backlog"] == "64"
    assert values["forwarded_allow_ips"] == "['*']" and values["proc_name"] == "'NAME'"
    assert values["preload_app"] == "True" and values["reuse_port"] == "True"
    assert values["pidfile"] == repr(str(tmp_path / "brick.pid"))


def test_gunicorn_command_line_serves(serve: Serve, tmp_path: Path) -> None:
    server = serve(BRICK, ["cli_app:application", *gunicorn_line(tmp_path)])
    for _ in range(3):
        assert get(server, "/hello") == (200, b"hello\n")
    assert (tmp_path / "brick.pid").read_text().strip() == str(server.proc.pid)
    assert server.stop() == 0
    assert server.stdout().count('"GET /hello HTTP/1.1" 200 6') == 3


# -- listeners -----------------------------------------------------------------------------


class Running:
    """brick started with its own --bind; its stderr is read line by line as it comes."""

    def __init__(self, args: list[str], cwd: Path | str = ROOT) -> None:
        self.proc = subprocess.Popen(
            [*BRICK, *args],
            cwd=cwd,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.seen)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(args: list[str], cwd: Path | str = ROOT) -> Running:
        started.append(Running(args, cwd))
        return started[-1]

    yield start
    for r in started:
        r.stop()


def test_bind_host_port(running: Callable[..., Running]) -> None:
    brick = running(["cli_app", *APPS, "-b", "127.0.0.1:0"])
    port = int(brick.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
    response = raw_get(socket.create_connection(("127.0.0.1", port), timeout=10))
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"hello\n")


def test_bind_ipv6_loopback(running: Callable[..., Running]) -> None:
    # This machine must be able to bind ::1; if it cannot, this test fails on purpose.
    assert socket.has_ipv6
    brick = running(["cli_app", *APPS, "-b", "[::1]:0"])
    port = int(brick.wait_for(r"Listening at: http://\[::1\]:(\d+)").group(1))
    sock = socket.create_connection(("::1", port), timeout=10)
    assert sock.family == socket.AF_INET6
    response = raw_get(sock, "/environ")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"REMOTE_ADDR": "::1"' in response


def unix_connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def test_bind_unix_socket_replacing_a_stale_one(
    running: Callable[..., Running], tmp_path: Path
) -> None:
    path = tmp_path / "brick.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays behind, as after a crash
    assert path.is_socket()
    brick = running(["cli_app", *APPS, "-b", f"unix:{path}"])
    brick.wait_for(re.escape(f"Listening at: unix:{path}"))
    response = raw_get(unix_connect(path))
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"hello\n")


def test_unix_socket_of_a_live_server_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "taken.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as owner:
        owner.bind(str(path))
        owner.listen(5)
        result = run_brick(["cli_app", *APPS, "-b", f"unix:{path}"])
        line = one_error_line(result, 1)
        assert line == f"brick: error: cannot listen on unix:{path}: " + line.split(": ", 3)[3]
        assert "listening" in line
        client = unix_connect(path)  # the first server still owns the path
        conn, _ = owner.accept()
        conn.close()
        client.close()


def test_unix_path_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("precious")
    line = one_error_line(run_brick(["cli_app", *APPS, "-b", f"unix:{path}"]), 1)
    assert f"cannot listen on unix:{path}" in line
    assert path.read_text() == "precious"


def test_repeated_bind_serves_on_every_address(
    running: Callable[..., Running], tmp_path: Path
) -> None:
    path = tmp_path / "both.sock"
    brick = running(["cli_app", *APPS, "-b", f"unix:{path}", "-b", "127.0.0.1:0"])
    brick.wait_for(re.escape(f"Listening at: unix:{path}"))
    port = int(brick.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
    assert raw_get(unix_connect(path)).endswith(b"hello\n")
    assert raw_get(socket.create_connection(("127.0.0.1", port), timeout=10)).endswith(b"hello\n")


def test_address_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_error_line(run_brick(["cli_app", *APPS, "-b", f"127.0.0.1:{port}"]), 1)
    assert line == f"brick: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_fd_that_is_not_a_socket(tmp_path: Path) -> None:
    with open(tmp_path / "file", "w") as fh:
        fd = fh.fileno()
        result = subprocess.run(
            [*BRICK, "cli_app", *APPS, "-b", f"fd://{fd}"],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            pass_fds=(fd,),
        )
    assert f"cannot listen on fd://{fd}" in one_error_line(result, 1)


def test_accepted_sockets_have_tcp_nodelay(serve: Serve) -> None:
    server = serve(BRICK, ["cli_app", *APPS])
    assert get(server, "/nodelay") == (200, b"1")


def listen_backlog(port: int) -> list[int]:
    """The backlog of each IPv4 TCP socket listening on `port`, from the kernel (sock_diag)."""
    netlink_sock_diag, sock_diag_by_family, tcp_listen = 4, 20, 10
    request = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 1 << tcp_listen)
    request += bytes(48)  # an all-zero socket id: every listening socket
    header = struct.pack("=LHHLL", 16 + len(request), sock_diag_by_family, 0x301, 1, 0)
    found: list[int] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, netlink_sock_diag) as nl:
        nl.settimeout(5)
        nl.send(header + request)
        for _ in range(1000):
            data = nl.recv(65536)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=LH", data, offset)
                if kind == 3:  # NLMSG_DONE
                    return found
                assert kind != 2, "netlink error"
                sport = struct.unpack_from("!H", data, offset + 20)[0]
                backlog = struct.unpack_from("=I", data, offset + 16 + 60)[0]
                if sport == port:
                    found.append(backlog)
                offset += (length + 3) & ~3
    raise AssertionError("no end of the netlink dump")


def test_backlog(serve: Serve) -> None:
    server = serve(BRICK, ["cli_app", *APPS, "--backlog", "37"])
    assert get(server, "/hello")[0] == 200  # the server is up: its listen() has run
    assert listen_backlog(server.port) == [37]
