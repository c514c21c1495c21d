"""The benchmark's statistics: CPU per request, medians over repetitions, errors summed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stats import Run, median, ratio, summarize  # noqa: E402
from bench.wrk import WrkResult  # noqa: E402

pytestmark = pytest.mark.unit


def result(
    requests: int = 1000,
    rps: float = 200.0,
    p50: float = 1.0,
    p99: float = 5.0,
    non_2xx: int = 0,
    read_errors: int = 0,
) -> WrkResult:
    return WrkResult(
        requests=requests,
        seconds=5.0,
        rps=rps,
        p50_ms=p50,
        p75_ms=p50,
        p90_ms=p99,
        p99_ms=p99,
        read_errors=read_errors,
        non_2xx=non_2xx,
    )


def test_cpu_per_request_from_ticks() -> None:
    run = Run(result(requests=20_000), cpu_ticks=50, clk_tck=100)  # 0.5 s of CPU
    assert run.cpu_seconds == pytest.approx(0.5)
    assert run.cpu_us_per_request == pytest.approx(25.0)


def test_cpu_per_request_with_nanosecond_ticks() -> None:
    # The stack mode counts in ns (cgroup usage) by setting the tick rate.
    run = Run(result(requests=1000), cpu_ticks=30_000_000, clk_tck=1_000_000_000)
    assert run.cpu_us_per_request == pytest.approx(30.0)


def test_no_request_answered_is_an_infinite_cost() -> None:
    assert math.isinf(Run(result(requests=0), cpu_ticks=10).cpu_us_per_request)


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([7.0]) == 7.0
    with pytest.raises(ValueError):
        median([])


def test_summary_takes_each_median_separately() -> None:
    runs = [
        Run(result(requests=1000, rps=100, p50=9.0, p99=30), cpu_ticks=3, clk_tck=100),  # 30 µs
        Run(result(requests=1000, rps=300, p50=1.0, p99=10), cpu_ticks=1, clk_tck=100),  # 10 µs
        Run(result(requests=1000, rps=200, p50=5.0, p99=90), cpu_ticks=2, clk_tck=100),  # 20 µs
    ]
    summary = summarize(runs)
    assert summary.runs == 3
    assert summary.cpu_us_per_request == pytest.approx(20.0)
    assert summary.rps == 200
    assert summary.p50_ms == 5.0
    assert summary.p99_ms == 30
    assert summary.requests == 3000
    assert summary.spread == pytest.approx((30 - 10) / 20)


def test_one_slow_outlier_does_not_move_the_median() -> None:
    runs = [Run(result(), cpu_ticks=t, clk_tck=100) for t in (2, 2, 2, 2, 50)]
    assert summarize(runs).cpu_us_per_request == pytest.approx(20.0)


def test_every_error_counts_warm_up_included() -> None:
    runs = [
        Run(result(non_2xx=2), cpu_ticks=1),
        Run(result(read_errors=1), cpu_ticks=1),
        Run(result(), cpu_ticks=1),
    ]
    warmups = [Run(result(non_2xx=5, read_errors=4), cpu_ticks=1)]
    summary = summarize(runs, warmups)
    assert summary.errors == 2 + 1 + 5 + 4
    assert summary.non_2xx == 7
    assert summary.socket_errors == 5
    # The warm-up's numbers stay out of the medians.
    assert summary.requests == 3000


def test_summary_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_summary_as_dict_is_plain_data() -> None:
    data = summarize([Run(result(), cpu_ticks=4, other_load=0.25)]).as_dict()
    assert data["cpu_us_per_request"] == pytest.approx(40.0 * 100 / Run(result(), 4).clk_tck)
    assert data["other_load"] == 0.25
    assert all(isinstance(v, (int, float)) for v in data.values())


def test_ratio() -> None:
    assert ratio(10.0, 100.0) == pytest.approx(0.1)
    assert ratio(10.0, 0.0) is None
    assert ratio(10.0, math.inf) is None
    assert ratio(math.inf, 10.0) is None
