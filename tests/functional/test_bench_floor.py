"""The benchmark's Python floor (bench/floor.py) answers what the real servers answer, so its
figures are for the same work: the bare app's /hello, with keep-alive and with a close."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import ServerProcess, ServerSpec  # noqa: E402

pytestmark = pytest.mark.functional

HELLO = b"Hello world from a simple WSGI application!\n"


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, what came after) of one Content-Length response."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return head, rest[:length], rest[length:]


def test_the_floor_serves_the_bare_app_with_keep_alive_and_with_close(tmp_path: Path) -> None:
    with ServerProcess(ServerSpec("floor"), "wsgi", tmp_path, cpu=None) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            for _ in range(3):  # one connection, one request after another
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                head, body, extra = read_response(sock)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                assert body == HELLO
                assert extra == b""
        for request in (  # the header in any place (wrk sends its headers in any order)
            b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /hello HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
        ):
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                sock.sendall(request)
                head, body, extra = read_response(sock)
                assert b"\r\nConnection: close" in head
                assert body == HELLO
                assert extra == b"" and sock.recv(1) == b""  # and the connection ends there
        assert len(server.tree()) == 1  # one process, as the report counts it
