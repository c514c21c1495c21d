"""One client connection: read, parse, dispatch, write; keep-alive, pipelining, timeouts.

Theory of operation
-------------------
A `Connection` lives in one worker's event loop. It is always in one of five states:

    READING   waiting for (more of) a request; a deadline applies:
                idle between requests   -> keep-alive timeout
                part of a head received -> header timeout, counted from its first byte
                inside a body           -> body timeout, counted from the last bytes received
    BUSY      the app is running (in the loop thread, or in a pool thread with --threads > 1);
              never timed out. With a pool, what the client sends meanwhile (its next
              request) is read ahead into the parser, up to READ_AHEAD bytes
    WRITING   the app is done but the client has not taken the whole response yet; the send
              timeout applies, counted from the last bytes the client took
    LINGERING our side is shut (after a refusal, or with unread bytes from the client): what
              the client still sends is read and dropped for a moment, so the kernel does not
              reset the connection and destroy the response before the client has read it
    CLOSED

Bytes go to the sans-I/O parser; body pieces go to a `BodyBuffer`; the app runs only once the
message is complete. Pipelined requests wait in the parser's buffer and are answered in order,
one at a time. Any `HTTPError` from the parser is answered with its status and the connection
closes, so nothing after a refused request is ever parsed.

Writing: the connection is the `Output` of `wsgi.run_app`. It sends at once, never waiting
(MSG_DONTWAIT), and keeps what the kernel did not take (bytes in `outbuf`, a
`wsgi.file_wrapper` file as a duplicated descriptor and a range). When the app is done,
whatever is pending is flushed by the loop, so a slow reader of a response never holds the
loop or an app thread. A streamed body that gets more than `HIGH_WATER` bytes ahead of the
client is paused (`run_app` returns a `Suspended` response) and resumed by the loop below
`LOW_WATER`; only a writer that cannot pause (the write() callable, an app thread) waits for
the client. Memory per connection stays bounded either way.

The last bytes of a response after which the connection closes are sent with MSG_MORE: the
kernel holds them until the close, which sets its FIN on the same segment, so the client is
woken once for the end of the response and of the connection.

A whole keep-alive response the app gave in one piece (a list, or a first piece that is
the whole Content-Length) is held, with --threads 1, until the
loop's turn ends, and the turn's held responses are then sent one after another
(`Service.send_held`). A client asleep waiting for responses is woken by the first and
finds the others there, instead of being woken, and going back to sleep, once for each:
each wake-up costs the sender in the kernel, and a client of many connections (a proxy, a
load generator) is woken far less often. The response waits at most for the other
requests of the same turn, which the loop thread would have run before reading this
client's next request anyway, and no app starts while a response has been held for
HOLD_MAX: a response waits at most that long, and for one app after it. A streamed body
is never held: it goes out as it comes; nor is a generator's, nor what the write()
callable sends (see wsgi._Cycle.streamed).

Deadlines are not timers: each connection keeps one `deadline`, and the worker calls
`Service.sweep` a few times a second. A pool thread hands a finished request back to the loop
thread with `call_soon_threadsafe`; all state changes happen in the loop thread. (With a pool,
which thread that is can change: the loop thread runs a quick app itself, and a slow one has
the loop taken over by a free thread; see worker.AppPool.)
"""

from __future__ import annotations

import _socket
import fcntl
import io
import logging
import os
import select
import socket
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

from brick.body import BodyBuffer
from brick.errors import HTTPError
from brick.loop import EVENT_READ, EVENT_WRITE, EventLoop, LoopMoved
from brick.parser import END, NEED_DATA, IdleParser, Limits, Request, RequestParser
from brick.response import CONTINUE, error_response
from brick.wsgi import (
    ClientDisconnected,
    EnvironBuilder,
    Outcome,
    Suspended,
    WSGIApp,
    run_app,
)

log = logging.getLogger("brick.error")

READING, BUSY, WRITING, LINGERING, CLOSED = range(5)
# Lingering close (cf. nginx lingering_timeout / lingering_time): a client still sending after
# we shut our side gets this much silence, and this much time in all, before we close.
LINGER_IDLE: Final = 2.0
LINGER_MAX: Final = 10.0
# Below glibc's mmap threshold (128 KiB), so the bytes object of each recv comes from the
# heap: at 256 KiB every read cost an mmap, an mremap and a munmap.
RECV_SIZE: Final = 64 * 1024
READ_AHEAD: Final = 64 * 1024  # what we take in while a pool thread runs the app
HIGH_WATER: Final = 1 << 20  # pending bytes beyond which a still-producing app pauses
LOW_WATER: Final = HIGH_WATER // 2  # ... and resumes
HARD_WATER: Final = 4 * HIGH_WATER  # an app that cannot pause (write()) waits beyond this
_MSG_MORE: Final = getattr(socket, "MSG_MORE", 0)  # Linux: hold a partial segment
# Every recv and send says MSG_DONTWAIT, so it never blocks whatever the descriptor's mode:
# the worker then need not make each accepted socket non-blocking (an ioctl per connection,
# see worker.Listener). Only os.sendfile, which takes no flags, needs the descriptor itself
# non-blocking; `sendfile` makes it so.
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_LAST: Final = _MSG_MORE | _DONTWAIT
HOLD_MAX: Final = 0.001  # seconds a whole response may wait for the end of the loop's turn
# What the worker adds to an accepted socket's type so that Python takes it as non-blocking
# without a system call; 0 where the flags are missing (not Linux), and the worker then
# makes the descriptor non-blocking as usual.
NONBLOCK_TYPE: Final = getattr(socket, "SOCK_NONBLOCK", 0) if _DONTWAIT else 0


Lend = list[bool]  # the loop lent to an app: a claim, taken by one thread (worker.AppPool)


class Executor(Protocol):
    """The app threads (worker.AppPool): runs `fn(*args)` in another thread, or lends the
    loop thread to an app while a free thread stands by to take the loop over."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> object: ...

    def lend_loop(self) -> Lend | None:
        """Whether the loop thread may run an app itself now (a thread is free): the lend,
        or None."""
        ...

    def reclaim_loop(self, lend: Lend) -> bool:
        """After such an app: whether this thread still runs the loop (False: taken over)."""
        ...


AccessLog = Callable[[Request, dict[str, Any], Outcome, float], None]
DebugLog = Callable[[str, bytes], None]


@dataclass(eq=False)
class Service:
    """What every connection of a worker shares: the app, limits, timeouts, logs."""

    app: WSGIApp
    loop: EventLoop
    limits: Limits = field(default_factory=Limits)
    keepalive_timeout: float = 5.0
    header_timeout: float = 10.0
    # Bytes of unfinished heads (and unparsed input) all READING connections may hold
    # together; 0 = no limit. One head may reach limit_request_line + limit_request_fields
    # * limit_request_field_size (about 800 kB by default), so 1000 clients each sending an
    # unfinished head could otherwise hold about 800 MB. 64 MiB is about 80 such heads, and
    # far more than thousands of ordinary clients ever hold at once.
    head_budget: int = 64 << 20
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    spool_threshold: int = 1 << 20
    spool_dir: str | None = None
    executor: Executor | None = None  # the app threads (--threads > 1)
    access_log: AccessLog | None = None
    debug_http: DebugLog | None = None
    on_request_done: Callable[[], None] | None = None
    connections: dict[int, Connection] = field(default_factory=dict)
    draining: bool = False
    # The connections whose whole keep-alive response waits for the end of the loop's
    # turn (`send_held`); None: every response is sent at once (app threads, tests).
    held: list[Connection] | None = None
    held_since: float = 0.0  # when the first of them was asked for
    # What each connection's `parser` is until it has bytes to keep (parser.IdleParser).
    idle_parser: RequestParser = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.idle_parser = IdleParser(self.limits)

    def send_held(self) -> None:
        """Send the responses held in this turn of the loop. Called by the worker after
        the turn's events. A response sent may let a pipelined request be answered, and
        its response held in turn: those go too, before the loop waits again."""
        held = self.held
        while held:
            batch = held.copy()
            held.clear()
            for conn in batch:
                conn.send_held()

    def sweep(self, now: float) -> None:
        """Act on connections whose deadline passed. Called periodically by the worker.

        A BUSY connection (its request is in the app) is never timed out here: the worker
        timeout (the heartbeat) is what guards against a stuck app.
        """
        pending = 0
        for conn in list(self.connections.values()):
            if now >= conn.deadline:
                state = conn.state
                if state == READING:
                    conn.timed_out()
                elif state == WRITING:
                    conn.send_timed_out()
                elif state == LINGERING:
                    conn.close()
            if conn.state == READING:
                pending += conn.parser.buffered
        if self.head_budget and pending > self.head_budget:
            self.shed_heads(pending)

    def shed_heads(self, pending: int) -> None:
        """Over the head budget: refuse the clients holding the most unfinished input (503,
        then close) until the rest fit. Checked at each sweep, so between two sweeps the
        total can pass the budget by what the clients manage to send meanwhile."""
        holders = sorted(
            (c for c in self.connections.values() if c.state == READING and c.parser.buffered),
            key=lambda c: c.parser.buffered,
            reverse=True,
        )
        refused = 0
        for conn in holders:
            if pending <= self.head_budget:
                break
            pending -= conn.parser.buffered
            refused += 1
            conn.refuse(503, "server busy")
        log.warning(
            "unfinished request heads held more than --limit-pending-heads (%d bytes);"
            " refused the %d client(s) holding the most with 503",
            self.head_budget,
            refused,
        )

    def close_idle(self, now: float, grace: float) -> None:
        """While draining: close connections idle for `grace` seconds. A client that has
        just connected, or just got a response, has that long to send one more request,
        which is answered (with Connection: close) rather than cut off."""
        for conn in list(self.connections.values()):
            if (
                conn.state == READING
                and conn.request is None
                and not conn.parser.buffered
                and now - conn.started >= grace
            ):
                conn.close()


class Connection:
    __slots__ = (
        "_head_logged",
        "_held",
        "_in_process",
        "_lingering",
        "_registered",
        "_said_last",
        "body",
        "builder",
        "deadline",
        "fd",
        "file_fd",
        "file_left",
        "file_offset",
        "keep_alive",
        "linger_until",
        "outbuf",
        "parser",
        "paused",
        "peer",
        "request",
        "service",
        "sock",
        "started",
        "state",
        "suspended",
        "trusted",
    )

    def __init__(
        self,
        service: Service,
        sock: _socket.socket,
        peer: tuple[str, str],
        builder: EnvironBuilder,
    ) -> None:
        self.service = service
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.builder = builder
        trusted = builder.peer_trust.get(peer[0])
        self.trusted = builder.is_trusted(peer[0]) if trusted is None else trusted
        self.parser = service.idle_parser  # its own parser is made when it has bytes to keep
        self.request: Request | None = None
        self.body: BodyBuffer | None = None
        self.outbuf = bytearray()
        self.paused = False  # the client is behind: run_app stops iterating (loop thread)
        # A response whose iteration is paused, with the environ and request it answers.
        self.suspended: tuple[Suspended, dict[str, Any], Request] | None = None
        # A file still to send (a dup of the app's), file_left bytes from file_offset on;
        # those two are set with it.
        self.file_fd = -1
        self.state = READING
        self.keep_alive = True
        # When the request began, and the state's deadline: set by the first read, or
        # below when it found no request.
        self.started = self.deadline = 0.0
        # linger_until: set when LINGERING begins, read only then.
        self._in_process = False
        self._lingering = False
        self._head_logged = False
        self._said_last = False
        self._held = False  # a whole response waits in outbuf for the turn's end
        service.connections[self.fd] = self
        self._registered = 0
        # The request often arrives with the connection: serve it before asking the loop to
        # watch the socket (a Connection: close client then never costs an epoll call).
        self._on_readable()
        if self._registered:
            return
        state = self.state
        if state == READING and not self.deadline:
            # Nothing yet (or only the empty lines a request may follow): the keep-alive
            # deadline applies, counted from now.
            self.started = time.monotonic()
            self.deadline = self.started + service.keepalive_timeout
        if state == READING or (state == BUSY and self.keep_alive):
            # A pool thread has a Connection: close request: there is no next request to
            # read ahead, so the socket is left alone until the loop closes it.
            self._register(EVENT_READ)

    # -- events from the loop ----------------------------------------------------------

    def handle_event(self, mask: int) -> None:
        state = self.state
        if state == READING:
            self._on_readable()
        elif state == WRITING:
            self._flush_ready()
        elif state == LINGERING:
            self._discard()
        elif state == BUSY:
            self._read_ahead()

    def handle_error(self, exc: BaseException) -> None:
        """The loop caught an unexpected error from `handle_event`: drop this client only."""
        log.error("unexpected error on the connection from %s", self.peer[0], exc_info=exc)
        self.close()

    def _read_ahead(self) -> None:
        """A pool thread runs the app and the client sends more: its next request, or its
        close. Take up to READ_AHEAD bytes into the parser, to be parsed once the response
        is out; then, or on EOF, stop watching until then, or level-triggered readiness
        would spin the loop. (A keep-alive client sends its next request as soon as it has
        the response, often before the loop hears the app is done: reading it here instead
        of unregistering saves two epoll_ctl calls per request.)
        """
        if self.parser.buffered < READ_AHEAD:
            try:
                data = self.sock.recv(RECV_SIZE, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                self._own_parser().feed(data)
                return
        self._unregister()

    def _discard(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.deadline = min(time.monotonic() + LINGER_IDLE, self.linger_until)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()  # the client is gone; nothing complete is left to answer
            return
        parser = self.parser
        if self.request is None:
            # The usual keep-alive request: one whole head, seen before, with no body.
            request = parser.cached_head(data)  # (only ever found with nothing buffered)
            if request is not None and self.service.debug_http is None:
                self.started = time.monotonic()
                self.request = request
                if request.keep_alive:
                    self._dispatch()
                    return
                # The client's last request (RFC 9112 §9.6: it sends no more after it),
                # and all it sent so far: if the response goes out now, nothing is left
                # unread (see `_shutdown_and_close`).
                self._said_last = True
                try:
                    self._dispatch()
                finally:
                    self._said_last = False
                return
            if not parser.buf:
                self.started = time.monotonic()  # the first byte of a new request head
        self._own_parser().feed(data)
        self.process()

    def _own_parser(self) -> RequestParser:
        """This connection's parser, made when it first has bytes to keep."""
        parser = self.parser
        if parser is self.service.idle_parser:
            parser = self.parser = RequestParser(self.service.limits)
        return parser

    # -- parsing -----------------------------------------------------------------------

    def process(self) -> None:
        """Pull events from the parser until it needs data or the connection is busy."""
        if self._in_process:
            return
        self._in_process = True
        parser = self.parser
        try:
            while self.state == READING:
                event = parser.next_event()
                if event is NEED_DATA:
                    self._set_deadline()
                    return
                if type(event) is bytes:
                    assert self.body is not None
                    self.body.write(event)
                elif type(event) is Request:
                    self._start_request(event)
                elif event is END:
                    self._dispatch()
        except HTTPError as exc:
            self.refuse(exc.status, exc.detail, exc.method)
        finally:
            self._in_process = False

    def _start_request(self, request: Request) -> None:
        self.request = request
        service = self.service
        if service.debug_http is not None:
            self._head_logged = False
            service.debug_http(
                "<",
                f"{request.method} {request.target} {request.version}\r\n".encode("latin-1")
                + b"".join(n + b": " + v + b"\r\n" for n, v in request.headers),
            )
        if request.has_body:
            self.body = BodyBuffer(service.spool_threshold, service.spool_dir)
            # RFC 9110 §10.1.1: say 100 Continue before reading, unless the body is
            # already arriving (then the client did not wait for us).
            if request.expect_continue and not self.parser.buffered:
                self._send_now(CONTINUE)

    def _set_deadline(self) -> None:
        service = self.service
        if self.request is not None:
            self.deadline = time.monotonic() + service.body_timeout
        elif self.parser.buffered:
            self.deadline = self.started + service.header_timeout
        # else idle: the keep-alive deadline set when the connection opened or the last
        # response went out stands. Bytes the parser drops (empty lines before a request
        # line, RFC 9112 §2.2) must not push it back, or a trickle of CRLFs keeps a
        # connection open for ever.

    def timed_out(self) -> None:
        if self.request is not None or self.parser.buffered:
            log.debug("request timeout from %s", self.peer[0])
            self.refuse(408, "request timeout")
        else:
            self.close()  # an idle keep-alive connection: close silently

    def refuse(self, status: int, detail: str, method: str | None = None) -> None:
        """Answer a refused request with its status, then close (RFC 9112 §9.6)."""
        log.debug("refused request from %s: %d %s", self.peer[0], status, detail)
        request = self.request
        if self.service.access_log is not None and request is not None:
            outcome = Outcome(f"{status} {detail}", [], 0, False)
            environ = {"REMOTE_ADDR": self.peer[0], "REMOTE_PORT": self.peer[1]}
            self.service.access_log(request, environ, outcome, time.monotonic() - self.started)
        head_only = (request.method if request is not None else method) == "HEAD"
        self._release_body()
        self.request = None
        self.keep_alive = False
        # Drop whatever was buffered: nothing after a refused request is ever parsed.
        self.parser = self.service.idle_parser
        self._lingering = True
        try:
            self.write(error_response(status, head_only=head_only), last=True)
        except ClientDisconnected:
            self.close()
            return
        self._finish_response()

    # -- running the app ---------------------------------------------------------------

    def _dispatch(self) -> None:
        request = self.request
        assert request is not None
        service = self.service
        body = self.body
        if body is not None:
            wsgi_input = body.open()
            length = body.length
        else:
            wsgi_input = io.BytesIO()
            length = 0
        environ = self.builder.build(request, wsgi_input, length, self.peer, self.trusted)
        keep_alive = request.keep_alive and not service.draining
        self.keep_alive = keep_alive
        self.state = BUSY
        executor = service.executor
        if executor is not None:
            lend = executor.lend_loop()
            if lend is None:
                executor.submit(self._run_in_thread, environ, request, keep_alive)
                return
            # A thread is free, and stands by: the app runs here, in the loop thread, with
            # no hand-off; should it take long, that thread takes the loop over.
            result = self._run_guarded(environ, request, keep_alive)
            if not executor.reclaim_loop(lend):
                # Taken over: from here on this thread is an app thread like the others.
                raise LoopMoved(partial(self._thread_done, environ, request, result))
            self._thread_done(environ, request, result)
            return
        # --threads 1: the app runs here, in the loop thread.
        held = service.held
        if held and self.started - service.held_since >= HOLD_MAX:
            service.send_held()  # held long enough: they go before another app runs
        try:
            outcome = run_app(service.app, environ, request, self, keep_alive, suspendable=True)
        except ClientDisconnected:
            self._client_gone()
            return
        except SystemExit:
            # sys.exit() in the app must not end the worker and its other clients (an app
            # thread survives it too); run_app has closed the app's iterable already.
            log.error("the app called sys.exit() in %s %s", request.method, request.target)
            self._client_gone()
            return
        if isinstance(outcome, Suspended):
            # The client is far behind a streamed body: the loop flushes, then resumes.
            self.suspended = (outcome, environ, request)
            self._finish_response()
            return
        self._app_done(environ, request, outcome)

    def _resume(self) -> None:
        assert self.suspended is not None
        suspended, environ, request = self.suspended
        self.paused = False
        self.state = BUSY
        try:
            outcome = suspended.resume()
        except (ClientDisconnected, SystemExit):
            self.suspended = None  # resume() closed the iterable
            self._client_gone()
            return
        if outcome is None:
            self._finish_response()  # paused again
            return
        self.suspended = None
        self._app_done(environ, request, outcome)

    def _run_guarded(
        self, environ: dict[str, Any], request: Request, keep_alive: bool
    ) -> Outcome | None:
        """run_app as an app thread runs it: None when the client is gone, or after an
        error run_app could not answer (logged), so the hand-back is never lost."""
        try:
            return run_app(self.service.app, environ, request, self, keep_alive)
        except ClientDisconnected:
            return None
        except BaseException:
            log.exception("unexpected error in an app thread")
            return None

    def _run_in_thread(self, environ: dict[str, Any], request: Request, keep_alive: bool) -> None:
        outcome = self._run_guarded(environ, request, keep_alive)
        # A partial, not a lambda: calling it runs no Python frame of its own.
        self.service.loop.call_soon_threadsafe(
            partial(self._thread_done, environ, request, outcome)
        )

    def _thread_done(
        self, environ: dict[str, Any], request: Request, outcome: Outcome | None
    ) -> None:
        """Back in the loop thread after an app thread ran the app (or lent, not taken)."""
        if self.state != BUSY:
            return  # closed meanwhile (the worker is stopping)
        if outcome is None:
            self._client_gone()
            return
        try:
            self._app_done(environ, request, outcome)
        except Exception as exc:
            self.handle_error(exc)

    def _client_gone(self) -> None:
        log.debug("client %s went away during the response", self.peer[0])
        self.close()
        if self.service.on_request_done is not None:
            self.service.on_request_done()

    def _app_done(self, environ: dict[str, Any], request: Request, outcome: Outcome) -> None:
        service = self.service
        if service.access_log is not None:
            service.access_log(request, environ, outcome, time.monotonic() - self.started)
        if self.body is not None:
            self._release_body()
        self.request = None
        self.keep_alive = outcome.keep_alive
        if service.on_request_done is not None:
            service.on_request_done()
        self._finish_response()

    def _finish_response(self) -> None:
        """The app is done, or paused: once the client has the whole response, close, or
        wait for the next request (or take the one read ahead)."""
        if self.state == CLOSED:
            return
        if self.outbuf or self.file_fd >= 0 or self.suspended is not None:
            # The client has not taken it all yet: the loop sends the rest, then comes back
            # (a held response: at the turn's end, `send_held`).
            self.state = WRITING
            if not self._held:
                self.deadline = time.monotonic() + self.service.send_timeout
                self._register(EVENT_WRITE)
            return
        service = self.service
        if not self.keep_alive or (service.draining and not self.parser.buf):
            self._shutdown_and_close()
            return
        self.state = READING
        self._register(EVENT_READ)
        self.started = now = time.monotonic()
        self.deadline = now + service.keepalive_timeout
        if self.parser.buf:
            if not self._in_process and service.debug_http is None:
                # The next request, read ahead while an app thread ran, is one head seen
                # before: dispatch it as `_on_readable` does. Only a buffer holding exactly
                # one head is taken. With --threads 1 nothing is read while the app runs,
                # so the response to it finds the buffer empty and this never recurses;
                # with a pool, the dispatch only queues the job. Pipelined requests go
                # through `process`.
                request = self.parser.take_cached_head()
                if request is not None:
                    self.request = request
                    self._dispatch()
                    return
            self.process()  # a pipelined request (a no-op when already inside process)

    def _release_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    # -- the Output interface used by wsgi.run_app ---------------------------------------

    def write(self, data: bytes, last: bool = False, whole: bool = False) -> None:
        """Send what the kernel takes now; what it does not, the loop sends later.

        `last`: only our FIN follows these bytes. MSG_MORE has the kernel hold the final
        partial segment, and the close that comes next sets the FIN on it, so the client
        gets the end of the response and the end of the connection in one packet: one
        packet fewer to send and to receive, and one wake-up of the client fewer.
        """
        if self.service.debug_http is not None:
            self._debug_response(data)
        if self.outbuf or self.file_fd >= 0:
            self._queue(data)
            return
        held = self.service.held
        # Held only when the turn has more to do: the turn's last response, and one alone,
        # gain nothing by waiting (and those held before it follow it at once).
        if whole and held is not None and (held or self.service.loop.events_left):
            if not held:
                self.service.held_since = self.started
            self.outbuf += data  # sent at the end of the loop's turn (see the module's doc)
            self._held = True
            held.append(self)
            return
        try:
            sent = self.sock.send(data, _LAST if last else _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        if sent < len(data):
            self.outbuf += memoryview(data)[sent:]
            if len(self.outbuf) > HIGH_WATER:
                self.paused = True

    def writev(self, parts: list[bytes]) -> None:
        if self.outbuf or self.file_fd >= 0 or self.service.debug_http is not None:
            for part in parts:
                self.write(part)
            return
        try:
            sent = self.sock.sendmsg(parts, (), _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            self.outbuf += memoryview(part)[sent:]
            sent = 0
        if len(self.outbuf) > HIGH_WATER:
            self.paused = True

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send `count` bytes of the file `fd` from `offset` with os.sendfile.

        What the client does not take at once is left to the loop (the descriptor is
        duplicated: the app's file is closed when `run_app` returns), so the number
        returned is `count` unless the file turned out shorter right away.
        """
        total = 0
        # os.sendfile takes no MSG_DONTWAIT: the descriptor itself must not block (this
        # file, and what `_send_some` sends of it later).
        self.sock.setblocking(False)
        if self.file_fd >= 0:
            self._drain(0)  # a second file in one response: send the first one whole
        if not self.outbuf:
            while total < count:
                try:
                    sent = os.sendfile(self.fd, fd, offset + total, count - total)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    raise ClientDisconnected(str(exc)) from exc
                if not sent:
                    return total  # the file ended early
                total += sent
            if total == count:
                return total
        self.file_fd = os.dup(fd)
        self.file_offset = offset + total
        self.file_left = count - total
        return count

    def _send_now(self, data: bytes) -> None:
        try:
            self.write(data)
        except ClientDisconnected:
            self.close()

    def _queue(self, data: bytes) -> None:
        """More output while some is still pending: the app is ahead of the client.

        Past HIGH_WATER pending bytes the app is paused: in the loop thread, `run_app`
        stops iterating and the loop resumes it once the client has caught up. A writer
        that cannot pause (the write() callable, an app thread) waits for the client
        instead, past HARD_WATER in the loop thread and past HIGH_WATER in an app thread.
        Either way the memory one connection holds is bounded.
        """
        if self.file_fd >= 0:
            self._drain(0)
        elif len(self.outbuf) > HIGH_WATER and (
            self.service.executor is not None or len(self.outbuf) > HARD_WATER
        ):
            self._drain(HIGH_WATER)
        self.outbuf += data
        if len(self.outbuf) > HIGH_WATER:
            self.paused = True

    def _send_some(self) -> int:
        """Send what the kernel takes now, pending bytes before the pending file."""
        if self.outbuf:
            try:
                sent = self.sock.send(self.outbuf, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            del self.outbuf[:sent]
            return sent
        if self.file_fd < 0:
            return 0
        try:
            sent = os.sendfile(self.fd, self.file_fd, self.file_offset, self.file_left)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        if not sent:
            # The file shrank after its length was announced: only a close can tell.
            log.error("file shorter than announced while sent to %s; closing", self.peer[0])
            self._end_file()
            raise ClientDisconnected("file shrank")
        self.file_offset += sent
        self.file_left -= sent
        if not self.file_left:
            self._end_file()
        return sent

    def _drain(self, limit: int) -> None:
        """Wait until at most `limit` bytes (and no file) are pending.

        The wait is bounded by the send timeout, counted from the last progress. Readiness
        (POLLOUT) only comes once a good part of the kernel's send buffer is free, which a
        slow but steady reader may not reach in time; one more try before giving up tells
        such a reader from one that stopped.
        """
        stalled = False
        while len(self.outbuf) > limit or self.file_fd >= 0:
            if self._send_some():
                stalled = False
            elif stalled:
                raise ClientDisconnected("send timeout")
            else:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
                stalled = not poller.poll(self.service.send_timeout * 1000)

    def send_held(self) -> None:
        """The loop's turn is over: send the response held for it (`write`)."""
        self._held = False
        if self.state != WRITING:
            return  # closed meanwhile
        self._flush_ready()
        if self.state == WRITING:  # the kernel took only part: the loop sends the rest
            self.deadline = time.monotonic() + self.service.send_timeout
            self._register(EVENT_WRITE)

    def _flush_ready(self) -> None:
        """The loop's side of WRITING: the socket is writable (or failed)."""
        try:
            sent = self._send_some()
        except ClientDisconnected:
            self.close()
            return
        self._sent(sent)

    def send_timed_out(self) -> None:
        """WRITING past its deadline. As in `_drain`: one more try, then drop the client."""
        try:
            sent = self._send_some()
        except ClientDisconnected:
            sent = 0
        if not sent:
            log.debug("client %s stopped reading the response; closing", self.peer[0])
            self.close()
            return
        self._sent(sent)

    def _sent(self, sent: int) -> None:
        if self.file_fd < 0 and len(self.outbuf) <= LOW_WATER and self.suspended is not None:
            self._resume()
        elif self.outbuf or self.file_fd >= 0:
            if sent:
                self.deadline = time.monotonic() + self.service.send_timeout
        else:
            self.paused = False
            self._finish_response()  # all sent

    def _end_file(self) -> None:
        if self.file_fd >= 0:
            try:
                os.close(self.file_fd)
            except OSError:
                pass
            self.file_fd = -1

    def _debug_response(self, data: bytes) -> None:
        if self._head_logged or self.service.debug_http is None:
            return
        end = data.find(b"\r\n\r\n")
        if end >= 0 and data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100"):
            self._head_logged = True
            self.service.debug_http(">", data[: end + 2])

    # -- registration and closing ------------------------------------------------------

    def _register(self, events: int) -> None:
        if self._registered == events:
            return
        loop = self.service.loop
        if self._registered:
            loop.modify(self.fd, events, self)
        else:
            loop.register(self.fd, events, self)
        self._registered = events

    def _unregister(self) -> None:
        if self._registered:
            self.service.loop.unregister(self.fd)
            self._registered = 0

    def _shutdown_and_close(self) -> None:
        # Unread input would make the close reset the connection. Nothing is unread when the
        # parser holds nothing and the kernel neither, which costs a system call to ask;
        # except after `_said_last`, where the answer is known (as nginx's `lingering_close
        # on` takes it): the client said its request was its last, that request was all a
        # short read found, and the response went out while the app ran, the socket never
        # left waiting. More input would be the client's own error, sent in that moment.
        if (
            not self._lingering
            and not self.parser.buf
            and (self._said_last or not self._unread_input())
        ):
            self.close()  # nothing unread: a plain close sends our FIN after the response
            return
        # Half-close first so the client reads the whole response before our FIN
        # (RFC 9112 §9.6: a server closes in stages to avoid losing the response).
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        # Closing with unread input would reset the connection, and a reset can destroy
        # response bytes the client has not read yet: read and drop its input for a while.
        self.state = LINGERING
        now = time.monotonic()
        self.linger_until = now + LINGER_MAX
        self.deadline = now + LINGER_IDLE
        self._register(EVENT_READ)

    def _unread_input(self) -> bool:
        # How many bytes wait in the socket's receive queue (0 at EOF). Cheaper than a
        # recv(MSG_PEEK), which raises BlockingIOError in the usual case: nothing waits.
        count = bytearray(4)
        try:
            fcntl.ioctl(self.fd, termios.FIONREAD, count, True)
        except OSError:
            return False
        return count != b"\0\0\0\0"

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        if self._registered:
            self.service.loop.forget(self.fd)  # the close below removes it from epoll
            self._registered = 0
        self.service.connections.pop(self.fd, None)
        if self.body is not None:
            self._release_body()
        if self.file_fd >= 0:
            self._end_file()
        if self.suspended is not None:
            self.suspended[0].abort()  # PEP 3333: close() is called whatever happens
            self.suspended = None
        if self.outbuf:
            self.outbuf = bytearray()  # not clear(): an app thread may hold a view of it
        try:
            self.sock.close()
        except OSError:
            pass
