"""One worker process: the event loop, an optional app thread pool, heartbeat, graceful drain.

The worker does not know how it was started (forked by the arbiter, or run directly): it gets
the app, the listening sockets and a `heartbeat` callable, and runs until told to stop.

Signals (each handler only records the signal; the loop acts on it):
    TERM        graceful: stop accepting, finish in-flight requests (up to graceful_timeout)
    INT, QUIT   quick: exit now
    USR1        reopen log files
"""

from __future__ import annotations

import errno
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import IO, cast

from brick.config import Config
from brick.connection import BUSY, Connection, Service
from brick.listeners import server_name_port
from brick.logs import AccessLog, LogFile, debug_http_printer, reopen_logs
from brick.loop import EVENT_READ, EventLoop
from brick.parser import Limits
from brick.wsgi import EnvironBuilder, WSGIApp

log = logging.getLogger("brick.error")

SWEEP_INTERVAL = 0.1  # how often deadlines are checked; timeouts are accurate to this
_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """Accepts connections on one listening socket and hands them to `Connection`."""

    def __init__(
        self, sock: socket.socket, service: Service, builder: EnvironBuilder, limit: int
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.service = service
        self.builder = builder
        self.limit = limit
        self.tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self.paused_until = 0.0
        self.active = False

    def start(self) -> None:
        if not self.active:
            self.service.loop.register(self.fd, EVENT_READ, self)
            self.active = True

    def pause(self, seconds: float = 0.0) -> None:
        if self.active:
            self.service.loop.unregister(self.fd)
            self.active = False
        self.paused_until = time.monotonic() + seconds

    def handle_event(self, mask: int) -> None:
        service = self.service
        connections = service.connections
        for _ in range(64):  # bounded, so one busy listener cannot starve the loop
            if len(connections) >= self.limit:
                self.pause()  # backpressure: new clients wait in the kernel backlog
                return
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_ERRORS:
                    log.error("cannot accept a connection: %s; pausing accepts", exc.strerror)
                    self.pause(0.5)
                    return
                continue  # ECONNABORTED and friends: that client is already gone
            sock.setblocking(False)
            if self.tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer = (str(addr[0]), str(addr[1]))
            else:
                peer = ("", "")
            Connection(service, sock, peer, self.builder)


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
    ) -> None:
        self.app = app
        self.config = config
        self.sockets = sockets
        self.heartbeat = heartbeat
        self.errors = errors
        self.parent_pid = parent_pid
        self.stopping = False
        self.quick = False
        self.exit_code = 0
        self.deadline = 0.0
        self._signal: int | None = None
        self._next_sweep = 0.0
        self.requests = 0
        max_requests = config.max_requests
        if max_requests and config.max_requests_jitter:
            max_requests += random.randint(0, config.max_requests_jitter)
        self.max_requests = max_requests

    # -- setup -------------------------------------------------------------------------

    def _build(self) -> tuple[EventLoop, Service, list[Listener]]:
        config = self.config
        loop = EventLoop()
        executor = (
            ThreadPoolExecutor(config.threads, thread_name_prefix="brick-app")
            if config.threads > 1
            else None
        )
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
            body_timeout=config.body_timeout,
            send_timeout=config.send_timeout,
            spool_threshold=config.body_spool_threshold,
            spool_dir=config.tmp_upload_dir,
            executor=executor,
            access_log=access_log,
            debug_http=(
                debug_http_printer(errors_stream or sys.stderr) if config.debug_http else None
            ),
            on_request_done=self._request_done,
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
            listeners.append(Listener(sock, service, builder, config.worker_connections))
        return loop, service, listeners

    def _install_signals(self, loop: EventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(sig, self._record_signal)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGCHLD else signal.SIG_IGN)
        signal.set_wakeup_fd(loop._wake_w, warn_on_full_buffer=False)

    def _record_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signum

    # -- running -----------------------------------------------------------------------

    def run(self) -> int:
        loop, service, listeners = self._build()
        self.loop, self.service, self.listeners = loop, service, listeners
        self._install_signals(loop)
        for listener in listeners:
            listener.start()
        loop.on_tick = self._tick
        if self.heartbeat is not None:
            self.heartbeat()
        try:
            loop.run(until=self._done, max_wait=0.5)
        finally:
            if service.executor is not None:
                service.executor.shutdown(wait=not self.quick, cancel_futures=self.quick)
            for conn in list(service.connections.values()):
                conn.close()
            loop.close()
        return self.exit_code

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
        if self.service.executor is None:
            return now
        oldest = now
        for conn in self.service.connections.values():
            if conn.state == BUSY and conn.busy_since < oldest:
                oldest = conn.busy_since
        return oldest

    def _tick(self) -> None:
        if self._signal is not None:
            self._handle_signal(self._signal)
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        if self.heartbeat is not None:
            self.heartbeat()
        self.service.sweep(now)
        if self.stopping:
            self.service.close_idle()
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

    def _handle_signal(self, signum: int) -> None:
        self._signal = None
        if signum == signal.SIGTERM:
            self.begin_stop(graceful=True)
        elif signum in (signal.SIGINT, signal.SIGQUIT):
            self.begin_stop(graceful=False)
        elif signum == signal.SIGUSR1:
            reopen_logs()
            if self.access_log is not None:
                self.access_log.reopen()

    def _request_done(self) -> None:
        self.requests += 1
        if self.max_requests and self.requests >= self.max_requests and not self.stopping:
            log.info("worker %d served %d requests; restarting", os.getpid(), self.requests)
            self.begin_stop(graceful=True)

    def begin_stop(self, graceful: bool) -> None:
        if not graceful:
            self.stopping = self.quick = True
            return
        if self.stopping:
            return
        self.stopping = True
        self.deadline = time.monotonic() + self.config.graceful_timeout
        for listener in self.listeners:
            listener.pause(float("inf"))
        self.service.draining = True
        self.service.close_idle()
