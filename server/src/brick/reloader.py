"""`--reload`: watch the loaded modules' source files and call back when one changes.

Development only. A daemon thread in each worker polls modification times once a second;
on a change the worker stops gracefully and the master starts a fresh one, which imports
the app anew.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("brick.error")


def _module_files() -> set[str]:
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and os.path.isfile(path):
            files.add(path)
    return files


def start_reloader(on_change: Callable[[], None], interval: float = 1.0) -> threading.Thread:
    def watch() -> None:
        mtimes: dict[str, float] = {}
        while True:
            for path in _module_files():
                try:
                    mtime = os.stat(path).st_mtime
                except OSError:
                    continue
                old = mtimes.setdefault(path, mtime)
                if mtime != old:
                    log.info("%s changed; reloading", path)
                    on_change()
                    return
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="brick-reloader", daemon=True)
    thread.start()
    return thread
