"""Process options with real processes: --reuse-port, --max-requests, --preload, --reload,
and brick as PID 1 of its own PID namespace (as in a container)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BRICK, FIXTURE_APPS, Server, start_server
from test_process import (
    Load,
    Serve,
    assert_no_zombies,
    children,
    get,
    live_children,
    new_children,
    proc_stat,
    start,
    stopped,
    versions_seen,
    wait_until,
    wait_workers,
    worker_pids_answering,
    write_live_app,
)

pytestmark = pytest.mark.functional


# -- --reuse-port ---------------------------------------------------------------------------


def listening_inodes(port: int) -> set[int]:
    """Socket inodes listening on 127.0.0.1:`port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], int(fields[9])
        if state == "0A" and local == f"0100007F:{port:04X}":
            found.add(inode)
    return found


def socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def start_reuse_port(*args: str) -> Server:
    """brick --reuse-port on 127.0.0.1:PORT. Meanwhile the port is held by a bound (never
    listening) SO_REUSEPORT socket of ours, so nobody else takes it. A reuse-port master
    cannot use a socket the test made (each worker opens its own), so this is the one place
    a test waits for the server to start accepting (bounded)."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    log = Path(tempfile.mkdtemp(prefix="brick-test-")) / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "PORT")}
    bind = ["--bind", f"127.0.0.1:{port}"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*BRICK, "proc_app:app", "--chdir", str(FIXTURE_APPS), "--reuse-port", *args, *bind],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    server = Server(proc, "127.0.0.1", port, log, log)

    def accepting() -> bool:
        try:
            return get(server, "/pid", timeout=5)[0] == 200
        except ConnectionRefusedError:
            return False

    try:
        wait_until(accepting, 20, "the reuse-port server to accept")
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    finally:
        holder.close()
    return server


@pytest.fixture
def reuse_port_server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def _start(*args: str) -> Server:
        server = start_reuse_port(*args)
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()


def test_reuse_port_gives_each_worker_its_own_socket_which_the_master_keeps(
    reuse_port_server: Callable[..., Server],
) -> None:
    server = reuse_port_server("-w", "2")
    master = server.proc.pid
    workers = wait_workers(master, 2)
    worker_pids_answering(server, 2)  # both are listening
    listening = listening_inodes(server.port)
    assert len(listening) == 2, listening  # one per worker position
    assert listening <= socket_inodes(master)  # the master keeps them for the successors
    owned = [socket_inodes(pid) & listening for pid in workers]
    assert all(len(own) == 1 for own in owned) and owned[0] != owned[1], owned
    # No connection lands in a queue nobody accepts from: each of these is answered.
    for _ in range(40):
        assert get(server, "/pid", timeout=5)[0] == 200
    assert "set net.ipv4.tcp_migrate_req=1" in server.log() or _migrating()


def _migrating() -> bool:
    return Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip() == "1"


def swap_under_load() -> dict[str, Any]:
    """One worker, recycled every 15 requests, and a HUP, all under a request loop. Each
    new worker takes over its predecessor's socket, which never closes meanwhile."""
    server = start_reuse_port("-w", "1", "--max-requests", "15")
    try:
        master = server.proc.pid
        sockets = listening_inodes(server.port)
        with Load(server, "/pid", clients=2) as load:
            wait_until(lambda: server.log().count("recycling") >= 3, 30, "three recycles")
            (before,) = wait_workers(master, 1)
            server.proc.send_signal(signal.SIGHUP)
            new_children(master, {before}, 1, timeout=20)
            mark = len(load.results)
            wait_until(lambda: len(load.results) >= mark + 10, 20, "load after the reload")
        assert_no_zombies(master)
        log = server.log()
        return {
            "requests": len(load.results),
            "failures": [f.detail for f in load.failures],
            "swaps": log.count("asked to be replaced") + log.count("Handling signal: HUP"),
            "same_socket": listening_inodes(server.port) == sockets,
        }
    finally:
        server.stop()


def test_reuse_port_ttin_and_ttou_open_and_close_a_position(
    reuse_port_server: Callable[..., Server],
) -> None:
    server = reuse_port_server("-w", "2")
    master = server.proc.pid
    first = wait_workers(master, 2)
    before = listening_inodes(server.port)
    server.proc.send_signal(signal.SIGTTIN)
    worker_pids_answering(server, 3)
    (added,) = live_children(master) - set(first)
    assert len(listening_inodes(server.port)) == 3 and before < listening_inodes(server.port)
    assert len(socket_inodes(added) & listening_inodes(server.port)) == 1
    server.proc.send_signal(signal.SIGTTOU)  # the worker of the highest position leaves
    wait_until(lambda: len(live_children(master)) == 2, 20, "a worker to leave")
    assert listening_inodes(server.port) == before
    assert set(live_children(master)) == set(first)
    served = {get(server, "/pid", timeout=5)[1] for _ in range(40)}
    assert served == {str(pid) for pid in first}


SCENARIO = """
import json, sys
sys.path[:0] = {paths!r}
from test_process_options import in_private_network, swap_under_load
in_private_network()
print(json.dumps(swap_under_load()))
"""


def in_private_network() -> None:
    """(In a fresh network namespace) bring up loopback, with tcp_migrate_req off."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    request = struct.pack("16sH", b"lo", 0)
    flags = struct.unpack("16sH", fcntl.ioctl(sock, 0x8913, request))[1]  # SIOCGIFFLAGS
    fcntl.ioctl(sock, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP
    sock.close()
    Path("/proc/sys/net/ipv4/tcp_migrate_req").write_text("0\n")


def test_reuse_port_swaps_lose_no_request_even_without_kernel_migration() -> None:
    # A closing listener resets connections caught in its queue or mid-handshake unless
    # net.ipv4.tcp_migrate_req=1 moves them (and even then one completing its handshake
    # at that instant). Swaps close no listener, so they need no migration: here in a
    # private network namespace (the setting is per namespace) with migration off.
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux unshare is needed for this test"
    command = [unshare, "--net"]
    if os.geteuid() != 0:
        command[1:1] = ["--user", "--map-root-user"]
    paths = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]
    code = SCENARIO.format(paths=paths)
    done = subprocess.run(
        [*command, sys.executable, "-c", code], capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["requests"] > 45
    assert outcome["swaps"] >= 4
    assert outcome["same_socket"], outcome
    assert outcome["failures"] == [], outcome


# -- --max-requests -------------------------------------------------------------------------


def test_max_requests_recycles_workers_without_a_failed_request(serve: Serve) -> None:
    server = start(serve, "-w", "2", "--max-requests", "10", "--max-requests-jitter", "5")
    master = server.proc.pid
    first = wait_workers(master, 2)
    with Load(server, "/pid", clients=3) as load:
        wait_until(lambda: server.log().count("recycling") >= 4, 30, "four recycles")
    assert load.failures == [], load.failures[:5]
    for pid in first:
        wait_until(lambda p=pid: f"Worker {p} exited cleanly" in server.log(), 10, "a recycle")
    log = server.log()
    for pid in first:
        assert f"Worker {pid} asked to be replaced" in log
    served = {int(r.detail) for r in load.results}
    assert len(served) >= 4  # requests were answered by several generations of workers
    # Each worker asks for its replacement after 10 to 15 requests (the jitter); it keeps
    # serving until the replacement is ready, so nobody waits for a worker to boot.
    asked = [int(n) for n in re.findall(r"served (\d+) requests; recycling", log)]
    assert len(asked) >= 4 and all(10 <= n <= 15 for n in asked), asked
    assert_no_zombies(master)


# -- --preload ------------------------------------------------------------------------------


def test_preload_imports_the_app_once_in_the_master(serve: Serve) -> None:
    server = start(serve, "-w", "2", "--preload")
    workers = worker_pids_answering(server, 2)
    assert all(get(server, "/import-pid")[1] == str(server.proc.pid) for _ in range(6))
    assert server.proc.pid not in workers


def test_without_preload_each_worker_imports_the_app(serve: Serve) -> None:
    server = start(serve, "-w", "1")
    status, pid = get(server, "/import-pid")
    assert status == 200
    assert get(server, "/pid") == (200, pid)
    assert pid != str(server.proc.pid)


def test_preload_reports_an_import_error_from_the_master(serve: Serve) -> None:
    server = start(serve, "--preload", app="proc_broken:app")
    assert stopped(server, 20) == 1
    assert "Booting worker" not in server.log()
    assert "proc_broken refuses to load" in server.log()


# -- --reload -------------------------------------------------------------------------------


def test_reload_restarts_workers_when_a_source_file_changes(serve: Serve, tmp_path: Path) -> None:
    write_live_app(tmp_path, "v1")
    server = serve(
        BRICK,
        ["proc_live:app", "--chdir", str(tmp_path), "-w", "2", "--reload"],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    master = server.proc.pid
    first = wait_workers(master, 2)
    with Load(server, "/", clients=2) as load:
        wait_until(lambda: "v1" in versions_seen(load, 0), 10, "v1 answers")
        changed = time.monotonic()
        write_live_app(tmp_path, "v22")
        wait_until(lambda: "v22" in versions_seen(load, changed), 20, "v22 answers")
        new_children(master, first, 2, timeout=20)
        settled = time.monotonic()
        wait_until(lambda: len(load.served_since(settled)) >= 10, 20, "more load")
    assert versions_seen(load, settled) == {"v22"}
    assert load.failures == [], load.failures[:5]
    assert "proc_live.py changed; reloading" in server.log()


def test_reload_survives_a_syntax_error_saved_mid_edit(serve: Serve, tmp_path: Path) -> None:
    write_live_app(tmp_path, "v1")
    server = serve(
        BRICK,
        ["proc_live:app", "--chdir", str(tmp_path), "-w", "1", "--reload"],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    master = server.proc.pid
    assert get(server, "/")[1].startswith("v1 ")
    source = tmp_path / "proc_live.py"
    source.write_text("def app(environ, start_response:\n")  # a syntax error
    later = time.time() + 5
    os.utime(source, (later, later))

    def failing() -> bool:
        status, body = get(server, "/")
        return status == 500 and body == "The app failed to load; see the server's error log.\n"

    wait_until(failing, 20, "the broken app to answer 500")
    assert server.proc.poll() is None  # the master did not give up
    assert f"answering 500 until {source}" in server.log()
    assert "SyntaxError" in server.log()
    write_live_app(tmp_path, "v333")  # the fix
    wait_until(lambda: get(server, "/")[1].startswith("v333 "), 20, "the fixed app")
    assert_no_zombies(master)


def test_reload_still_stops_on_a_missing_app_module(serve: Serve) -> None:
    server = start(serve, "--reload", app="proc_no_such_module:app")
    assert stopped(server, 20) == 1
    assert "no module named 'proc_no_such_module'" in server.log()


# -- PID 1 ----------------------------------------------------------------------------------


def unshare_command() -> list[str]:
    """Run brick as PID 1 of a new PID namespace, as a container runtime would."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux unshare is needed for the PID 1 tests"
    command = [unshare, "--pid", "--fork", "--mount-proc", "--kill-child"]
    if os.geteuid() != 0:
        command[1:1] = ["--user", "--map-root-user"]
    return [*command, sys.executable, "-m", "brick"]


def test_as_pid_1_brick_reaps_orphans_and_stops_on_term() -> None:
    server = start_server(
        unshare_command(),
        ["proc_app:app", "--chdir", str(FIXTURE_APPS), "-w", "2"],
    )
    try:
        # The master is the child of unshare; inside the namespace it is PID 1.
        (master,) = wait_until(lambda: live_children(server.proc.pid), 10, "the master")
        status = Path(f"/proc/{master}/status").read_text()
        ns_pids = next(line for line in status.splitlines() if line.startswith("NSpid"))
        assert ns_pids.split()[-1] == "1", ns_pids
        workers = wait_workers(master, 2)
        # A worker's grandchild is orphaned; as PID 1 the master adopts it ...
        status_code, _ = get(server, "/orphan?seconds=1.5")
        assert status_code == 200
        adopted = live_children(master) - workers
        assert len(adopted) == 1, (adopted, children(master))
        (orphan,) = adopted
        # ... and reaps it when it exits: it never stays a zombie.
        wait_until(lambda: proc_stat(orphan) is None, 10, "the orphan to be reaped")
        assert_no_zombies(master)
        # A killed worker is reaped and replaced as usual.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: victim not in (kids := live_children(master)) and len(kids) == 2,
            10,
            "a replacement worker",
        )
        assert_no_zombies(master)
        # PID 1 ignores signals it has no handler for; brick has one for TERM.
        os.kill(master, signal.SIGTERM)
        assert server.proc.wait(20) == 0
        assert "Shutting down: master 1" in server.log()
    finally:
        server.stop(signal.SIGKILL)
