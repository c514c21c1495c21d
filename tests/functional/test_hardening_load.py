"""Slow clients, floods and memory: brick under abuse keeps serving everyone else.

- 500 slow-header and 500 slow-body connections at once, while a probe in its own process
  measures normal requests; slow heads are cut at the header timeout with 408, slow bodies
  that keep sending live on and are answered once complete.
- A connection limit (--worker-connections) turns excess clients into a kernel backlog queue
  (backpressure): the worker never holds more sockets than the limit, and the queued clients
  are served as soon as slots free up.
- A huge body is spooled to disk: the worker's peak RSS grows far less than the body size.
- Huge heads are refused with 431 without the worker buffering them.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BRICK, FIXTURE_APPS, Server
from stress.loadgen import (
    SlowClients,
    fd_count,
    raise_fd_limit,
    read_response,
    status_kib,
    timed_get,
    wait_for_children,
)

pytestmark = pytest.mark.functional

LOADGEN = Path(__file__).resolve().parent.parent / "stress" / "loadgen.py"
APP = ["hard_app:app", "--chdir", str(FIXTURE_APPS), "--root-path", "/wsgi"]
TIMEOUT = 30.0

# The bar issue 7 sets for normal clients while 1000 slow ones are connected. The machine has
# two cores shared by several people: when it is loaded this can fail for reasons that are not
# brick's. Report such a failure with the figure rather than raising this number.
P99_LIMIT_MS = 100.0
SLOW_HEADERS = 500
SLOW_BODIES = 500
SLOW_BODY_SIZE = 100_000
HEADER_TIMEOUT = 12.0
PROBE_SECONDS = 6.0


def start(serve: object, *options: str) -> Server:
    srv: Server = serve(BRICK, [*APP, *options])  # type: ignore[operator]
    timed_get(srv.address)  # the first answer: the worker is up and the app loaded
    return srv


def test_slow_clients_do_not_starve_normal_ones(serve: object) -> None:
    raise_fd_limit(8192)
    srv = start(
        serve,
        "--workers", "2",
        "--worker-connections", "2000",
        "--header-timeout", str(HEADER_TIMEOUT),
        "--body-timeout", "5",
    )  # fmt: skip
    heads = SlowClients(srv.address, SLOW_HEADERS, step=1, interval=1.0)
    bodies = SlowClients(srv.address, SLOW_BODIES, body_size=SLOW_BODY_SIZE, step=10)
    try:
        heads.open()
        bodies.open()
        heads.start()
        bodies.start()
        probe = subprocess.run(
            [sys.executable, str(LOADGEN), "latency", f"{srv.host}:{srv.port}", str(PROBE_SECONDS)],
            capture_output=True,
            timeout=PROBE_SECONDS + 60,
            check=True,
        )
        summary = json.loads(probe.stdout)
        print(f"\nnormal clients beside {SLOW_HEADERS}+{SLOW_BODIES} slow ones: {summary}")
        assert summary["errors"] == 0, summary
        assert summary["count"] >= 50, summary
        assert summary["p99_ms"] < P99_LIMIT_MS, (
            f"p99 {summary['p99_ms']} ms >= {P99_LIMIT_MS} ms (machine load matters: see the"
            " comment on P99_LIMIT_MS)"
        )

        # Slow heads: each cut with 408 once the header timeout ran from its first byte.
        deadline = time.monotonic() + HEADER_TIMEOUT + TIMEOUT
        while len(heads.closed) < SLOW_HEADERS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(heads.closed) == SLOW_HEADERS, "slow heads still open past the header timeout"
        for fd, (when, got) in heads.closed.items():
            lived = when - heads.opened_at[fd]
            assert HEADER_TIMEOUT - 1 <= lived <= HEADER_TIMEOUT + TIMEOUT, lived
            assert got.startswith(b"HTTP/1.1 408 "), got[:80]

        # Slow bodies kept sending within the body timeout: all alive, all answered at the end.
        assert not bodies.closed, f"{len(bodies.closed)} slow bodies were dropped"
        bodies.stop()
        answers = bodies.finish_bodies(TIMEOUT)
        assert len(answers) == SLOW_BODIES
        expected = b"%d %s" % (
            SLOW_BODY_SIZE,
            hashlib.sha256(b"x" * SLOW_BODY_SIZE).hexdigest().encode(),
        )
        assert all(a == (200, expected) for a in answers), {a[0] for a in answers}
    finally:
        heads.close()
        bodies.close()
    assert srv.proc.poll() is None


def test_connection_limit_queues_instead_of_collapsing(serve: object) -> None:
    limit = 20
    srv = start(
        serve, "--workers", "1", "--worker-connections", str(limit), "--header-timeout", "60"
    )
    (worker,) = wait_for_children(srv.proc.pid, 1)
    base = fd_count(worker)
    holders = SlowClients(srv.address, limit)
    queued: list[socket.socket] = []
    try:
        holders.open()
        for _ in range(3 * limit):
            sock = socket.create_connection(srv.address, timeout=TIMEOUT)
            sock.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\n\r\n")
            queued.append(sock)
        # While the holders keep every slot, the others wait in the backlog: none is answered
        # (this waits on purpose: it checks that nothing happens) and the worker's sockets stay
        # bounded by the limit.
        readable, _, _ = select.select(queued, [], [], 1.5)
        assert not readable, f"{len(readable)} clients served past the connection limit"
        held = fd_count(worker)
        assert held <= base + limit, (base, held)
        holders.close()
        deadline = time.monotonic() + TIMEOUT
        for sock in queued:
            status, body = read_response(sock, deadline)
            assert (status, body) == (200, b"hello\n")
    finally:
        holders.close()
        for sock in queued:
            sock.close()
    assert srv.proc.poll() is None


def _silent_clients_then_a_request(
    srv: Server, silent: int
) -> tuple[list[socket.socket], socket.socket]:
    quiet = [socket.create_connection(srv.address, timeout=TIMEOUT) for _ in range(silent)]
    client = socket.create_connection(srv.address, timeout=TIMEOUT)
    client.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\n\r\n")
    return quiet, client


def test_silent_connections_take_no_connection_slot(serve: object) -> None:
    # --defer-accept (on by default): the kernel queues a connection for accept once its first
    # bytes arrive, so clients that connect and say nothing (browser pre-connects, port
    # probes) cannot fill --worker-connections while a real request waits.
    srv = start(serve, "--workers", "1", "--worker-connections", "1", "--keep-alive", "1")
    quiet, client = _silent_clients_then_a_request(srv, 3)
    try:
        readable, _, _ = select.select([client], [], [], 1.0)
        assert readable, "the request waited behind connections that sent nothing"
        assert read_response(client, time.monotonic() + TIMEOUT) == (200, b"hello\n")
        # They are not forgotten either: once the kernel hands them over, the keep-alive
        # timeout closes them.
        for sock in quiet:
            sock.settimeout(TIMEOUT)
            assert sock.recv(100) == b""
    finally:
        for sock in [client, *quiet]:
            sock.close()


def test_defer_accept_0_accepts_silent_connections_at_once(serve: object) -> None:
    srv = start(
        serve, "--workers", "1", "--worker-connections", "1", "--keep-alive", "1",
        "--defer-accept", "0",
    )  # fmt: skip
    quiet, client = _silent_clients_then_a_request(srv, 1)
    try:
        # The silent client holds the one slot until its keep-alive second is up: this waits
        # on purpose, to see that the request is not answered meanwhile.
        readable, _, _ = select.select([client], [], [], 0.5)
        assert not readable, "a silent connection was not accepted with --defer-accept 0"
        assert read_response(client, time.monotonic() + TIMEOUT) == (200, b"hello\n")
        quiet[0].settimeout(TIMEOUT)
        assert quiet[0].recv(100) == b""
    finally:
        for sock in [client, *quiet]:
            sock.close()


def _upload(address: tuple[str, int], size: int, chunked: bool) -> tuple[int, bytes]:
    block = bytes(range(256)) * 4096  # 1 MiB
    head = b"POST /wsgi/digest HTTP/1.1\r\nHost: t\r\n"
    head += (
        b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % size
    )
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(head)
        for _ in range(size // len(block)):
            if chunked:
                sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
            else:
                sock.sendall(block)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return read_response(sock, time.monotonic() + 120)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_body_is_spooled_not_held(serve: object, chunked: bool, tmp_path: Path) -> None:
    size = 256 << 20
    srv = start(serve, "--workers", "1", "--tmp-upload-dir", str(tmp_path))
    (worker,) = wait_for_children(srv.proc.pid, 1)
    before = status_kib(worker, "VmHWM")
    status, body = _upload(srv.address, size, chunked)
    after = status_kib(worker, "VmHWM")
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096
    for _ in range(size // len(block)):
        digest.update(block)
    assert (status, body) == (200, b"%d %s" % (size, digest.hexdigest().encode()))
    grew_mib = (after - before) / 1024
    framing = "chunked" if chunked else "length"
    print(f"\n{size >> 20} MiB body ({framing}): peak RSS +{grew_mib:.1f} MiB")
    assert grew_mib < (size >> 20) / 8, f"worker peak RSS grew {grew_mib:.1f} MiB"
    assert not list(tmp_path.iterdir()), "the spool file outlived its request"


@pytest.mark.parametrize("shape", ["many-fields", "one-field"])
def test_huge_head_is_refused_with_431(serve: object, shape: str) -> None:
    srv = start(serve, "--workers", "1")
    (worker,) = wait_for_children(srv.proc.pid, 1)
    before = status_kib(worker, "VmHWM")
    size = 16 << 20
    if shape == "many-fields":
        piece = b"".join(b"X-F%d: %s\r\n" % (i, b"a" * 4000) for i in range(256))
    else:
        piece = b"a" * (1 << 20)
    with socket.create_connection(srv.address, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\nX-Big: ")
        sent = 0
        try:
            while sent < size:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before we were done
        status, _ = read_response(sock, time.monotonic() + TIMEOUT)
    after = status_kib(worker, "VmHWM")
    assert status == 431
    grew_mib = (after - before) / 1024
    print(
        f"\nhuge head ({shape}): refused after {sent >> 10} KiB sent; peak RSS +{grew_mib:.1f} MiB"
    )
    assert grew_mib < 16, f"worker peak RSS grew {grew_mib:.1f} MiB for a refused head"
    assert srv.proc.poll() is None
