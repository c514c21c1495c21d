"""Soak: mixed load on brick for a set time, watching errors, memory and descriptors.

    python tests/stress/soak.py --seconds 600 [--workers 2] [--threads 2] [--clients 6]

Starts brick on the hardening fixture app (tests/apps/hard_app.py) and runs, from `--clients`
threads, a weighted mix of: keep-alive GETs, small echoes, chunked uploads spooled to disk,
streamed downloads, pipelined bursts, refused requests from the attack corpus, clients that
reset mid-response, and an app failing inside its iterator; beside them a pool of slowloris
connections that the header timeout keeps cutting. Every answer is checked.

Every `--interval` seconds it samples, for the master and each worker: RSS (VmRSS) and open
file descriptors (/proc/PID/fd). At the end it prints the samples and a summary, and exits
non-zero when:
- any request got a wrong answer (the first few are printed);
- a worker died (its pid changed: nothing here should kill one);
- a series grew: the smallest value of the last third of the run exceeds the largest of the
  first third by more than the noise allowance (RSS: 10 % + 8 MiB; descriptors: 16);
- once the load stops and connections close, a worker holds more descriptors than it did
  after warm-up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: conftest, attack, stress

from attack.corpus import CASES  # noqa: E402
from attack.wire import Closed, Reader, Silent  # noqa: E402
from conftest import BRICK, FIXTURE_APPS, Server, start_server  # noqa: E402
from stress.loadgen import children, fd_count, raise_fd_limit, status_kib  # noqa: E402

TIMEOUT = 30.0
REFUSED = [c for c in CASES if len(c.expect) == 1 and c.expect[0] == 400]
RSS_SLACK = (1.10, 8 * 1024)  # factor, KiB
FD_SLACK = 16


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def ok(self, kind: str) -> None:
        with self.lock:
            self.ops[kind] += 1

    def error(self, kind: str, detail: str) -> None:
        with self.lock:
            self.ops[kind] += 1
            self.errors[kind] += 1
            if len(self.examples) < 20:
                self.examples.append(f"{kind}: {detail}")


def connect(address: tuple[str, int]) -> tuple[socket.socket, Reader]:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, Reader(sock)


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


# -- the operations: each checks its answer and raises on anything wrong -------------------


def op_keepalive(address: tuple[str, int], rng: random.Random) -> None:
    sock, reader = connect(address)
    with sock:
        for _ in range(rng.randint(1, 20)):
            sock.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\n\r\n")
            resp = reader.response(TIMEOUT)
            expect((resp.status, resp.body) == (200, b"hello\n"), repr(resp))


def op_echo(address: tuple[str, int], rng: random.Random) -> None:
    body = rng.randbytes(rng.randint(0, 20000))
    sock, reader = connect(address)
    with sock:
        sock.sendall(
            b"POST /wsgi/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        resp = reader.response(TIMEOUT)
        expect(resp.status == 200 and resp.body == body, repr(resp))


def op_upload(address: tuple[str, int], rng: random.Random) -> None:
    size = rng.randint((1 << 20) + 1, 3 << 20)  # above the 1 MiB spool threshold: a temp file
    piece = rng.randbytes(64 * 1024)
    sock, reader = connect(address)
    digest = hashlib.sha256()
    with sock:
        sock.sendall(b"POST /wsgi/digest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while sent < size:
            data = piece[: min(len(piece), size - sent)]
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
            digest.update(data)
            sent += len(data)
        sock.sendall(b"0\r\n\r\n")
        resp = reader.response(TIMEOUT)
        want = b"%d %s" % (size, digest.hexdigest().encode())
        expect(resp.status == 200 and resp.body == want, repr(resp))
        expect(resp.header("X-Input") == "file", "a large body was not spooled")


def op_download(address: tuple[str, int], rng: random.Random) -> None:
    size = rng.randint(0, 4 << 20)
    sock, reader = connect(address)
    with sock:
        sock.sendall(b"GET /wsgi/big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        resp = reader.response(TIMEOUT)
        expect(resp.status == 200 and len(resp.body) == size, repr(resp))


def op_pipeline(address: tuple[str, int], rng: random.Random) -> None:
    n = rng.randint(2, 30)
    sock, reader = connect(address)
    with sock:
        sock.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\n\r\n" * n)
        for _ in range(n):
            resp = reader.response(TIMEOUT)
            expect((resp.status, resp.body) == (200, b"hello\n"), repr(resp))


def op_refused(address: tuple[str, int], rng: random.Random) -> None:
    case = rng.choice(REFUSED)
    sock, reader = connect(address)
    with sock:
        try:
            sock.sendall(case.raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = reader.response(TIMEOUT)
        expect(resp.status == 400, f"{case.id}: {resp!r}")
        expect(reader.closes(TIMEOUT), f"{case.id}: not closed")


def op_reset(address: tuple[str, int], rng: random.Random) -> None:
    sock, _ = connect(address)
    sock.sendall(b"GET /wsgi/big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (64 << 20))
    want = rng.randint(1, 512 * 1024)
    got = 0
    while got < want:
        data = sock.recv(65536)
        expect(bool(data), "closed before the reset")
        got += len(data)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def op_app_error(address: tuple[str, int], rng: random.Random) -> None:
    sock, reader = connect(address)
    with sock:
        sock.sendall(b"GET /wsgi/boom-mid HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            reader.response(TIMEOUT)
        except Closed:
            expect(b"first piece" in reader.received, "lost the part sent before the failure")
            return
        raise AssertionError("a failed body was framed as complete")


OPS = [
    (op_keepalive, 30),
    (op_echo, 20),
    (op_upload, 3),
    (op_download, 5),
    (op_pipeline, 10),
    (op_refused, 10),
    (op_reset, 3),
    (op_app_error, 2),
]


def client(address: tuple[str, int], seed: int, stop: threading.Event, stats: Stats) -> None:
    rng = random.Random(seed)
    funcs = [f for f, _ in OPS]
    weights = [w for _, w in OPS]
    while not stop.is_set():
        op = rng.choices(funcs, weights)[0]
        kind = op.__name__[3:]
        try:
            op(address, rng)
        except (AssertionError, OSError, Closed, Silent, ValueError) as exc:
            stats.error(kind, repr(exc)[:300])
        else:
            stats.ok(kind)


def slowloris(address: tuple[str, int], count: int, stop: threading.Event, stats: Stats) -> None:
    """Keep `count` never-ending heads open, one byte a second; replace those the server cuts."""
    socks: list[socket.socket] = []
    while not stop.is_set():
        while len(socks) < count:
            try:
                sock = socket.create_connection(address, timeout=TIMEOUT)
                sock.sendall(b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                sock.setblocking(False)
                socks.append(sock)
            except OSError as exc:
                stats.error("slowloris", repr(exc))
                break
        for sock in list(socks):
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data is not None:  # the server answered (408) and closed: as it should
                if data and not data.startswith(b"HTTP/1.1 408 "):
                    stats.error("slowloris", repr(data[:80]))
                else:
                    stats.ok("slowloris")
                sock.close()
                socks.remove(sock)
                continue
            try:
                sock.send(b"a")
            except OSError:
                pass
        stop.wait(1.0)
    for sock in socks:
        sock.close()


# -- sampling ---------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    requests: int
    errors: int
    master_rss: int
    master_fds: int
    workers: dict[int, tuple[int, int]]  # pid -> (rss KiB, fds)

    @property
    def worker_rss(self) -> int:
        return sum(r for r, _ in self.workers.values())

    @property
    def worker_fds(self) -> int:
        return sum(f for _, f in self.workers.values())


def sample(master: int, start: float, stats: Stats) -> Sample:
    with stats.lock:
        requests, errors = sum(stats.ops.values()), sum(stats.errors.values())
    workers = {pid: (status_kib(pid, "VmRSS"), fd_count(pid)) for pid in children(master)}
    return Sample(
        round(time.monotonic() - start, 1),
        requests,
        errors,
        status_kib(master, "VmRSS"),
        fd_count(master),
        workers,
    )


def grew(series: list[int], factor: float, slack: int) -> bool:
    third = max(1, len(series) // 3)
    first, last = series[:third], series[-third:]
    return min(last) > max(first) * factor + slack


def run(args: argparse.Namespace) -> int:
    raise_fd_limit(4096)
    options = [
        "hard_app:app",
        "--chdir", str(FIXTURE_APPS),
        "--root-path", "/wsgi",
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--header-timeout", "5",
        "--keep-alive", "2",
    ]  # fmt: skip
    srv: Server = start_server(BRICK, options)
    stats = Stats()
    try:
        # Warm-up: every worker has served, imported everything, opened its logs.
        deadline = time.monotonic() + TIMEOUT
        while len(children(srv.proc.pid)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(50 * args.workers):
            op_keepalive(srv.address, random.Random(0))
        time.sleep(3.0)  # keep-alive connections of the warm-up closed
        workers0 = children(srv.proc.pid)
        quiet0 = {pid: fd_count(pid) for pid in workers0}

        stop = threading.Event()
        threads = [
            threading.Thread(target=client, args=(srv.address, i, stop, stats), daemon=True)
            for i in range(args.clients)
        ]
        threads.append(
            threading.Thread(
                target=slowloris, args=(srv.address, args.slow, stop, stats), daemon=True
            )
        )
        start = time.monotonic()
        for t in threads:
            t.start()
        samples: list[Sample] = []
        print(f"soak: {args.seconds:.0f} s, brick pid {srv.proc.pid}, workers {workers0}")
        print(f"{'t(s)':>7} {'requests':>9} {'errors':>6} {'master KiB':>10} {'fds':>4}  workers")
        while True:
            s = sample(srv.proc.pid, start, stats)
            samples.append(s)
            ws = "  ".join(f"{pid}:{r}KiB/{f}fd" for pid, (r, f) in s.workers.items())
            row = f"{s.t:7.1f} {s.requests:9d} {s.errors:6d} {s.master_rss:10d} {s.master_fds:4d}"
            print(f"{row}  {ws}", flush=True)
            if time.monotonic() - start >= args.seconds:
                break
            time.sleep(min(args.interval, max(0.0, args.seconds - (time.monotonic() - start))))
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
        time.sleep(4.0)  # past the keep-alive and linger times: every connection is gone
        workers1 = children(srv.proc.pid)
        quiet1 = {pid: fd_count(pid) for pid in workers1}
    finally:
        srv.stop()

    failures = []
    if stats.errors:
        failures.append(f"{sum(stats.errors.values())} wrong answers: {dict(stats.errors)}")
    if workers1 != workers0:
        failures.append(f"workers changed: {workers0} -> {workers1} (a worker died)")
    series = {
        "master RSS": ([s.master_rss for s in samples], *RSS_SLACK),
        "workers RSS": ([s.worker_rss for s in samples], *RSS_SLACK),
        "master fds": ([s.master_fds for s in samples], 1.0, FD_SLACK),
        "workers fds": ([s.worker_fds for s in samples], 1.0, FD_SLACK),
    }
    for name, (values, factor, slack) in series.items():
        if len(values) >= 3 and grew(values, factor, slack):
            failures.append(
                f"{name} grew: {values[: len(values) // 3]} ... {values[-(len(values) // 3) :]}"
            )
    for pid, fds in quiet1.items():
        if pid in quiet0 and fds > quiet0[pid]:
            failures.append(f"worker {pid} holds {fds} fds at rest, {quiet0[pid]} after warm-up")
    summary = {
        "seconds": args.seconds,
        "requests": sum(stats.ops.values()),
        "by_kind": dict(stats.ops),
        "errors": dict(stats.errors),
        "master_rss_kib": [samples[0].master_rss, samples[-1].master_rss],
        "workers_rss_kib": [samples[0].worker_rss, samples[-1].worker_rss],
        "workers_fds_at_rest": [quiet0, quiet1],
    }
    print("summary:", json.dumps(summary))
    for example in stats.examples:
        print("  error:", example)
    for failure in failures:
        print("FAIL:", failure)
    print("soak:", "FAILED" if failures else "passed")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--interval", type=float, default=0.0, help="default: seconds / 40")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--slow", type=int, default=50, help="slowloris connections")
    args = parser.parse_args()
    if not args.interval:
        args.interval = max(1.0, args.seconds / 40)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
