"""Load pieces shared by the hardening tests and the stress scripts: slow clients, a latency
probe, and readings of a process tree from /proc.

Not a test module (pytest collects nothing here). `python tests/stress/loadgen.py latency
HOST:PORT SECONDS` runs the latency probe in its own process and prints JSON, so that the
numbers it reports are not skewed by the test process's own work (its GIL, its slow clients).
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

Address = tuple[str, int]

# -- /proc readings -----------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of `pid` (scans /proc: no CONFIG_PROC_CHILDREN needed)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def status_kib(pid: int, key: str) -> int:
    """A `kB` value from /proc/PID/status (VmRSS, VmHWM, ...); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_for_children(pid: int, n: int, timeout: float = 30.0) -> list[int]:
    """The `n` children of `pid` once they all exist (a master forks its workers at start)."""
    deadline = time.monotonic() + timeout
    while True:
        kids = children(pid)
        if len(kids) >= n or time.monotonic() > deadline:
            return kids
        time.sleep(0.05)


def raise_fd_limit(want: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `want` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# -- one request, timed -------------------------------------------------------------------------


def read_response(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    """Status and body of one Content-Length-framed response (what the fixture apps send)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed after {len(buf)} bytes")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside a body")
        body += data
    return status, body


def timed_get(address: Address, target: str = "/wsgi/hello", timeout: float = 10.0) -> float:
    """Latency in seconds of one GET on a new connection, connect included; raises on error."""
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        status, _ = read_response(sock, deadline)
    if status != 200:
        raise ConnectionError(f"status {status}")
    return time.perf_counter() - start


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.samples:
            return float("inf")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, float | int]:
        return {
            "count": len(self.samples),
            "errors": len(self.errors),
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "max_ms": round(max(self.samples, default=float("inf")) * 1000, 2),
        }


def latency_probe(
    address: Address, seconds: float, clients: int = 2, pause: float = 0.005
) -> Latencies:
    """`clients` threads each doing one GET after another (new connection each) for `seconds`."""
    result = Latencies()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < stop:
            try:
                took = timed_get(address)
            except (OSError, ConnectionError) as exc:
                with lock:
                    result.errors.append(repr(exc))
            else:
                with lock:
                    result.samples.append(took)
            time.sleep(pause)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return result


# -- slow clients ---------------------------------------------------------------------------


class SlowClients:
    """Many connections that each send a few bytes per interval, driven from one thread.

    Each sends its head at once, then `step` bytes per `interval`: for a slow-header client
    the head never ends (a field value keeps growing); for a slow-body client the head is
    complete and the body (`body_size` bytes, all but the last) trickles after it.
    Connections the server closes are counted, with the status it sent, if any.
    """

    def __init__(
        self,
        address: Address,
        count: int,
        *,
        body_size: int = 0,
        step: int = 1,
        interval: float = 1.0,
    ) -> None:
        self.address = address
        self.count = count
        self.body_size = body_size
        self.step = step
        self.interval = interval
        self.socks: list[socket.socket] = []
        self.sent: dict[int, int] = {}
        self.opened_at: dict[int, float] = {}
        self.closed: dict[int, tuple[float, bytes]] = {}  # fd -> (when, what the server sent)
        self.received: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if body_size:
            self.head = (
                b"POST /wsgi/digest HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % body_size
            )
        else:
            # A head that never ends: a field value that keeps growing.
            self.head = b"GET /wsgi/hello HTTP/1.1\r\nHost: t\r\nX-Slow: "

    def open(self, timeout: float = 30.0) -> None:
        """Connect every client and send its first piece."""
        for _ in range(self.count):
            sock = socket.create_connection(self.address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(self.head)
            sock.setblocking(False)
            self.socks.append(sock)
            self.sent[sock.fileno()] = 0  # body (or endless field value) bytes sent so far
            self.opened_at[sock.fileno()] = time.monotonic()
            self.received[sock.fileno()] = b""

    def _piece(self, fd: int) -> bytes:
        done = self.sent[fd]
        if self.body_size:
            n = min(self.step, self.body_size - done - 1)  # keep the last byte back
            return b"x" * max(0, n)
        pos = done % len(b"abcdefghij")
        return (b"abcdefghij" * 2)[pos : pos + self.step]

    def _tick(self) -> None:
        now = time.monotonic()
        for sock in self.socks:
            fd = sock.fileno()
            if fd < 0 or fd in self.closed:
                continue
            try:
                data = sock.recv(65536)
                if data:
                    self.received[fd] += data
                else:
                    self.closed[fd] = (now, self.received[fd])
                    continue
            except BlockingIOError:
                pass
            except OSError:
                self.closed[fd] = (now, self.received[fd])
                continue
            piece = self._piece(fd)
            if not piece:
                continue
            try:
                self.sent[fd] += sock.send(piece)
            except BlockingIOError:
                pass
            except OSError:
                self.closed[fd] = (now, self.received[fd])

    def start(self) -> None:
        def run() -> None:
            while not self._stop.wait(self.interval):
                self._tick()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def finish_bodies(self, timeout: float = 30.0) -> list[tuple[int, bytes]]:
        """Send what each slow body still lacks, then read every answer (status, body)."""
        sel = selectors.DefaultSelector()
        out: list[tuple[int, bytes]] = []
        for sock in self.socks:
            fd = sock.fileno()
            if fd in self.closed:
                continue
            rest = self.body_size - self.sent[fd]
            sock.setblocking(True)
            sock.settimeout(timeout)
            sock.sendall(b"x" * rest)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        bufs: dict[int, bytes] = {}
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                buf = bufs.get(sock.fileno(), b"") + data
                bufs[sock.fileno()] = buf
                head, sep, body = buf.partition(b"\r\n\r\n")
                done = not data
                if sep:
                    length = next(
                        (
                            int(v)
                            for n, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                            if n.lower() == b"content-length"
                        ),
                        0,
                    )
                    done = done or len(body) >= length
                if done:
                    sel.unregister(sock)
                    status = int(head.split(b" ", 2)[1]) if sep else 0
                    out.append((status, body))
        sel.close()
        return out

    def close(self) -> None:
        self.stop()
        for sock in self.socks:
            try:
                sock.close()
            except OSError:
                pass


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "latency":
        host, _, port = argv[1].rpartition(":")
        result = latency_probe((host, int(port)), float(argv[2]))
        print(json.dumps({**result.summary(), "first_errors": result.errors[:5]}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
