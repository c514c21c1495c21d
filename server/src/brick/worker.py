"""One worker process: the event loop, an optional app thread pool, heartbeat, graceful drain.

The worker does not know how it was started (forked by the arbiter, or run directly): it gets
the app, the listening sockets, a `heartbeat` callable and a `recycle` callable, and runs until
told to stop.

Supervision never touches the per-request path: the heartbeat, deadline checks, signal
handling and the parent check all run from `_tick`, at most once per `SWEEP_INTERVAL`.

Heartbeat: with `--threads 1` the loop thread runs the app, so a request stuck in the app
stops the loop and with it the heartbeat. With a pool the loop keeps running, so the heartbeat
reports `progress_since`: the start of the oldest request still running in an app thread. A
request stuck in one thread therefore looks, to the master, exactly like a stuck loop.

Accepting, when workers share a listening socket: a worker takes one connection per loop
turn, so a burst of new connections is shared among the workers; and a worker whose app
threads are all busy stops taking new ones until a thread is free, so they go to a worker
that can start on them now (with TCP_DEFER_ACCEPT a burst of 64 clients is ready at once,
and one worker's quick loop would otherwise take most of it). A busy pool never stops the
loop from reading, timing out or closing the connections it has: their requests wait in the
pool's queue. A worker alone on its socket accepts up to 64 at a time and never waits.

Signals:
    TERM        graceful: stop accepting, finish in-flight requests (up to graceful_timeout)
    INT, QUIT   quick: exit at once, from the handler (the loop may be inside the app)
    USR1        reopen log files
TERM and USR1 handlers only record the signal; the loop acts on it at its next turn.
"""

from __future__ import annotations

import _socket
import errno
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from queue import Empty, SimpleQueue
from types import FrameType
from typing import IO, Any, Final, cast

from brick.config import Config
from brick.connection import NONBLOCK_TYPE, Connection, Lend, Service
from brick.listeners import server_name_port
from brick.logs import AccessLog, LogFile, debug_http_printer, reopen_logs
from brick.loop import EVENT_READ, EventLoop, LoopMoved
from brick.parser import Limits
from brick.wsgi import EnvironBuilder, WSGIApp

log = logging.getLogger("brick.error")

SWEEP_INTERVAL = 0.1  # how often deadlines are checked; timeouts are accurate to this
DRAIN_IDLE = 0.5  # when draining, an idle connection gets this long to send one more request
_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# Linux's TCP_INFO, asked of a listening socket, says how many connections wait in its
# accept queue: the struct's tcpi_unacked field, at this offset (eight one-byte fields,
# then rto, ato, snd_mss and rcv_mss), stands for it on a listener (`ss -lt` shows it as
# Recv-Q). TCP_LISTEN is the state a listener's info says it is in.
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_QUEUED_AT: Final = 24
_TCP_LISTEN: Final = 10
# --threads: how often the watchdog looks at an app the loop thread runs; one still running
# at the next look (after one to two periods) has the loop taken from it. Shorter holds the
# other clients up less when an app is slow, but each look costs a busy worker far more
# than the look itself: the watchdog must get the GIL from the loop thread, which costs
# thread switches and wake-ups. Measured with the worker on one core, bare app, Connection:
# close: looking every 1 ms added about a sixth to the CPU per request, every 5 ms a
# twentieth (bench/README.md, "Where the time goes").
TAKEOVER = 0.005
PARK_AFTER = 40  # looks with nothing lent (about 0.2 s) before the watchdog sleeps
LEAD: Final = ((lambda: None), ())  # the job that makes a pool thread the loop thread


class AppPool:
    """The app threads (`--threads N`, N > 1): one queue of jobs and N threads taking them,
    and the loop thread lent to apps while a thread stands by.

    Handing a request to another thread and back costs thread switches and wake-ups, often
    more than a small app itself. So the loop thread runs an app itself whenever a pool
    thread is free (`lend_loop`); a watchdog looks every TAKEOVER seconds, and an app that
    is still running after a whole period gets the loop taken from it: a free thread gets a
    LEAD job and runs the loop from then on, and the thread in the app, once it returns, is
    a pool thread like the others (`reclaim_loop` says so; connection.py unwinds it with
    `LoopMoved`). A slow app thus holds the other clients up for one to two periods, and a
    quick one costs no hand-off at all. With every thread busy the request is queued, as
    it always was: at most N apps run at once.

    Leaner than a ThreadPoolExecutor, whose Future, work item and idle-thread semaphore
    cost more per request than the hand-off itself: a job here is a plain tuple, and its
    result goes back to the loop by `EventLoop.call_soon_threadsafe`, not by a Future.

    Each thread notes when its current request began (a dict store and delete, far cheaper
    than the hand-off); that tells the heartbeat about stuck threads without mistaking
    requests merely waiting in the queue for stuck ones. A lent app is noted when it is
    taken over.
    """

    def __init__(self, size: int, lead: Callable[[], object] | None = None) -> None:
        self.size = size
        self.running: dict[int, float] = {}  # thread ident -> when its request began
        # Jobs taken and jobs ended. Only the loop thread counts `submitted`, and only the
        # watchdog `taken` (lent apps taken over); `finished` is counted under a lock,
        # since several threads end jobs.
        self.submitted = 0
        self.taken = 0
        self.finished = 0
        self._finished_lock = threading.Lock()
        self._jobs: SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]] | None]
        self._jobs = SimpleQueue()
        # `lead` runs the loop in the calling thread until it is taken from it (None: the
        # loop is never lent, every app runs in a pool thread).
        self._lead = lead
        self.leader = threading.get_ident()  # the thread running the loop
        self._lent: Lend = []  # the latest lend (see lend_loop)
        self._lend_lock = threading.Lock()  # held by the watchdog over a takeover
        self._parked = False  # the watchdog sleeps until the next lend
        self._unpark = threading.Event()
        self._closed = False
        self._threads = [
            threading.Thread(target=self.follow, name=f"brick-app_{n}", daemon=True)
            for n in range(size)
        ]
        if lead is not None:
            self._threads.append(
                threading.Thread(target=self._watch, name="brick-watch", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Queue `fn(*args)` for the next free thread. Called from the loop thread only."""
        self.submitted += 1
        self._jobs.put((fn, args))

    def full(self) -> bool:
        """Whether every thread has a job already (running, or waiting in the queue)."""
        return self.submitted + self.taken - self.finished >= self.size

    # -- lending the loop --------------------------------------------------------------

    def lend_loop(self) -> Lend | None:
        """The loop thread asks to run an app itself: the lend when a thread is free to
        take the loop over, else None. Called from the loop thread only.

        A lend is a list of one item, a claim on the loop: whoever pops it first has the
        loop, the app's thread coming back (`reclaim_loop`) or the watchdog taking over.
        list.pop is atomic, so a lend costs no lock; each lend is a new list, so a thread
        that lost the loop cannot claim a later lend made by the loop's new thread.
        """
        if self._lead is None or self.submitted + self.taken - self.finished >= self.size:
            return None
        self._lent = lend = [True]
        if self._parked:
            self._parked = False
            self._unpark.set()
        return lend

    def reclaim_loop(self, lend: Lend) -> bool:
        """The app of `lend` returned: whether its thread still runs the loop."""
        try:
            lend.pop()
        except IndexError:
            with self._lend_lock:  # taken over: wait until the watchdog has noted it
                return False
        return True

    def _watch(self) -> None:
        """Every TAKEOVER seconds: take the loop from an app lent it a whole period ago."""
        seen = self._lent
        quiet = 0
        while not self._closed:
            time.sleep(TAKEOVER)
            lend = self._lent
            if lend is not seen:
                seen, quiet = lend, 0  # lent since the last look: it gets a whole period
                continue
            if lend:  # still out, a whole period later
                self._take_over(lend)
                continue
            quiet += 1
            if quiet >= PARK_AFTER:
                # Nothing lent for a while: sleep until the next lend, and wake no more.
                self._unpark.clear()
                self._parked = True
                if self._lent is seen:  # (a lend that missed the flag wakes nobody)
                    self._unpark.wait()
                self._parked = False
                quiet = 0

    def _take_over(self, lend: Lend) -> None:
        with self._lend_lock:
            try:
                lend.pop()
            except IndexError:
                return  # it came back just now
            # The app goes on as a job of the pool's, started about a period ago.
            self.running[self.leader] = time.monotonic() - TAKEOVER
            self.taken += 1
        self._jobs.put(LEAD)

    # -- the threads -------------------------------------------------------------------

    def follow(self) -> None:
        """Take jobs until the pool shuts down: app jobs, and LEAD (run the loop here until
        it is taken from this thread in turn). The thread that ran the loop first follows
        too once the loop is taken from it."""
        jobs = self._jobs
        running = self.running
        ident = threading.get_ident()
        while True:
            job = jobs.get()
            if job is None:
                return
            if job is LEAD:
                assert self._lead is not None
                self.leader = ident
                self._lead()
                continue
            fn, args = job
            running[ident] = time.monotonic()
            try:
                fn(*args)
            except BaseException:  # the job's own errors are its business; the thread goes on
                log.exception("unexpected error in an app thread")
            finally:
                self.job_done(ident)

    def job_done(self, ident: int) -> None:
        del self.running[ident]
        with self._finished_lock:
            self.finished += 1

    def drop_queued(self) -> None:
        """Drop the jobs still queued: no app starts from now on."""
        self._closed = True
        self._unpark.set()
        try:
            while True:
                self._jobs.get_nowait()
        except Empty:
            pass

    def shutdown(self) -> None:
        """Drop the jobs still queued and let every thread end after its current one.

        Never waits: after a graceful timeout a thread may still be stuck in the app.
        """
        self.drop_queued()
        for _ in range(len(self._threads) + 1):  # and one for the first loop thread
            self._jobs.put(None)

    def oldest_start(self, now: float) -> float:
        """When the longest-running request began, or `now` when no thread is busy."""
        return min([now, *list(self.running.values())])


def _accept_queue_info(sock: socket.socket) -> Callable[[], bytes] | None:
    """A call giving the listening TCP socket's info up to its accept queue's length, or
    None where the kernel does not tell (not Linux, or not a listener)."""
    if _TCP_INFO is None:
        return None
    size = _QUEUED_AT + 4
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, size)
    except OSError:
        return None
    if len(info) < size or info[0] != _TCP_LISTEN:
        return None
    # A partial runs no Python frame of its own (getsockopt's overloads defeat its type).
    return cast(
        "Callable[[], bytes]", partial(sock.getsockopt, socket.IPPROTO_TCP, _TCP_INFO, size)
    )


class Listener:
    """Accepts connections on one listening socket and hands them to `Connection`."""

    def __init__(
        self,
        sock: socket.socket,
        service: Service,
        builder: EnvironBuilder,
        limit: int,
        *,
        pool: AppPool | None = None,
        owned: bool = False,
        shared: bool = False,
        held: list[Listener] | None = None,
        defer_accept: int = 0,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.service = service
        self.builder = builder
        self.limit = limit
        self.owned = owned  # our position's SO_REUSEPORT socket: our copy closes at our stop
        # `shared`: other workers accept from this socket too. Then one connection per loop
        # turn, so that between two accepts the others get their chance, and none while
        # every app thread is busy (see the module's docstring).
        self._pool = pool
        self.batch = 1
        self.pool: AppPool | None = None
        self.set_shared(shared)
        self.held = held if held is not None else []  # where we wait for a free thread
        self.tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        # socket.accept() converts the listener's family and type to enums on every call
        # to build the new socket object; we build it from these plain ints instead, as the
        # C-level _socket.socket: a connection needs none of the Python layer's extras
        # (makefile, io refs), and skipping it spares two Python frames per connection.
        self._accept = sock._accept  # type: ignore[attr-defined]  # (fd, address)
        # NONBLOCK_TYPE: Python takes each new socket as non-blocking with no system call
        # (the ioctl of a setblocking(False) per connection); connection.py never waits on
        # it, since every recv and send says MSG_DONTWAIT.
        self._kind = (int(sock.family), int(sock.type) | NONBLOCK_TYPE, sock.proto)
        # Linux copies TCP_NODELAY from the listening socket to each accepted one: set it
        # here once; the first accepted socket shows whether the kernel copies it, and only
        # where it does not is it set per connection.
        self.nodelay_inherited: bool | None = None
        self._queue_info: Callable[[], bytes] | None = None
        if self.tcp:
            self._queue_info = _accept_queue_info(sock)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            # TCP_DEFER_ACCEPT (nginx's `listen ... deferred`, Apache's default on Linux):
            # the kernel completes the handshake but queues the connection for accept only
            # when its first bytes arrive (or the seconds run out). The new Connection's
            # first recv then finds the request, instead of an empty socket that must be
            # watched: two epoll calls and a wasted recv saved per connection. A client that
            # connects and says nothing holds no connection slot meanwhile.
            defer = getattr(socket, "TCP_DEFER_ACCEPT", None)
            if defer is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, defer, defer_accept)
                except OSError:
                    pass
        self.paused_until = 0.0
        self.active = False
        self.closed = False

    def set_shared(self, shared: bool) -> None:
        self.batch = 1 if shared else 64
        self.pool = self._pool if shared else None

    def start(self) -> None:
        if not self.active and not self.closed:
            self.service.loop.register(self.fd, EVENT_READ, self)
            self.active = True

    def pause(self, seconds: float = 0.0) -> None:
        if self.active:
            self.service.loop.unregister(self.fd)
            self.active = False
        self.paused_until = time.monotonic() + seconds

    def handle_event(self, mask: int) -> None:
        self.accept(self.batch)

    def accept(self, batch: int) -> None:
        service = self.service
        connections = service.connections
        # Take what waits, and stop when none does: an accept that finds the queue empty
        # is dear on Linux (a socket and a file are made for it, then thrown away: about
        # 4.5 µs here, three times a recv that finds nothing), and asking how many wait
        # costs a sixth of that. Where the kernel does not tell, the accept that finds
        # nothing ends the batch.
        queue_info = self._queue_info if batch > 1 else None
        waiting = 0
        for taken in range(batch):  # bounded, so one busy listener cannot starve the loop
            if queue_info is not None and not waiting:
                try:
                    waiting = int.from_bytes(queue_info()[_QUEUED_AT:], sys.byteorder)
                except OSError:
                    queue_info = None
                if not waiting:
                    if taken:
                        return
                    waiting = 1  # the loop was woken for one: the count lags, try it
            waiting -= 1
            if len(connections) >= self.limit:
                self.pause()  # backpressure: new clients wait in the kernel backlog
                return
            if self.pool is not None and self.pool.full():
                # Leave this client to a worker with a free thread; the worker starts us
                # again once one of ours is free.
                self.pause(float("inf"))
                self.held.append(self)
                return
            try:
                fd, addr = self._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_ERRORS:
                    log.error("cannot accept a connection: %s; pausing accepts", exc.strerror)
                    self.pause(0.5)
                    return
                continue  # ECONNABORTED and friends: that client is already gone
            sock = _socket.socket(*self._kind, fd)
            if not NONBLOCK_TYPE:
                sock.setblocking(False)
            if self.tcp:
                if self.nodelay_inherited is None:
                    self.nodelay_inherited = bool(
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    )
                if not self.nodelay_inherited:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer = (addr[0], str(addr[1]))  # the host is a str already
            else:
                peer = ("", "")
            Connection(service, sock, peer, self.builder)

    def close(self) -> None:
        """Stop for good. Our own (--reuse-port) socket: take what waits in its queue, then
        close our copy. The master keeps the socket for our successor; after TTOU or at
        the final stop ours was the last copy, and the kernel sends new clients to the
        other positions' sockets."""
        self.pause(float("inf"))
        if self.owned and not self.closed:
            self.closed = True
            self.accept(1024)
            self.sock.close()


class Worker:
    def __init__(
        self,
        app: WSGIApp,
        config: Config,
        sockets: list[socket.socket],
        *,
        heartbeat: Callable[[], None] | None = None,
        errors: LogFile | None = None,
        parent_pid: int | None = None,
        owned_sockets: list[socket.socket] | None = None,
        recycle: Callable[[], None] | None = None,
        peers: Callable[[], int] | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.sockets = sockets
        self.owned_sockets = owned_sockets or []
        self.heartbeat = heartbeat
        self.recycle = recycle  # asks the master for a replacement; None: just stop
        self.peers = peers  # the master's current worker count (TTIN, TTOU change it)
        self._peers_seen = config.workers
        self.errors = errors
        self.parent_pid = parent_pid
        self.stopping = False
        self.quick = False
        self.recycling = False
        self.exit_code = 0
        self.deadline = 0.0
        self._signals: list[int] = []
        self._next_sweep = 0.0
        self.held: list[Listener] = []  # listeners waiting for a free app thread
        self.requests = 0
        max_requests = config.max_requests
        if max_requests and config.max_requests_jitter:
            max_requests += random.randint(0, config.max_requests_jitter)
        self.max_requests = max_requests
        # The loop must wake often enough for the heartbeat to beat well within the timeout.
        self.max_wait = min(0.5, config.timeout / 4) if config.timeout else 0.5

    # -- setup -------------------------------------------------------------------------

    def _build(self) -> tuple[EventLoop, Service, list[Listener]]:
        config = self.config
        loop = EventLoop()
        pool = AppPool(config.threads, lead=self._lead) if config.threads > 1 else None
        self.pool = pool
        access_log = (
            AccessLog(config.accesslog, config.access_log_format) if config.accesslog else None
        )
        self.access_log = access_log
        errors_stream = cast(IO[str], self.errors) if self.errors is not None else None
        service = Service(
            app=self.app,
            loop=loop,
            limits=Limits(
                max_request_line=config.limit_request_line,
                max_header_count=config.limit_request_fields,
                max_field_size=config.limit_request_field_size,
                max_body=config.limit_request_body,
            ),
            keepalive_timeout=config.keepalive,
            header_timeout=config.header_timeout,
            head_budget=config.limit_pending_heads,
            body_timeout=config.body_timeout,
            send_timeout=config.send_timeout,
            spool_threshold=config.body_spool_threshold,
            spool_dir=config.tmp_upload_dir,
            executor=pool,
            access_log=access_log,
            debug_http=(
                debug_http_printer(errors_stream or sys.stderr) if config.debug_http else None
            ),
            on_request_done=self._request_done if self.max_requests else None,
            # With app threads a response is written from any thread: none is held.
            held=[] if pool is None else None,
        )
        trust_all = "*" in config.forwarded_allow_ips
        listeners = []
        for sock in self.sockets:
            name, port = server_name_port(sock)
            builder = EnvironBuilder(
                server_name=name,
                server_port=port,
                root_path=config.root_path,
                multithread=config.threads > 1,
                multiprocess=config.workers > 1,
                errors=errors_stream,
                forwarded_trusted_ips=frozenset(config.forwarded_allow_ips),
                forwarded_trust_all=trust_all,
            )
            owned = any(sock is own for own in self.owned_sockets)
            shared = config.workers > 1 and not owned
            listeners.append(
                Listener(
                    sock,
                    service,
                    builder,
                    config.worker_connections,
                    pool=pool,
                    owned=owned,
                    shared=shared,
                    held=self.held,
                    defer_accept=config.defer_accept,
                )
            )
        return loop, service, listeners

    def _peers_changed(self, count: int) -> None:
        """TTIN or TTOU changed the worker count: share the sockets (or stop sharing) and
        say wsgi.multiprocess accordingly, as a worker started now would."""
        self._peers_seen = count
        for listener in self.listeners:
            listener.builder.set_multiprocess(count > 1)
            if not listener.owned:
                listener.set_shared(count > 1)

    def _install_signals(self, loop: EventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(sig, self._record_signal)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(loop._wake_w, warn_on_full_buffer=False)

    def _record_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGINT, signal.SIGQUIT):
            # Quick stop means now, even when the loop thread is inside the app and would
            # only see a recorded signal after the request (gunicorn's workers do the same).
            flush_logs()
            os._exit(0)
        if len(self._signals) < 16:
            self._signals.append(signum)

    # -- running -----------------------------------------------------------------------

    def run(self) -> int:
        loop, service, listeners = self._build()
        self.loop, self.service, self.listeners = loop, service, listeners
        self._install_signals(loop)
        for listener in listeners:
            listener.start()
        loop.on_tick = self._tick
        if self.heartbeat is not None:
            self.heartbeat()  # the first beat also tells the master we are accepting
        if self.pool is not None:
            if not self._lead():
                self.pool.follow()  # the loop was taken over: serve as an app thread
            return self.exit_code
        try:
            loop.run(until=self._done, max_wait=self.max_wait)
        finally:
            self._close_down()
        return self.exit_code

    def _lead(self) -> bool:
        """--threads: run the loop in this thread until the worker is done (True), or until
        the loop is taken from this thread while it runs an app (False; see AppPool).

        The worker ends in the thread running the loop then. In an app thread that means
        the process ends here: the main thread may be stuck in an app.
        """
        assert self.pool is not None
        try:
            self.loop.run(until=self._done, max_wait=self.max_wait)
        except LoopMoved as moved:
            self.loop.call_soon_threadsafe(moved.hand_back)
            self.pool.job_done(threading.get_ident())
            return False
        except BaseException:
            self._close_down()
            if threading.current_thread() is threading.main_thread():
                raise
            log.exception("unexpected error in the event loop")
            flush_logs()
            os._exit(1)
        self._close_down()
        if threading.current_thread() is not threading.main_thread():
            flush_logs()
            os._exit(self.exit_code)
        return True

    def _close_down(self) -> None:
        pool = self.pool
        if pool is not None:
            pool.drop_queued()
        for conn in list(self.service.connections.values()):
            conn.close()
        self.loop.close()
        if pool is not None:
            # Last: the main thread, when it follows, ends the process as soon as it is
            # let go, so everything must be closed by then.
            pool.shutdown()

    def _done(self) -> bool:
        if not self.stopping:
            return False
        if self.quick or not self.service.connections:
            return True
        if time.monotonic() >= self.deadline:
            log.warning(
                "graceful timeout: closing %d connection(s) still open",
                len(self.service.connections),
            )
            return True
        return False

    def progress_since(self, now: float) -> float:
        """For the heartbeat: `now`, or when the oldest request still in an app thread began.

        With one thread the loop runs the app itself, so a stuck app stops the heartbeat.
        With a pool the loop keeps running, so a stuck request must hold the clock back.
        """
        if self.pool is None:
            return now
        return self.pool.oldest_start(now)

    def _tick(self) -> None:
        """Supervision, once per loop turn; the real work at most once per SWEEP_INTERVAL.
        First the responses the turn held (connection.py), before anything else waits."""
        if self.service.held:
            self.service.send_held()
        if self._signals:
            self._handle_signals()
        held = self.held
        if held and not self.stopping and self.pool is not None and not self.pool.full():
            for listener in held:
                listener.start()  # a thread is free: take new clients again
            held.clear()
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        if self.heartbeat is not None:
            self.heartbeat()
        if self.peers is not None:
            count = self.peers()
            if count != self._peers_seen:
                self._peers_changed(count)
        self.service.sweep(now)
        if self.stopping:
            self.service.close_idle(now, DRAIN_IDLE)
            return
        for listener in self.listeners:
            if (
                not listener.active
                and now >= listener.paused_until
                and len(self.service.connections) < listener.limit
            ):
                listener.start()
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("the master (pid %d) is gone; stopping", self.parent_pid)
            self.begin_stop(graceful=True)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGTERM:
                self.begin_stop(graceful=True)
            elif signum == signal.SIGUSR1:
                reopen_logs()
                if self.access_log is not None:
                    self.access_log.reopen()

    def _request_done(self) -> None:
        self.requests += 1
        if self.requests >= self.max_requests and not self.recycling:
            log.info("Worker %d served %d requests; recycling", os.getpid(), self.requests)
            self.request_recycle()

    def request_recycle(self) -> None:
        """Ask to be replaced (the master starts the new worker first, then stops us);
        without a master, simply stop gracefully. Safe to call from any thread."""
        if self.recycling or self.stopping:
            return
        self.recycling = True
        if self.recycle is not None:
            self.recycle()
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    def begin_stop(self, graceful: bool) -> None:
        if not graceful:
            self.stopping = self.quick = True
            return
        if self.stopping:
            return
        self.stopping = True
        self.deadline = time.monotonic() + self.config.graceful_timeout
        self.service.draining = True  # responses from now on say Connection: close
        for listener in self.listeners:
            listener.close()
        self.service.close_idle(time.monotonic(), DRAIN_IDLE)


def flush_logs() -> None:
    """Before an immediate exit (os._exit skips it): push out what the logs still hold."""
    for handler in logging.getLogger("brick").handlers:
        try:
            handler.flush()
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
