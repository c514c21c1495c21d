"""App threads (`--threads N`): concurrency across workers and threads, and a busy pool that
never stops the loop from accepting, reading, timing out or closing connections.

None of these is a speed benchmark: each asserts a property (eight one-second requests
overlap; a connection is served while the pool is full) with generous bounds.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from test_process import (
    Serve,
    get,
    in_background,
    live_children,
    start,
    stopped,
    wait_until,
    wait_workers,
    worker_pids_answering,
)

pytestmark = pytest.mark.functional


def test_eight_one_second_requests_on_two_workers_of_four_threads_overlap(serve: Serve) -> None:
    server = start(serve, "-w", "2", "--threads", "4")
    worker_pids_answering(server, 2)  # both workers are up before the clock starts
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(get(server, "/sleep?seconds=1", timeout=20))
        except Exception as exc:
            errors.append(exc)

    clients = [threading.Thread(target=one) for _ in range(8)]
    began = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    took = time.monotonic() - began
    assert errors == []
    assert [status for status, _ in results] == [200] * 8
    # Serially this takes 8 s; one worker's four threads alone, 2 s.
    assert took < 2.5, took
    pids = {body.split()[2] for _, body in results}
    assert len(pids) == 2  # both workers took a share


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_busy_pool_never_stops_the_loop(serve: Serve, tmp_path: Path) -> None:
    server = start(serve, "-w", "1", "--threads", "2", "--keep-alive", "1", "--header-timeout", "1")
    (worker,) = wait_workers(server.proc.pid, 1)
    # A keep-alive connection that has had its answer and now sits idle.
    idle = server.connect(timeout=15)
    idle.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200 OK")
    # Both app threads get stuck for a while.
    sleepers = []
    for n in range(2):
        mark = tmp_path / f"inside-{n}"
        sleepers.append(in_background(lambda m=mark: get(server, f"/sleep?seconds=6&mark={m}")))
        wait_until(mark.exists, 10, "a sleeper inside the app")
    busy_since = time.monotonic()
    # The idle connection still times out on --keep-alive (1 s) ...
    assert read_all(idle) == b""
    idle.close()
    closed_after = time.monotonic() - busy_since
    assert closed_after < 4, closed_after  # not held until a thread is free (6 s)
    # ... a half-sent request head still gets its 408 on --header-timeout ...
    slow = server.connect(timeout=15)
    slow.sendall(b"GET /pid HTTP/1.1\r\nHost:")
    assert read_all(slow).startswith(b"HTTP/1.1 408 ")
    slow.close()
    assert time.monotonic() - busy_since < 5.5  # both happened while the pool was full
    # ... and a new connection is accepted, its request queued, and answered once a
    # thread is free.
    queued = server.connect(timeout=20)
    queued.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = read_all(queued)
    queued.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(str(worker).encode())
    for sleeper in sleepers:
        sleeper["thread"].join(15)
        assert sleeper["result"][0] == 200
    assert "timed out" not in server.log()


def test_requests_waiting_for_a_thread_do_not_count_against_the_timeout(serve: Serve) -> None:
    # Six 1.5 s requests on two threads: the last ones wait 3 s in the queue before they
    # start. Only time spent running counts toward -t 2, so nobody is killed.
    server = start(serve, "-w", "1", "--threads", "2", "-t", "2")
    (worker,) = wait_workers(server.proc.pid, 1)
    requests = [
        in_background(lambda: get(server, "/sleep?seconds=1.5", timeout=30)) for _ in range(6)
    ]
    for request in requests:
        request["thread"].join(30)
    assert [r.get("result", (0,))[0] for r in requests] == [200] * 6, (requests, server.log())
    assert live_children(server.proc.pid) == {worker}
    assert "timed out" not in server.log()


def test_a_worker_whose_threads_are_all_busy_leaves_new_clients_to_the_others(
    serve: Serve, tmp_path: Path
) -> None:
    # Two workers of two threads, and four long requests arriving one after another: each
    # must start at once, in whichever worker still has a free thread. A worker that took a
    # third client while both its threads were busy would leave it waiting 4 s in its queue
    # while the other worker sat idle.
    server = start(serve, "-w", "2", "--threads", "2")
    worker_pids_answering(server, 2)
    sleepers = []
    for n in range(4):
        mark = tmp_path / f"inside-{n}"
        sleepers.append(in_background(lambda m=mark: get(server, f"/sleep?seconds=4&mark={m}")))
        wait_until(mark.exists, 2.5, f"request {n + 1} of 4 inside the app")
    pids = [int((tmp_path / f"inside-{n}").read_text()) for n in range(4)]
    assert sorted(pids.count(pid) for pid in set(pids)) == [2, 2], pids
    for sleeper in sleepers:
        sleeper["thread"].join(15)
        assert sleeper["result"][0] == 200


def test_quick_apps_run_in_the_loop_thread_and_a_slow_one_hands_the_loop_over(
    serve: Serve, tmp_path: Path
) -> None:
    # -t 2: a request left behind in the heartbeat's books after it ended would get the
    # worker killed two seconds later.
    server = start(serve, "-w", "1", "--threads", "2", "-t", "2")
    (worker,) = wait_workers(server.proc.pid, 1)
    # A quick request is answered by the thread that runs the loop: no hand-off.
    assert get(server, "/thread") == (200, "MainThread")
    # A slow one starts there too; a free app thread takes the loop over meanwhile ...
    mark = tmp_path / "inside"
    sleeper = in_background(lambda: get(server, f"/sleep?seconds=1.2&mark={mark}"))
    wait_until(mark.exists, 10, "the sleeper inside the app")
    began = time.monotonic()
    status, thread = get(server, "/thread")
    assert time.monotonic() - began < 0.5  # not held until the sleeper is done
    assert status == 200
    assert thread.startswith("brick-app_")  # the new loop thread ran it
    sleeper["thread"].join(10)
    assert sleeper["result"][0] == 200
    # ... and the sleeper's thread serves on as an app thread; the worker lives on.
    time.sleep(3)
    for _ in range(20):
        assert get(server, "/pid") == (200, str(worker))
    assert live_children(server.proc.pid) == {worker}
    assert "timed out" not in server.log()
    assert "unexpected error" not in server.log()


def test_term_ends_a_worker_whose_loop_moved_to_an_app_thread(serve: Serve, tmp_path: Path) -> None:
    # After a takeover the loop runs in an app thread; a graceful stop must still end the
    # worker cleanly, with the main thread serving as an app thread (whichever of the two
    # leaves first ends the process).
    server = start(serve, "-w", "1", "--threads", "2")
    wait_workers(server.proc.pid, 1)
    mark = tmp_path / "inside"
    sleeper = in_background(lambda: get(server, f"/sleep?seconds=0.5&mark={mark}"))
    wait_until(mark.exists, 10, "the sleeper inside the app")
    sleeper["thread"].join(10)
    assert sleeper["result"][0] == 200
    assert get(server, "/thread")[1].startswith("brick-app_")  # the loop moved
    server.proc.send_signal(signal.SIGTERM)
    assert stopped(server, 15) == 0
    assert "crashed" not in server.log()
    assert "unexpected error" not in server.log()
