"""The master process: bind, fork, reap, respawn, signals, worker timeouts.

Theory of operation
-------------------
The arbiter opens the listening sockets, then forks `workers` children that share them and
each run a `Worker` (an event loop). It then sleeps on a wake-up pipe and, each time it wakes,

    1. acts on recorded signals, one `handle_<name>` method per signal (the handler itself
       only appends to a queue: nothing unsafe runs inside a signal handler);
    2. reaps every exited child (no zombies, ever, even as PID 1 in a container), telling a
       crash from a clean exit in the log;
    3. kills workers whose heartbeat is older than `timeout` (SIGABRT, then SIGKILL);
    4. forks or retires workers until their number matches the target.

Heartbeats live in an anonymous shared memory map created before the first fork: each worker
writes a monotonic timestamp into its slot; the master only reads. No file, no syscall on the
worker's side, nothing that stalls on a container's overlay /tmp.

All process operations go through a `ProcessOps` object, so the decisions above can be tested
without forking: tests pass a fake that records what the arbiter asked for.

Signals (as gunicorn): TERM graceful stop; INT, QUIT quick stop; HUP reload (new workers import
the app afresh, then old ones drain); TTIN / TTOU one worker more / fewer; USR1 reopen logs.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from brick.config import Config
from brick.errors import AppImportError
from brick.listeners import Address, describe, open_listener, parse_address
from brick.logs import LogFile, reopen_logs
from brick.wsgi import WSGIApp

log = logging.getLogger("brick.error")

WORKER_BOOT_ERROR = 3  # a worker's exit code when the app cannot be loaded
HEARTBEAT_SLOTS = 1024
KILL_GRACE = 2.0  # seconds between SIGABRT and SIGKILL for a timed-out worker
_SLOT = struct.Struct("d")
SIGNAL_NAMES: dict[int, str] = {
    signal.SIGHUP: "hup",
    signal.SIGQUIT: "quit",
    signal.SIGINT: "int",
    signal.SIGTERM: "term",
    signal.SIGTTIN: "ttin",
    signal.SIGTTOU: "ttou",
    signal.SIGUSR1: "usr1",
    signal.SIGCHLD: "chld",
}


class ProcessOps:
    """The real process operations. Tests substitute a fake with the same methods."""

    def fork(self) -> int:
        return os.fork()

    def kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def reap(self) -> list[tuple[int, int]]:
        """Every exited child, as (pid, wait status). Never blocks."""
        done = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            done.append((pid, status))
        return done

    def now(self) -> float:
        return time.monotonic()

    def exit(self, code: int) -> None:
        os._exit(code)


@dataclass
class WorkerInfo:
    pid: int
    slot: int
    born: float
    generation: int
    retiring: bool = False  # sent TERM; leaves the count when it exits
    aborted_at: float = 0.0  # when SIGABRT was sent for a timeout


class Heartbeats:
    """Worker liveness timestamps in shared memory, one 8-byte slot per worker."""

    def __init__(self, slots: int = HEARTBEAT_SLOTS) -> None:
        self.map = mmap.mmap(-1, slots * _SLOT.size)
        self.slots = slots

    def beat(self, slot: int, when: float) -> None:
        _SLOT.pack_into(self.map, slot * _SLOT.size, when)

    def last(self, slot: int) -> float:
        value: float = _SLOT.unpack_from(self.map, slot * _SLOT.size)[0]
        return value


def describe_status(status: int) -> tuple[bool, str]:
    """(clean?, words) for a wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return False, f"was killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code == 0:
        return True, "exited cleanly"
    return False, f"crashed with exit code {code}"


class Arbiter:
    def __init__(
        self,
        config: Config,
        load_app: Callable[[], WSGIApp],
        *,
        app: WSGIApp | None = None,
        ops: ProcessOps | None = None,
        errors: LogFile | None = None,
    ) -> None:
        self.config = config
        self.load_app = load_app
        self.app = app  # set when preloaded
        self.ops = ops or ProcessOps()
        self.errors = errors
        self.num_workers = config.workers
        self.workers: dict[int, WorkerInfo] = {}
        self.sockets: list[socket.socket] = []
        self.addresses: list[Address] = []
        self.heartbeats = Heartbeats()
        self.generation = 0
        self.signals: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = 0
        self.failure: str | None = None  # why the master gave up, for the CLI's last line
        self.pid = os.getpid()
        self._wake_r = self._wake_w = -1
        self._boot_failed = False
        self.boot_error = mmap.mmap(-1, 4096)  # a failed worker's one-line reason

    # -- start-up ----------------------------------------------------------------------

    def bind(self) -> None:
        config = self.config
        for text in config.bind:
            address = parse_address(text)
            sock = open_listener(address, config.backlog, reuse_port=config.reuse_port)
            self.sockets.append(sock)
            self.addresses.append(address)
            log.info("Listening at: %s (%d)", describe(sock), self.pid)

    def run(self) -> int:
        self._setup_signals()
        self._write_pidfile()
        _set_title(f"master [{self.config.proc_name or self.config.wsgi_app}]")
        log.info("Booting %d worker(s), %d thread(s) each", self.num_workers, self.config.threads)
        try:
            self.maintain()
            while True:
                self.sleep()
                self.tick()
                if self.stopping and not self.workers:
                    break
        finally:
            self._remove_pidfile()
        log.info("Shutting down: master %d", self.pid)
        return self.exit_code

    def tick(self) -> None:
        """One round of the master loop: signals, reaping, timeouts, worker count."""
        while self.signals:
            sig = self.signals.pop(0)
            handler = getattr(self, f"handle_{SIGNAL_NAMES.get(sig, 'unknown')}", None)
            if handler is not None:
                handler()
        self.reap()
        self.check_timeouts()
        if self.stopping:
            self._stop_stragglers()
        else:
            self.maintain()

    # -- signals -----------------------------------------------------------------------

    def _setup_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in SIGNAL_NAMES:
            signal.signal(sig, self._record_signal)
        signal.signal(signal.SIGWINCH, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _record_signal(self, signum: int, frame: FrameType | None) -> None:
        if len(self.signals) < 32:
            self.signals.append(signum)

    def sleep(self) -> None:
        timeout = 1.0
        if self.config.timeout:
            timeout = min(timeout, max(0.05, self.config.timeout / 4))
        if self.stopping:
            timeout = 0.1
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, InterruptedError):
                pass

    def handle_chld(self) -> None:
        pass  # reaping happens every tick

    def handle_term(self) -> None:
        log.info("Handling signal: TERM (graceful stop)")
        self.stop(graceful=True)

    def handle_int(self) -> None:
        log.info("Handling signal: INT (quick stop)")
        self.stop(graceful=False)

    def handle_quit(self) -> None:
        log.info("Handling signal: QUIT (quick stop)")
        self.stop(graceful=False)

    def handle_hup(self) -> None:
        log.info("Handling signal: HUP (reload)")
        self.reload()

    def handle_ttin(self) -> None:
        self.num_workers += 1
        log.info("Handling signal: TTIN; workers now %d", self.num_workers)
        self.maintain()

    def handle_ttou(self) -> None:
        if self.num_workers > 1:
            self.num_workers -= 1
        log.info("Handling signal: TTOU; workers now %d", self.num_workers)
        self.maintain()

    def handle_usr1(self) -> None:
        log.info("Handling signal: USR1 (reopen logs)")
        reopen_logs()
        for pid in self.workers:
            self.ops.kill(pid, signal.SIGUSR1)

    # -- decisions ---------------------------------------------------------------------

    def active_workers(self) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if not w.retiring]

    def maintain(self) -> None:
        """Fork or retire workers until the active ones match the target count."""
        if self.stopping:
            return
        active = self.active_workers()
        while len(active) < self.num_workers:
            info = self.spawn()
            if info is None:
                return
            active.append(info)
        if len(active) > self.num_workers:
            # Retire the oldest first: they have served longest (gunicorn does the same).
            for info in sorted(active, key=lambda w: w.born)[: len(active) - self.num_workers]:
                self.retire(info)

    def retire(self, info: WorkerInfo) -> None:
        info.retiring = True
        self.ops.kill(info.pid, signal.SIGTERM)

    def reload(self) -> None:
        """New workers first, then the old ones drain: no request fails during the swap."""
        old = self.active_workers()
        self.generation += 1
        for _ in range(self.num_workers):
            if self.spawn() is None:
                return
        for info in old:
            self.retire(info)

    def reap(self) -> None:
        for pid, status in self.ops.reap():
            info = self.workers.pop(pid, None)
            if info is None:
                continue  # an orphan we adopted as PID 1, or a stray child: reaped all the same
            clean, words = describe_status(status)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR:
                reason = self.boot_error[:].split(b"\0", 1)[0].decode("utf-8", "replace")
                log.debug("Worker %d failed to boot", pid)
                if not self.stopping:
                    self.failure = reason or "a worker failed to boot"
                    self.exit_code = 1
                    self._boot_failed = True
                    self.stop(graceful=False)
                continue
            if info.aborted_at:
                log.error("Worker %d (timed out) %s", pid, words)
            elif clean or info.retiring or self.stopping:
                log.info("Worker %d %s", pid, words)
            else:
                log.error("Worker %d %s; starting a new one", pid, words)

    def check_timeouts(self) -> None:
        timeout = self.config.timeout
        if not timeout:
            return
        now = self.ops.now()
        for info in list(self.workers.values()):
            if info.aborted_at:
                if now - info.aborted_at >= KILL_GRACE:
                    log.error("Worker %d did not exit after SIGABRT; sending SIGKILL", info.pid)
                    self.ops.kill(info.pid, signal.SIGKILL)
                    info.aborted_at = now  # retry later if it somehow survives
                continue
            silent = now - max(self.heartbeats.last(info.slot), info.born)
            if silent > timeout:
                log.error(
                    "Worker %d timed out: no heartbeat for %.1fs (timeout %ss); sending SIGABRT",
                    info.pid,
                    silent,
                    _num(timeout),
                )
                info.aborted_at = now
                self.ops.kill(info.pid, signal.SIGABRT)

    def stop(self, graceful: bool) -> None:
        if self.stopping and graceful:
            return
        self.stopping = True
        timeout = (
            self.config.graceful_timeout if graceful else min(self.config.graceful_timeout, 5.0)
        )
        self.stop_deadline = self.ops.now() + timeout
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for info in self.workers.values():
            info.retiring = True
            self.ops.kill(info.pid, sig)

    def _stop_stragglers(self) -> None:
        if self.workers and self.ops.now() >= self.stop_deadline:
            for info in self.workers.values():
                log.warning("Worker %d still running at the stop deadline; SIGKILL", info.pid)
                self.ops.kill(info.pid, signal.SIGKILL)
            self.stop_deadline = self.ops.now() + KILL_GRACE

    # -- forking -----------------------------------------------------------------------

    def _free_slot(self) -> int:
        used = {w.slot for w in self.workers.values()}
        for slot in range(self.heartbeats.slots):
            if slot not in used:
                return slot
        raise RuntimeError("no free heartbeat slot")

    def spawn(self) -> WorkerInfo | None:
        if self._boot_failed:
            return None
        slot = self._free_slot()
        now = self.ops.now()
        self.heartbeats.beat(slot, now)
        try:
            pid = self.ops.fork()
        except OSError as exc:
            log.error("cannot fork a worker: %s", exc.strerror)
            return None
        if pid == 0:
            self._child(slot)  # never returns
        info = WorkerInfo(pid, slot, now, self.generation)
        self.workers[pid] = info
        log.info("Booting worker with pid: %d", pid)
        return info

    def _child(self, slot: int) -> None:
        code = 1
        try:
            code = self._run_worker(slot)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.critical("worker crashed:\n%s", traceback.format_exc())
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            self.ops.exit(code)

    def _run_worker(self, slot: int) -> int:
        from brick.worker import Worker

        for sig in SIGNAL_NAMES:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        _set_title(f"worker [{self.config.proc_name or self.config.wsgi_app}]")
        signal.signal(signal.SIGABRT, _abort_handler)
        app = self.app
        if app is None:
            try:
                app = self.load_app()
            except Exception as exc:
                if not isinstance(exc, AppImportError):
                    log.debug("error loading the app", exc_info=True)
                reason = (
                    str(exc)
                    if isinstance(exc, AppImportError)
                    else (f"error loading the app: {exc.__class__.__name__}: {exc}")
                )
                data = reason.encode("utf-8", "replace")[:4000] + b"\0"
                self.boot_error[: len(data)] = data
                return WORKER_BOOT_ERROR
        sockets = self.sockets
        if self.config.reuse_port:
            pairs = zip(self.sockets, self.addresses, strict=True)
            sockets = [self._own_socket(sock, address) for sock, address in pairs]
        heartbeats = self.heartbeats
        monotonic = time.monotonic

        worker = Worker(
            app,
            self.config,
            sockets,
            errors=self.errors,
            parent_pid=self.pid,
        )

        def heartbeat() -> None:
            heartbeats.beat(slot, worker.progress_since(monotonic()))

        worker.heartbeat = heartbeat
        if self.config.reload:
            from brick.reloader import start_reloader

            start_reloader(lambda: os.kill(os.getpid(), signal.SIGTERM))
        return worker.run()

    def _own_socket(self, shared: socket.socket, address: Address) -> socket.socket:
        """With --reuse-port, a TCP worker binds its own socket to the master's address."""
        if address.kind != "tcp":
            return shared
        host, port = shared.getsockname()[:2]
        own = open_listener(
            Address("tcp", host=host, port=port), self.config.backlog, reuse_port=True
        )
        shared.close()
        return own

    # -- pidfile -----------------------------------------------------------------------

    def _write_pidfile(self) -> None:
        path = self.config.pidfile
        if not path:
            return
        tmp = f"{path}.{self.pid}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{self.pid}\n")
        os.replace(tmp, path)

    def _remove_pidfile(self) -> None:
        path = self.config.pidfile
        if not path:
            return
        try:
            with open(path) as fh:
                if fh.read().strip() == str(self.pid):
                    os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot remove pidfile %s: %s", path, exc.strerror)


def _abort_handler(signum: int, frame: FrameType | None) -> Any:
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
    log.error("Worker %d aborted after a timeout; it was here:\n%s", os.getpid(), stack)
    os._exit(1)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _set_title(title: str) -> None:
    try:
        from setproctitle import setproctitle  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    setproctitle(f"brick: {title}")
