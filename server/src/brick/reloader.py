"""`--reload`: watch the loaded modules' source files and call back when one changes.

Development only. A daemon thread in each worker polls modification times once a second;
on a change the worker asks the master for a replacement, which imports the app anew and
takes over once it is ready. If the app does not load (a syntax error saved mid-edit), the
worker answers 500 and watches the broken file too, so saving the fix brings the app back
without restarting brick.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("brick.error")


def _module_files(extra: list[str]) -> set[str]:
    files = set(extra)
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and os.path.isfile(path):
            files.add(path)
    return files


def _mtimes(paths: set[str]) -> dict[str, float]:
    mtimes = {}
    for path in paths:
        try:
            mtimes[path] = os.stat(path).st_mtime
        except OSError:
            mtimes[path] = -1.0  # gone (or being replaced): a later change shows
    return mtimes


def start_reloader(
    on_change: Callable[[], None], interval: float = 1.0, extra_files: list[str] | None = None
) -> threading.Thread:
    """Call `on_change` once, from a daemon thread, when a loaded module's source file (or
    one of `extra_files`, e.g. the file that failed to import) changes or disappears.

    The first look is taken here, before the worker accepts anything, so an edit made once
    the app answers is never mistaken for the starting state."""
    extra = list(extra_files or [])
    mtimes = _mtimes(_module_files(extra))

    def watch() -> None:
        while True:
            time.sleep(interval)
            for path, mtime in _mtimes(_module_files(extra)).items():
                if mtime != mtimes.setdefault(path, mtime):
                    log.info("%s changed; reloading", path)
                    on_change()
                    return

    thread = threading.Thread(target=watch, name="brick-reloader", daemon=True)
    thread.start()
    return thread
