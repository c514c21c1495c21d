"""The benchmark's /proc accounting: a server tree's CPU time, its workers' memory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procstat  # noqa: E402
from bench.procstat import ProcStat  # noqa: E402

pytestmark = pytest.mark.unit


def stat_line(
    pid: int,
    ppid: int,
    utime: int,
    stime: int,
    cutime: int = 0,
    cstime: int = 0,
    comm: str = "python",
    pgrp: int | None = None,
) -> str:
    """A /proc/<pid>/stat line with the given fields and plausible others."""
    fields = [
        "S", ppid, pgrp if pgrp is not None else ppid, 0, 0, -1, 4194560, 1000, 0, 0, 0,
        utime, stime, cutime, cstime, 20, 0, 1, 0, 12345, 100000000, 5000,
    ]  # fmt: skip
    return f"{pid} ({comm}) " + " ".join(str(f) for f in fields) + "\n"


def test_parse_stat_fields() -> None:
    stat = procstat.parse_stat(stat_line(42, 7, 100, 20, 3, 4, pgrp=42))
    assert (stat.pid, stat.ppid, stat.pgrp, stat.state, stat.comm) == (42, 7, 42, "S", "python")
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime) == (100, 20, 3, 4)
    assert stat.cpu_ticks == 127


def test_parse_stat_with_spaces_and_parentheses_in_the_name() -> None:
    stat = procstat.parse_stat(stat_line(5, 1, 9, 8, comm="gunicorn: worker (x) [app]"))
    assert stat.comm == "gunicorn: worker (x) [app]"
    assert (stat.ppid, stat.utime, stat.stime) == (1, 9, 8)


def test_parse_stat_of_this_process() -> None:
    text = Path(f"/proc/{os.getpid()}/stat").read_text()
    stat = procstat.parse_stat(text)
    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()


@pytest.mark.parametrize("text", ["", "garbage", "12 python S 1 2 3"])
def test_parse_stat_rejects_other_text(text: str) -> None:
    with pytest.raises((ValueError, IndexError)):
        procstat.parse_stat(text)


def test_rss() -> None:
    status = "Name:\tpython\nVmPeak:\t  30000 kB\nVmRSS:\t   17408 kB\nThreads:\t1\n"
    assert procstat.parse_rss_kib(status) == 17408
    assert procstat.parse_rss_kib("Name:\tzombie\nState:\tZ (zombie)\n") == 0


def tree_of(*lines: str) -> list[ProcStat]:
    return [procstat.parse_stat(line) for line in lines]


def test_descendants_follow_the_whole_tree_and_nothing_else() -> None:
    stats = tree_of(
        stat_line(1, 0, 0, 0),
        stat_line(100, 1, 5, 1),  # the master
        stat_line(101, 100, 50, 10),  # worker
        stat_line(102, 100, 40, 12),  # worker
        stat_line(103, 102, 1, 1),  # a worker's child
        stat_line(200, 1, 999, 999),  # someone else's process
    )
    tree = procstat.descendants(100, stats)
    assert [s.pid for s in tree] == [100, 101, 102, 103]
    assert procstat.tree_cpu_ticks(tree) == 5 + 1 + 50 + 10 + 40 + 12 + 1 + 1
    assert [s.pid for s in procstat.leaves(tree)] == [101, 103]
    assert procstat.descendants(999, stats) == []


def test_a_single_process_server_is_its_own_worker() -> None:
    tree = procstat.descendants(7, tree_of(stat_line(7, 1, 3, 3)))
    assert [s.pid for s in procstat.leaves(tree)] == [7]


def test_a_worker_that_exits_during_the_run_still_counts() -> None:
    # Before: master 100 (10 ticks) and worker 101 (500 ticks).
    before = procstat.descendants(
        100, tree_of(stat_line(100, 1, 8, 2), stat_line(101, 100, 400, 100))
    )
    # The worker used 300 more ticks, exited, and the master reaped it: its 800 ticks in all
    # are now in the master's cutime/cstime; a new worker 102 has used 20.
    after = procstat.descendants(
        100,
        tree_of(
            stat_line(100, 1, 9, 2, cutime=640, cstime=160),
            stat_line(102, 100, 15, 5),
        ),
    )
    used = procstat.tree_cpu_ticks(after) - procstat.tree_cpu_ticks(before)
    assert used == 1 + 300 + 20


def test_cpu_lines() -> None:
    text = (
        "cpu  1000 10 500 8000 100 5 5 0 0 0\n"
        "cpu0 600 0 300 3000 50 3 2 0 0 0\n"
        "cpu1 400 10 200 5000 50 2 3 0 0 0\n"
        "intr 12345\nctxt 999\n"
    )
    lines = procstat.parse_cpu_lines(text)
    assert set(lines) == {"cpu", "cpu0", "cpu1"}
    busy, total = lines["cpu0"]
    assert total == 600 + 300 + 3000 + 50 + 3 + 2
    assert busy == total - 3000 - 50


def test_other_load_is_the_core_busy_minus_our_own_time() -> None:
    before = {"cpu0": (1000, 5000)}
    after = {"cpu0": (1400, 5500)}  # 400 of 500 ticks busy
    assert procstat.other_load(before, after, 0, own_ticks=150) == pytest.approx(250 / 500)
    assert procstat.other_load(before, after, 0, own_ticks=400) == 0.0
    assert procstat.other_load(before, after, 0, own_ticks=900) == 0.0  # never negative
    assert procstat.other_load(before, after, 3, own_ticks=0) == 0.0  # no such core
    assert procstat.other_load(before, before, 0, own_ticks=0) == 0.0  # no time passed


def test_reading_the_live_tree_of_this_process() -> None:
    tree = procstat.process_tree(os.getpid())
    assert tree[0].pid == os.getpid()
    assert procstat.rss_kib(os.getpid()) > 1000
    assert procstat.read_stat(2**22 + 12345) is None  # beyond pid_max: no such process
