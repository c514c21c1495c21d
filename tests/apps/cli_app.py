"""Fixture app for the CLI, logging and proxy tests.

Routes:
    /environ        JSON of the environ's string values
    /nodelay        "1" or "0": TCP_NODELAY on the socket this request arrived on
    /errors [text]  writes `text` and a newline to wsgi.errors, answers "logged"
    /status [code]  answers with that status and an X-Out: out-value header
    anything else   b"hello\\n"

`factory(greeting, suffix=...)` builds an app that answers `greeting + suffix + "\\n"`.
`not_callable` is not a WSGI app.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]
not_callable = 42


def _query(environ: dict[str, Any], name: str, default: str) -> str:
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _own_socket_nodelay(environ: dict[str, Any]) -> str:
    """Find this request's socket among the process's descriptors by its peer address."""
    peer = (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"]))
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # not a socket (or already closed)
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                if sock.getpeername()[:2] != peer:
                    continue
            except OSError:
                continue  # a listening socket has no peer
            return str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return "socket not found"


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    headers = [("Content-Type", "text/plain")]
    status = "200 OK"
    if path.endswith("/environ"):
        values = {k: v for k, v in environ.items() if isinstance(v, str)}
        body = json.dumps(values).encode()
        headers = [("Content-Type", "application/json")]
    elif path == "/nodelay":
        body = _own_socket_nodelay(environ).encode()
    elif path == "/errors":
        environ["wsgi.errors"].write(_query(environ, "text", "app wrote this") + "\n")
        environ["wsgi.errors"].flush()
        body = b"logged"
    elif path == "/status":
        code = _query(environ, "code", "200")
        status = f"{code} Whatever"
        headers.append(("X-Out", "out-value"))
        body = b"status"
    else:
        body = b"hello\n"
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


def factory(greeting: str = "made by factory", suffix: str = "") -> Callable[..., Any]:
    text = f"{greeting}{suffix}\n".encode()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = str(len(text))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", length)])
        return [text]

    return app


def broken_factory() -> Callable[..., Any]:
    raise RuntimeError("the factory broke")
