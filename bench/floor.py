"""The floor: the least CPU a WSGI server written in Python spends on a request here.

Not a server to use. It reads one request per read (the whole head, no body), calls the app
with a copy of one prepared environ, and sends what the app returns. It checks nothing and
has no limits, timeouts, request bodies, chunked encoding, pipelining or error handling. What
it does do, every Python server must do too: accept, read, call the app, send, close, with
the same system calls and the same kernel help brick takes (TCP_DEFER_ACCEPT, TCP_NODELAY, up
to 64 accepts per wake-up, as many as the accept queue holds, the FIN riding on the last
segment through MSG_MORE, one epoll loop). Measured beside the real servers, it shows the
part of a request's cost that no Python server can remove, the kernel's and the
interpreter's, and so what is left for a server's own code to win.

    cd apps/wsgi && python path/to/bench/floor.py wsgiapp:app --bind 127.0.0.1:8000
"""

from __future__ import annotations

import _socket
import argparse
import importlib
import io
import os
import select
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

RECV_SIZE = 64 * 1024
ACCEPT_BATCH = 64
# As brick does: TCP_INFO of a listener gives its accept queue's length at this offset, so a
# wake-up takes what waits, asking again when that is taken, without an accept that finds
# the queue empty (brick's worker.Listener).
_QUEUED_AT = 24
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
# As brick does: accepted sockets stay blocking in the kernel, and every recv and send says
# MSG_DONTWAIT, which spares an ioctl per connection (see brick's worker.Listener).
_DONTWAIT = socket.MSG_DONTWAIT

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def load(target: str) -> App:
    """`module:name`, imported from the current folder as a server would."""
    module, _, name = target.partition(":")
    sys.path.insert(0, os.getcwd())
    app: App = getattr(importlib.import_module(module), name or "app")
    return app


class Floor:
    def __init__(self, app: App, host: str, port: int) -> None:
        self.app = app
        self.listener = socket.create_server((host, port), backlog=1024)
        self.listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        self.listener.setblocking(False)
        family, kind = int(self.listener.family), int(self.listener.type)
        self.kind = (family, kind | socket.SOCK_NONBLOCK, self.listener.proto)
        port = self.listener.getsockname()[1]
        self.base = {
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SCRIPT_NAME": "",
            "HTTP_HOST": f"{host}:{port}",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        self.epoll = select.epoll()
        self.clients: dict[int, _socket.socket] = {}
        self.response: list[Any] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        self.response = [status, headers]

    def serve_forever(self) -> None:
        listen_fd = self.listener.fileno()
        accept = self.listener._accept  # type: ignore[attr-defined]
        epoll, clients, answer = self.epoll, self.clients, self.answer
        info = self.listener.getsockopt
        epoll.register(listen_fd, select.EPOLLIN)
        while True:
            for fd, _ in epoll.poll():
                if fd != listen_fd:
                    sock = clients[fd]
                    if not answer(sock):
                        del clients[fd]
                    continue
                waiting = 0
                for taken in range(ACCEPT_BATCH):
                    if not waiting:
                        queued = info(socket.IPPROTO_TCP, socket.TCP_INFO, _QUEUED_AT + 4)
                        waiting = int.from_bytes(queued[_QUEUED_AT:], sys.byteorder)
                        if not waiting:
                            if taken:
                                break
                            waiting = 1
                    waiting -= 1
                    try:
                        new_fd, _addr = accept()
                    except BlockingIOError:
                        break
                    sock = _socket.socket(*self.kind, new_fd)
                    if answer(sock):
                        clients[new_fd] = sock
                        epoll.register(new_fd, select.EPOLLIN)

    def answer(self, sock: _socket.socket) -> bool:
        """Answer the request the client sent, if any; False once the connection is closed."""
        try:
            data = sock.recv(RECV_SIZE, _DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            sock.close()
            return False
        line = data.partition(b"\r\n")[0]
        method, target, _ = line.split(b" ", 2)
        path, _, query = target.partition(b"?")
        # In the whole head, not after the request line: the header may be the first one.
        close = b"\nConnection: close" in data or b"\nconnection: close" in data
        environ = self.base.copy()
        environ["REQUEST_METHOD"] = method.decode("latin-1")
        environ["PATH_INFO"] = path.decode("latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["wsgi.input"] = io.BytesIO()
        body = self.app(environ, self.start_response)
        try:
            data = b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        status, response_headers = self.response
        head = "".join([f"HTTP/1.1 {status}\r\n", *[f"{k}: {v}\r\n" for k, v in response_headers]])
        if close:
            sock.send(
                f"{head}Connection: close\r\n\r\n".encode("latin-1") + data, _MSG_MORE | _DONTWAIT
            )
            sock.close()
            return False
        sock.send(f"{head}\r\n".encode("latin-1") + data, _DONTWAIT)
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench/floor.py", description=__doc__.split("\n")[0])
    parser.add_argument("app", help="the WSGI app, module:name")
    parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port")
    args = parser.parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    Floor(load(args.app), host, int(port)).serve_forever()


if __name__ == "__main__":
    main()
