"""How each server is started, watched and stopped for a benchmark run.

A server is named `family` or `family-WxT` (W workers, T threads each; `1x1` when left out):

    brick             brick, the app called in the event-loop thread
    brick-1x4         brick --threads 4
    gunicorn-sync     gunicorn's sync worker (one request at a time, no keep-alive)
    gunicorn-gthread  gunicorn's gthread worker (keep-alive; threads)
    granian           granian --interface wsgi (Rust HTTP, the app on blocking threads)
    waitress          waitress (one process; threads)
    floor             bench/floor.py: not a server to use, the least a Python server can spend
                      (accept, read, call the app, send, close; no HTTP checks at all)

Every server runs from the interpreter running the benchmark (`sys.executable`), so all of
them run the same Python and the same app code, from the app's folder like `make run` does.
It is pinned to one core with `taskset`, listens on a free port on 127.0.0.1, and counts as
ready once `GET /healthz` answers 200 and its tree has all its processes; both waits are
bounded. It runs in a session of its own, so stopping it can reach every process it made.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procstat

ROOT = Path(__file__).resolve().parent.parent
APPS_DIR = ROOT / "apps"
APPS = {
    "wsgi": "wsgiapp:app",
    "flask": "flaskapp:app",
    "pyramid": "pyramidapp:app",
    "django": "djangoapp:app",
}
FAMILIES = ("brick", "gunicorn-sync", "gunicorn-gthread", "granian", "waitress", "floor")
MODULES = {
    "brick": "brick",
    "gunicorn-sync": "gunicorn",
    "gunicorn-gthread": "gunicorn",
    "granian": "granian",
    "waitress": "waitress",
    "floor": "bench.floor",
}
LABELS = {
    "brick": "brick",
    "gunicorn-sync": "gunicorn sync",
    "gunicorn-gthread": "gunicorn gthread",
    "granian": "granian",
    "waitress": "waitress",
    "floor": "Python floor",
}
ONE_PROCESS = ("waitress", "floor")
READY_TIMEOUT = 60.0  # seconds for a server to answer /healthz with every process up
STOP_TIMEOUT = 15.0  # seconds for a graceful stop before the whole session is killed
_NAME = re.compile(r"^([a-z-]+?)(?:-(\d+)x(\d+))?$")


class ServerError(RuntimeError):
    """A server did not start, died, or could not be measured."""


@dataclass(frozen=True)
class ServerSpec:
    family: str
    workers: int = 1
    threads: int = 1

    @property
    def key(self) -> str:
        if (self.workers, self.threads) == (1, 1):
            return self.family
        return f"{self.family}-{self.workers}x{self.threads}"

    @property
    def label(self) -> str:
        base = LABELS[self.family]
        if (self.workers, self.threads) == (1, 1):
            return base
        return f"{base} {self.workers}\u00d7{self.threads}"

    @property
    def config(self) -> str:
        """Workers x threads, the axis the report groups servers by."""
        return f"{self.workers}x{self.threads}"

    @property
    def module(self) -> str:
        return MODULES[self.family]

    @property
    def processes(self) -> int:
        """How many processes the tree has once every worker is up."""
        return 1 if self.family in ONE_PROCESS else self.workers + 1

    def command(self, app: str, host: str, port: int, python: str = sys.executable) -> list[str]:
        target = APPS[app]
        w, t = str(self.workers), str(self.threads)
        if self.family == "brick":
            return [python, "-m", "brick", target, "--bind", f"{host}:{port}",
                    "--workers", w, "--threads", t]  # fmt: skip
        if self.family == "gunicorn-sync":
            return [python, "-m", "gunicorn", target, "--bind", f"{host}:{port}",
                    "--workers", w, "--worker-class", "sync"]  # fmt: skip
        if self.family == "gunicorn-gthread":
            return [python, "-m", "gunicorn", target, "--bind", f"{host}:{port}",
                    "--workers", w, "--worker-class", "gthread", "--threads", t]  # fmt: skip
        if self.family == "granian":
            return [python, "-m", "granian", "--interface", "wsgi", "--host", host,
                    "--port", str(port), "--workers", w, "--blocking-threads", t,
                    "--runtime-threads", "1", "--http", "1", "--no-ws", target]  # fmt: skip
        if self.family == "waitress":
            return [python, "-m", "waitress", f"--listen={host}:{port}", f"--threads={t}",
                    target]  # fmt: skip
        if self.family == "floor":
            return [python, str(ROOT / "bench" / "floor.py"), target, "--bind", f"{host}:{port}"]
        raise ValueError(f"unknown server family {self.family!r}")


def parse_spec(name: str) -> ServerSpec:
    """`brick`, `gunicorn-gthread-1x4`, `waitress-1x8` … as a ServerSpec."""
    match = _NAME.match(name.strip())
    if match is None or match.group(1) not in FAMILIES:
        raise ValueError(f"unknown server {name!r}; families: {', '.join(FAMILIES)}")
    family = match.group(1)
    workers = int(match.group(2) or 1)
    threads = int(match.group(3) or 1)
    if workers < 1 or threads < 1:
        raise ValueError(f"{name!r}: workers and threads must be at least 1")
    if family == "gunicorn-sync" and threads != 1:
        raise ValueError(f"{name!r}: the sync worker has no threads; use gunicorn-gthread")
    if family == "waitress" and workers != 1:
        raise ValueError(f"{name!r}: waitress runs one process")
    if family == "floor" and (workers, threads) != (1, 1):
        raise ValueError(f"{name!r}: the floor is one process with one thread")
    return ServerSpec(family, workers, threads)


def installed(module: str, python: str = sys.executable) -> bool:
    """Whether `python` can import `module` (granian and waitress are optional)."""
    if python == sys.executable:
        return importlib.util.find_spec(module) is not None
    check = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, timeout=60, check=False
    )
    return check.returncode == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """`command` run under `taskset -c cpu` (unchanged when cpu is None)."""
    if cpu is None:
        return command
    taskset = shutil.which("taskset")
    if taskset is None:
        raise ServerError("taskset (util-linux) is needed to pin processes to a core")
    return [taskset, "-c", str(cpu), *command]


def http_status(host: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status of `GET path`, or None when the server does not answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ServerProcess:
    """One server serving one app, started and stopped by the benchmark."""

    def __init__(
        self,
        spec: ServerSpec,
        app: str,
        logdir: Path,
        cpu: int | None = 0,
        python: str = sys.executable,
        host: str = "127.0.0.1",
        extra_env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.app = app
        self.host = host
        self.port = free_port(host)
        self.cpu = cpu
        self.log_path = logdir / f"{app}-{spec.key}.log"
        self.command = command or spec.command(app, host, self.port, python)
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "PORT")}
        env.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-secret")
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                pinned(self.command, self.cpu),
                cwd=APPS_DIR / self.app,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        answered = False
        while time.monotonic() < deadline:
            self.check_alive()
            if not answered:
                answered = http_status(self.host, self.port, "/healthz") == 200
            if answered and len(self.tree()) >= self.spec.processes:
                return
            time.sleep(0.05)
        raise ServerError(
            f"{self.spec.key} serving {self.app} was not ready after {timeout:.0f} s"
            f" (answered /healthz: {answered}); log:\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerError(
                f"{self.spec.key} serving {self.app} exited with {self.proc.returncode};"
                f" log:\n{self.log_tail()}"
            )

    def tree(self) -> list[procstat.ProcStat]:
        return procstat.process_tree(self.pid)

    def cpu_ticks(self) -> int:
        return procstat.tree_cpu_ticks(self.tree())

    def memory(self) -> tuple[list[int], int | None]:
        """RSS in KiB of each worker, and of the master (None for a one-process server)."""
        tree = self.tree()
        workers = procstat.leaves(tree)
        master = None if len(tree) <= 1 else procstat.rss_kib(tree[0].pid)
        return [procstat.rss_kib(w.pid) for w in workers], master

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """TERM the server; KILL it, and any process of its own it left behind, if need be."""
        if self.proc is None:
            return
        pid = self.proc.pid
        tree = [stat.pid for stat in self.tree()] if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A worker the master left behind: only processes still in the server's own process
        # group (its session, from start_new_session) are ours to kill.
        for child in tree[1:]:
            stat = procstat.read_stat(child)
            if stat is not None and stat.pgrp == pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
