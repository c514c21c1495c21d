"""The benchmark's reading of wrk's summary, and the wrk command lines it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402

pytestmark = pytest.mark.unit

KEEP_ALIVE = """\
Running 2s test @ http://127.0.0.1:18123/hello
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.91ms   10.09ms  86.37ms   94.59%
    Req/Sec     5.90k     1.32k    8.41k    90.00%
  Latency Distribution
     50%    1.10ms
     75%    2.96ms
     90%    4.91ms
     99%   62.22ms
  11823 requests in 2.02s, 2.05MB read
Requests/sec:   5860.38
Transfer/sec:      1.02MB
"""

NOT_FOUND = """\
Running 1s test @ http://127.0.0.1:18126/nope
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.77ms    2.44ms  21.76ms   89.14%
    Req/Sec     3.64k     2.24k    8.28k    70.00%
  Latency Distribution
     50%  660.00us
     75%    2.01ms
     90%    4.50ms
     99%   12.76ms
  3621 requests in 1.00s, 548.10KB read
  Non-2xx or 3xx responses: 3621
Requests/sec:   3617.44
Transfer/sec:    547.56KB
"""

TIMEOUTS = """\
Running 2s test @ http://127.0.0.1:18126/sleep?seconds=1.5
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     2.00      0.00     2.00    100.00%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  4 requests in 2.10s, 592.00B read
  Socket errors: connect 0, read 0, write 0, timeout 4
Requests/sec:      1.90
Transfer/sec:     281.91B
"""

MIXED_ERRORS = """\
  Latency Distribution
     50%    1.20s
     75%    1.50s
     90%    1.02m
     99%    1.10m
  120 requests in 1.00m, 20.00KB read
  Socket errors: connect 3, read 17, write 2, timeout 5
  Non-2xx or 3xx responses: 9
Requests/sec:      2.00
"""


def test_keep_alive_summary() -> None:
    result = wrk.parse(KEEP_ALIVE)
    assert result.requests == 11823
    assert result.seconds == pytest.approx(2.02)
    assert result.rps == pytest.approx(5860.38)
    assert result.p50_ms == pytest.approx(1.10)
    assert result.p75_ms == pytest.approx(2.96)
    assert result.p90_ms == pytest.approx(4.91)
    assert result.p99_ms == pytest.approx(62.22)
    assert result.errors == 0
    assert result.socket_errors == 0


def test_non_2xx_responses_are_errors() -> None:
    result = wrk.parse(NOT_FOUND)
    assert result.non_2xx == 3621
    assert result.errors == 3621
    assert result.socket_errors == 0
    assert result.p50_ms == pytest.approx(0.66)  # microseconds converted


def test_timeouts_are_socket_errors() -> None:
    result = wrk.parse(TIMEOUTS)
    assert result.timeouts == 4
    assert result.socket_errors == 4
    assert result.errors == 4
    assert result.requests == 4


def test_every_kind_of_error_is_counted_and_long_units_read() -> None:
    result = wrk.parse(MIXED_ERRORS)
    assert (result.connect_errors, result.read_errors, result.write_errors) == (3, 17, 2)
    assert result.timeouts == 5
    assert result.non_2xx == 9
    assert result.errors == 3 + 17 + 2 + 5 + 9
    assert result.seconds == pytest.approx(60.0)
    assert result.p50_ms == pytest.approx(1200.0)
    assert result.p99_ms == pytest.approx(66000.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("850.00us", 850e-6), ("1.10ms", 1.1e-3), ("2s", 2.0), ("1.50m", 90.0), ("1.00h", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert wrk.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "12", "1.0 ms", "fast", "-1ms", "1.0d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(wrk.WrkOutputError):
        wrk.parse_duration(text)


def test_a_failed_wrk_is_an_error_not_zero_requests() -> None:
    with pytest.raises(wrk.WrkOutputError, match="no request count"):
        wrk.parse("unable to connect to 127.0.0.1:9 Connection refused\n")


def test_a_summary_without_the_latency_distribution_is_refused() -> None:
    without = KEEP_ALIVE.split("  Latency Distribution")[0] + KEEP_ALIVE.split("99%   62.22ms\n")[1]
    with pytest.raises(wrk.WrkOutputError, match="--latency"):
        wrk.parse(without)


def test_command_keep_alive() -> None:
    command = wrk.command("http://127.0.0.1:1/hello", duration=5, connections=16)
    assert command[0] == wrk.WRK
    assert "--latency" in command
    assert "--duration=5s" in command
    assert "--connections=16" in command
    assert "--threads=1" in command
    assert "Connection: close" not in command
    assert command[-1] == "http://127.0.0.1:1/hello"


def test_command_close_sends_the_header() -> None:
    command = wrk.command("http://127.0.0.1:1/hello", duration=1, connections=4, close=True)
    index = command.index("--header")
    assert command[index + 1] == "Connection: close"


@pytest.mark.parametrize(("seconds", "arg"), [(0.2, "1s"), (1, "1s"), (2.6, "3s"), (30, "30s")])
def test_command_durations_are_whole_seconds(seconds: float, arg: str) -> None:
    # wrk 4 rejects "1.5s" and "500ms".
    command = wrk.command("http://x/", duration=seconds, connections=1, timeout=seconds)
    assert f"--duration={arg}" in command
    assert f"--timeout={arg}" in command
