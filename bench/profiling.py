"""`make profile APP=wsgi`: where brick's worker spends its CPU while wrk drives it.

Brick serves the app pinned to one core, wrk drives it from the other, and one of two
profilers watches the worker:

cprofile (default)  cProfile inside the worker (bench/profiled_brick.py), switched on after a
                    warm-up and off when wrk is done. Exact call counts; every Python call pays
                    the profiler's toll, so absolute times are inflated, shares less so.
py-spy              samples the worker's stacks from outside (needs ptrace; bench/.venv has it).
                    No overhead on the server and every thread seen; time is in samples.

Both print the top functions by total time (in the function itself, `tottime`) and by
cumulative time (including what it calls), and keep the raw profile in bench/results/tmp/.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.runner import run_wrk
from bench.servers import APPS, ROOT, ServerError, ServerProcess, ServerSpec, pinned

PROFILE_DIR = ROOT / "bench" / "results" / "tmp" / "profile"
_LINE = re.compile(r":\d+\)$")
_STDLIB = re.compile(r"/lib/python3\.\d+/")
_WAIT = re.compile(r"^(\w*Selector\.)?select \((selectors\.py|[^)]*/selectors\.py)")
IDLE_POOL_THREAD = "_serve (brick/worker.py)"  # an app thread waiting for a job
ENTRY_SHARE = 0.97  # in the cumulative list, leave out the entry chain (main, run, ...)


@dataclass(frozen=True)
class Row:
    """One function in a profile: seconds for cProfile, samples for py-spy."""

    function: str
    calls: int
    total: float  # in the function itself
    cumulative: float  # including callees


def short_path(path: str) -> str:
    """A source path as a reader wants it: `brick/loop.py`, `flask/app.py`, `wsgiapp.py`."""
    for marker in ("/site-packages/", "/server/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/apps/" in path:
        tail = path.split("/apps/", 1)[1]
        return tail.split("/", 1)[1] if "/" in tail else tail
    stdlib = _STDLIB.search(path)
    if stdlib:
        return path[stdlib.end() :]
    if path.startswith(str(ROOT) + "/"):
        return path[len(str(ROOT)) + 1 :]
    return path


def cprofile_rows(stats: pstats.Stats) -> tuple[float, list[Row]]:
    """Every function of a cProfile run, and the total time measured."""
    rows = []
    total = 0.0
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    for (path, line, name), (_, calls, tottime, cumtime, _) in raw.items():
        total += tottime
        where = name if path == "~" else f"{name} ({short_path(path)}:{line})"
        rows.append(Row(where, calls, tottime, cumtime))
    return total, rows


def collapsed_rows(lines: Iterable[str]) -> tuple[float, list[Row]]:
    """Functions from py-spy's raw (collapsed-stack) output: `frame;frame;… count` per line.

    A function's total is the samples where it is the innermost frame; its cumulative, the
    samples where it is anywhere on the stack (once per stack, so recursion is not counted
    twice). Frames are merged per function, whatever line of it was running.
    """
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    samples = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    rows = [Row(f, 0, float(own[f]), float(anywhere[f])) for f in anywhere]
    return float(samples), rows


def top(rows: list[Row], key: str, count: int) -> list[Row]:
    return sorted(rows, key=lambda r: (-getattr(r, key), r.function))[:count]


def format_rows(rows: list[Row], total: float, unit: str) -> str:
    """A fixed-width table: total, its share, cumulative, its share, calls, function."""
    lines = [f"{'total':>9} {'share':>6} {'cumul.':>9} {'share':>6} {'calls':>9}  function"]
    for row in rows:
        share = row.total / total if total else 0.0
        cshare = row.cumulative / total if total else 0.0
        calls = str(row.calls) if row.calls else ""
        lines.append(
            f"{_amount(row.total, unit):>9} {share:6.1%} {_amount(row.cumulative, unit):>9}"
            f" {cshare:6.1%} {calls:>9}  {row.function}"
        )
    return "\n".join(lines)


def _amount(value: float, unit: str) -> str:
    return f"{value:.3f}s" if unit == "s" else f"{value:.0f}"


def _quantity(value: float, unit: str) -> str:
    return f"{value:.3f} s" if unit == "s" else f"{value:.0f} samples"


# -- running it ----------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", default="wsgi", choices=list(APPS))
    parser.add_argument("--path", default="/hello", help="the URL path wrk requests")
    parser.add_argument("--profiler", default="cprofile", choices=["cprofile", "py-spy"])
    parser.add_argument("--duration", type=int, default=10, help="seconds profiled")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="brick --threads")
    parser.add_argument("--close", action="store_true", help="send Connection: close")
    parser.add_argument("--top", type=int, default=15, help="how many functions to list")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")


def main(options: argparse.Namespace) -> int:
    if options.profiler == "cprofile" and options.threads != 1:
        print("cProfile sees only the loop thread: use --threads 1, or --profiler py-spy")
        return 2
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        if options.profiler == "cprofile":
            total, rows, unit, summary = _run_cprofile(options)
        else:
            total, rows, unit, summary = _run_py_spy(options)
    except ServerError as exc:
        print(f"bench profile: {exc}", file=sys.stderr)
        return 1
    print(summary)
    print()
    print(render(rows, total, unit, options.top))
    return 0


def is_waiting(function: str) -> bool:
    """Whether a profile entry is a thread waiting (for sockets, or for work), not working."""
    if function.startswith(("<method 'poll' of 'select.", "<method 'select' of 'select.")):
        return True
    # py-spy: the loop in the poll, or an app thread of the pool waiting for work.
    return _WAIT.match(function) is not None or function == IDLE_POOL_THREAD


def render(rows: list[Row], total: float, unit: str, count: int) -> str:
    """The two top lists, with shares of the time the worker was not waiting in the poll.

    The wait shows up in both profilers as time in epoll (cProfile measures wall-clock time;
    py-spy samples a thread whether it runs or sleeps in a system call); it is the idle time
    of the worker, so it is reported on its own line and left out of the shares.
    """
    what = "seconds" if unit == "s" else "samples"
    waiting = sum(r.total for r in rows if is_waiting(r.function))
    busy = total - waiting
    working = [r for r in rows if not is_waiting(r.function)]
    inner = [r for r in working if r.cumulative < ENTRY_SHARE * busy]
    share = waiting / total if total else 0.0
    return "\n".join(
        [
            f"Waiting (the event loop in its poll, idle app threads): {_quantity(waiting, unit)},"
            f" {share:.0%} of the profile; the shares below are of the other"
            f" {_quantity(busy, unit)}.",
            "",
            f"Top {count} by total time (in the function itself; {what}):",
            format_rows(top(working, "total", count), busy, unit),
            "",
            f"Top {count} by cumulative time (including callees; {what}):",
            format_rows(top(inner, "cumulative", count), busy, unit),
        ]
    )


def _describe(options: argparse.Namespace, result_line: str) -> str:
    mode = "Connection: close" if options.close else "keep-alive"
    return (
        f"brick --threads {options.threads} serving {options.app} {options.path}, {mode},"
        f" {options.connections} connections, {options.duration} s under {options.profiler}"
        f" (server on core 0, wrk on core 1)\n{result_line}"
    )


def _drive(server: ServerProcess, options: argparse.Namespace, duration: int) -> str:
    result = run_wrk(
        server.url + options.path,
        duration=duration,
        connections=options.connections,
        close=options.close,
        cpu=1,
    )
    return (
        f"wrk: {result.requests} requests, {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms,"
        f" errors {result.errors}"
    )


def _run_cprofile(options: argparse.Namespace) -> tuple[float, list[Row], str, str]:
    outdir = PROFILE_DIR / f"cprofile-{options.app}-{os.getpid()}"
    spec = ServerSpec("brick", 1, options.threads)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    server = ServerProcess(spec, options.app, PROFILE_DIR, extra_env={"PYTHONPATH": pythonpath})
    # The same brick command line, started through the profiling wrapper.
    brick = spec.command(options.app, server.host, server.port)
    server.command = [sys.executable, "-m", "bench.profiled_brick", str(outdir), *brick[3:]]
    with server:
        _drive(server, options, 1)  # warm-up, not profiled
        workers = [stat.pid for stat in server.tree()[1:]]
        for pid in workers:
            os.kill(pid, signal.SIGUSR2)
        line = _drive(server, options, options.duration)
        for pid in workers:
            os.kill(pid, signal.SIGUSR2)
        files = [outdir / f"worker-{pid}.prof" for pid in workers]
        _wait_for(files, server)
    stats = pstats.Stats(*(str(f) for f in files))
    total, rows = cprofile_rows(stats)
    saved = f"profile: {files[0].relative_to(ROOT)} (python -m pstats, or snakeviz)"
    return total, rows, "s", _describe(options, f"{line} (slowed by the profiler)\n{saved}")


def _wait_for(files: list[Path], server: ServerProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        if all(f.exists() and f.stat().st_size > 0 for f in files):
            time.sleep(0.2)  # the worker may still be writing
            return
        time.sleep(0.05)
    raise ServerError(f"no profile written after {timeout:.0f} s: {files}")


def _run_py_spy(options: argparse.Namespace) -> tuple[float, list[Row], str, str]:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise ServerError(f"py-spy is not installed beside {sys.executable} (make bench-install)")
    spec = ServerSpec("brick", 1, options.threads)
    raw = PROFILE_DIR / f"py-spy-{options.app}-{os.getpid()}.txt"
    with ServerProcess(spec, options.app, PROFILE_DIR) as server:
        _drive(server, options, 1)  # warm-up, not profiled
        worker = server.tree()[-1].pid
        command = [str(spy), "record", "--pid", str(worker), "--duration", str(options.duration),
                   "--rate", str(options.rate), "--format", "raw", "--output", str(raw),
                   "--nonblocking"]  # fmt: skip
        with open(PROFILE_DIR / "py-spy.log", "wb") as log:
            sampler = subprocess.Popen(pinned(command, 1), stdout=log, stderr=subprocess.STDOUT)
            try:
                line = _drive(server, options, options.duration + 1)
                sampler.wait(timeout=60)
            finally:
                if sampler.poll() is None:
                    sampler.kill()
                    sampler.wait()
    if not raw.exists():
        log_text = (PROFILE_DIR / "py-spy.log").read_text(errors="replace")
        raise ServerError(f"py-spy wrote no profile:\n{log_text}")
    total, rows = collapsed_rows(raw.read_text().splitlines())
    saved = f"profile: {raw.relative_to(ROOT)} (collapsed stacks, for flamegraph.pl)"
    return total, rows, "samples", _describe(options, f"{line}\n{saved}")
