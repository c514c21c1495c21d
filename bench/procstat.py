"""CPU time and memory of a server's whole process tree, read from /proc.

A server is a tree: a master and its workers (gunicorn, brick, granian), or a single process
(waitress). Its CPU cost over a wrk run is the change, from just before to just after, of

    sum over the tree of  utime + stime + cutime + cstime      (/proc/<pid>/stat, fields 14-17)

utime/stime cover every thread of a process. cutime/cstime hold the time of children the
process has reaped, so a worker that exits during the run and is reaped by its master still
counts: its own entry leaves the tree, and the same time appears in the master's cutime.
Units are clock ticks (`SC_CLK_TCK`, usually 100 per second).

The other load on a core (other people's processes on a shared machine) is the core's busy
time from /proc/stat minus the server's own time; the report shows it so a noisy run shows.

Every parser here takes text, so the unit tests need no /proc.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the benchmark uses; times in clock ticks."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def cpu_ticks(self) -> int:
        """This process's CPU time plus that of the children it has reaped."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line.

    The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
    so the fields after it are found from the *last* closing parenthesis.
    """
    head, sep, tail = text.rpartition(")")
    pid_text, open_paren, comm = head.partition(" (")
    if not sep or not open_paren:
        raise ValueError(f"not a /proc/<pid>/stat line: {text!r}")
    fields = tail.split()
    # fields[0] is field 3 (state); field N of proc(5) is fields[N - 3].
    return ProcStat(
        pid=int(pid_text),
        comm=comm,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def parse_rss_kib(status: str) -> int:
    """VmRSS from /proc/<pid>/status, in KiB (0 for a zombie, which has no VmRSS line)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit: {line!r}")
            return int(value)
    return 0


def descendants(root: int, stats: Iterable[ProcStat]) -> list[ProcStat]:
    """`root` and every process below it, root first then breadth-first."""
    by_pid: dict[int, ProcStat] = {}
    children: dict[int, list[int]] = {}
    for stat in stats:
        by_pid[stat.pid] = stat
        children.setdefault(stat.ppid, []).append(stat.pid)
    if root not in by_pid:
        return []
    tree = [by_pid[root]]
    queue = [root]
    seen = {root}
    while queue:
        pid = queue.pop(0)
        for child in sorted(children.get(pid, ())):
            if child not in seen:
                seen.add(child)
                tree.append(by_pid[child])
                queue.append(child)
    return tree


def leaves(tree: list[ProcStat]) -> list[ProcStat]:
    """The processes of a tree that have no child in it: the workers.

    For a master-and-workers server these are the workers; for a single-process server,
    the process itself.
    """
    parents = {stat.ppid for stat in tree}
    return [stat for stat in tree if stat.pid not in parents]


def tree_cpu_ticks(tree: Iterable[ProcStat]) -> int:
    return sum(stat.cpu_ticks for stat in tree)


def parse_cpu_lines(text: str) -> dict[str, tuple[int, int]]:
    """/proc/stat's `cpu` lines as name -> (busy ticks, total ticks).

    Idle time is `idle` + `iowait`; `guest` and `guest_nice` are already inside `user` and
    `nice`, so they are left out of the total.
    """
    result: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        ticks = [int(v) for v in values[:8]]
        total = sum(ticks)
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        result[name] = (total - idle, total)
    return result


def other_load(
    before: Mapping[str, tuple[int, int]],
    after: Mapping[str, tuple[int, int]],
    cpu: int,
    own_ticks: int,
) -> float:
    """The share (0..1) of core `cpu` busy with something other than `own_ticks` of our own."""
    name = f"cpu{cpu}"
    if name not in before or name not in after:
        return 0.0
    busy = after[name][0] - before[name][0]
    total = after[name][1] - before[name][1]
    if total <= 0:
        return 0.0
    return min(1.0, max(0.0, (busy - own_ticks) / total))


# -- reading /proc -------------------------------------------------------------------------


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None  # gone since the directory was listed


def read_all(proc: Path = PROC) -> list[ProcStat]:
    """Every process's stat; processes that vanish while we read are left out."""
    stats = []
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name), proc)
            if stat is not None:
                stats.append(stat)
    return stats


def process_tree(root: int, proc: Path = PROC) -> list[ProcStat]:
    return descendants(root, read_all(proc))


def rss_kib(pid: int, proc: Path = PROC) -> int:
    try:
        return parse_rss_kib((proc / str(pid) / "status").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return 0


def read_cpu_lines(proc: Path = PROC) -> dict[str, tuple[int, int]]:
    return parse_cpu_lines((proc / "stat").read_text())
