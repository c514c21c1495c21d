"""Shared test fixtures: start a server process on a socket the test already bound.

The test binds 127.0.0.1 port 0 and listens before the server starts, then hands the
socket to the server as `--bind fd://N`. Connections made before the server is ready
wait in the backlog, so no test sleeps or polls for start-up, and no port can race.
brick and gunicorn both accept `fd://N`, so the same helper serves both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "apps"
FIXTURE_APPS = Path(__file__).resolve().parent / "apps"

BRICK = [sys.executable, "-m", "brick"]
GUNICORN = [sys.executable, "-m", "gunicorn"]


@dataclass
class Server:
    """A server process listening on `host:port`, with its stderr in `log_path`."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    stdout_path: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(self.address, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def start_server(
    command: list[str],
    args: list[str],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Server:
    """Start `command + args + ['--bind', 'fd://N']` on a freshly bound socket."""
    sock = bound_socket(host)
    port = sock.getsockname()[1]
    logdir = Path(tempfile.mkdtemp(prefix="brick-test-"))
    log_path = logdir / "stderr.log"
    stdout_path = logdir / "stdout.log"
    full_env = dict(os.environ)
    full_env.pop("PORT", None)
    full_env.pop("WEB_CONCURRENCY", None)
    full_env.pop("BRICK_CMD_ARGS", None)
    full_env.pop("GUNICORN_CMD_ARGS", None)
    if env:
        full_env.update(env)
    with open(log_path, "wb") as err, open(stdout_path, "wb") as out:
        proc = subprocess.Popen(
            [*command, *args, "--bind", f"fd://{sock.fileno()}"],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=err,
            pass_fds=(sock.fileno(),),
        )
    sock.close()
    return Server(proc, host, port, log_path, stdout_path)


@pytest.fixture
def serve() -> Iterator[object]:
    """`serve(command, args, cwd=..., env=...)` starts a server; all are stopped after the test."""
    started: list[Server] = []

    def _serve(
        command: list[str],
        args: list[str],
        *,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> Server:
        server = start_server(command, args, cwd=cwd, env=env, host=host)
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()
