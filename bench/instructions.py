"""`make count APP=wsgi`: the instructions brick's worker runs per request, a figure that repeats.

CPU time per request is the figure of merit (DESIGN.md §4), but on a shared VM it moves by
10-30% from one run to the next, so a change worth 5% cannot be seen in it. valgrind's
callgrind counts the instructions a process runs in user space, and the same program with
the same input and environment runs the same count, whatever else the machine is doing.

`count` starts brick (one worker) under callgrind twice. One client sends requests one
after another, `--base` of them in the first run and `--base + --requests` in the second;
the worker's total in the second run minus the first, divided by `--requests`, is what a
request costs: start-up, warm-up and shut-down are in both runs and cancel out. Hash
randomization is off (PYTHONHASHSEED=0), so dictionaries probe the same way each time.

The kernel's work (the system calls, TCP, the loopback) is not in the count, nor are
waits: compare two versions of brick's own code with it, never brick against another
server, and never against the CPU figures of `make bench`. The one exception is the floor
(`--server floor`, bench/floor.py): it runs the same app on the same interpreter with
nothing of a server's own, so brick's count minus the floor's is what brick's own code
costs a request.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import sys
from pathlib import Path

from bench.servers import APPS, ROOT, ServerError, ServerProcess, ServerSpec

COUNT_DIR = ROOT / "bench" / "results" / "tmp" / "count"
START_TIMEOUT = 180.0  # seconds: Python under valgrind starts some 50 times slower
STOP_TIMEOUT = 120.0  # the worker writes its counts as it exits
_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", default="wsgi", choices=list(APPS))
    parser.add_argument(
        "--server", default="brick", choices=["brick", "floor"], help="what is counted"
    )
    parser.add_argument("--path", default="/hello", help="the URL path requested")
    parser.add_argument("--threads", type=int, default=1, help="brick --threads")
    parser.add_argument("--close", action="store_true", help="send Connection: close")
    parser.add_argument("--requests", type=int, default=2000, help="requests counted")
    parser.add_argument("--base", type=int, default=300, help="requests in both runs")


def total_instructions(callgrind_out: str) -> int:
    """The event total a callgrind output file reports (its `totals:` or `summary:` line)."""
    found = _TOTALS.findall(callgrind_out)
    if not found:
        raise ValueError("no totals line: not a finished callgrind output file")
    return int(found[-1])


def per_request(short: int, long: int, extra_requests: int) -> float:
    """Instructions per request from the worker's totals in the short and the long run."""
    if extra_requests <= 0:
        raise ValueError("the long run must answer more requests than the short one")
    if long <= short:
        raise ValueError(f"the long run counted no more instructions ({long} <= {short})")
    return (long - short) / extra_requests


def drive(host: str, port: int, path: str, requests: int, close: bool) -> None:
    """`requests` GETs, one after another; every answer must be a 200 with its body read."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Connection": "close"} if close else {}
    try:
        for n in range(requests):
            conn.request("GET", path, headers=headers)  # connects again after a close
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise ServerError(f"request {n + 1} to {path} answered {response.status}")
            if close:
                conn.close()
    finally:
        conn.close()


def serving_file(files: list[Path], first_pid: int, one_process: bool) -> Path:
    """The callgrind file of the process that served: brick's one worker (not the master,
    the process started first), or the floor's only process."""
    if not one_process:
        files = [f for f in files if f.name != f"callgrind.{first_pid}"]
    if len(files) != 1:
        names = sorted(f.name for f in files)
        raise ServerError(f"expected the callgrind file of one serving process, found {names}")
    return files[0]


def counted_run(options: argparse.Namespace, requests: int, outdir: Path) -> int:
    """Start the server under callgrind, send `requests`, stop it: the serving process's
    instructions."""
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("callgrind.*"):
        old.unlink()
    spec = ServerSpec(options.server, 1, options.threads)
    server = ServerProcess(spec, options.app, outdir, cpu=None, extra_env={"PYTHONHASHSEED": "0"})
    command = spec.command(options.app, server.host, server.port)
    server.command = ["valgrind", "--tool=callgrind", "--quiet",
                      f"--callgrind-out-file={outdir}/callgrind.%p", *command]  # fmt: skip
    server.start(timeout=START_TIMEOUT)
    try:
        first_pid = server.pid
        drive(server.host, server.port, options.path, requests, options.close)
    finally:
        server.stop(timeout=STOP_TIMEOUT)
    found = serving_file(list(outdir.glob("callgrind.*")), first_pid, spec.processes == 1)
    return total_instructions(found.read_text(errors="replace"))


def main(options: argparse.Namespace) -> int:
    if options.requests < 1 or options.base < 1:
        print("bench count: --requests and --base must be at least 1", file=sys.stderr)
        return 2
    if options.server == "floor" and options.threads != 1:
        print("bench count: the floor has one thread (no --threads)", file=sys.stderr)
        return 2
    if shutil.which("valgrind") is None:
        print("bench count: valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    mode = "Connection: close" if options.close else "keep-alive"
    server = "the floor" if options.server == "floor" else f"brick --threads {options.threads}"
    what = f"{server}, {options.app} {options.path}, {mode}"
    print(f"{what}: two runs under callgrind (a few minutes)", file=sys.stderr)
    tag = f"{options.server}-{options.app}-{os.getpid()}"
    try:
        short = counted_run(options, options.base, COUNT_DIR / f"{tag}-short")
        long = counted_run(options, options.base + options.requests, COUNT_DIR / f"{tag}-long")
        cost = per_request(short, long, options.requests)
    except (ServerError, ValueError, OSError) as exc:
        print(f"bench count: {exc}", file=sys.stderr)
        return 1
    print(
        f"{what}: {cost:,.0f} instructions per request (user space, callgrind;"
        f" {options.requests} requests between the two runs)"
    )
    return 0
