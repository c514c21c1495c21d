"""One measured wrk run, and the summary of several repetitions of it.

Each repetition gives a `Run`: what wrk saw plus the server's CPU ticks over the run. The
summary reports the median of each figure over the repetitions, each taken separately (the
run with the median CPU cost need not have the median latency), and the *sum* of the errors,
warm-up included: one failed request in any run is one too many.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.procstat import CLK_TCK
from bench.wrk import WrkResult


@dataclass(frozen=True)
class Run:
    """One measured run: wrk's summary and the server tree's CPU over it."""

    wrk: WrkResult
    cpu_ticks: int
    other_load: float = 0.0  # share of the server's core busy with other processes
    clk_tck: int = CLK_TCK

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ticks / self.clk_tck

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU microseconds per answered request (inf when nothing was answered)."""
        if self.wrk.requests <= 0:
            return float("inf")
        return self.cpu_seconds * 1e6 / self.wrk.requests

    def as_dict(self) -> dict[str, object]:
        return {
            **self.wrk.as_dict(),
            "cpu_ticks": self.cpu_ticks,
            "clk_tck": self.clk_tck,
            "cpu_seconds": self.cpu_seconds,
            "cpu_us_per_request": self.cpu_us_per_request,
            "other_load": self.other_load,
        }


@dataclass(frozen=True)
class Summary:
    """The medians over a scenario's repetitions, and every error counted."""

    runs: int
    cpu_us_per_request: float
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int  # answered in all measured runs together
    errors: int  # socket errors + 4xx/5xx, warm-up included
    non_2xx: int
    socket_errors: int
    other_load: float  # median share of the server's core used by other processes
    spread: float  # (max - min) / median of the CPU cost: how much the repetitions agree

    def as_dict(self) -> dict[str, float | int]:
        return {
            "runs": self.runs,
            "cpu_us_per_request": self.cpu_us_per_request,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "other_load": self.other_load,
            "spread": self.spread,
        }


def median(values: Sequence[float]) -> float:
    """The median; for an even count, the mean of the middle two."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def summarize(runs: Sequence[Run], warmups: Sequence[Run] = ()) -> Summary:
    if not runs:
        raise ValueError("no runs to summarize")
    costs = [run.cpu_us_per_request for run in runs]
    middle = median(costs)
    everything = [*runs, *warmups]
    finite = [c for c in costs if c != float("inf")]
    spread = (max(finite) - min(finite)) / middle if finite and 0 < middle < float("inf") else 0.0
    return Summary(
        runs=len(runs),
        cpu_us_per_request=middle,
        rps=median([run.wrk.rps for run in runs]),
        p50_ms=median([run.wrk.p50_ms for run in runs]),
        p99_ms=median([run.wrk.p99_ms for run in runs]),
        requests=sum(run.wrk.requests for run in runs),
        errors=sum(run.wrk.errors for run in everything),
        non_2xx=sum(run.wrk.non_2xx for run in everything),
        socket_errors=sum(run.wrk.socket_errors for run in everything),
        other_load=median([run.other_load for run in runs]),
        spread=spread,
    )


def ratio(value: float, reference: float) -> float | None:
    """value / reference, or None when the reference is missing, zero or infinite."""
    if reference in (0.0, float("inf")) or value == float("inf"):
        return None
    return value / reference
