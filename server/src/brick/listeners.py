"""Listening sockets: parse `--bind` addresses and open (or adopt) the sockets.

Forms: `HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`, `fd://N` (a socket inherited from the
process that started us, e.g. systemd or a test harness). `HOST` alone and `[IPv6]` alone
mean port 8000, as gunicorn.

A unix socket file left by a server that is gone is replaced; one that a live server still
listens on is not (that is "address already in use"), nor is a file that is not a socket.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

DEFAULT_PORT = 8000


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
        if not (num.isascii() and num.isdigit()):
            raise ValueError(f"fd:// needs a file descriptor number, got {text!r}")
        return Address("fd", fd=int(num))
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else "?"
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
        host, port_text = text[1:end], rest[1:] if rest else str(DEFAULT_PORT)
        if ":" not in host:
            raise ValueError(f"expected an IPv6 address inside [], got {text!r}")
    else:
        if text.count(":") > 1:
            raise ValueError(f"an IPv6 address needs brackets, as in [::1]:8000; got {text!r}")
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, str(DEFAULT_PORT)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {text!r}")
    if not host:
        host = "0.0.0.0"
    elif any(c.isspace() for c in host):
        raise ValueError(f"invalid host in {text!r}")
    return Address("tcp", host=host, port=int(port_text))


def open_listener(address: Address, backlog: int, reuse_port: bool = False) -> socket.socket:
    """Create, bind and listen. The socket is non-blocking, ready for the event loop.

    Any failure is an OSError whose `filename` is the address, for a one-line message.
    """
    try:
        if address.kind == "fd":
            sock = socket.socket(fileno=address.fd)
        elif address.kind == "unix":
            _clear_stale_socket(address.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            infos = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, socktype, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, socktype, proto)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(address)) from None
    try:
        if address.kind == "unix":
            sock.bind(address.path)
        elif address.kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        if address.kind != "fd":
            sock.close()
        raise OSError(exc.errno, exc.strerror or str(exc), str(address)) from None
    return sock


def _clear_stale_socket(path: str) -> None:
    """Remove a unix socket file nobody listens on; refuse anything else in the way."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)  # left by a server that is gone
        except FileNotFoundError:
            pass
        return
    except OSError:
        pass  # e.g. a full backlog: someone is there
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another server is listening on this socket")


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
