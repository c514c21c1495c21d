"""Run brick with a cProfile switch in every worker, for `python -m bench profile`.

    PYTHONPATH=<repository root> python -m bench.profiled_brick DIR [brick options and app]

Each forked worker installs a SIGUSR2 handler: the first SIGUSR2 starts cProfile, the next
stops it and writes DIR/worker-<pid>.prof. The benchmark sends the first after a warm-up
and the second when wrk is done, so start-up and shutdown stay out of the profile.

cProfile follows one thread: run brick with `--threads 1` (the app in the loop thread), or
use the py-spy profiler, which samples every thread. The master is not profiled.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from pathlib import Path
from types import FrameType


def install(outdir: Path) -> None:
    """Give every process forked from now on the SIGUSR2 profiling switch."""

    def in_child() -> None:
        profiler = cProfile.Profile()
        running = False

        def toggle(signum: int, frame: FrameType | None) -> None:
            nonlocal running
            if not running:
                running = True
                profiler.enable()
                return
            profiler.disable()
            running = False
            profiler.dump_stats(outdir / f"worker-{os.getpid()}.prof")

        signal.signal(signal.SIGUSR2, toggle)

    os.register_at_fork(after_in_child=in_child)


def main(argv: list[str]) -> int:
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    install(outdir)
    from brick.cli import main as brick_main

    return brick_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
