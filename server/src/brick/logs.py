"""The error log (stdlib logging) and the access log (gunicorn's format atoms).

The access log costs nothing when it is off: the connection only calls it when configured.
Log files are opened in append mode and can be reopened (USR1) for log rotation.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import IO, Any

from brick.parser import Request
from brick.wsgi import Outcome

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


class LogFile:
    """A log destination that can be reopened: '-' is stdout/stderr, else a file path."""

    def __init__(self, target: str, default: IO[str]) -> None:
        self.target = target
        self.default = default
        self.stream: IO[str] = default
        self.reopen()

    def reopen(self) -> None:
        if self.target == "-":
            self.stream = self.default
            return
        old = self.stream
        self.stream = open(self.target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        if old is not self.default:
            old.close()

    def write(self, text: str) -> None:
        self.stream.write(text)
        if self.target == "-":
            self.stream.flush()


class _ReopenableHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, logfile: LogFile) -> None:
        super().__init__(logfile.stream)
        self.logfile = logfile

    def reopen(self) -> None:
        self.acquire()
        try:
            self.logfile.reopen()
            self.setStream(self.logfile.stream)
        finally:
            self.release()


def setup_error_log(target: str, level: str) -> LogFile:
    """Configure the `brick` logger tree. Returns the file, also used as `wsgi.errors`."""
    logfile = LogFile(target, sys.stderr)
    handler = _ReopenableHandler(logfile)
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    logger = logging.getLogger("brick")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logfile


def reopen_logs() -> None:
    for handler in logging.getLogger("brick").handlers:
        if isinstance(handler, _ReopenableHandler):
            handler.reopen()


class _Atoms(dict[str, str]):
    """Computes gunicorn's access-log atoms on demand, so unused atoms cost nothing."""

    def __init__(
        self, request: Request, environ: dict[str, Any], outcome: Outcome, duration: float
    ) -> None:
        super().__init__()
        self.request = request
        self.environ = environ
        self.outcome = outcome
        self.duration = duration

    def _header(self, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for key, value in self.request.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return "-"

    def __missing__(self, key: str) -> str:
        request, environ, outcome = self.request, self.environ, self.outcome
        value: str
        if key == "h":
            value = environ.get("REMOTE_ADDR") or "-"
        elif key == "l":
            value = "-"
        elif key == "u":
            value = environ.get("REMOTE_USER") or "-"
        elif key == "t":
            value = time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
        elif key == "r":
            value = f"{request.method} {request.target} {request.version}"
        elif key == "m":
            value = request.method
        elif key == "U":
            value = request.path
        elif key == "q":
            value = request.query
        elif key == "H":
            value = request.version
        elif key == "s":
            value = outcome.status.split(" ", 1)[0]
        elif key == "B":
            value = str(outcome.body_bytes)
        elif key == "b":
            value = str(outcome.body_bytes) if outcome.body_bytes else "-"
        elif key == "f":
            value = self._header("referer")
        elif key == "a":
            value = self._header("user-agent")
        elif key == "T":
            value = str(int(self.duration))
        elif key == "D":
            value = str(int(self.duration * 1_000_000))
        elif key == "M":
            value = str(int(self.duration * 1000))
        elif key == "L":
            value = f"{self.duration:.6f}"
        elif key == "p":
            value = f"<{os.getpid()}>"
        elif key.startswith("{") and key.endswith("}i"):
            value = self._header(key[1:-2])
        elif key.startswith("{") and key.endswith("}o"):
            wanted = key[1:-2].lower()
            value = next((v for n, v in outcome.headers if n.lower() == wanted), "-")
        elif key.startswith("{") and key.endswith("}e"):
            value = str(environ.get(key[1:-2], "-"))
        else:
            value = "-"
        self[key] = value
        return value


class AccessLog:
    def __init__(self, target: str, fmt: str) -> None:
        self.file = LogFile(target, sys.stdout)
        self.fmt = fmt

    def __call__(
        self, request: Request, environ: dict[str, Any], outcome: Outcome, duration: float
    ) -> None:
        try:
            line = self.fmt % _Atoms(request, environ, outcome, duration)
        except (ValueError, TypeError) as exc:
            line = f"invalid access log format: {exc}"
        self.file.write(line + "\n")

    def reopen(self) -> None:
        self.file.reopen()


def debug_http_printer(stream: IO[str]) -> Any:
    """`--debug-http`: print heads the way the series did (`< GET /` ... `> HTTP/1.1 200 OK`)."""

    def show(direction: str, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        stream.write("".join(f"{direction} {line}\n" for line in lines if line) + "\n")
        stream.flush()

    return show
