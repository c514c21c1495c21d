"""Fixture app for the process-model tests (tests/functional/test_process*.py).

Routes (query parameters in brackets):
    /pid                    the pid of the worker that answered
    /multiprocess           "<pid> <wsgi.multiprocess>"
    /import-pid             the pid of the process that imported this module (the master's
                            with --preload, else the worker's own)
    /sleep [seconds, mark]  creates the file `mark` (if given) once inside the app, sleeps,
                            then answers "slept S <pid>"
    /hang [mark]            like /sleep for an hour: a stuck request
    /hang-masked [mark]     blocks SIGABRT in its thread, then hangs: only SIGKILL ends it
    /orphan [seconds]       forks a child that forks a grandchild and exits at once, so the
                            grandchild (which lives `seconds`) is orphaned; answers its pid
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

IMPORT_PID = os.getpid()


def _text(start_response: Callable[..., Any], body: str, status: str = "200 OK") -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def _mark(query: dict[str, list[str]]) -> None:
    if "mark" in query:
        with open(query["mark"][0], "w") as fh:
            fh.write(str(os.getpid()))


def _orphan(seconds: float) -> int:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(seconds)  # outlive our parent: we are the orphan
            os._exit(0)
        os.write(write_end, str(grandchild).encode())
        os._exit(0)
    os.close(write_end)
    pid = int(os.read(read_end, 64))
    os.close(read_end)
    os.waitpid(child, 0)
    return pid


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/multiprocess":
        return _text(start_response, f"{os.getpid()} {environ['wsgi.multiprocess']}")
    if path == "/thread":  # which thread of the worker ran the app
        return _text(start_response, threading.current_thread().name)
    if path == "/import-pid":
        return _text(start_response, str(IMPORT_PID))
    if path == "/sleep":
        seconds = float(query.get("seconds", ["1"])[0])
        _mark(query)
        time.sleep(seconds)
        return _text(start_response, f"slept {seconds} {os.getpid()}\n")
    if path == "/hang":
        _mark(query)
        time.sleep(3600)
    if path == "/hang-masked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
        _mark(query)
        time.sleep(3600)
    if path == "/orphan":
        return _text(start_response, str(_orphan(float(query.get("seconds", ["1"])[0]))))
    return _text(start_response, "not found\n", "404 Not Found")
