"""The order of the benchmark's runs: servers take turns within each repetition.

The servers and wrk are replaced by fakes that record what was asked of them, so the test
sees the schedule the runner follows, and what happens when one server fails mid-way.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import runner  # noqa: E402
from bench.servers import ServerError, ServerSpec  # noqa: E402
from bench.stats import Run  # noqa: E402
from bench.wrk import WrkResult  # noqa: E402

pytestmark = pytest.mark.unit


class FakeServer:
    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.url = f"http://fake/{spec.key}"

    def memory(self) -> tuple[list[int], int | None]:
        return [1000], 2000


class Quiet(runner.Progress):
    def step(self, description: str) -> None:
        pass

    def result(self, line: str) -> None:
        pass

    def warn(self, line: str) -> None:
        pass


def schedule(
    monkeypatch: pytest.MonkeyPatch, fail: tuple[str, int] | None = None
) -> tuple[list[tuple[str, bool, int]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the throughput part for one app on brick and granian; what wrk was asked."""
    calls: list[tuple[str, bool, int]] = []

    @contextlib.contextmanager
    def started(settings: Any, spec: ServerSpec, app: str) -> Iterator[FakeServer]:
        yield FakeServer(spec)

    def measure(server: FakeServer, url: str, **kw: Any) -> Run:
        calls.append((server.spec.key, kw["close"], kw["duration"]))
        if fail is not None and (server.spec.key, len(calls)) == fail:
            raise ServerError("died")
        return Run(WrkResult(1000, 1.0, 1000.0, 1, 1, 1, 1), cpu_ticks=2)

    monkeypatch.setattr(runner, "started", started)
    monkeypatch.setattr(runner, "measure", measure)
    settings = runner.Settings.from_env({"BENCH_REPEAT": "2", "BENCH_WARMUP": "1"})
    throughput: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    specs = [ServerSpec("brick"), ServerSpec("granian")]
    runner._throughput(settings, "wsgi", specs, throughput, memory, failures, Quiet())
    return calls, throughput, failures


def test_servers_take_turns_in_every_repetition(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, throughput, failures = schedule(monkeypatch)
    servers = [key for key, _, _ in calls]
    # warm-up, then 2 keep-alive runs, then 2 close runs: each time brick, then granian.
    assert servers == ["brick", "granian"] * 5
    assert [close for _, close, _ in calls] == [False] * 6 + [True] * 4
    assert [duration for _, _, duration in calls][:2] == [1, 1]  # the warm-ups
    assert not failures
    assert [(e["server"], e["mode"], len(e["runs"])) for e in throughput] == [
        ("brick", "keep-alive", 2),
        ("granian", "keep-alive", 2),
        ("brick", "close", 2),
        ("granian", "close", 2),
    ]


def test_a_server_that_fails_is_reported_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, throughput, failures = schedule(monkeypatch, fail=("granian", 4))
    assert failures == [{"app": "wsgi", "server": "granian", "error": "died"}]
    assert [key for key, _, _ in calls[4:]] == ["brick"] * 3  # granian is not asked again
    assert {e["server"] for e in throughput} == {"brick"}
    assert len(throughput) == 2
