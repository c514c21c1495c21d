"""What the event loop tells a handler about the rest of its turn."""

from __future__ import annotations

import os

import pytest
from brick.loop import EVENT_READ, EventLoop

pytestmark = pytest.mark.unit


def test_a_handler_knows_how_many_of_the_turns_events_follow_its_own() -> None:
    loop = EventLoop()
    seen: list[int] = []
    pipes = [os.pipe() for _ in range(3)]

    class Reader:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def handle_event(self, mask: int) -> None:
            os.read(self.fd, 1)
            seen.append(loop.events_left)

    try:
        for r, w in pipes:
            loop.register(r, EVENT_READ, Reader(r))
            os.write(w, b"x")
        loop.run_once(max_wait=1.0)
        assert sorted(seen) == [0, 1, 2] and seen[-1] == 0
    finally:
        loop.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)
