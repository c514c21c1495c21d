"""The scenarios of `make bench`, run one server at a time, and the raw results they produce.

throughput   every app x every server x {keep-alive, Connection: close}: `GET /hello` from wrk
             (one thread, `connections` connections) on one core, the server on the other;
             one warm-up run per server, then `repeat` measured runs of `duration` seconds
             per mode.
memory       RSS of each worker right after start-up (idle) and after the throughput runs.
concurrency  `GET /sleep?seconds=0.1` from 64 connections to brick and gunicorn gthread at the
             same workers x threads; the bound is workers x threads / 0.1 s requests per second.

The results are one JSON-ready dict (see `report` for its shape); a server that fails to start
or dies is recorded under "failures" and the run goes on with the next one.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import procstat, wrk
from bench.servers import APPS, ROOT, ServerError, ServerProcess, ServerSpec, installed, pinned
from bench.stats import Run, summarize

MODES = {"keep-alive": False, "close": True}  # mode -> send `Connection: close`
DEFAULT_SERVERS = (
    "brick",
    "gunicorn-sync",
    "gunicorn-gthread",
    "granian",
    "waitress",
    "floor",
    "brick-1x4",
    "gunicorn-gthread-1x4",
)
QUICK_SERVERS = ("brick", "gunicorn-gthread", "granian")
SETTLE = 0.1  # seconds after wrk exits before the CPU is read: closing connections counts too


@dataclass
class Settings:
    """Everything a run depends on; `from_env` reads the BENCH_* variables."""

    apps: list[str] = field(default_factory=lambda: list(APPS))
    servers: list[str] = field(default_factory=lambda: list(DEFAULT_SERVERS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    duration: int = 5
    repeat: int = 3
    warmup: int = 2
    connections: int = 16
    path: str = "/hello"
    concurrency: bool = True
    concurrency_app: str = "wsgi"
    concurrency_workers: int = 2
    concurrency_threads: int = 8
    concurrency_connections: int = 64
    concurrency_sleep: float = 0.1
    # Runs shorter than this spend too much of their time filling and draining the threads.
    concurrency_min_duration: int = 5
    server_cpu: int | None = 0
    client_cpu: int | None = 1
    quick: bool = False
    logdir: Path = ROOT / "bench" / "results" / "tmp"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        settings = cls()
        if env.get("BENCH_QUICK", "") not in ("", "0"):
            settings.quick = True
            settings.duration, settings.repeat, settings.warmup = 1, 1, 1
            settings.servers = list(QUICK_SERVERS)
        if "BENCH_DURATION" in env:
            settings.duration = _whole_seconds(env["BENCH_DURATION"], "BENCH_DURATION")
        if "BENCH_REPEAT" in env:
            settings.repeat = _positive(env["BENCH_REPEAT"], "BENCH_REPEAT")
        if "BENCH_WARMUP" in env:
            settings.warmup = _whole_seconds(env["BENCH_WARMUP"], "BENCH_WARMUP", zero=True)
        if "BENCH_CONNECTIONS" in env:
            settings.connections = _positive(env["BENCH_CONNECTIONS"], "BENCH_CONNECTIONS")
        if env.get("BENCH_APPS"):
            settings.apps = _names(env["BENCH_APPS"])
        if env.get("BENCH_SERVERS"):
            settings.servers = _names(env["BENCH_SERVERS"])
        if env.get("BENCH_MODES"):
            settings.modes = _names(env["BENCH_MODES"])
        if env.get("BENCH_CONCURRENCY", "1") == "0":
            settings.concurrency = False
        settings.validate()
        return settings

    def validate(self) -> None:
        for app in self.apps:
            if app not in APPS:
                raise ValueError(f"unknown app {app!r}; apps: {', '.join(APPS)}")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        if self.duration < 1 or self.repeat < 1 or self.warmup < 0:
            raise ValueError("duration and repeat must be at least 1, warmup at least 0")
        if self.concurrency_app not in APPS:
            raise ValueError(f"unknown app {self.concurrency_app!r}")

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["logdir"] = str(self.logdir)
        return data


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _positive(text: str, name: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def _whole_seconds(text: str, name: str, zero: bool = False) -> int:
    # wrk 4 runs for whole seconds only.
    value = float(text)
    if not value.is_integer() or value < (0 if zero else 1):
        raise ValueError(f"{name} must be a whole number of seconds (wrk's unit)")
    return int(value)


# -- one wrk run ---------------------------------------------------------------------------


def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    close: bool,
    cpu: int | None,
    timeout: float = 10.0,
) -> wrk.WrkResult:
    command = wrk.command(
        url, duration=duration, connections=connections, close=close, timeout=timeout
    )
    try:
        done = subprocess.run(
            pinned(command, cpu),
            capture_output=True,
            text=True,
            timeout=duration + timeout + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"wrk did not finish: {' '.join(command)}") from exc
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise ServerError(f"wrk exited with {done.returncode}: {output.strip()}")
    try:
        return wrk.parse(output)
    except wrk.WrkOutputError as exc:
        raise ServerError(str(exc)) from exc


def measure(
    server: ServerProcess,
    url: str,
    *,
    duration: int,
    connections: int,
    close: bool,
    client_cpu: int | None,
    timeout: float = 10.0,
) -> Run:
    """One wrk run against `server`, with the CPU its whole tree spent meanwhile."""
    cores_before = procstat.read_cpu_lines()
    ticks_before = server.cpu_ticks()
    result = run_wrk(
        url,
        duration=duration,
        connections=connections,
        close=close,
        cpu=client_cpu,
        timeout=timeout,
    )
    time.sleep(SETTLE)
    server.check_alive()
    ticks = server.cpu_ticks() - ticks_before
    cores_after = procstat.read_cpu_lines()
    other = 0.0
    if server.cpu is not None:
        other = procstat.other_load(cores_before, cores_after, server.cpu, ticks)
    return Run(result, ticks, other)


# -- the scenarios -------------------------------------------------------------------------


class Progress:
    """What the runner tells the person watching; `bench.__main__` gives a rich one."""

    def start(self, total: int) -> None:
        pass

    def step(self, description: str) -> None:
        print(description, flush=True)

    def advance(self) -> None:
        pass

    def result(self, line: str) -> None:
        print(line, flush=True)

    def warn(self, line: str) -> None:
        print(f"warning: {line}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        pass


def plan(settings: Settings) -> tuple[list[ServerSpec], list[str]]:
    """The servers to run (in order) and a note for each one left out."""
    from bench.servers import parse_spec

    specs: list[ServerSpec] = []
    notes: list[str] = []
    seen: dict[str, bool] = {}
    for name in settings.servers:
        spec = parse_spec(name)
        if spec.module not in seen:
            seen[spec.module] = installed(spec.module)
        if seen[spec.module]:
            specs.append(spec)
        else:
            notes.append(f"{spec.key}: {spec.module} is not installed; left out")
    return specs, notes


def wrk_runs(settings: Settings, specs: Sequence[ServerSpec]) -> int:
    """How many wrk runs the whole benchmark makes (the progress bar's length)."""
    warmup = 1 if settings.warmup else 0
    per_server = len(settings.modes) * settings.repeat + warmup
    total = len(settings.apps) * len(specs) * per_server
    if settings.concurrency:
        total += 2 * (settings.repeat + warmup)
    return total


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    found = {}
    for dist in ("brick", "gunicorn", "granian", "waitress", "flask", "pyramid", "django"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    found["wrk"] = _wrk_version()
    return found


def _wrk_version() -> str:
    try:
        done = subprocess.run(
            [wrk.WRK, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    words = (done.stdout + done.stderr).split()
    return words[1] if len(words) > 1 else "unknown"


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "server"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+ (server/ has uncommitted changes)" if dirty else "")


def preflight(settings: Settings) -> list[str]:
    """Problems that stop the run before it starts (missing tools, too few cores)."""
    problems = []
    if not Path(wrk.WRK).exists():
        problems.append(f"wrk is not at {wrk.WRK} (apt-get install wrk)")
    pinning = settings.server_cpu is not None or settings.client_cpu is not None
    if pinning and shutil.which("taskset") is None:
        problems.append("taskset is missing (apt-get install util-linux)")
    cores = os.cpu_count() or 1
    for cpu in (settings.server_cpu, settings.client_cpu):
        if cpu is not None and cpu >= cores:
            problems.append(f"core {cpu} does not exist on this {cores}-core machine")
    return problems


def run(settings: Settings, progress: Progress | None = None) -> dict[str, object]:
    """Run every scenario; the raw results (see `report` for the shape)."""
    progress = progress or Progress()
    problems = preflight(settings)
    if problems:
        raise ServerError("; ".join(problems))
    specs, notes = plan(settings)
    for note in notes:
        progress.warn(note)
    meta: dict[str, object] = {
        "started": _now(),
        "commit": git_commit(),
        "machine": machine(),
        "versions": versions(),
        "settings": settings.as_dict(),
        "left_out": notes,
        "loadavg_before": os.getloadavg(),
    }
    throughput: list[dict[str, object]] = []
    memory: list[dict[str, object]] = []
    concurrency: list[dict[str, object]] = []
    failures: list[dict[str, object]] = []
    progress.start(wrk_runs(settings, specs))
    try:
        for app in settings.apps:
            _throughput(settings, app, specs, throughput, memory, failures, progress)
        if settings.concurrency:
            concurrency = _concurrency(settings, failures, progress)
    finally:
        progress.stop()
    meta["loadavg_after"] = os.getloadavg()
    meta["finished"] = _now()
    return {
        "meta": meta,
        "throughput": throughput,
        "memory": memory,
        "concurrency": concurrency,
        "failures": failures,
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def started(
    settings: Settings, spec: ServerSpec, app: str, attempts: int = 2
) -> Iterator[ServerProcess]:
    """A started server, stopped on the way out. A failed start is tried once more on a new
    port: the free port found can be taken by someone else before the server binds it."""
    for attempt in range(attempts):
        server = ServerProcess(spec, app, settings.logdir, cpu=settings.server_cpu)
        try:
            server.start()
            break
        except ServerError:
            if attempt + 1 == attempts:
                raise
    try:
        yield server
    finally:
        server.stop()


def _entry(spec: ServerSpec, app: str) -> dict[str, object]:
    return {
        "app": app,
        "server": spec.key,
        "family": spec.family,
        "label": spec.label,
        "config": spec.config,
        "workers": spec.workers,
        "threads": spec.threads,
    }


def _repeat(
    settings: Settings,
    server: ServerProcess,
    url: str,
    *,
    connections: int,
    close: bool,
    progress: Progress,
    what: str,
    timeout: float = 10.0,
    duration: int | None = None,
    warm_up: bool = True,
) -> tuple[list[Run], list[Run]]:
    """The warm-up run (when asked for) and the measured runs of one scenario."""

    def once(label: str) -> Run:
        progress.step(f"{what}: {label}")
        result = measure(
            server,
            url,
            duration=settings.warmup if label == "warm-up" else duration or settings.duration,
            connections=connections,
            close=close,
            client_cpu=settings.client_cpu,
            timeout=timeout,
        )
        progress.advance()
        return result

    warmups = [once("warm-up")] if settings.warmup and warm_up else []
    runs = [once(f"run {i + 1}/{settings.repeat}") for i in range(settings.repeat)]
    return warmups, runs


def _throughput(
    settings: Settings,
    app: str,
    specs: Sequence[ServerSpec],
    throughput: list[dict[str, object]],
    memory: list[dict[str, object]],
    failures: list[dict[str, object]],
    progress: Progress,
) -> None:
    """Every server on one app. They are all started first, and each repetition runs them
    in turn: a burst of load from elsewhere on the machine then falls on every server's
    runs alike, not on the few runs of one server, so the ratios stay fair. A server not
    being measured sits idle (its CPU is not counted: each run reads its own tree)."""

    def failed(spec: ServerSpec, exc: ServerError) -> None:
        failures.append({"app": app, "server": spec.key, "error": str(exc)})
        progress.warn(f"{app} on {spec.key}: {exc}")
        servers.pop(spec, None)

    servers: dict[ServerSpec, ServerProcess] = {}
    with contextlib.ExitStack() as stack:
        idle: dict[ServerSpec, tuple[list[int], int | None]] = {}
        for spec in specs:
            progress.step(f"{app} on {spec.label}: starting")
            try:
                servers[spec] = stack.enter_context(started(settings, spec, app))
                idle[spec] = servers[spec].memory()
            except ServerError as exc:
                failed(spec, exc)
        warmups: dict[ServerSpec, list[Run]] = {spec: [] for spec in servers}
        for index, mode in enumerate(settings.modes):
            runs: dict[ServerSpec, list[Run]] = {spec: [] for spec in servers}
            # One warm-up per server (imports, caches): the next modes run on a warm app.
            labels = ["warm-up"] if settings.warmup and index == 0 else []
            labels += [f"run {i + 1}/{settings.repeat}" for i in range(settings.repeat)]
            for label in labels:
                for spec, server in list(servers.items()):
                    progress.step(f"{app} on {spec.label}, {mode}: {label}")
                    try:
                        result = measure(
                            server,
                            server.url + settings.path,
                            duration=settings.warmup if label == "warm-up" else settings.duration,
                            connections=settings.connections,
                            close=MODES[mode],
                            client_cpu=settings.client_cpu,
                        )
                    except ServerError as exc:
                        failed(spec, exc)
                        continue
                    finally:
                        progress.advance()
                    (warmups if label == "warm-up" else runs)[spec].append(result)
            for spec in servers:
                what = f"{app} on {spec.label}, {mode}"
                first = warmups[spec] if index == 0 else []
                summary = summarize(runs[spec], first)
                throughput.append(
                    {
                        **_entry(spec, app),
                        "mode": mode,
                        "summary": summary.as_dict(),
                        "runs": [r.as_dict() for r in runs[spec]],
                        "warmups": [r.as_dict() for r in first],
                    }
                )
                progress.result(
                    f"{what}: {summary.cpu_us_per_request:8.1f} µs/req  {summary.rps:9.0f} req/s"
                    f"  p50 {summary.p50_ms:6.2f} ms  p99 {summary.p99_ms:7.2f} ms"
                    f"  errors {summary.errors}"
                )
        for spec, server in servers.items():
            loaded_workers, loaded_master = server.memory()
            idle_workers, idle_master = idle[spec]
            memory.append(
                {
                    **_entry(spec, app),
                    "idle_kib": idle_workers,
                    "loaded_kib": loaded_workers,
                    "master_idle_kib": idle_master,
                    "master_loaded_kib": loaded_master,
                }
            )


def concurrency_specs(settings: Settings) -> list[ServerSpec]:
    w, t = settings.concurrency_workers, settings.concurrency_threads
    return [ServerSpec("brick", w, t), ServerSpec("gunicorn-gthread", w, t)]


def _concurrency(
    settings: Settings, failures: list[dict[str, object]], progress: Progress
) -> list[dict[str, object]]:
    app = settings.concurrency_app
    sleep = settings.concurrency_sleep
    entries: list[dict[str, object]] = []
    for spec in concurrency_specs(settings):
        bound = spec.workers * spec.threads / sleep
        what = (
            f"concurrency: {app} /sleep on {spec.label}, {settings.concurrency_connections} conns"
        )
        progress.step(f"{what}: starting")
        try:
            with started(settings, spec, app) as server:
                warmups, runs = _repeat(
                    settings,
                    server,
                    f"{server.url}/sleep?seconds={sleep:g}",
                    connections=settings.concurrency_connections,
                    close=False,
                    progress=progress,
                    what=what,
                    timeout=30.0,
                    duration=max(settings.duration, settings.concurrency_min_duration),
                )
        except ServerError as exc:
            failures.append({"app": app, "server": spec.key, "error": str(exc)})
            progress.warn(f"{what}: {exc}")
            continue
        summary = summarize(runs, warmups)
        entries.append(
            {
                **_entry(spec, app),
                "path": f"/sleep?seconds={sleep:g}",
                "connections": settings.concurrency_connections,
                "bound_rps": bound,
                "duration": max(settings.duration, settings.concurrency_min_duration),
                "share_of_bound": summary.rps / bound,
                "summary": summary.as_dict(),
                "runs": [r.as_dict() for r in runs],
                "warmups": [r.as_dict() for r in warmups],
            }
        )
        progress.result(
            f"{what}: {summary.rps:7.1f} req/s = {summary.rps / bound:6.1%} of the bound"
            f" {bound:g}  p50 {summary.p50_ms:.0f} ms  errors {summary.errors}"
        )
    return entries
