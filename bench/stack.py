"""`make bench-stack`: brick against gunicorn through nginx in the running compose stack.

wrk (pinned to core 1) asks nginx for `/<app>/hello` (brick) and `/gunicorn/<app>/hello`
(gunicorn, the same app image), with keep-alive and with `Connection: close` between wrk and
nginx; nginx keeps its own keep-alive connections to the app servers either way.

The server's CPU is the CPU of the app's container: the cgroup's usage counter, read through
the Docker API (the `docker` package) just before and just after each run, divided by the
requests answered. nginx's CPU is recorded too; it is the same path for both servers.
Memory is each worker's RSS inside the container (`docker top`), idle and after the runs.

The containers are found by their compose labels: the project whose working directory is this
checkout (or the one named by BENCH_COMPOSE_PROJECT), services `<app>`, `gunicorn-<app>` and
`nginx`. Start the stack first: `make up`.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bench.runner import MODES, SETTLE, Progress, Settings, git_commit, machine, run_wrk, versions
from bench.servers import LABELS, ROOT, http_status
from bench.stats import Run, summarize

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"
READY_TIMEOUT = 30.0


class StackError(RuntimeError):
    """The stack is not running, or not as this benchmark expects."""


# -- pure helpers (unit-tested) ------------------------------------------------------------


def choose_project(
    containers: Iterable[Mapping[str, str]], root: str, wanted: str | None = None
) -> str:
    """The compose project to measure, from the containers' labels.

    `wanted` (BENCH_COMPOSE_PROJECT) wins; otherwise the project started from `root`;
    otherwise the only project there is.
    """
    projects: dict[str, str] = {}
    for labels in containers:
        if PROJECT_LABEL in labels:
            projects[labels[PROJECT_LABEL]] = labels.get(WORKDIR_LABEL, "")
    if wanted:
        if wanted not in projects:
            raise StackError(f"no running compose project {wanted!r} (running: {_names(projects)})")
        return wanted
    here = [name for name, workdir in projects.items() if workdir == root]
    if len(here) == 1:
        return here[0]
    if len(projects) == 1:
        return next(iter(projects))
    if not projects:
        raise StackError("no compose stack is running: start it with `make up`")
    raise StackError(
        f"several compose projects are running ({_names(projects)}): set BENCH_COMPOSE_PROJECT"
    )


def _names(projects: Mapping[str, str]) -> str:
    return ", ".join(sorted(projects)) or "none"


def cpu_ns(stats: Mapping[str, Any]) -> int:
    """A container's CPU time so far, in ns, from one Docker stats answer."""
    try:
        return int(stats["cpu_stats"]["cpu_usage"]["total_usage"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StackError(f"no CPU usage in the container stats: {exc}") from None


def top_rss_kib(top: Mapping[str, Any]) -> tuple[list[int], int | None]:
    """Workers' RSS (KiB) and the master's (None when alone), from `docker top -o pid,ppid,rss`.

    The workers are the processes with no child in the container (see procstat.leaves).
    """
    titles = [t.upper() for t in top.get("Titles", [])]
    try:
        pid_col, ppid_col, rss_col = titles.index("PID"), titles.index("PPID"), titles.index("RSS")
    except ValueError:
        raise StackError(f"docker top gave no PID/PPID/RSS columns: {titles}") from None
    rows = [
        (int(p[pid_col]), int(p[ppid_col]), int(p[rss_col])) for p in top.get("Processes") or []
    ]
    if not rows:
        return [], None
    parents = {ppid for _, ppid, _ in rows}
    pids = {pid for pid, _, _ in rows}
    workers = [rss for pid, _, rss in rows if pid not in parents]
    roots = [rss for pid, ppid, rss in rows if ppid not in pids and pid in parents]
    return workers, (roots[0] if roots else None)


def published_url(ports: Mapping[str, Any] | None, container_port: str = "8080/tcp") -> str:
    """The base URL of a container port published on the host, from a container's
    `ports` (Docker's NetworkSettings.Ports), e.g. nginx's 8080 as http://127.0.0.1:8080.

    An address published on every interface (0.0.0.0, ::) is reached at 127.0.0.1.
    """
    bindings = (ports or {}).get(container_port) or []
    for binding in bindings:
        host, port = binding.get("HostIp") or "", binding.get("HostPort") or ""
        if not port:
            continue
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"
    raise StackError(f"the container does not publish {container_port} on the host")


def gunicorn_family(command: str) -> str:
    """The gunicorn twin's worker class, from its container command, as a server family."""
    words = command.replace("=", " ").split()

    def value(*flags: str) -> str | None:
        for flag in flags:
            if flag in words[:-1]:
                return words[words.index(flag) + 1]
        return None

    kind = (value("--worker-class", "-k") or "sync").rsplit(".", 1)[-1].lower()
    threads = value("--threads") or "1"
    # gunicorn turns the sync worker into gthread when threads > 1.
    if kind in ("sync", "syncworker") and threads.isdigit() and int(threads) > 1:
        kind = "gthread"
    return "gunicorn-gthread" if "thread" in kind else "gunicorn-sync"


# -- the Docker side -----------------------------------------------------------------------


class Stack:
    """The running stack's containers, by service."""

    def __init__(self, project: str | None = None) -> None:
        try:
            import docker
        except ImportError as exc:
            raise StackError("the `docker` package is needed (make bench-install)") from exc
        try:
            self.client = docker.from_env()
            running = self.client.containers.list(filters={"label": SERVICE_LABEL})
        except docker.errors.DockerException as exc:
            raise StackError(f"no Docker engine: {exc}") from exc
        self.project = choose_project((c.labels for c in running), str(ROOT), project)
        self.services: dict[str, list[Any]] = {}
        for container in running:
            if container.labels.get(PROJECT_LABEL) == self.project:
                self.services.setdefault(container.labels[SERVICE_LABEL], []).append(container)

    def containers(self, service: str) -> list[Any]:
        found = self.services.get(service)
        if not found:
            raise StackError(
                f"service {service!r} is not running in project {self.project!r}"
                f" (running: {', '.join(sorted(self.services))})"
            )
        return found

    def cpu_ns(self, service: str) -> int:
        return sum(cpu_ns(_stats(c)) for c in self.containers(service))

    def memory(self, service: str) -> tuple[list[int], int | None]:
        workers: list[int] = []
        master = None
        for container in self.containers(service):
            w, m = top_rss_kib(container.top(ps_args="-o pid,ppid,rss"))
            workers += w
            master = m if master is None else master
        return workers, master

    def url(self, service: str = "nginx") -> str:
        """Where the host reaches `service`'s port 8080 (nginx: the stack's front door)."""
        return published_url(self.containers(service)[0].ports)

    def command(self, service: str) -> str:
        config = self.containers(service)[0].attrs.get("Config", {})
        return " ".join([*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])])


def _stats(container: Any) -> Mapping[str, Any]:
    try:
        stats: Mapping[str, Any] = container.stats(stream=False, one_shot=True)
    except TypeError:  # an older docker package without one_shot
        stats = container.stats(stream=False)
    return stats


# -- the benchmark -------------------------------------------------------------------------


def measure(
    stack: Stack, service: str, url: str, settings: Settings, *, duration: int, close: bool
) -> tuple[Run, float]:
    """One wrk run through nginx; the service's CPU (as a Run) and nginx's CPU seconds."""
    nginx = "nginx" in stack.services
    before, nginx_before = stack.cpu_ns(service), stack.cpu_ns("nginx") if nginx else 0
    result = run_wrk(
        url,
        duration=duration,
        connections=settings.connections,
        close=close,
        cpu=settings.client_cpu,
    )
    time.sleep(SETTLE)
    used = stack.cpu_ns(service) - before
    nginx_used = (stack.cpu_ns("nginx") - nginx_before) if nginx else 0
    # Runs count CPU in clock ticks; keep ns precision by scaling the tick rate instead.
    return Run(result, used, clk_tck=1_000_000_000), nginx_used / 1e9


def wait_ready(url: str, timeout: float = READY_TIMEOUT) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = http_status(parts.hostname or "127.0.0.1", parts.port or 80, parts.path)
        if status == 200:
            return
        time.sleep(0.5)
    raise StackError(f"GET {url} did not answer 200 within {timeout:.0f} s (last: {status})")


def run(
    settings: Settings,
    base_url: str | None = None,
    progress: Progress | None = None,
    stack_factory: Callable[[], Stack] | None = None,
) -> dict[str, object]:
    progress = progress or Progress()
    stack = (stack_factory or (lambda: Stack(os.environ.get("BENCH_COMPOSE_PROJECT"))))()
    if not base_url:
        port = os.environ.get("BRICK_PORT")  # set but empty counts as not set
        base_url = f"http://127.0.0.1:{port}" if port else stack.url("nginx")
    base = base_url.rstrip("/")
    meta: dict[str, object] = {
        "started": _now(),
        "commit": git_commit(),
        "machine": machine(),
        "versions": {**versions(), "stack": stack.project},
        "settings": {**settings.as_dict(), "server_cpu": "containers", "base_url": base},
        "loadavg_before": os.getloadavg(),
        "left_out": [],
        "stack": True,
    }
    throughput: list[dict[str, object]] = []
    memory: list[dict[str, object]] = []
    failures: list[dict[str, object]] = []
    per_mode = settings.repeat + (1 if settings.warmup else 0)
    progress.start(len(settings.apps) * 2 * len(settings.modes) * per_mode)
    try:
        for app in settings.apps:
            for family, service, path in (
                ("brick", app, f"/{app}/hello"),
                ("gunicorn", f"gunicorn-{app}", f"/gunicorn/{app}/hello"),
            ):
                if family == "gunicorn" and service in stack.services:
                    family = gunicorn_family(stack.command(service))
                try:
                    _one(stack, settings, app, family, service, base + path,
                         throughput, memory, progress)  # fmt: skip
                except StackError as exc:
                    failures.append({"app": app, "server": family, "error": str(exc)})
                    progress.warn(f"{app} on {family}: {exc}")
    finally:
        progress.stop()
    meta["loadavg_after"] = os.getloadavg()
    meta["finished"] = _now()
    return {
        "meta": meta,
        "throughput": throughput,
        "memory": memory,
        "concurrency": [],
        "failures": failures,
    }


def _one(
    stack: Stack,
    settings: Settings,
    app: str,
    family: str,
    service: str,
    url: str,
    throughput: list[dict[str, object]],
    memory: list[dict[str, object]],
    progress: Progress,
) -> None:
    wait_ready(url)
    entry = {
        "app": app,
        "server": family,
        "family": family,
        "label": LABELS.get(family, family),
        "config": "stack",
        "workers": 0,
        "threads": 0,
        "service": service,
        "command": stack.command(service),
    }
    idle, idle_master = stack.memory(service)
    for mode in settings.modes:
        what = f"{app} on {entry['label']} through nginx, {mode}"
        runs: list[Run] = []
        warmups: list[Run] = []
        nginx_seconds: list[float] = []
        warm_count = 1 if settings.warmup else 0
        for i in range(warm_count + settings.repeat):
            warm = i < warm_count
            label = "warm-up" if warm else f"run {i - warm_count + 1}/{settings.repeat}"
            progress.step(f"{what}: {label}")
            result, nginx_s = measure(
                stack,
                service,
                url,
                settings,
                duration=settings.warmup if warm else settings.duration,
                close=MODES[mode],
            )
            if warm:
                warmups.append(result)
            else:
                runs.append(result)
                nginx_seconds.append(nginx_s)
            progress.advance()
        summary = summarize(runs, warmups)
        requests = sum(r.wrk.requests for r in runs)
        throughput.append(
            {
                **entry,
                "mode": mode,
                "summary": summary.as_dict(),
                "runs": [r.as_dict() for r in runs],
                "warmups": [r.as_dict() for r in warmups],
                "nginx_cpu_us_per_request": sum(nginx_seconds) * 1e6 / requests
                if requests
                else None,
            }
        )
        progress.result(
            f"{what}: {summary.cpu_us_per_request:8.1f} µs/req  {summary.rps:9.0f} req/s"
            f"  p50 {summary.p50_ms:6.2f} ms  p99 {summary.p99_ms:7.2f} ms  errors {summary.errors}"
        )
    loaded, loaded_master = stack.memory(service)
    memory.append(
        {
            **entry,
            "idle_kib": idle,
            "loaded_kib": loaded,
            "master_idle_kib": idle_master,
            "master_loaded_kib": loaded_master,
        }
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
