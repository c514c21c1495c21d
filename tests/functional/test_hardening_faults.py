"""Faults: a worker killed under load, clients resetting mid-response, an app failing inside
its iterator, running out of file descriptors, and a full spool directory.

In each case brick may lose what the fault touches, nothing more, and keeps serving.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from attack.wire import Closed, Reader, Silent
from conftest import BRICK, FIXTURE_APPS, Server
from stress.loadgen import (
    cpu_seconds,
    fd_count,
    read_response,
    timed_get,
    wait_for_children,
)

pytestmark = pytest.mark.functional

APP = ["hard_app:app", "--chdir", str(FIXTURE_APPS), "--root-path", "/wsgi"]
TIMEOUT = 30.0


def start(serve: object, *options: str, command: list[str] = BRICK) -> Server:
    srv: Server = serve(command, [*APP, *options])  # type: ignore[operator]
    timed_get(srv.address, timeout=TIMEOUT)
    return srv


def limited(resource_name: str, value: int) -> list[str]:
    """A command that runs brick with `resource_name` (e.g. RLIMIT_NOFILE) set to `value`."""
    code = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.{resource_name}, ({value}, {value})); "
        "os.execv(sys.executable, [sys.executable, '-m', 'brick', *sys.argv[1:]])"
    )
    return [sys.executable, "-c", code]


def get(srv: Server, target: str) -> tuple[int, bytes]:
    with srv.connect(TIMEOUT) as sock:
        # Connection: close, so no idle keep-alive socket lingers in the fd counts below.
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return read_response(sock, time.monotonic() + TIMEOUT)


# -- a worker killed under load ----------------------------------------------------------------


@dataclass
class Attempt:
    start: float
    end: float
    pid: int  # the worker that answered, 0 when it failed
    error: str = ""


def test_sigkill_of_a_worker_fails_only_its_in_flight_requests(serve: object) -> None:
    srv = start(serve, "--workers", "2")
    workers = wait_for_children(srv.proc.pid, 2)
    assert len(workers) == 2
    clients = 8
    attempts: list[Attempt] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            begin = time.monotonic()
            try:
                with srv.connect(TIMEOUT) as sock:
                    sock.sendall(b"GET /wsgi/sleep?s=0.02 HTTP/1.1\r\nHost: t\r\n\r\n")
                    status, pid = _head_pid(sock)
                attempt = Attempt(begin, time.monotonic(), pid)
                if status != 200:
                    attempt.error = f"status {status}"
            except (OSError, Closed, Silent) as exc:
                attempt = Attempt(begin, time.monotonic(), 0, repr(exc))
            with lock:
                attempts.append(attempt)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(2.0)  # load runs for a while before the fault
        victim = workers[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        time.sleep(4.0)  # and for a while after it
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
    failed = [a for a in attempts if a.error]
    after = [a for a in attempts if a.start > killed_at + 0.01]
    print(
        f"\nSIGKILL under load: {len(attempts)} requests, {len(failed)} failed "
        f"({[a.error for a in failed]}), {len(after)} started after the kill"
    )
    # Only requests already in the victim's hands can fail: each client has one at a time.
    assert len(failed) <= clients
    assert all(a.start < killed_at for a in failed), "a request sent after the kill failed"
    assert not any(a.pid == victim for a in after), "the killed worker answered after its death"
    assert len(after) > 20, "the surviving worker stopped serving"
    # The master replaced the victim, and the replacement serves.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        now = wait_for_children(srv.proc.pid, 2)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    assert len(now) == 2 and victim not in now, now
    assert {a.pid for a in after} - {victim, 0} <= set(now)
    assert srv.proc.poll() is None


def _head_pid(sock: socket.socket) -> tuple[int, int]:
    reader = Reader(sock)
    resp = reader.response(TIMEOUT)
    return resp.status, int(resp.header("X-Pid") or 0)


# -- clients resetting mid-response ------------------------------------------------------------


def test_client_resets_mid_response(serve: object, tmp_path: Path) -> None:
    srv = start(serve, "--workers", "1")
    (worker,) = wait_for_children(srv.proc.pid, 1)
    get(srv, "/wsgi/hello")
    base_fds = fd_count(worker)
    size = 1 << 30
    resets = 20
    for i in range(resets):
        sock = srv.connect(TIMEOUT)
        marker = tmp_path / f"closed-{i}"
        sock.sendall(
            f"GET /wsgi/big?size={size}&marker={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        got = 0
        while got < 256 * 1024:
            got += len(sock.recv(65536))
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    deadline = time.monotonic() + TIMEOUT
    markers = [tmp_path / f"closed-{i}" for i in range(resets)]
    while not all(m.exists() for m in markers) and time.monotonic() < deadline:
        time.sleep(0.1)
    produced = [int(m.read_text() or 0) for m in markers if m.exists()]
    assert len(produced) == resets, "the app iterator was not closed after a reset"
    assert all(p < size for p in produced), "the app kept producing for a client that was gone"
    # Same worker (nothing crashed), no descriptor leaked, still serving.
    assert wait_for_children(srv.proc.pid, 1) == [worker]
    assert get(srv, "/wsgi/hello") == (200, b"hello\n")
    # The server closes its side of that last connection a moment after the client read it.
    deadline = time.monotonic() + TIMEOUT
    while fd_count(worker) > base_fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(worker) <= base_fds
    assert "Traceback" not in srv.log(), srv.log()[-3000:]


# -- the app failing ----------------------------------------------------------------------------


def test_app_raising_inside_its_iterator(serve: object) -> None:
    srv = start(serve, "--workers", "1")
    (worker,) = wait_for_children(srv.proc.pid, 1)
    with srv.connect(TIMEOUT) as sock:
        # A pipelined request behind the failing one: the failed response cannot be finished
        # honestly, so the connection closes and the second one is never answered.
        sock.sendall(
            b"GET /wsgi/boom-mid HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        reader = Reader(sock)
        with pytest.raises(Closed):
            reader.response(TIMEOUT)
        got = bytes(reader.received)
        assert got.startswith(b"HTTP/1.1 200 ") and b"first piece" in got, got
        assert not got.endswith(b"0\r\n\r\n"), "a failed body was framed as complete"
        assert b"hello" not in got, "the request behind the failed one was answered"
    with srv.connect(TIMEOUT) as sock:
        sock.sendall(b"GET /wsgi/boom HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        resp = reader.response(TIMEOUT)
        assert resp.status == 500
        assert b"Traceback" not in resp.body and b"hard_app" not in resp.body
        assert reader.closes(TIMEOUT)
    assert get(srv, "/wsgi/hello") == (200, b"hello\n")
    assert wait_for_children(srv.proc.pid, 1) == [worker], "a failing app must not kill a worker"
    log = srv.log()
    assert "hard_app failed inside its iterator" in log and "Traceback" in log
    assert "hard_app failed before start_response" in log


# -- out of file descriptors ------------------------------------------------------------------


def test_running_out_of_file_descriptors(serve: object) -> None:
    srv = start(
        serve, "--workers", "1", "--keep-alive", "120", command=limited("RLIMIT_NOFILE", 64)
    )
    (worker,) = wait_for_children(srv.proc.pid, 1)
    held: list[socket.socket] = []
    stuck: socket.socket | None = None
    try:
        for _ in range(200):  # far more than 64 descriptors allow
            sock = srv.connect(TIMEOUT)
            sock.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                assert read_response(sock, time.monotonic() + 2.0) == (200, b"hello\n")
            except TimeoutError:
                stuck = sock  # waits in the backlog: the worker cannot accept it
                break
            held.append(sock)  # kept open: the worker keeps its descriptor
        assert stuck is not None, "never ran out of descriptors"
        print(f"\nEMFILE after {len(held)} connections")
        assert 20 <= len(held) < 64
        # Out of descriptors, the worker neither dies nor spins.
        cpu = cpu_seconds(worker)
        time.sleep(2.0)
        assert cpu_seconds(worker) - cpu < 1.0, "the worker spins while out of descriptors"
        assert srv.proc.poll() is None and wait_for_children(srv.proc.pid, 1) == [worker]
        assert "Too many open files" in srv.log()
        # Free some: the waiting client is served, and new ones too.
        for sock in held[:10]:
            sock.close()
        del held[:10]
        assert read_response(stuck, time.monotonic() + TIMEOUT) == (200, b"hello\n")
        assert get(srv, "/wsgi/hello") == (200, b"hello\n")
        # The connections that were held all along still work.
        for sock in held[:5]:
            sock.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock, time.monotonic() + TIMEOUT) == (200, b"hello\n")
    finally:
        for sock in held:
            sock.close()
        if stuck is not None:
            stuck.close()
    assert wait_for_children(srv.proc.pid, 1) == [worker]


# -- a full spool directory ------------------------------------------------------------------


def _mount_tiny_tmpfs(path: Path) -> bool:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_full_spool_directory(serve: object, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    mounted = _mount_tiny_tmpfs(spool)
    # Without the right to mount, a 1 MiB file-size limit on brick fills the "disk" the same
    # way: writes past it fail with EFBIG (Python ignores SIGXFSZ), as ENOSPC would.
    command = BRICK if mounted else limited("RLIMIT_FSIZE", 1 << 20)
    try:
        srv = start(
            serve,
            "--workers", "1",
            "--tmp-upload-dir", str(spool),
            "--body-spool-threshold", "65536",
            command=command,
        )  # fmt: skip
        (worker,) = wait_for_children(srv.proc.pid, 1)
        size = 4 << 20
        with srv.connect(TIMEOUT) as sock:
            sock.sendall(
                b"POST /wsgi/digest HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
            )
            try:
                sock.sendall(b"x" * size)
            except (BrokenPipeError, ConnectionResetError):
                pass
            reader = Reader(sock)
            resp = reader.response(TIMEOUT)
            assert resp.status in (500, 503, 507), resp
            assert reader.closes(TIMEOUT)
        assert "request body" in srv.log() or "No space" in srv.log(), srv.log()[-2000:]
        # Still serving: a spooled body that fits, and one kept in memory.
        for n in (300_000, 1000):
            with srv.connect(TIMEOUT) as sock:
                sock.sendall(
                    b"POST /wsgi/digest HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % n
                    + b"y" * n
                )
                status, body = read_response(sock, time.monotonic() + TIMEOUT)
            assert status == 200 and body.startswith(b"%d " % n), (status, body)
        assert wait_for_children(srv.proc.pid, 1) == [worker]
        print(
            f"\nfull spool directory ({'tmpfs 1m' if mounted else 'RLIMIT_FSIZE 1 MiB'}): {resp!r}"
        )
    finally:
        if mounted:
            srv_stop = locals().get("srv")
            if isinstance(srv_stop, Server):
                srv_stop.stop()
            subprocess.run(["umount", "-l", str(spool)], capture_output=True)
