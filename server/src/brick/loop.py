"""A small event loop: readiness callbacks, timers, and a thread-safe wake-up.

It knows nothing of HTTP. A registered object gets `handle_event(mask)` when its file
descriptor is ready. On Linux it talks to epoll directly (an fd -> handler dict, no
`selectors` key objects per event: this is the per-request path); elsewhere it uses
`selectors`. Timers are kept in a heap; `call_soon_threadsafe` lets app threads hand
work back to the loop thread through a self-pipe, which is the only cross-thread entry point.

One failing handler must not stop the loop (and with it every other client of the process):
an exception from `handle_event` is logged and passed to the handler's `handle_error(exc)`
when it has one; an exception from a timer or a handed-back callback is logged.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("brick.error")

_EPOLL = hasattr(select, "epoll")
EVENT_READ = select.EPOLLIN if _EPOLL else selectors.EVENT_READ
EVENT_WRITE = select.EPOLLOUT if _EPOLL else selectors.EVENT_WRITE
# An error or hang-up wakes whatever the handler waits for, so it sees the failure itself.
_EPOLL_TROUBLE = (select.EPOLLERR | select.EPOLLHUP) if _EPOLL else 0


class LoopMoved(BaseException):
    """Raised in a thread that lent the loop to an app and got it taken over meanwhile.

    With `--threads N` the thread running the loop may run an app itself while a free app
    thread stands by; when the app takes long, that thread takes the loop over (see
    worker.AppPool). The thread that ran the app must then leave the loop without touching
    it: this unwinds its stack (a BaseException, so no handler's `except Exception` stops
    it), and `hand_back` (the request's result) is handed to the loop once it is out.
    """

    def __init__(self, hand_back: Callable[[], None]) -> None:
        super().__init__()
        self.hand_back = hand_back


class Handler(Protocol):
    def handle_event(self, mask: int) -> None: ...


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _SelectorPoller:
    """The portable stand-in for epoll: the same four calls over `selectors`."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()

    def register(self, fd: int, events: int) -> None:
        self.selector.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.selector.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.selector.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return [(key.fd, mask) for key, mask in self.selector.select(timeout)]

    def close(self) -> None:
        self.selector.close()


class EventLoop:
    def __init__(self) -> None:
        self._poller: Any = select.epoll() if _EPOLL else _SelectorPoller()
        self._handlers: dict[int, Handler] = {}
        self._events: dict[int, int] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._ready: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._woken = False  # a wake-up byte is on its way for what is in _ready
        self._polling = False  # the loop thread is in (or about to enter) its poll
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.register(self._wake_r, EVENT_READ, self)
        self.running = False
        self.on_tick: Callable[[], None] | None = None  # called once per iteration
        # While a handler runs: how many of the turn's events come after its own.
        self.events_left = 0

    # -- registration ------------------------------------------------------------------

    def register(self, fd: int, events: int, handler: Handler) -> None:
        if fd in self._handlers:
            raise KeyError(f"fd {fd} is already registered")
        self._poller.register(fd, events)
        self._handlers[fd] = handler
        self._events[fd] = events

    def modify(self, fd: int, events: int, handler: Handler) -> None:
        if fd not in self._handlers:
            raise KeyError(f"fd {fd} is not registered")
        self._poller.modify(fd, events)
        self._handlers[fd] = handler
        self._events[fd] = events

    def unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is None:
            return
        del self._events[fd]
        try:
            self._poller.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass  # already closed: the kernel forgot it on its own

    def forget(self, fd: int) -> None:
        """Stop watching an fd its owner is about to close: epoll drops a closed fd by itself,
        so this saves a syscall per connection (other pollers are told as usual)."""
        if not _EPOLL:
            self.unregister(fd)
        elif self._handlers.pop(fd, None) is not None:
            del self._events[fd]

    # -- scheduling --------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run `callback` in the loop thread soon; callable from any thread.

        Only a loop asleep in its poll needs waking, and only once: a loop at work takes
        the callback at the end of its turn, and the callbacks after the first wake-up are
        taken by the same turn. A busy pool handing back many requests thus costs at most
        one write and one wake-up per turn of the loop, not one per request.

        The loop sets `_polling` before it looks at `_ready`, and this appends before it
        looks at `_polling`, so a callback is either seen before the poll (which then does
        not wait) or wakes it (see `_turns`). The lock keeps two threads from both writing,
        and close() from slipping in before the write.
        """
        with self._lock:
            self._ready.append(callback)
            if self._woken or self._closed or not self._polling:
                return  # a wake-up is on its way, the loop is awake, or it is gone
            self._woken = True
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full, so the loop is already awake

    def handle_event(self, mask: int) -> None:  # the wake-up pipe
        # One read: a wake-up is one byte (and a signal one more), so this empties the
        # pipe; reading until EAGAIN would cost a syscall and an exception per wake-up.
        # Should bytes remain, the pipe is still readable and the next poll says so.
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass

    # -- running -----------------------------------------------------------------------

    def run_once(self, max_wait: float = 1.0) -> None:
        """One turn: wait for events (at most `max_wait` seconds), handle them, run what is
        due and what was handed back, then `on_tick`."""
        once = iter((False,))
        self._turns(lambda: next(once, True), max_wait)

    def run(self, until: Callable[[], bool], max_wait: float = 1.0) -> None:
        self.running = True
        try:
            self._turns(until, max_wait)
        finally:
            self.running = False

    def _turns(self, until: Callable[[], bool], max_wait: float) -> None:
        """Turns of the loop while `until()` is False. This is the per-request path: what a
        turn needs is looked up once, not per turn.

        The loop thread takes no lock here. It says it is polling, then looks at `_ready`;
        `call_soon_threadsafe` appends to `_ready`, then looks at `_polling`. Each is one
        step under the GIL, so a callback is either seen before the poll (which then does
        not wait) or its thread sees `_polling` and writes the wake-up byte.
        """
        poll = self._poller.poll
        handlers = self._handlers
        events_of = self._events
        timers = self._timers
        ready = self._ready
        monotonic = time.monotonic
        while not until():
            timeout = max_wait
            if timers:
                timeout = min(max_wait, max(0.0, timers[0][0] - monotonic()))
            self._polling = True
            if ready:
                timeout = 0.0
            try:
                events = poll(timeout)
            except InterruptedError:
                events = []
            self._polling = False
            left = len(events)
            for fd, mask in events:
                left -= 1
                self.events_left = left
                handler = handlers.get(fd)
                if handler is None:
                    continue  # unregistered by an earlier handler in this batch
                if mask & _EPOLL_TROUBLE:
                    mask |= events_of[fd]
                try:
                    handler.handle_event(mask)
                except Exception as exc:
                    self._handler_failed(handler, exc)
            if timers:
                now = monotonic()
                while timers and timers[0][0] <= now:
                    timer = heapq.heappop(timers)[2]
                    if not timer.cancelled:
                        self._call(timer.callback)
            if ready:
                # Those handed back so far; any that come meanwhile wait for the next turn
                # (which then does not wait in its poll), so a stream of callbacks cannot
                # keep the loop from its sockets. Should a callback raise LoopMoved (the
                # loop went to another thread), the rest stay queued for that thread.
                self._woken = False
                for _ in range(len(ready)):
                    self._call(ready.popleft())
            if self.on_tick is not None:
                self.on_tick()

    @staticmethod
    def _handler_failed(handler: Handler, exc: Exception) -> None:
        on_error = getattr(handler, "handle_error", None)
        if on_error is None:
            log.error("unexpected error in an event handler", exc_info=exc)
            return
        try:
            on_error(exc)
        except Exception:
            log.exception("unexpected error while handling an error")

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("unexpected error in a loop callback")

    def close(self) -> None:
        with self._lock:  # no app thread writes to the pipe once it is closed
            self._closed = True
        self._poller.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
