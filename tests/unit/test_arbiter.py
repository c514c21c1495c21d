"""The master's decisions, without forking: a fake `ProcessOps` records what it asked for.

The fake forks return made-up pids, `kill` only records, `reap` hands back the exits a test
queued, and the clock moves only when a test moves it. Workers "become ready" or "ask to be
replaced" by writing their shared-memory slot, exactly as real workers do.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest
from brick.arbiter import (
    KILL_GRACE,
    MAX_EARLY_DEATHS,
    RECYCLE,
    WORKER_BOOT_ERROR,
    Arbiter,
    ProcessOps,
)
from brick.config import parse

pytestmark = pytest.mark.unit


class FakeOps(ProcessOps):
    def __init__(self) -> None:
        self.next_pid = 1000
        self.forks: list[int] = []
        self.kills: list[tuple[int, int]] = []
        self.exits: list[tuple[int, int]] = []  # (pid, wait status) for the next reap()
        self.clock = 500.0

    def fork(self) -> int:
        self.next_pid += 1
        self.forks.append(self.next_pid)
        return self.next_pid

    def kill(self, pid: int, sig: int) -> None:
        self.kills.append((pid, sig))

    def reap(self) -> list[tuple[int, int]]:
        done, self.exits = self.exits, []
        return done

    def now(self) -> float:
        return self.clock

    def exit(self, code: int) -> None:
        raise AssertionError("the master never exits through ops.exit")

    # -- helpers for the tests --

    def exited(self, pid: int, code: int) -> None:
        self.exits.append((pid, code << 8))

    def killed(self, pid: int, sig: int) -> None:
        self.exits.append((pid, int(sig)))

    def sent(self, sig: int) -> list[int]:
        return [pid for pid, s in self.kills if s == sig]


def make(*args: str) -> tuple[Arbiter, FakeOps]:
    config = parse(["app:app", *args], environ={}).config
    ops = FakeOps()

    def load_app() -> None:
        raise AssertionError("the master never loads the app itself")

    return Arbiter(config, load_app, ops=ops), ops  # type: ignore[arg-type]


def ready(arbiter: Arbiter, *pids: int) -> None:
    """Those workers send their first heartbeat."""
    for pid in pids:
        arbiter.heartbeats.beat(arbiter.workers[pid].slot, arbiter.ops.now())


def ask_recycle(arbiter: Arbiter, pid: int) -> None:
    arbiter.heartbeats.ask(arbiter.workers[pid].slot, RECYCLE)


def alive(arbiter: Arbiter) -> list[int]:
    return sorted(arbiter.workers)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture brick's error log even if another test made the `brick` logger not propagate."""
    logger = logging.getLogger("brick.error")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old_level)


# -- keeping the count ----------------------------------------------------------------------


def test_maintain_spawns_up_to_the_target() -> None:
    arbiter, ops = make("-w", "3")
    arbiter.maintain()
    assert ops.forks == [1001, 1002, 1003]
    assert alive(arbiter) == [1001, 1002, 1003]
    assert len({w.slot for w in arbiter.workers.values()}) == 3  # one heartbeat slot each
    arbiter.maintain()
    assert len(ops.forks) == 3  # already at the target: nothing more
    assert ops.kills == []


def test_spawn_runs_the_child_when_fork_returns_zero() -> None:
    class ChildRan(Exception):
        pass

    class ForkedArbiter(Arbiter):
        def _child(self, slot: int, position: int, mask: object) -> None:
            self.child_slot = slot
            self.child_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            raise ChildRan

    config = parse(["app:app"], environ={}).config
    ops = FakeOps()
    ops.fork = lambda: 0  # type: ignore[method-assign]
    arbiter = ForkedArbiter(config, lambda: None, ops=ops)  # type: ignore[arg-type,return-value]
    with pytest.raises(ChildRan):
        arbiter.spawn()
    assert arbiter.child_slot == 0
    assert arbiter.workers == {}  # the child never records itself as a worker
    # Signals are held back until the child has its own handlers; the master gets its mask back.
    assert {signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP} <= arbiter.child_mask
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_fork_failure_is_retried_on_a_later_tick(logs: pytest.LogCaptureFixture) -> None:
    arbiter, ops = make("-w", "2")
    real_fork = ops.fork

    def failing_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    ops.fork = failing_fork  # type: ignore[method-assign]
    arbiter.maintain()
    assert arbiter.workers == {}
    assert "cannot fork a worker: Resource temporarily unavailable" in logs.text
    ops.fork = real_fork  # type: ignore[method-assign]
    arbiter.tick()
    assert len(arbiter.workers) == 2


def test_ttin_adds_a_worker_and_ttou_retires_the_oldest() -> None:
    arbiter, ops = make("-w", "2")
    arbiter.maintain()
    arbiter.signals.append(signal.SIGTTIN)
    arbiter.tick()
    assert arbiter.num_workers == 3
    assert ops.forks == [1001, 1002, 1003]
    ops.clock += 1
    arbiter.signals.append(signal.SIGTTOU)
    arbiter.tick()
    assert arbiter.num_workers == 2
    assert ops.sent(signal.SIGTERM) == [1001]  # the oldest goes
    assert arbiter.workers[1001].retiring
    ops.exited(1001, 0)
    arbiter.tick()
    assert alive(arbiter) == [1002, 1003]
    assert len(ops.forks) == 3  # a retired worker is not replaced


class FakeSocket:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def make_reuse_port(*args: str) -> tuple[Arbiter, FakeOps, list[FakeSocket]]:
    """An arbiter in --reuse-port mode whose position sockets are fakes it records."""
    arbiter, ops = make("--reuse-port", *args)
    arbiter.per_position = True
    opened: list[FakeSocket] = []

    def position_sockets(position: int) -> list[FakeSocket]:
        if position not in arbiter.positions:
            opened.append(FakeSocket())
            arbiter.positions[position] = [opened[-1]]  # type: ignore[list-item]
        return arbiter.positions[position]  # type: ignore[return-value]

    arbiter._position_sockets = position_sockets  # type: ignore[method-assign,assignment]
    return arbiter, ops, opened


def positions(arbiter: Arbiter) -> dict[int, int]:
    return {pid: w.position for pid, w in arbiter.workers.items()}


def test_with_reuse_port_a_replacement_takes_over_its_predecessors_socket() -> None:
    arbiter, ops, opened = make_reuse_port("-w", "2")
    arbiter.maintain()
    ready(arbiter, 1001, 1002)
    assert positions(arbiter) == {1001: 0, 1002: 1} and len(opened) == 2
    ask_recycle(arbiter, 1002)
    arbiter.maintain()
    assert positions(arbiter)[1003] == 1  # the recycled worker's position
    arbiter.reload()  # a new generation takes positions 0 and 1 again
    assert positions(arbiter)[1004] == 0 and positions(arbiter)[1005] == 1
    ops.exited(1002, 0)
    arbiter.reap()
    assert len(opened) == 2 and not any(s.closed for s in opened)  # no socket ever closed


def test_with_reuse_port_ttou_retires_the_last_position_and_closes_its_socket() -> None:
    arbiter, ops, opened = make_reuse_port("-w", "3")
    arbiter.maintain()
    ready(arbiter, 1001, 1002, 1003)
    arbiter.handle_ttou()
    assert ops.sent(signal.SIGTERM) == [1003]  # position 2, though not the oldest
    assert [s.closed for s in opened] == [False, False, True]
    assert 2 not in arbiter.positions
    arbiter.handle_ttin()  # the position comes back with a fresh socket
    assert positions(arbiter)[1004] == 2 and len(opened) == 4 and not opened[3].closed


def test_with_reuse_port_a_crashed_workers_position_is_filled_again() -> None:
    arbiter, ops, _ = make_reuse_port("-w", "3")
    arbiter.maintain()
    ready(arbiter, 1001, 1002, 1003)
    ops.killed(1002, signal.SIGKILL)
    arbiter.reap()
    arbiter.handle_ttou()  # 2 workers now, but position 1 has nobody: 1003 moves there
    assert positions(arbiter)[1004] == 1
    assert ops.sent(signal.SIGTERM) == []  # 1003 serves until 1004 is ready
    ready(arbiter, 1004)
    arbiter.maintain()
    assert ops.sent(signal.SIGTERM) == [1003]
    assert sorted(arbiter.positions) == [0, 1]


def test_with_reuse_port_a_socket_that_cannot_open_stops_a_master_with_no_worker(
    logs: pytest.LogCaptureFixture,
) -> None:
    arbiter, ops, _ = make_reuse_port("-w", "2")
    arbiter.maintain()
    ready(arbiter, 1001, 1002)

    def cannot_open(position: int) -> list[FakeSocket]:
        raise OSError(24, "Too many open files", "127.0.0.1:8000")

    arbiter._position_sockets = cannot_open  # type: ignore[method-assign,assignment]
    arbiter.handle_ttin()  # others serve: an error, and another try on the next tick
    assert not arbiter.stopping and len(ops.forks) == 2
    assert "cannot open a listening socket at 127.0.0.1:8000: Too many open files" in logs.text
    for pid in (1001, 1002):
        ops.killed(pid, signal.SIGKILL)
    arbiter.reap()
    arbiter.maintain()  # nobody left to serve: the master gives up with that reason
    assert arbiter.stopping and arbiter.exit_code == 1
    assert (
        arbiter.failure == "cannot open a listening socket at 127.0.0.1:8000: Too many open files"
    )
    assert len(ops.forks) == 2


def test_stopping_closes_the_position_sockets_first() -> None:
    arbiter, ops, opened = make_reuse_port("-w", "2")
    arbiter.maintain()
    arbiter.stop(graceful=True)
    assert all(s.closed for s in opened) and arbiter.positions == {}
    assert sorted(ops.sent(signal.SIGTERM)) == [1001, 1002]


def test_ttou_never_goes_below_one_worker() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    arbiter.handle_ttou()
    arbiter.handle_ttou()
    assert arbiter.num_workers == 1
    assert ops.kills == []


def test_usr1_is_forwarded_to_every_worker() -> None:
    arbiter, ops = make("-w", "2")
    arbiter.maintain()
    arbiter.signals.append(signal.SIGUSR1)
    arbiter.tick()
    assert sorted(ops.sent(signal.SIGUSR1)) == [1001, 1002]


def test_the_signal_handler_only_records() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    arbiter._record_signal(signal.SIGTERM, None)
    assert arbiter.signals == [signal.SIGTERM]
    assert not arbiter.stopping and ops.kills == []  # nothing happens until the loop runs
    arbiter.tick()
    assert arbiter.stopping and ops.sent(signal.SIGTERM) == [1001]


# -- reload and recycling -------------------------------------------------------------------


def test_reload_spawns_new_workers_then_retires_the_old_as_the_new_become_ready() -> None:
    arbiter, ops = make("-w", "2")
    arbiter.maintain()
    ready(arbiter, 1001, 1002)
    arbiter.signals.append(signal.SIGHUP)
    arbiter.tick()
    assert ops.forks == [1001, 1002, 1003, 1004]  # the new generation first
    assert {arbiter.workers[p].generation for p in (1003, 1004)} == {1}
    assert ops.kills == []  # nobody leaves before a replacement accepts
    ready(arbiter, 1003)
    arbiter.tick()
    assert ops.sent(signal.SIGTERM) == [1001]  # one ready newcomer: one old worker goes
    ready(arbiter, 1004)
    arbiter.tick()
    assert ops.sent(signal.SIGTERM) == [1001, 1002]
    ops.exited(1001, 0)
    ops.exited(1002, 0)
    arbiter.tick()
    assert alive(arbiter) == [1003, 1004]
    assert len(ops.forks) == 4  # drained old workers are not replaced


def test_a_second_reload_before_the_first_finished() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    ready(arbiter, 1001)
    arbiter.handle_hup()
    arbiter.handle_hup()
    assert ops.forks == [1001, 1002, 1003]
    ready(arbiter, 1003)
    arbiter.tick()
    assert sorted(ops.sent(signal.SIGTERM)) == [1001, 1002]  # both older generations go


def test_a_reload_during_a_recycle_keeps_the_only_ready_worker() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    ready(arbiter, 1001)
    ask_recycle(arbiter, 1001)
    arbiter.tick()
    assert ops.forks == [1001, 1002]  # 1002 boots to replace 1001
    arbiter.handle_hup()
    assert ops.forks == [1001, 1002, 1003]
    # 1002 belongs to the old generation and is not ready: it serves nobody and goes.
    # 1001 is the only worker accepting: it stays until 1003 is ready.
    assert ops.kills == [(1002, signal.SIGTERM)]
    arbiter.tick()
    assert ops.kills == [(1002, signal.SIGTERM)]
    ready(arbiter, 1003)
    arbiter.tick()
    assert ops.kills == [(1002, signal.SIGTERM), (1001, signal.SIGTERM)]


def test_retiring_extra_workers_takes_booting_ones_first() -> None:
    arbiter, ops = make("-w", "3")
    arbiter.maintain()
    ready(arbiter, 1001, 1003)
    arbiter.handle_ttou()
    assert ops.kills == [(1002, signal.SIGTERM)]  # not ready yet, though not the oldest
    arbiter.handle_ttou()
    assert ops.kills == [(1002, signal.SIGTERM), (1001, signal.SIGTERM)]  # then the oldest


def test_a_worker_asking_to_be_recycled_is_replaced_first(
    logs: pytest.LogCaptureFixture,
) -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    ready(arbiter, 1001)
    ask_recycle(arbiter, 1001)
    arbiter.tick()
    assert "Worker 1001 asked to be replaced" in logs.text
    assert ops.forks == [1001, 1002]
    assert ops.kills == []  # it keeps serving until its replacement is ready
    arbiter.tick()
    assert ops.forks == [1001, 1002]  # asking once is enough
    ready(arbiter, 1002)
    arbiter.tick()
    assert ops.sent(signal.SIGTERM) == [1001]
    ops.exited(1001, 0)
    arbiter.tick()
    assert alive(arbiter) == [1002]
    assert len(ops.forks) == 2


# -- reaping --------------------------------------------------------------------------------


def test_a_crash_is_logged_and_the_worker_replaced(logs: pytest.LogCaptureFixture) -> None:
    arbiter, ops = make("-w", "2")
    arbiter.maintain()
    ready(arbiter, 1001, 1002)
    ops.exited(1001, 1)
    arbiter.tick()
    assert "Worker 1001 crashed with exit code 1; starting a new one" in logs.text
    assert any(r.levelno == logging.ERROR for r in logs.records if "1001" in r.getMessage())
    assert alive(arbiter) == [1002, 1003]


def test_a_killed_worker_is_logged_and_replaced(logs: pytest.LogCaptureFixture) -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    ready(arbiter, 1001)
    ops.killed(1001, signal.SIGKILL)
    arbiter.tick()
    assert "Worker 1001 was killed by SIGKILL; starting a new one" in logs.text
    assert alive(arbiter) == [1002]


def test_a_clean_exit_is_not_an_error_but_is_replaced(logs: pytest.LogCaptureFixture) -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    ready(arbiter, 1001)
    ops.exited(1001, 0)
    arbiter.tick()
    record = next(r for r in logs.records if "Worker 1001" in r.getMessage())
    assert record.levelno == logging.INFO
    assert record.getMessage() == "Worker 1001 exited cleanly"
    assert alive(arbiter) == [1002]


def test_unknown_children_are_reaped_and_ignored() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    ops.exited(4242, 0)  # an orphan adopted as PID 1
    arbiter.tick()
    assert alive(arbiter) == [1001]
    assert ops.forks == [1001]


def test_a_boot_failure_stops_the_master_without_respawning(
    logs: pytest.LogCaptureFixture,
) -> None:
    arbiter, ops = make("-w", "3")
    arbiter.maintain()
    message = b"no module named 'app'\0"
    arbiter.boot_error[: len(message)] = message
    ops.exited(1001, WORKER_BOOT_ERROR)
    arbiter.tick()
    assert arbiter.stopping
    assert arbiter.exit_code == 1
    assert arbiter.failure == "worker 1001 failed to boot: no module named 'app'"
    assert "failed to boot: no module named 'app'" in logs.text
    assert sorted(ops.sent(signal.SIGQUIT)) == [1002, 1003]  # the rest are stopped at once
    ops.exited(1002, WORKER_BOOT_ERROR)
    ops.exited(1003, 0)
    arbiter.tick()
    assert arbiter.workers == {}
    assert ops.forks == [1001, 1002, 1003]  # never another fork
    assert arbiter.failure == "worker 1001 failed to boot: no module named 'app'"


def test_exit_code_3_after_boot_is_an_ordinary_crash() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    ready(arbiter, 1001)
    ops.exited(1001, WORKER_BOOT_ERROR)  # e.g. the app called sys.exit(3) in a request
    arbiter.tick()
    assert not arbiter.stopping
    assert alive(arbiter) == [1002]


def test_workers_dying_before_they_are_ready_end_the_master(
    logs: pytest.LogCaptureFixture,
) -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    for _ in range(MAX_EARLY_DEATHS):
        assert not arbiter.stopping
        ops.killed(ops.forks[-1], signal.SIGSEGV)
        arbiter.tick()
    assert arbiter.stopping and arbiter.exit_code == 1
    assert arbiter.failure is not None
    assert "died before they were ready" in arbiter.failure
    assert "SIGSEGV" in arbiter.failure
    assert len(ops.forks) == MAX_EARLY_DEATHS


def test_a_ready_worker_resets_the_early_death_count() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    for _ in range(MAX_EARLY_DEATHS - 1):
        ops.killed(ops.forks[-1], signal.SIGSEGV)
        arbiter.tick()
    ready(arbiter, ops.forks[-1])
    arbiter.tick()
    ops.killed(ops.forks[-1], signal.SIGSEGV)
    arbiter.tick()
    assert not arbiter.stopping


# -- timeouts -------------------------------------------------------------------------------


def test_a_silent_worker_gets_sigabrt_then_sigkill(logs: pytest.LogCaptureFixture) -> None:
    arbiter, ops = make("-w", "2", "-t", "10")
    arbiter.maintain()
    ready(arbiter, 1001, 1002)
    ops.clock += 9
    ready(arbiter, 1002)  # 1002 keeps beating; 1001 is stuck
    arbiter.tick()
    assert ops.kills == []  # 9 s of silence: within the timeout
    ops.clock += 2
    ready(arbiter, 1002)
    arbiter.tick()
    assert ops.kills == [(1001, signal.SIGABRT)]
    assert "Worker 1001 timed out: one request has been running for 11.0s" in logs.text
    assert "(timeout 10s); sending SIGABRT" in logs.text
    ops.clock += KILL_GRACE / 2
    arbiter.tick()
    assert ops.kills == [(1001, signal.SIGABRT)]  # it gets a grace to exit
    ops.clock += KILL_GRACE / 2
    arbiter.tick()
    assert ops.kills == [(1001, signal.SIGABRT), (1001, signal.SIGKILL)]
    ops.killed(1001, signal.SIGKILL)
    arbiter.tick()
    assert "Worker 1001 (timed out) was killed by SIGKILL" in logs.text
    assert alive(arbiter) == [1002, 1003]  # replaced


def test_a_worker_that_never_gets_ready_times_out_from_its_birth(
    logs: pytest.LogCaptureFixture,
) -> None:
    arbiter, ops = make("-w", "1", "-t", "5")
    arbiter.maintain()
    ops.clock += 4
    arbiter.tick()
    assert ops.kills == []
    ops.clock += 2
    arbiter.tick()
    assert ops.kills == [(1001, signal.SIGABRT)]
    assert "still not ready after 6.0s" in logs.text


def test_timeout_zero_never_kills() -> None:
    arbiter, ops = make("-w", "1", "-t", "0")
    arbiter.maintain()
    ready(arbiter, 1001)
    ops.clock += 100_000
    arbiter.tick()
    assert ops.kills == []


# -- stopping -------------------------------------------------------------------------------


def test_term_is_graceful_and_stragglers_are_killed_at_the_deadline() -> None:
    arbiter, ops = make("-w", "2", "--graceful-timeout", "20")
    arbiter.maintain()
    ready(arbiter, 1001, 1002)
    arbiter.signals.append(signal.SIGTERM)
    arbiter.tick()
    assert sorted(ops.sent(signal.SIGTERM)) == [1001, 1002]
    ops.exited(1001, 0)
    ops.clock += 19
    arbiter.tick()
    assert ops.sent(signal.SIGKILL) == []
    assert alive(arbiter) == [1002]  # not replaced while stopping
    ops.clock += 1
    arbiter.tick()
    assert ops.sent(signal.SIGKILL) == [1002]
    ops.killed(1002, signal.SIGKILL)
    arbiter.tick()
    assert arbiter.workers == {}
    assert arbiter.exit_code == 0
    assert ops.forks == [1001, 1002]


def test_int_and_quit_are_quick() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT):
        arbiter, ops = make("-w", "2", "--graceful-timeout", "30")
        arbiter.maintain()
        arbiter.signals.append(sig)
        arbiter.tick()
        assert sorted(ops.sent(signal.SIGQUIT)) == [1001, 1002]
        assert ops.sent(signal.SIGTERM) == []
        ops.clock += 5  # a quick stop waits at most 5 s before SIGKILL
        arbiter.tick()
        assert sorted(ops.sent(signal.SIGKILL)) == [1001, 1002]


def test_int_after_term_turns_a_graceful_stop_quick() -> None:
    arbiter, ops = make("-w", "1")
    arbiter.maintain()
    arbiter.handle_term()
    arbiter.handle_term()
    assert ops.kills == [(1001, signal.SIGTERM)]  # a second TERM changes nothing
    arbiter.handle_int()
    assert ops.kills == [(1001, signal.SIGTERM), (1001, signal.SIGQUIT)]


def test_nothing_is_spawned_or_reloaded_while_stopping() -> None:
    arbiter, ops = make("-w", "2")
    arbiter.maintain()
    arbiter.handle_term()
    arbiter.handle_hup()
    arbiter.handle_ttin()
    ops.exited(1001, 1)
    arbiter.tick()
    assert ops.forks == [1001, 1002]
