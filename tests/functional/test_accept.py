"""How a worker's listener takes the connections waiting in its accept queue.

Real sockets on 127.0.0.1, driven in this process: the test decides when the listener wakes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from brick.connection import Service
from brick.loop import EVENT_READ, EventLoop
from brick.worker import Listener
from brick.wsgi import EnvironBuilder

pytestmark = pytest.mark.functional

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
TIMEOUT = 10.0


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "6")])
    return [b"hello\n"]


class CountedAccept:
    """The listener's accept, counting the calls and those that found nothing."""

    def __init__(self, accept: Callable[[], tuple[int, Any]]) -> None:
        self.accept = accept
        self.calls = 0
        self.empty = 0

    def __call__(self) -> tuple[int, Any]:
        self.calls += 1
        try:
            return self.accept()
        except BlockingIOError:
            self.empty += 1
            raise


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    loop = EventLoop()
    yield loop
    loop.close()


def listening(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def listener_on(sock: socket.socket, loop: EventLoop) -> tuple[Listener, CountedAccept]:
    service = Service(app=app, loop=loop)
    builder = EnvironBuilder(server_name="127.0.0.1", server_port="0")
    listener = Listener(sock, service, builder, 1000)
    counted = CountedAccept(listener._accept)
    listener._accept = counted
    return listener, counted


def clients_waiting(sock: socket.socket, count: int) -> list[socket.socket]:
    """`count` clients that connected and sent their request, and an accept queue holding
    them all (the kernel finishes each handshake on its own time)."""
    clients = []
    for _ in range(count):
        client = socket.socket(sock.family, socket.SOCK_STREAM)
        client.settimeout(TIMEOUT)
        client.connect(sock.getsockname())
        client.sendall(REQUEST)
        clients.append(client)
    deadline = time.monotonic() + TIMEOUT
    while queue_length(sock) < count:
        assert time.monotonic() < deadline, "the clients never reached the accept queue"
        time.sleep(0.01)
    return clients


def queue_length(sock: socket.socket) -> int:
    if sock.family == socket.AF_UNIX:
        return 1 << 30  # no way to ask; connect() returning means the client is queued
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 28)
    return int.from_bytes(info[24:28], "little")


def answered(clients: list[socket.socket]) -> list[bytes]:
    bodies = []
    for client in clients:
        with client:
            data = b""
            while chunk := client.recv(4096):
                data += chunk
        bodies.append(data.rpartition(b"\r\n\r\n")[2])
    return bodies


def test_a_wake_up_takes_the_waiting_connections_without_an_empty_accept(
    loop: EventLoop,
) -> None:
    # An accept that finds the queue empty costs the kernel a socket and a file it then
    # throws away. The listener asks how many wait and takes exactly those.
    with listening(socket.AF_INET, ("127.0.0.1", 0)) as sock:
        listener, counted = listener_on(sock, loop)
        clients = clients_waiting(sock, 5)
        listener.handle_event(EVENT_READ)
        assert (counted.calls, counted.empty) == (5, 0)
        assert answered(clients) == [b"hello\n"] * 5


def test_a_count_that_lags_still_takes_one(loop: EventLoop, monkeypatch: Any) -> None:
    # The kernel says none wait, though the loop was woken for one: one accept is tried.
    with listening(socket.AF_INET, ("127.0.0.1", 0)) as sock:
        listener, counted = listener_on(sock, loop)
        monkeypatch.setattr(listener, "_queue_info", lambda: bytes(28))
        clients = clients_waiting(sock, 2)
        listener.handle_event(EVENT_READ)
        assert (counted.calls, counted.empty) == (1, 0)
        listener.handle_event(EVENT_READ)
        assert (counted.calls, counted.empty) == (2, 0)
        assert answered(clients) == [b"hello\n"] * 2


def test_where_the_kernel_does_not_tell_every_waiting_connection_is_taken(
    loop: EventLoop, tmp_path: Any
) -> None:
    # A Unix socket has no TCP_INFO: the listener takes connections until the queue is empty.
    with listening(socket.AF_UNIX, str(tmp_path / "s")) as sock:
        listener, counted = listener_on(sock, loop)
        clients = clients_waiting(sock, 3)
        listener.handle_event(EVENT_READ)
        assert (counted.calls, counted.empty) == (4, 1)
        assert answered(clients) == [b"hello\n"] * 3
