"""The process model with real processes: supervision, signals, timeouts, reloads.

Each test starts a real brick master (conftest's `serve`, on a socket the test bound) with the
fixture app tests/apps/proc_app.py, and looks at the process tree through /proc: the master's
children, their states (no zombie may stay), their titles. Clients make a fresh connection
per request (`Connection: close`) so a failure is always a request that failed, never a
keep-alive connection reused after the server closed it.

Waiting is always bounded (`wait_until`), and a test waits for something it can see (a marker
file the app writes once a request is inside it, a child process appearing) rather than for
a guessed amount of time. The helpers here are shared with the other test_process_*.py files.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import BRICK, FIXTURE_APPS, Server

pytestmark = pytest.mark.functional

Serve = Callable[..., Server]
APP = "proc_app:app"


# -- helpers --------------------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.05)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def children(pid: int) -> dict[int, str]:
    """Every child of `pid` (zombies included) and its state letter."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_stat(int(entry))
            if info is not None and info[1] == pid:
                found[int(entry)] = info[0]
    return found


def live_children(pid: int) -> set[int]:
    return {child for child, state in children(pid).items() if state != "Z"}


def zombies(pid: int) -> set[int]:
    return {child for child, state in children(pid).items() if state == "Z"}


def assert_no_zombies(pid: int) -> None:
    """A child may be a zombie for an instant (it just exited); none may stay one."""
    wait_until(lambda: not zombies(pid), 5, f"the zombie children of {pid} to be reaped")


def wait_workers(pid: int, count: int, timeout: float = 15.0) -> set[int]:
    """Wait until `pid` has exactly `count` live children; return them."""

    def exactly() -> set[int] | None:
        kids = live_children(pid)
        return kids if len(kids) == count else None

    result: set[int] = wait_until(exactly, timeout, f"{count} workers")
    return result


def new_children(pid: int, old: set[int], count: int = 1, timeout: float = 15.0) -> set[int]:
    """Wait until `pid` has `count` live children, none of them in `old`; return them."""

    def fresh() -> set[int] | None:
        kids = live_children(pid)
        return kids if len(kids) == count and kids.isdisjoint(old) else None

    result: set[int] = wait_until(fresh, timeout, f"{count} new workers")
    return result


def stopped(server: Server, timeout: float) -> int:
    """Wait for the master to exit; its exit code. On a timeout, fail showing its log."""
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        tree = {pid: children(pid) for pid in [server.proc.pid, *live_children(server.proc.pid)]}
        status = {pid: _signal_status(pid) for pid in live_children(server.proc.pid)}
        for pid in live_children(server.proc.pid):
            os.kill(pid, signal.SIGABRT)  # brick's workers log every thread's stack
        time.sleep(1)
        pytest.fail(
            f"the master did not exit in {timeout}s; tree {tree}; {status}; log:\n{server.log()}"
        )


def _signal_status(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return " ".join(line for line in lines if line.startswith(("State", "Sig", "Shd")))


def title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def get(server: Server, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """One request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def worker_pids_answering(server: Server, count: int, timeout: float = 15.0) -> set[int]:
    """Ask /pid until `count` different workers have answered (so all of them are ready)."""
    seen: set[int] = set()

    def enough() -> bool:
        seen.add(int(get(server, "/pid")[1]))
        return len(seen) >= count

    wait_until(enough, timeout, f"{count} workers to answer")
    return seen


def start(serve: Serve, *args: str, app: str = APP, env: dict[str, str] | None = None) -> Server:
    return serve(BRICK, [app, "--chdir", str(FIXTURE_APPS), *args], env=env)


@dataclass
class Result:
    started: float
    ended: float
    ok: bool
    detail: str


@dataclass
class Load:
    """Clients that each send one request after another (fresh connection each) until stopped."""

    server: Server
    path: str = "/pid"
    clients: int = 3
    timeout: float = 15.0
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _client(self) -> None:
        give_up = time.monotonic() + 90  # bounded even if a test forgets to stop us
        while not self._stop.is_set() and time.monotonic() < give_up:
            started = time.monotonic()
            try:
                status, body = get(self.server, self.path, self.timeout)
                ok, detail = status == 200, body
            except (OSError, http.client.HTTPException) as exc:
                ok, detail = False, repr(exc)
            self.results.append(Result(started, time.monotonic(), ok, detail))

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def served_since(self, when: float) -> list[Result]:
        return [r for r in self.results if r.ok and r.started >= when]


def marker(tmp_path: Path, name: str = "inside") -> Path:
    return tmp_path / name


def in_background(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run `fn` in a thread; the dict gets 'result' or 'error', and 'ended' (monotonic)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:
            box["error"] = exc
        box["ended"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    box["thread"] = thread
    return box


# -- supervision ----------------------------------------------------------------------------


def test_workers_default_to_web_concurrency_and_have_titles(serve: Serve) -> None:
    server = start(serve, env={"WEB_CONCURRENCY": "3"})
    master = server.proc.pid
    workers = wait_workers(master, 3)
    assert get(server, "/pid")[1].isdigit()
    assert title(master).startswith("brick: master [proc_app:app]")
    wait_until(
        lambda: all(title(pid).startswith("brick: worker [proc_app:app]") for pid in workers),
        10,
        "the workers' titles",
    )


def test_sigkill_a_worker_under_load_and_it_is_replaced(serve: Serve) -> None:
    server = start(serve, "-w", "2")
    master = server.proc.pid
    victim = min(worker_pids_answering(server, 2))
    with Load(server, "/sleep?seconds=0.05", clients=4) as load:
        wait_until(lambda: len(load.results) >= 20, 20, "some load")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # Two workers, the victim not among them: just after the kill it may still be
        # listed, so counting two children alone could return before anything happened.
        replacements = new_children(master, {victim}, count=2)
        after = time.monotonic()
        wait_until(lambda: len(load.served_since(after)) >= 20, 20, "load after the kill")
    assert victim not in live_children(master)
    assert len(replacements) == 2
    # Only requests in flight on the killed worker may fail: at most one per client, and
    # each started before the kill.
    failures = load.failures
    assert len(failures) <= 4, failures
    assert all(f.started < killed_at + 0.1 for f in failures), (killed_at, failures)
    log = server.log()
    assert f"Worker {victim} was killed by SIGKILL; starting a new one" in log
    assert_no_zombies(master)


def test_a_worker_that_exits_on_its_own_is_replaced(serve: Serve, tmp_path: Path) -> None:
    server = start(serve, "-w", "1")
    master = server.proc.pid
    (worker,) = wait_workers(master, 1)
    mark = marker(tmp_path)
    request = in_background(lambda: get(server, f"/sleep?seconds=1&mark={mark}"))
    wait_until(mark.exists, 10, "the request to reach the app")
    os.kill(worker, signal.SIGTERM)  # the worker's own graceful stop
    request["thread"].join(15)
    assert request.get("result", (0, ""))[0] == 200, request  # the in-flight request finished
    (new,) = new_children(master, {worker})
    assert get(server, "/pid") == (200, str(new))
    wait_until(lambda: f"Worker {worker} exited cleanly" in server.log(), 5, "the exit log")

    os.kill(new, signal.SIGQUIT)  # the worker's own quick stop
    new_children(master, {worker, new})
    assert_no_zombies(master)


# -- timeouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 3])
def test_a_hung_request_gets_its_worker_killed_after_the_timeout(
    serve: Serve, tmp_path: Path, threads: int
) -> None:
    server = start(serve, "-w", "1", "-t", "2", "--threads", str(threads))
    master = server.proc.pid
    (worker,) = wait_workers(master, 1)
    mark = marker(tmp_path)
    started = time.monotonic()
    hung = in_background(lambda: get(server, f"/hang?mark={mark}", timeout=30))
    wait_until(mark.exists, 10, "the request to reach the app")
    if threads > 1:
        # The loop is not stuck, only one app thread: other requests are still served.
        assert get(server, "/pid") == (200, str(worker))
    hung["thread"].join(30)
    elapsed = hung["ended"] - started
    assert "error" in hung, hung  # the connection was cut when the worker was killed
    assert 1.5 <= elapsed <= 15, elapsed
    (new,) = new_children(master, {worker})
    assert get(server, "/pid") == (200, str(new))
    log = server.log()
    assert f"Worker {worker} timed out: one request has been running for" in log
    assert "(timeout 2s); sending SIGABRT" in log
    assert f"Worker {worker} aborted after a timeout; it was here:" in log
    assert "proc_app.py" in log and "in app" in log  # the stuck thread's stack
    assert f"Worker {worker} (timed out)" in log
    assert_no_zombies(master)


def test_a_worker_ignoring_sigabrt_gets_sigkill(serve: Serve, tmp_path: Path) -> None:
    server = start(serve, "-w", "1", "-t", "1")
    master = server.proc.pid
    (worker,) = wait_workers(master, 1)
    mark = marker(tmp_path)
    in_background(lambda: get(server, f"/hang-masked?mark={mark}", timeout=30))
    wait_until(mark.exists, 10, "the request to reach the app")
    wait_until(lambda: worker not in live_children(master), 20, "the stuck worker to die")
    log = server.log()
    assert f"Worker {worker} did not exit after SIGABRT; sending SIGKILL" in log
    wait_until(lambda: f"Worker {worker} (timed out) was killed by SIGKILL" in server.log(), 5)
    assert get(server, "/pid")[0] == 200
    assert_no_zombies(master)


# -- stopping -------------------------------------------------------------------------------


def test_term_lets_the_request_in_flight_finish(serve: Serve, tmp_path: Path) -> None:
    server = start(serve, "-w", "2", "--graceful-timeout", "30")
    master = server.proc.pid
    workers = wait_workers(master, 2)
    mark = marker(tmp_path)
    request = in_background(lambda: get(server, f"/sleep?seconds=1.5&mark={mark}"))
    wait_until(mark.exists, 10, "the request to reach the app")
    termed = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = stopped(server, 20)
    request["thread"].join(5)
    assert code == 0
    status, body = request["result"]
    assert status == 200 and body.startswith("slept 1.5")
    # It waited for the request, but not for the graceful timeout.
    assert time.monotonic() - termed < 10
    assert request["ended"] <= time.monotonic()
    log = server.log()
    assert "Handling signal: TERM (graceful stop)" in log
    for pid in workers:
        assert f"Worker {pid} exited cleanly" in log, log
        assert proc_stat(pid) is None
    assert "Shutting down: master" in log


def test_term_cuts_requests_still_running_at_the_graceful_timeout(
    serve: Serve, tmp_path: Path
) -> None:
    server = start(serve, "-w", "1", "--graceful-timeout", "1")
    (worker,) = wait_workers(server.proc.pid, 1)
    mark = marker(tmp_path)
    request = in_background(lambda: get(server, f"/sleep?seconds=60&mark={mark}", timeout=60))
    wait_until(mark.exists, 10, "the request to reach the app")
    termed = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = stopped(server, 20)
    took = time.monotonic() - termed
    assert code == 0
    assert 0.5 <= took <= 10, took
    request["thread"].join(5)
    assert "error" in request  # cut off
    assert proc_stat(worker) is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_at_once(serve: Serve, tmp_path: Path, sig: int) -> None:
    server = start(serve, "-w", "2", "--graceful-timeout", "60")
    workers = wait_workers(server.proc.pid, 2)
    mark = marker(tmp_path)
    in_background(lambda: get(server, f"/sleep?seconds=60&mark={mark}", timeout=60))
    wait_until(mark.exists, 10, "the request to reach the app")
    sent = time.monotonic()
    server.proc.send_signal(sig)
    code = stopped(server, 20)
    assert time.monotonic() - sent < 4  # did not wait for the 60 s request
    assert code == 0
    name = signal.Signals(sig).name[3:]
    assert f"Handling signal: {name} (quick stop)" in server.log()
    for pid in workers:
        assert proc_stat(pid) is None


def test_a_boot_failure_ends_the_master_quickly_with_the_reason(serve: Serve) -> None:
    began = time.monotonic()
    server = start(serve, "-w", "3", app="proc_broken:app")
    code = stopped(server, 20)
    assert time.monotonic() - began < 10
    assert code == 1
    log = server.log()
    last = log.strip().splitlines()[-1]
    assert last.startswith("brick: error: worker ")
    assert last.endswith(
        "failed to boot: error importing 'proc_broken': RuntimeError: proc_broken refuses to load"
    )
    booted = [line for line in log.splitlines() if "Booting worker with pid" in line]
    assert 1 <= len(booted) <= 3  # the first three; never a fork loop
    for line in booted:
        assert proc_stat(int(line.rsplit(" ", 1)[1])) is None


def test_a_missing_app_module_ends_the_master_too(serve: Serve) -> None:
    server = start(serve, "-w", "2", app="proc_no_such_module:app")
    assert stopped(server, 20) == 1
    assert (
        server.log()
        .strip()
        .splitlines()[-1]
        .endswith("failed to boot: no module named 'proc_no_such_module'")
    )


# -- reload and worker count ----------------------------------------------------------------

LIVE_APP = """
import os
VERSION = {version!r}

def app(environ, start_response):
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def write_live_app(directory: Path, version: str) -> None:
    """The source of an app answering `version`; every version differs in size, and no
    bytecode is cached (PYTHONDONTWRITEBYTECODE), so a fresh import always sees the change."""
    path = directory / "proc_live.py"
    path.write_text(LIVE_APP.format(version=version))
    future = time.time() + len(version)  # a distinct mtime even on coarse file systems
    os.utime(path, (future, future))


def versions_seen(load: Load, since: float) -> set[str]:
    return {r.detail.split()[0] for r in load.results if r.ok and r.started >= since}


def test_hup_reloads_the_app_under_load_without_a_failed_request(
    serve: Serve, tmp_path: Path
) -> None:
    write_live_app(tmp_path, "v1")
    server = serve(
        BRICK,
        ["proc_live:app", "--chdir", str(tmp_path), "-w", "2"],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    master = server.proc.pid
    generation = wait_workers(master, 2)
    with Load(server, "/", clients=3) as load:
        wait_until(lambda: "v1" in versions_seen(load, 0), 10, "v1 answers")
        for version in ("v22", "v333"):
            write_live_app(tmp_path, version)
            hupped = time.monotonic()
            server.proc.send_signal(signal.SIGHUP)
            # New workers answer with the new source; then the old ones are gone.
            wait_until(lambda v=version, h=hupped: v in versions_seen(load, h), 20, version)
            new = new_children(master, generation, 2, timeout=20)
            settled = time.monotonic()
            wait_until(lambda s=settled: len(load.served_since(s)) >= 10, 20, "more load")
            assert versions_seen(load, settled) == {version}
            generation = new
    assert load.failures == [], load.failures[:5]
    assert len(load.results) > 30
    assert server.log().count("Handling signal: HUP") == 2
    assert_no_zombies(master)


def test_ttin_and_ttou_change_the_worker_count(serve: Serve) -> None:
    server = start(serve, "-w", "2")
    master = server.proc.pid
    first = wait_workers(master, 2)
    server.proc.send_signal(signal.SIGTTIN)
    wait_workers(master, 3)
    server.proc.send_signal(signal.SIGTTIN)
    wait_workers(master, 4)
    # A worker still booting is retired before any serving one, so the order below holds
    # only once all four serve.
    worker_pids_answering(server, 4, timeout=30)
    for sent in range(1, 5):  # one at a time: the kernel merges identical pending signals
        server.proc.send_signal(signal.SIGTTOU)
        wait_until(lambda n=sent: server.log().count("Handling signal: TTOU") == n, 10)
    (last,) = wait_workers(master, 1)
    assert last not in first  # the oldest were retired first
    assert server.log().count("TTOU; workers now 1") == 2  # the fourth TTOU: never below one
    assert live_children(master) == {last}
    assert get(server, "/pid") == (200, str(last))
    assert_no_zombies(master)


def test_after_ttin_from_one_worker_both_know_they_are_several(serve: Serve) -> None:
    # The added worker is told the count as it is when it starts, and the first one reads
    # the new count from the master within a sweep: both environs say wsgi.multiprocess
    # (and both share the socket). After TTOU the one left says it is alone again.
    server = start(serve, "-w", "1")
    master = server.proc.pid
    (first,) = wait_workers(master, 1)
    assert get(server, "/multiprocess")[1] == f"{first} False"
    server.proc.send_signal(signal.SIGTTIN)
    (added,) = wait_workers(master, 2) - {first}
    answers: dict[int, str] = {}

    def both_say_true() -> bool:
        pid, multiprocess = get(server, "/multiprocess")[1].split()
        answers[int(pid)] = multiprocess
        return answers == {first: "True", added: "True"}

    wait_until(both_say_true, 30, f"both workers to say multiprocess (so far {answers})")
    server.proc.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(live_children(master)) == 1, 20, "one worker to leave")
    (left,) = live_children(master)
    wait_until(lambda: get(server, "/multiprocess")[1] == f"{left} False", 10, "the one left alone")


def test_usr1_reopens_the_log_files_in_master_and_workers(serve: Serve, tmp_path: Path) -> None:
    errors, access = tmp_path / "error.log", tmp_path / "access.log"
    server = start(
        serve,
        "-w",
        "2",
        "--error-logfile",
        str(errors),
        "--access-logfile",
        str(access),
        "--access-logformat",
        "%(p)s %(r)s",
    )
    workers = worker_pids_answering(server, 2)
    errors.rename(tmp_path / "error.log.1")
    access.rename(tmp_path / "access.log.1")
    server.proc.send_signal(signal.SIGUSR1)
    wait_until(errors.exists, 10, "a new error log")
    wait_until(lambda: "Handling signal: USR1" in errors.read_text(), 5, "the master's line")

    def both_workers_write_the_new_file() -> bool:
        get(server, "/pid")
        text = access.read_text() if access.exists() else ""
        return all(f"<{pid}> GET /pid" in text for pid in workers)

    wait_until(both_workers_write_the_new_file, 15, "both workers to log to the new file")


def test_pid_file_is_written_and_removed(serve: Serve, tmp_path: Path) -> None:
    pidfile = tmp_path / "brick.pid"
    server = start(serve, "--pid", str(pidfile))
    assert get(server, "/pid")[0] == 200  # the master wrote it before forking
    assert pidfile.read_text().strip() == str(server.proc.pid)
    server.proc.send_signal(signal.SIGTERM)
    assert stopped(server, 20) == 0
    assert not pidfile.exists()
