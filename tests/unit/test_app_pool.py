"""The app thread pool (`--threads N`) and the loop's hand-back from its threads."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from brick import worker
from brick.loop import EVENT_READ, EventLoop, LoopMoved
from brick.worker import AppPool

WAIT = 5.0  # seconds: every wait below is bounded


MakePool = Callable[[int], AppPool]


@pytest.fixture
def pool() -> Iterator[MakePool]:
    made: list[AppPool] = []

    def make(size: int) -> AppPool:
        made.append(AppPool(size))
        return made[-1]

    yield make
    for p in made:
        p.shutdown()


def test_jobs_run_side_by_side_on_every_thread(pool: MakePool) -> None:
    # Four jobs that each wait for the other three finish only if four threads run them.
    app_threads = pool(4)
    barrier = threading.Barrier(4, timeout=WAIT)
    names: list[str] = []
    done = threading.Semaphore(0)

    def job(tag: str) -> None:
        barrier.wait()
        names.append(f"{tag}:{threading.current_thread().name}")
        done.release()

    for tag in "abcd":
        app_threads.submit(job, tag)
    for _ in range(4):
        assert done.acquire(timeout=WAIT)
    assert sorted(n.split(":")[0] for n in names) == list("abcd")
    assert len({n.split(":")[1] for n in names}) == 4
    assert all(n.split(":")[1].startswith("brick-app_") for n in names)


def test_a_running_job_holds_back_the_oldest_start_until_it_ends(pool: MakePool) -> None:
    app_threads = pool(2)
    release = threading.Event()
    started = threading.Event()
    finished = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(WAIT)
        finished.set()

    now = time.monotonic()
    assert app_threads.oldest_start(now) == now  # idle: nothing holds the clock back
    before = time.monotonic()
    app_threads.submit(stuck)
    assert started.wait(WAIT)
    later = time.monotonic() + 100.0
    oldest = app_threads.oldest_start(later)
    assert before <= oldest <= time.monotonic()
    release.set()
    assert finished.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while app_threads.oldest_start(later) != later and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app_threads.oldest_start(later) == later


def test_the_pool_is_full_while_every_thread_has_a_job_running_or_queued(
    pool: MakePool,
) -> None:
    app_threads = pool(2)
    release = threading.Event()
    ended = threading.Semaphore(0)

    def hold() -> None:
        release.wait(WAIT)
        ended.release()

    assert not app_threads.full()
    app_threads.submit(hold)
    assert not app_threads.full()  # one thread still free
    app_threads.submit(hold)
    assert app_threads.full()
    app_threads.submit(hold)  # queued behind the two
    release.set()
    for _ in range(3):
        assert ended.acquire(timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while app_threads.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not app_threads.full()  # every job ended: room again
    assert app_threads.submitted == app_threads.finished == 3


def test_a_failing_job_is_logged_and_its_thread_serves_on(
    pool: MakePool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app_threads = pool(1)
    ran = threading.Event()

    def boom() -> None:
        raise RuntimeError("job failed")

    with caplog.at_level(logging.ERROR, logger="brick.error"):
        app_threads.submit(boom)
        app_threads.submit(ran.set)
        assert ran.wait(WAIT)
    assert any("job failed" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_shutdown_drops_queued_jobs_and_never_waits_for_a_stuck_one(pool: MakePool) -> None:
    app_threads = pool(1)
    release = threading.Event()
    started = threading.Event()
    queued_ran = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(WAIT)

    app_threads.submit(stuck)
    assert started.wait(WAIT)
    app_threads.submit(queued_ran.set)  # waits behind the stuck job
    t0 = time.monotonic()
    app_threads.shutdown()
    assert time.monotonic() - t0 < 1.0
    release.set()
    time.sleep(0.2)
    assert not queued_ran.is_set()
    app_threads._threads[0].join(WAIT)
    assert not app_threads._threads[0].is_alive()


# -- the loop lent to an app (the test thread plays the loop thread) -----------------------


class Leads:
    """A stand-in for Worker._lead: notes which thread was made the loop thread, and holds
    it (as running the loop would) until the test ends."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        self.release.wait(WAIT)


@pytest.fixture
def lending() -> Iterator[Callable[[int], tuple[AppPool, Leads]]]:
    made: list[tuple[AppPool, Leads]] = []

    def make(size: int) -> tuple[AppPool, Leads]:
        leads = Leads()
        made.append((AppPool(size, lead=leads), leads))
        return made[-1]

    yield make
    for app_threads, leads in made:
        leads.release.set()
        app_threads.shutdown()


def test_a_quick_lent_app_keeps_the_loop_in_its_thread(
    lending: Callable[[int], tuple[AppPool, Leads]],
) -> None:
    app_threads, leads = lending(2)
    for _ in range(100):
        lend = app_threads.lend_loop()
        assert lend
        assert app_threads.reclaim_loop(lend)
    time.sleep(20 * worker.TAKEOVER)  # many of the watchdog's looks
    assert leads.threads == []  # nobody took the loop over
    assert app_threads.oldest_start(123.0) == 123.0
    assert not app_threads.full()


def test_a_lent_app_still_running_after_a_period_has_the_loop_taken_over(
    lending: Callable[[int], tuple[AppPool, Leads]],
) -> None:
    app_threads, leads = lending(2)
    began = time.monotonic()
    lend = app_threads.lend_loop()
    assert leads.started.wait(WAIT)  # the app "runs" on: a free thread takes the loop
    assert leads.threads[0].startswith("brick-app_")
    # The app's thread learns it on return, and is an app thread from then on: its request
    # holds the heartbeat's clock back and takes a thread's place until it ends.
    assert not app_threads.reclaim_loop(lend)
    assert app_threads.oldest_start(time.monotonic() + 100) < time.monotonic()
    assert app_threads.oldest_start(time.monotonic()) >= began - worker.TAKEOVER
    release = threading.Event()
    app_threads.submit(release.wait, WAIT)
    assert app_threads.full()  # the taken app holds one of the two places
    assert app_threads.lend_loop() is None
    release.set()
    app_threads.job_done(threading.get_ident())  # the app returns: its place is free again
    later = time.monotonic() + 100
    deadline = time.monotonic() + WAIT
    while (app_threads.oldest_start(later) != later or app_threads.full()) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert app_threads.oldest_start(later) == later
    assert not app_threads.full()


def test_the_loop_is_not_lent_while_every_thread_is_busy(
    lending: Callable[[int], tuple[AppPool, Leads]],
) -> None:
    app_threads, _leads = lending(1)
    release = threading.Event()
    app_threads.submit(release.wait, WAIT)
    assert app_threads.lend_loop() is None  # nobody could take the loop over
    release.set()
    deadline = time.monotonic() + WAIT
    while app_threads.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    lend = app_threads.lend_loop()
    assert lend
    assert app_threads.reclaim_loop(lend)


def test_the_thread_that_lost_the_loop_cannot_take_back_a_later_lend(
    lending: Callable[[int], tuple[AppPool, Leads]],
) -> None:
    app_threads, leads = lending(2)
    first = app_threads.lend_loop()
    assert leads.started.wait(WAIT)  # taken over
    second = app_threads.lend_loop()  # the new loop thread lends the loop in turn
    assert second
    assert not app_threads.reclaim_loop(first)  # the first app returns: not the loop's
    assert app_threads.reclaim_loop(second)  # the second lend is still its own
    assert leads.threads == leads.threads[:1]  # and was never taken over


def test_a_lend_after_the_watchdog_went_to_sleep_wakes_it(
    lending: Callable[[int], tuple[AppPool, Leads]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "PARK_AFTER", 3)
    app_threads, leads = lending(2)
    deadline = time.monotonic() + WAIT
    while not app_threads._parked and time.monotonic() < deadline:
        time.sleep(0.005)
    assert app_threads._parked  # idle: the watchdog sleeps
    app_threads.lend_loop()
    assert leads.started.wait(WAIT)  # it woke, and took the loop from the long app


def test_callbacks_from_many_threads_all_run_in_the_loop_thread() -> None:
    loop = EventLoop()
    seen: list[tuple[int, int, bool]] = []
    loop_thread = threading.get_ident()

    def sender(n: int) -> None:
        for i in range(200):
            loop.call_soon_threadsafe(
                lambda n=n, i=i: seen.append((n, i, threading.get_ident() == loop_thread))
            )

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT
    try:
        while len(seen) < 800 and time.monotonic() < deadline:
            loop.run_once(0.1)
    finally:
        for t in threads:
            t.join(WAIT)
        loop.close()
    assert len(seen) == 800
    assert all(in_loop for _, _, in_loop in seen)
    for n in range(4):  # each thread's callbacks run in the order it made them
        assert [i for m, i, _ in seen if m == n] == list(range(200))


def test_a_sleeping_loop_wakes_for_a_callback_made_after_a_batch_was_taken() -> None:
    # After the loop took one batch, the next callback must wake it again at once,
    # not at the end of its poll timeout.
    loop = EventLoop()
    ran: list[str] = []
    try:
        loop.call_soon_threadsafe(lambda: ran.append("first"))
        loop.run_once(0.0)
        assert ran == ["first"]
        timer = threading.Timer(0.05, lambda: loop.call_soon_threadsafe(lambda: ran.append("x")))
        timer.start()
        t0 = time.monotonic()
        loop.run_once(3.0)  # sleeps until the wake-up byte arrives, then runs it
        timer.join(WAIT)
        assert ran == ["first", "x"]
        assert time.monotonic() - t0 < 2.0
    finally:
        loop.close()


def test_a_callback_made_while_the_loop_is_at_work_costs_no_wake_up() -> None:
    # The loop takes it at the end of its turn, or before its next poll: nothing is
    # written to the wake-up pipe, and the next turn does not wait for its timeout.
    loop = EventLoop()
    ran: list[str] = []
    try:
        loop.call_soon_threadsafe(lambda: ran.append("made outside the poll"))
        with pytest.raises(BlockingIOError):
            os.read(loop._wake_r, 1)
        t0 = time.monotonic()
        loop.run_once(3.0)
        assert ran == ["made outside the poll"]
        assert time.monotonic() - t0 < 1.0
    finally:
        loop.close()


def test_no_hand_back_is_lost_between_the_loop_turn_and_its_poll() -> None:
    # A thread hands back at every moment of the loop's turn; each callback must run
    # promptly, never waiting for the loop's (long) poll timeout.
    loop = EventLoop()
    done = threading.Event()
    stop = threading.Event()
    slow: list[float] = []

    def sender() -> None:
        for i in range(300):
            done.clear()
            t0 = time.monotonic()
            loop.call_soon_threadsafe(done.set)
            if not done.wait(2.0):
                slow.append(time.monotonic() - t0)
                done.wait(WAIT)
            time.sleep((i % 7) * 0.0001)
        stop.set()
        loop.call_soon_threadsafe(lambda: None)  # out of its last poll

    thread = threading.Thread(target=sender)
    thread.start()
    deadline = time.monotonic() + 60
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            loop.run_once(5.0)
    finally:
        thread.join(WAIT)
        loop.close()
    assert stop.is_set() and slow == []


def test_a_callback_after_the_loop_closed_is_dropped_quietly() -> None:
    # An app thread may finish after its worker closed the loop (a graceful timeout).
    loop = EventLoop()
    loop.close()
    loop.call_soon_threadsafe(lambda: None)  # no write to the closed pipe, no error


def test_callbacks_left_when_the_loop_moves_to_another_thread_run_there() -> None:
    # A hand-back that lends the loop to an app and loses it leaves the turn at once; the
    # other hand-backs of that turn must still run, in whichever thread runs the loop next.
    loop = EventLoop()
    ran: list[str] = []

    def moved() -> None:
        ran.append("moved")
        raise LoopMoved(lambda: ran.append("its hand-back"))

    loop.call_soon_threadsafe(moved)
    loop.call_soon_threadsafe(lambda: ran.append("second"))
    loop.call_soon_threadsafe(lambda: ran.append("third"))
    with pytest.raises(LoopMoved) as raised:
        loop.run_once(0)
    assert ran == ["moved"]
    raised.value.hand_back()

    def next_loop_thread() -> None:
        loop.run_once(0)

    thread = threading.Thread(target=next_loop_thread)
    thread.start()
    thread.join(WAIT)
    assert ran == ["moved", "its hand-back", "second", "third"]
    loop.close()


def test_a_callback_handed_back_by_a_callback_waits_for_the_next_turn() -> None:
    # A stream of hand-backs (each finished request dispatching the next) must not keep
    # the loop from its sockets: a turn runs only those handed back before it took them,
    # and polls again first, without waiting, for the rest.
    loop = EventLoop()
    ran: list[str] = []

    def chain(n: int) -> None:
        ran.append(f"callback {n}")
        if n < 3:
            loop.call_soon_threadsafe(lambda: chain(n + 1))

    class Readable:
        def handle_event(self, mask: int) -> None:
            ran.append("socket")
            os.read(r, 1)

    r, w = os.pipe()
    try:
        loop.register(r, EVENT_READ, Readable())
        loop.call_soon_threadsafe(lambda: chain(1))
        os.write(w, b"x")
        t0 = time.monotonic()
        loop.run_once(3.0)
        assert ran == ["socket", "callback 1"]
        os.write(w, b"x")
        loop.run_once(3.0)
        assert ran == ["socket", "callback 1", "socket", "callback 2"]
        loop.run_once(3.0)
        assert ran[-1] == "callback 3"
        assert time.monotonic() - t0 < 2.0  # no turn waited for its timeout
    finally:
        loop.unregister(r)
        os.close(r)
        os.close(w)
        loop.close()
