"""Listening sockets: parse `--bind` addresses and open (or adopt) the sockets.

Forms: `HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`, `fd://N` (a socket inherited from the
process that started us, e.g. systemd or a test harness).
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Address:
    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse one `--bind` value; ValueError says what is wrong with it."""
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"empty unix socket path in {text!r}")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        num = text[5:]
        if not num.isdigit():
            raise ValueError(f"fd:// needs a file descriptor number, got {text!r}")
        return Address("fd", fd=int(num))
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, "8000"
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: [{host}]:{port_text}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {text!r}")
    return Address("tcp", host=host or "0.0.0.0", port=int(port_text))


def open_listener(address: Address, backlog: int, reuse_port: bool = False) -> socket.socket:
    """Create, bind and listen. The socket is non-blocking, ready for the event loop."""
    if address.kind == "fd":
        sock = socket.socket(fileno=address.fd)
        sock.listen(backlog)
    elif address.kind == "unix":
        try:
            if stat.S_ISSOCK(os.stat(address.path).st_mode):
                os.unlink(address.path)  # a stale socket from an earlier run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address.path)
        sock.listen(backlog)
    else:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, socktype, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, socktype, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    """A URL-ish name for log lines: `http://127.0.0.1:8000` or `unix:/run/app.sock`."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode()}"
    host, port = name[0], name[1]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def server_name_port(sock: socket.socket) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT defaults for requests without a Host header."""
    if sock.family == socket.AF_UNIX:
        return "localhost", "80"
    name = sock.getsockname()
    return str(name[0]), str(name[1])
