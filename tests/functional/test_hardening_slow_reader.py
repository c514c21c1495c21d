"""Slow readers: a client that stops reading its response must not stall the worker's other
clients. brick buffers what the kernel will not take and flushes it from the event loop; a
client that never reads is dropped after --send-timeout.
"""

from __future__ import annotations

import socket
import time

import pytest
from conftest import BRICK, FIXTURE_APPS, Server
from stress.loadgen import timed_get

pytestmark = pytest.mark.functional

APP = ["hard_app:app", "--chdir", str(FIXTURE_APPS), "--root-path", "/wsgi"]
TIMEOUT = 30.0


def start(serve: object, *options: str) -> Server:
    srv: Server = serve(BRICK, [*APP, *options])  # type: ignore[operator]
    timed_get(srv.address)
    return srv


# How long a normal request may take while another client of the same worker refuses to read
# its response. A stall shows as the whole --send-timeout (20 s here), far above this.
STALL_LIMIT_S = 2.0


# The connection's socket is not made non-blocking: every send says MSG_DONTWAIT, and only
# the file route (os.sendfile, no flags) needs the descriptor non-blocking. Each route takes
# one of the three ways out: send, sendmsg, sendfile.
@pytest.mark.parametrize(
    "route", ["big", "blob", "file"], ids=["streamed", "one-piece", "file-wrapper"]
)
def test_a_client_that_stops_reading_does_not_stall_others(serve: object, route: str) -> None:
    """One worker, one (default) thread: a client asks for 64 MiB and never reads it."""
    srv = start(serve, "--workers", "1", "--send-timeout", "20")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(TIMEOUT)
    slow.connect(srv.address)
    try:
        slow.sendall(
            b"GET /wsgi/%s?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (route.encode(), 64 << 20)
        )
        time.sleep(1.0)  # on purpose: the server fills the socket buffers and must then wait
        worst = max(timed_get(srv.address, timeout=TIMEOUT) for _ in range(5))
        print(f"\nslow reader of a {route} response: worst normal latency {worst * 1000:.0f} ms")
        assert worst < STALL_LIMIT_S, f"a normal request waited {worst:.1f} s behind a slow reader"
    finally:
        slow.close()
    assert srv.proc.poll() is None
