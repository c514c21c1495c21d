"""wrk: the command line the benchmark runs, and the numbers read back from its summary.

wrk 4 prints a human summary; the parts we read look like this (with `--latency`):

      Latency Distribution
         50%    1.10ms
         99%   62.22ms
      11823 requests in 2.02s, 2.05MB read
      Socket errors: connect 0, read 3, write 0, timeout 0
      Non-2xx or 3xx responses: 5
    Requests/sec:   5860.38

The error lines appear only when there were errors. Durations carry a unit (us, ms, s, m, h).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass

WRK = shutil.which("wrk") or "/usr/bin/wrk"

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)$")
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([0-9.]+[a-z]+),", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.MULTILINE)


class WrkOutputError(ValueError):
    """wrk's output lacks a part the benchmark needs (wrk failed, or its format changed)."""


def parse_duration(text: str) -> float:
    """A wrk duration such as `850.00us`, `1.10ms`, `2.02s` or `1.50m`, in seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise WrkOutputError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class WrkResult:
    """One wrk run's summary. Latencies are in milliseconds."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non_2xx: int = 0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        """Every failed exchange: socket errors plus responses with a 4xx or 5xx status."""
        return self.socket_errors + self.non_2xx

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def parse(output: str) -> WrkResult:
    """Read a wrk summary (run with `--latency`)."""
    requests = _REQUESTS.search(output)
    rps = _RPS.search(output)
    if requests is None or rps is None:
        raise WrkOutputError(f"no request count in wrk output:\n{output.strip()}")
    percentiles = {p: parse_duration(v) * 1e3 for p, v in _PERCENTILE.findall(output)}
    if set(percentiles) != {"50", "75", "90", "99"}:
        raise WrkOutputError(
            f"no latency distribution in wrk output (run with --latency):\n{output}"
        )
    socket = _SOCKET_ERRORS.search(output)
    connect, read, write, timeout = (int(n) for n in socket.groups()) if socket else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=parse_duration(requests.group(2)),
        rps=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p75_ms=percentiles["75"],
        p90_ms=percentiles["90"],
        p99_ms=percentiles["99"],
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def command(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    close: bool = False,
    timeout: float = 10.0,
    wrk: str = WRK,
) -> list[str]:
    """The wrk command line for one run: `--latency` always; `Connection: close` on request."""
    args = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={_seconds_arg(duration)}",
        f"--timeout={_seconds_arg(timeout)}",
        "--latency",
    ]
    if close:
        args += ["--header", "Connection: close"]
    return [*args, url]


def _seconds_arg(seconds: float) -> str:
    # wrk 4 takes whole seconds only: "1.5s" and "500ms" are usage errors.
    return f"{max(1, round(seconds))}s"
