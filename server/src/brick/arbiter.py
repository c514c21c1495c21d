"""The master process: bind, fork, reap, respawn, signals, worker timeouts.

Theory of operation
-------------------
The arbiter opens the listening sockets, then forks `workers` children that share them and
each run a `Worker` (an event loop). It then sleeps on a wake-up pipe and, each time it wakes
(a signal, a child's exit, a worker asking to be replaced, or at least once a second),

    1. acts on recorded signals, one `handle_<name>` method per signal (the handler itself
       only appends to a list: nothing unsafe runs inside a signal handler);
    2. reaps every exited child (no zombies, ever, even as PID 1 in a container), telling a
       crash from a clean exit in the log;
    3. kills workers whose heartbeat is older than `timeout` (SIGABRT, then SIGKILL);
    4. forks or retires workers until the current ones match the target count.

Replacing a worker always starts the new one first. A worker is *outgoing* when it belongs to
an older generation (HUP bumps the generation) or asked to be replaced (`--max-requests`,
`--reload`); outgoing workers keep serving and are sent TERM (drain, then exit) only as their
replacements report ready. So neither a reload nor a recycle leaves a moment with nobody
accepting. With `--reuse-port` each worker position has its own socket, opened and kept by
the master, and a replacement takes over its predecessor's: a swap closes no socket.

Heartbeats live in an anonymous shared memory map created before the first fork, one slot per
worker: a monotonic timestamp the worker writes every `SWEEP_INTERVAL` (0 until it is ready)
and a word it sets to ask for a replacement. The master only reads. No file, no syscall on the
worker's side, nothing that stalls on a container's overlay /tmp.

A worker that cannot load the app exits with `WORKER_BOOT_ERROR` and leaves its one-line reason
in shared memory; the master then stops everything and exits 1 with that line, instead of
forking in a loop. Workers that keep dying before they are ready end the master the same way.

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
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from brick.config import Config
from brick.errors import BrickError
from brick.listeners import Address, describe, open_listener, parse_address
from brick.logs import LogFile, reopen_logs
from brick.worker import Worker, flush_logs
from brick.wsgi import WSGIApp

log = logging.getLogger("brick.error")

WORKER_BOOT_ERROR = 3  # a worker's exit code when the app cannot be loaded (gunicorn's too)
HEARTBEAT_SLOTS = 1024  # the most workers at once (old and new together during a reload)
KILL_GRACE = 2.0  # seconds between SIGABRT (or the stop deadline) and SIGKILL
MAX_EARLY_DEATHS = 5  # workers dying in a row before they are ready: give up
RECYCLE = 1  # the slot's request word: "start my replacement, then retire me"

# One slot: the heartbeat (a double) and the request word (an int), padded to 16 bytes.
_SLOT = struct.Struct("di4x")
_HEARTBEAT = struct.Struct("d")
_REQUEST = struct.Struct("i")
_COUNT = struct.Struct("q")  # the worker_count map: the target number of workers

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
    position: int = 0  # with --reuse-port: which of the master's per-position sockets it serves
    ready: bool = False  # has sent its first heartbeat: it is accepting
    recycle: bool = False  # asked to be replaced (max requests, source change)
    retiring: bool = False  # sent TERM or QUIT; leaves the count when it exits
    aborted_at: float = 0.0  # when SIGABRT (and later SIGKILL) was sent for a timeout


class Heartbeats:
    """Worker liveness and requests in shared memory, one 16-byte slot per worker.

    A worker writes only its own slot and the master only reads (except to clear a slot
    before handing it to a new worker), so no lock is needed: an aligned 8-byte store is
    atomic on the platforms we run on.
    """

    def __init__(self, slots: int = HEARTBEAT_SLOTS) -> None:
        self.map = mmap.mmap(-1, slots * _SLOT.size)
        self.slots = slots

    def clear(self, slot: int) -> None:
        _SLOT.pack_into(self.map, slot * _SLOT.size, 0.0, 0)

    def beat(self, slot: int, when: float) -> None:
        _HEARTBEAT.pack_into(self.map, slot * _SLOT.size, when)

    def last(self, slot: int) -> float:
        """The last heartbeat, 0.0 before the worker is ready."""
        value: float = _HEARTBEAT.unpack_from(self.map, slot * _SLOT.size)[0]
        return value

    def ask(self, slot: int, request: int) -> None:
        _REQUEST.pack_into(self.map, slot * _SLOT.size + 8, request)

    def request(self, slot: int) -> int:
        value: int = _REQUEST.unpack_from(self.map, slot * _SLOT.size + 8)[0]
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
        # With --reuse-port: position -> one listening socket per address (None where the
        # address is not TCP and the shared socket serves), see _position_sockets.
        self.positions: dict[int, list[socket.socket | None]] = {}
        self.per_position = False  # --reuse-port with a TCP address: workers have positions
        self.heartbeats = Heartbeats()
        # The target worker count, for the workers to read (maintain writes it): after TTIN
        # from -w 1 the first worker learns it is no longer alone.
        self.worker_count = mmap.mmap(-1, _COUNT.size)
        self.generation = 0
        self.signals: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = 0
        self.failure: str | None = None  # why the master gave up, for the CLI's last line
        self.early_deaths = 0  # workers that died before they were ready, in a row
        self.pid = os.getpid()
        self._wake_r = self._wake_w = -1
        self.boot_error = mmap.mmap(-1, 4096)  # a failed worker's one-line reason
        self._unix_inodes: dict[str, int] = {}  # socket files we created, to remove at exit

    # -- start-up ----------------------------------------------------------------------

    def bind(self) -> None:
        config = self.config
        if config.reuse_port:
            _check_migration()
        for text in config.bind:
            address = parse_address(text)
            if config.reuse_port and address.kind == "tcp":
                # Each worker position gets its own listening socket (_position_sockets);
                # this one only holds the address and port (bound, never listening).
                sock = _reserve(address)
            else:
                sock = open_listener(address, config.backlog, reuse_port=config.reuse_port)
            self.sockets.append(sock)
            self.addresses.append(address)
            if address.kind == "unix":
                self._unix_inodes[address.path] = os.stat(address.path).st_ino
            log.info("Listening at: %s (%d)", describe(sock), self.pid)
        self.per_position = config.reuse_port and any(a.kind == "tcp" for a in self.addresses)

    def run(self) -> int:
        self._setup_signals()
        try:
            self._write_pidfile()
        except OSError as exc:
            self.failure = f"cannot write the pid file {self.config.pidfile}: {exc.strerror}"
            return 1
        _set_title(f"master [{self.config.proc_name or self.config.wsgi_app}]")
        log.info("Booting %d worker(s), %d thread(s) each", self.num_workers, self.config.threads)
        try:
            self.maintain()
            while not (self.stopping and not self.workers):
                self.sleep()
                self.tick()
        finally:
            self._remove_pidfile()
            self._unlink_unix_sockets()
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
        if self.stopping or any(not w.ready for w in self.workers.values()):
            timeout = 0.1  # waiting for workers to start or to stop: look more often
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
        log.info("Handling signal: HUP (reload: new workers, then the old ones drain)")
        self.reload()

    def handle_ttin(self) -> None:
        if self.num_workers < self.heartbeats.slots // 2:
            self.num_workers += 1
        log.info("Handling signal: TTIN; workers now %d", self.num_workers)
        self.maintain()

    def handle_ttou(self) -> None:
        if self.num_workers > 1:
            self.num_workers -= 1
        log.info("Handling signal: TTOU; workers now %d", self.num_workers)
        self.maintain()

    def handle_usr1(self) -> None:
        reopen_logs()
        log.info("Handling signal: USR1 (log files reopened)")
        for pid in self.workers:
            self.ops.kill(pid, signal.SIGUSR1)

    # -- decisions ---------------------------------------------------------------------

    def is_current(self, info: WorkerInfo) -> bool:
        """Counts toward the target: not leaving, not outgoing. With --reuse-port, a worker
        whose position TTOU took away is outgoing too."""
        return (
            not info.retiring
            and not info.recycle
            and info.generation == self.generation
            and (not self.per_position or info.position < self.num_workers)
        )

    def current_workers(self) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if self.is_current(w)]

    def poll_heartbeats(self) -> None:
        """Learn which workers became ready and which asked to be replaced."""
        heartbeats = self.heartbeats
        for info in self.workers.values():
            if not info.ready and heartbeats.last(info.slot) > 0.0:
                info.ready = True
                self.early_deaths = 0
            if not info.recycle and heartbeats.request(info.slot) == RECYCLE:
                info.recycle = True
                log.info("Worker %d asked to be replaced", info.pid)

    def maintain(self) -> None:
        """Fork or retire workers until the current ones match the target count.

        Outgoing workers (an older generation, or asking to be replaced) are retired only
        as current ones become ready, so someone is always accepting.
        """
        if self.stopping:
            return
        _COUNT.pack_into(self.worker_count, 0, self.num_workers)
        self.poll_heartbeats()
        for position in [p for p in self.positions if p >= self.num_workers]:
            # TTOU took this position away: its worker (outgoing now) holds the last copy
            # and closes it after taking what waits in its queue.
            self._close_position(position)
        current = self.current_workers()
        while len(current) < self.num_workers:
            info = self.spawn()
            if info is None:
                return
            current.append(info)
        if len(current) > self.num_workers:
            # Retire any still booting first, then the oldest (gunicorn retires the oldest).
            extra = sorted(current, key=lambda w: (w.ready, w.born))
            for info in extra[: len(current) - self.num_workers]:
                self.retire(info)
        outgoing = [w for w in self.workers.values() if not w.retiring and not self.is_current(w)]
        if outgoing:
            # Keep as many ready outgoing workers as current ones are missing or booting;
            # an outgoing worker that is not even ready serves nobody: it goes at once.
            keep = max(0, self.num_workers - sum(1 for w in current if w.ready))
            serving = sorted((w for w in outgoing if w.ready), key=lambda w: w.born)
            for info in outgoing:
                if not info.ready:
                    self.retire(info)
            for info in serving[: max(0, len(serving) - keep)]:
                self.retire(info)  # the oldest first

    def retire(self, info: WorkerInfo) -> None:
        """TERM: the worker stops accepting, finishes its requests and exits."""
        info.retiring = True
        self.ops.kill(info.pid, signal.SIGTERM)

    def reload(self) -> None:
        """A new generation: new workers import the app afresh; the old ones drain."""
        if self.stopping:
            return
        self.generation += 1
        self.maintain()

    def reap(self) -> None:
        for pid, status in self.ops.reap():
            info = self.workers.pop(pid, None)
            if info is None:
                continue  # an orphan we adopted as PID 1, or a stray child: reaped all the same
            clean, words = describe_status(status)
            if not info.ready and self.heartbeats.last(info.slot) > 0.0:
                info.ready = True
            expected = info.retiring or self.stopping
            if (
                not info.ready
                and os.WIFEXITED(status)
                and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR
            ):
                reason = self.boot_error[:].split(b"\0", 1)[0].decode("utf-8", "replace")
                self._give_up(f"worker {pid} failed to boot: {reason or 'no reason given'}")
                continue
            if info.aborted_at:
                log.error("Worker %d (timed out) %s", pid, words)
            elif clean or expected:
                log.info("Worker %d %s", pid, words)
            else:
                log.error("Worker %d %s; starting a new one", pid, words)
            if not info.ready and not expected:
                self.early_deaths += 1
                if self.early_deaths >= MAX_EARLY_DEATHS:
                    self._give_up(
                        f"{self.early_deaths} workers in a row died before they were ready; "
                        f"the last one {words}"
                    )

    def _give_up(self, reason: str) -> None:
        if self.stopping:
            log.info("%s (while stopping)", reason)
            return
        log.error("%s; stopping", reason)
        self.failure = reason
        self.exit_code = 1
        self.stop(graceful=False)

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
                    info.aborted_at = now  # and again later, if it somehow survives
                continue
            beat = self.heartbeats.last(info.slot)
            silent = now - max(beat, info.born)
            if silent > timeout:
                what = "one request has been running for" if beat > 0.0 else "still not ready after"
                log.error(
                    "Worker %d timed out: %s %.1fs (timeout %ss); sending SIGABRT",
                    info.pid,
                    what,
                    silent,
                    _num(timeout),
                )
                info.aborted_at = now
                self.ops.kill(info.pid, signal.SIGABRT)

    def stop(self, graceful: bool) -> None:
        """TERM every worker (drain up to graceful_timeout), or QUIT them (exit now)."""
        if self.stopping and graceful:
            return
        self.stopping = True
        for position in list(self.positions):
            self._close_position(position)  # each worker's own close is then the last one
        timeout = self.config.graceful_timeout if graceful else min(self.config.graceful_timeout, 5)
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

    def _free_position(self) -> int:
        taken = {w.position for w in self.workers.values() if self.is_current(w)}
        return next(p for p in range(self.num_workers + 1) if p not in taken)

    def _position_sockets(self, position: int) -> list[socket.socket | None]:
        """With --reuse-port: the listening sockets of `position`, opened on first use.

        The master keeps them for as long as the position exists, and a replacement worker
        (recycle, reload) takes over its predecessor's: the socket never closes under
        clients. (A closing listener resets a client whose handshake completes at that
        very instant, even with net.ipv4.tcp_migrate_req=1.) Only TTOU and the final stop
        close one."""
        sockets = self.positions.get(position)
        if sockets is None:
            sockets = []
            try:
                for shared, address in zip(self.sockets, self.addresses, strict=True):
                    if address.kind != "tcp":
                        sockets.append(None)
                        continue
                    host, port = shared.getsockname()[:2]
                    where = Address("tcp", host=host, port=port)
                    sockets.append(open_listener(where, self.config.backlog, reuse_port=True))
            except OSError:
                for sock in sockets:
                    if sock is not None:
                        sock.close()
                raise
            self.positions[position] = sockets
        return sockets

    def _close_position(self, position: int) -> None:
        for sock in self.positions.pop(position, []):
            if sock is not None:
                sock.close()

    def spawn(self) -> WorkerInfo | None:
        if self.stopping:
            return None
        position = 0
        if self.per_position:
            position = self._free_position()
            try:
                self._position_sockets(position)
            except OSError as exc:
                reason = f"cannot open a listening socket at {exc.filename}: {exc.strerror}"
                if not self.workers:
                    self._give_up(reason)  # nobody serves at all: say so and stop
                else:
                    log.error("%s; trying again soon", reason)
                return None
        slot = self._free_slot()
        self.heartbeats.clear(slot)
        now = self.ops.now()
        # Signals wait (blocked) until the child has its own handlers: one arriving in
        # between would otherwise land in a copy of the master's handler and be lost.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNAL_NAMES)
        try:
            pid = self.ops.fork()
            if pid == 0:
                self._child(slot, position, mask)  # never returns
        except OSError as exc:
            log.error("cannot fork a worker: %s; trying again soon", exc.strerror)
            return None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        info = WorkerInfo(pid, slot, now, self.generation, position)
        self.workers[pid] = info
        log.info("Booting worker with pid: %d", pid)
        return info

    def _child(self, slot: int, position: int, mask: Iterable[int]) -> None:
        code = 1
        try:
            code = self._run_worker(slot, position, mask)
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

    def _run_worker(self, slot: int, position: int, mask: Iterable[int]) -> int:
        # Until the worker's loop runs, a stop request simply ends the process (quietly:
        # the master asked for it); HUP, TTIN, TTOU and USR1 are for the master only.
        # (Signals are blocked since the fork; a stop request that arrived meanwhile is
        # pending and is delivered on unblocking. Never set SIG_IGN on TERM, INT or QUIT
        # here: that would discard a pending one.)
        signal.set_wakeup_fd(-1)
        for sig in SIGNAL_NAMES:
            if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, _exit_while_booting)
            else:
                signal.signal(sig, signal.SIG_DFL if sig == signal.SIGCHLD else signal.SIG_IGN)
        signal.signal(signal.SIGABRT, _abort_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(self._wake_r)
        _set_title(f"worker [{self.config.proc_name or self.config.wsgi_app}]")
        sockets = self.sockets
        owned: list[socket.socket] = []
        if self.per_position:
            # Serve our position's sockets; other positions' and the address-holding
            # sockets are not ours to keep open.
            mine = self.positions[position]
            for other in [p for p in self.positions if p != position]:
                self._close_position(other)
            for reserve, own in zip(self.sockets, mine, strict=True):
                if own is not None:
                    reserve.close()
            sockets = [own or shared for own, shared in zip(mine, self.sockets, strict=True)]
            owned = [own for own in mine if own is not None]
        broken: list[str] = []  # with --reload: files whose fix may let the app load
        try:
            try:
                app = self.app if self.app is not None else self.load_app()
            except Exception as exc:
                broken = _broken_files(exc) if self.config.reload else []
                if not broken:
                    raise
                log.error(
                    "%s; answering 500 until %s changes",
                    _boot_reason(exc),
                    " or ".join(broken),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                app = _failed_app
        except Exception as exc:
            log.debug("worker %d cannot boot", os.getpid(), exc_info=True)
            data = _boot_reason(exc).encode("utf-8", "replace")[:4000] + b"\0"
            self.boot_error[: len(data)] = data
            return WORKER_BOOT_ERROR

        heartbeats, wake_w, monotonic = self.heartbeats, self._wake_w, time.monotonic
        count_map = self.worker_count

        def peers() -> int:
            count: int = _COUNT.unpack_from(count_map, 0)[0]
            return count

        def recycle() -> None:
            heartbeats.ask(slot, RECYCLE)
            try:
                os.write(wake_w, b"R")  # wake the master now rather than at its next tick
            except OSError:
                pass

        # The count as it is now, not as started: after TTIN a worker started with `-w 1`
        # shares the socket (and is one of several processes) like any other.
        config = replace(self.config, workers=self.num_workers)
        worker = Worker(
            app,
            config,
            sockets,
            errors=self.errors,
            parent_pid=self.pid,
            owned_sockets=owned,
            recycle=recycle,
            peers=peers,
        )

        def heartbeat() -> None:
            heartbeats.beat(slot, worker.progress_since(monotonic()))

        worker.heartbeat = heartbeat
        if self.config.reload:
            from brick.reloader import start_reloader

            start_reloader(worker.request_recycle, extra_files=broken)
        return worker.run()

    # -- files -------------------------------------------------------------------------

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

    def _unlink_unix_sockets(self) -> None:
        """Remove the unix socket files we created (only if they are still ours)."""
        for address in self.addresses:
            if address.kind != "unix":
                continue
            try:
                if os.stat(address.path).st_ino == self._unix_inodes.get(address.path):
                    os.unlink(address.path)
            except OSError:
                pass


def _reserve(address: Address) -> socket.socket:
    """Bind (but do not listen on) a SO_REUSEPORT socket: it holds the address and port."""
    infos = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, exc.strerror or str(exc), str(address)) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _check_migration() -> None:
    """With SO_REUSEPORT, connections waiting in a socket that closes (TTOU removing a
    position; recycles and reloads close none) are reset, unless the kernel moves them to
    a sibling socket (Linux 5.14+, per network namespace). Say so once, at start-up."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as fh:
            if fh.read().strip() == "1":
                return
    except OSError:
        pass
    log.warning(
        "--reuse-port: connections waiting in the socket of a worker that TTOU removes "
        "can be reset; set net.ipv4.tcp_migrate_req=1 (Linux 5.14+) to prevent it"
    )


def _boot_reason(exc: Exception) -> str:
    if isinstance(exc, BrickError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot open a listening socket: {exc.strerror}"
    return f"error loading the app: {exc.__class__.__name__}: {exc}"


def _broken_files(exc: BaseException) -> list[str]:
    """The source files an import error points at (a syntax error's file, the frames of an
    exception raised while the module ran), leaving out brick's own and the standard
    library's. None for a module that does not exist: no edit can fix that."""
    original = exc.__cause__ or exc.__context__ or exc
    files = []
    if isinstance(original, SyntaxError) and original.filename:
        files.append(original.filename)
    files += [frame.filename for frame in traceback.extract_tb(original.__traceback__)]
    skip = {os.path.dirname(os.path.abspath(__file__))}
    skip.update(sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib"))
    return [
        path
        for path in dict.fromkeys(files)
        if os.path.isfile(path) and not any(_inside(path, folder) for folder in skip)
    ]


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == (
        os.path.abspath(folder)
    )


def _failed_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """--reload only: what a worker answers while the app's source does not load."""
    body = b"The app failed to load; see the server's error log.\n"
    start_response(
        "500 Internal Server Error",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _exit_while_booting(signum: int, frame: FrameType | None) -> None:
    # Not SystemExit: the app's import (or the importer) could catch it.
    flush_logs()
    os._exit(0)


def _abort_handler(signum: int, frame: FrameType | None) -> None:
    """SIGABRT from the master's timeout: say where every thread was, then exit."""
    main = threading.main_thread().ident
    stacks = []
    for ident, thread_frame in sys._current_frames().items():
        if ident == main:
            thread_frame = frame or thread_frame
        name = next((t.name for t in threading.enumerate() if t.ident == ident), str(ident))
        stacks.append(f"thread {name}:\n" + "".join(traceback.format_stack(thread_frame)))
    log.error("Worker %d aborted after a timeout; it was here:\n%s", os.getpid(), "\n".join(stacks))
    flush_logs()
    os._exit(1)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _set_title(title: str) -> None:
    try:
        from setproctitle import setproctitle  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    setproctitle(f"brick: {title}")
