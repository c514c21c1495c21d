"""The error log (stdlib logging) and the access log (gunicorn's format atoms).

The access log costs nothing when it is off: the connection only calls it when configured,
and when on, an atom is computed only if the format uses it. Log files are opened in append
mode and reopened on USR1 (log rotation: rename the file, send USR1, new lines go to a new
file at the old name). The error log's `LogFile` is also the app's `wsgi.errors` stream.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

from brick.parser import Request
from brick.wsgi import Outcome

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


class LogFile:
    """A log destination that can be reopened: '-' is the given stream, else a file path.

    It has write/writelines/flush, so it can serve as `wsgi.errors` (PEP 3333); writes are
    serialised, since app threads may write while the loop thread logs.
    """

    def __init__(self, target: str, default: IO[str]) -> None:
        self.target = target
        self.default = default
        self.stream: IO[str] = default
        self.lock = threading.Lock()
        if target != "-":
            self.stream = self._open()

    def _open(self) -> IO[str]:
        return open(self.target, "a", buffering=1, encoding="utf-8", errors="replace")

    def reopen(self) -> None:
        """Open the file again at its path. If that fails the old file stays in use, and the
        failure is logged: log rotation must never take a process down."""
        if self.target == "-":
            return
        try:
            new = self._open()
        except OSError as exc:
            logging.getLogger("brick.error").error(
                "cannot reopen log file %s: %s; still writing to the old one",
                self.target,
                exc.strerror,
            )
            return
        with self.lock:
            old, self.stream = self.stream, new
        old.close()

    def write(self, text: str) -> None:
        with self.lock:
            self.stream.write(text)
            if self.target == "-":
                self.stream.flush()

    def writelines(self, lines: Iterable[str]) -> None:
        with self.lock:
            self.stream.writelines(lines)
            if self.target == "-":
                self.stream.flush()

    def flush(self) -> None:
        with self.lock:
            self.stream.flush()

    def close(self) -> None:
        """Close the file (never the default stream); later writes go to the default."""
        with self.lock:
            old, self.stream = self.stream, self.default
        if old is not self.default:
            old.close()


class _LogFileHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to a LogFile; reopening the file needs nothing from the handler."""

    def __init__(self, logfile: LogFile) -> None:
        super().__init__(logfile)
        self.logfile = logfile


def setup_error_log(target: str, level: str) -> LogFile:
    """Configure the `brick` logger tree. Returns the file, also used as `wsgi.errors`."""
    logfile = LogFile(target, sys.stderr)
    handler = _LogFileHandler(logfile)
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    logger = logging.getLogger("brick")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logfile


def reopen_logs() -> None:
    """USR1: reopen the error log. (Each worker reopens its access log itself.)"""
    for handler in logging.getLogger("brick").handlers:
        if isinstance(handler, _LogFileHandler):
            handler.logfile.reopen()


# -- the access log ---------------------------------------------------------------------

# gunicorn's atoms, for the docs; `_Atoms.__missing__` computes each.
ATOMS: dict[str, str] = {
    "h": "remote address (the client's, after X-Forwarded-For from a trusted proxy)",
    "l": "`-`",
    "u": "user name: REMOTE_USER, else the Basic auth user, else `-`",
    "t": "time of the request, `[10/Oct/2000:13:55:36 +0000]`",
    "r": "request line, `GET /path?q HTTP/1.1`",
    "m": "request method",
    "U": "URL path without the query string (PATH_INFO)",
    "q": "query string",
    "H": "protocol, `HTTP/1.1`",
    "s": "status code",
    "B": "response body length",
    "b": "response body length, or `-` when 0 (CLF)",
    "f": "Referer header",
    "a": "User-Agent header",
    "T": "request time, whole seconds",
    "M": "request time, milliseconds",
    "D": "request time, microseconds",
    "L": "request time, decimal seconds",
    "p": "process id, `<1234>`",
    "{header}i": "a request header",
    "{header}o": "a response header",
    "{variable}e": "an environ variable",
}


def remote_user(environ: dict[str, Any]) -> str | None:
    """REMOTE_USER, else the user name of Basic auth (gunicorn's `u` atom)."""
    user = environ.get("REMOTE_USER")
    if user:
        return str(user)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True)
        return decoded.split(b":", 1)[0].decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


class _Atoms(dict[str, object]):
    """Computes gunicorn's access-log atoms on demand, so unused atoms cost nothing.

    Values are escaped as gunicorn does (`"` becomes `\\"`), so a quoted field stays one
    field. T, D, M and B are integers, so `%(D)d` works as with gunicorn.
    """

    def __init__(
        self, request: Request, environ: dict[str, Any], outcome: Outcome, duration: float
    ) -> None:
        super().__init__()
        self.request = request
        self.environ = environ
        self.outcome = outcome
        self.duration = duration

    def _header(self, name: str) -> str:
        wanted = name.lower().encode("latin-1", "replace")
        values = [v.decode("latin-1") for k, v in self.request.headers if k.lower() == wanted]
        return ", ".join(values) if values else "-"

    def __missing__(self, key: str) -> object:
        request, environ, outcome = self.request, self.environ, self.outcome
        value: object
        if key == "h":
            value = environ.get("REMOTE_ADDR") or "-"
        elif key == "l":
            value = "-"
        elif key == "u":
            value = remote_user(environ) or "-"
        elif key == "t":
            value = time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
        elif key == "r":
            value = f"{request.method} {request.target} {request.version}"
        elif key == "m":
            value = request.method
        elif key == "U":
            value = environ.get("PATH_INFO", request.path)
        elif key == "q":
            value = request.query
        elif key == "H":
            value = request.version
        elif key == "s":
            value = outcome.status.split(" ", 1)[0]
        elif key == "B":
            value = outcome.body_bytes
        elif key == "b":
            value = str(outcome.body_bytes) if outcome.body_bytes else "-"
        elif key == "f":
            value = self._header("referer")
        elif key == "a":
            value = self._header("user-agent")
        elif key == "T":
            value = int(self.duration)
        elif key == "D":
            value = int(self.duration * 1_000_000)
        elif key == "M":
            value = int(self.duration * 1000)
        elif key == "L":
            value = f"{self.duration:.6f}"
        elif key == "p":
            value = f"<{os.getpid()}>"
        elif key.startswith("{") and key.endswith("}i"):
            value = self._header(key[1:-2])
        elif key.startswith("{") and key.endswith("}o"):
            wanted = key[1:-2].lower()
            value = ", ".join(v for n, v in outcome.headers if n.lower() == wanted) or "-"
        elif key.startswith("{") and key.endswith("}e"):
            name = key[1:-2]
            found = environ.get(name, environ.get(name.upper()))
            value = "-" if found is None else str(found)
        else:
            value = "-"
        if type(value) is str and '"' in value:
            value = value.replace('"', '\\"')
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
