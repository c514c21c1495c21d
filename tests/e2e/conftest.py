"""The compose stack under test: built, started under a project of its own, always removed.

One stack serves the whole session. It runs as project `brick-e2e-<random>`, so it never
touches a stack started with `make up`, and publishes nginx on a free port of 127.0.0.1
(BRICK_E2E_PORT to choose one). WORKERS=2 and THREADS=2, for the concurrency demo.

Before `up`, `make stack-prep` supplies what the repository alone cannot: the compose plugin,
the base images (pulled, or made from Debian packages where no registry answers) and the
wheelhouse. With no Docker engine every e2e test skips, unless BRICK_REQUIRE_DOCKER=1 (CI
sets it), which makes that a failure.

The stack is removed after the session (`down -v --remove-orphans`) whatever happened. When
a test failed, the tail of every service's log is printed in the terminal summary and the
whole of it saved under .cache/e2e/.
"""

from __future__ import annotations

import gc
import os
import secrets
import socket
import subprocess
import time
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import docker.models.containers
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
LOG_DIR = ROOT / ".cache" / "e2e"

APPS = ("flask", "pyramid", "django", "wsgi")
SERVERS = ("brick", "gunicorn")
WORKERS = 2
THREADS = 2

# A first run on a clean machine builds the base images, the wheelhouse and every image.
PREP_TIMEOUT = 1200.0
UP_TIMEOUT = 900.0
# What `up --wait` allows the containers to become healthy once they are created.
HEALTHY_TIMEOUT = 180
# For any single compose command once the stack is up (stop waits up to 30 s per request).
COMMAND_TIMEOUT = 120.0
HTTP_TIMEOUT = 15.0

# pytest-timeout counts a test's fixture setup, and the first test to use the stack sets it
# up, perhaps after building everything: that test alone gets this much time.
SETUP_TIMEOUT = int(PREP_TIMEOUT + UP_TIMEOUT)

FAILED = pytest.StashKey[bool]()
LOGS = pytest.StashKey[str]()


@dataclass(frozen=True)
class Route:
    """One app on one server, as nginx publishes it."""

    app: str
    server: str

    @property
    def prefix(self) -> str:
        return f"/{self.app}" if self.server == "brick" else f"/gunicorn/{self.app}"

    @property
    def service(self) -> str:
        return self.app if self.server == "brick" else f"gunicorn-{self.app}"

    @property
    def upstream(self) -> str:
        return f"{self.server}_{self.app}"

    def __str__(self) -> str:
        return f"{self.server}-{self.app}"


ROUTES = [Route(app, server) for app in APPS for server in SERVERS]


@dataclass
class Stack:
    """A running compose project and the ways to reach it."""

    project: str
    port: int
    client: docker.DockerClient
    env: dict[str, str] = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return requests.get(self.url(path), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return requests.post(self.url(path), **kwargs)

    def compose(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} exited {result.returncode}\n{result.stdout}{result.stderr}",
                pytrace=False,
            )
        return result

    def containers(self, service: str | None = None) -> list[docker.models.containers.Container]:
        labels = [f"com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return self.client.containers.list(all=True, filters={"label": labels})

    def container(self, service: str) -> docker.models.containers.Container:
        found = self.containers(service)
        assert len(found) == 1, f"{service}: expected one container, found {found}"
        return found[0]

    def network(self) -> str:
        return f"{self.project}_default"

    def address(self, service: str) -> str:
        container = self.container(service)
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][self.network()]["IPAddress"])

    def health(self, service: str) -> str:
        container = self.container(service)
        container.reload()
        return str(container.attrs["State"].get("Health", {}).get("Status", "none"))

    def wait_healthy(self, service: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        status = self.health(service)
        while status != "healthy":
            if time.monotonic() > deadline:
                pytest.fail(f"{service} not healthy after {timeout:g} s: {status}", pytrace=False)
            time.sleep(0.5)
            status = self.health(service)

    def wait_serving(self, path: str, timeout: float = 30.0) -> tuple[requests.Response, float]:
        """GET `path` through nginx until it answers 200; the answer and the time it took."""
        start = time.monotonic()
        last: object = None
        while time.monotonic() - start < timeout:
            try:
                response = self.get(path, timeout=5)
            except requests.RequestException as error:
                last = error
            else:
                if response.status_code == 200:
                    return response, time.monotonic() - start
                last = f"{response.status_code} {response.text[:200]!r}"
            time.sleep(0.25)
        pytest.fail(f"{path} not served within {timeout:g} s; last answer: {last}", pytrace=False)

    def logs(self, tail: int | None = None) -> str:
        args = ["logs", "--no-color", "--timestamps"]
        if tail is not None:
            args.append(f"--tail={tail}")
        try:
            result = self.compose(*args, check=False)
        except subprocess.TimeoutExpired:
            return "(docker compose logs timed out)"
        return result.stdout + result.stderr


def _docker_client() -> docker.DockerClient:
    """A client of a live engine, or skip (fail when BRICK_REQUIRE_DOCKER=1)."""
    why = ""
    with warnings.catch_warnings():
        # A client that could not reach the engine leaves its socket to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=60)
            client.ping()
        except (docker.errors.DockerException, requests.RequestException, OSError) as error:
            why = f"no Docker engine reachable ({error})"
        gc.collect()
    if why:
        if os.environ.get("BRICK_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{why}, and BRICK_REQUIRE_DOCKER=1", pytrace=False)
        pytest.skip(f"{why}; the e2e tests need one (set BRICK_REQUIRE_DOCKER=1 to fail instead)")
    return client


def _prepare() -> None:
    """`make stack-prep`: compose plugin, base images, wheelhouse (quick when all are there)."""
    if os.environ.get("BRICK_E2E_PREP", "1") == "0":
        return
    result = subprocess.run(
        ["make", "--no-print-directory", "stack-prep"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PREP_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"make stack-prep failed:\n{result.stdout}{result.stderr}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    client = _docker_client()
    _prepare()
    port = int(os.environ.get("BRICK_E2E_PORT") or _free_port())
    env = dict(os.environ)
    env.update(
        BRICK_PORT=str(port),
        BRICK_BIND="127.0.0.1",
        WORKERS=str(WORKERS),
        THREADS=str(THREADS),
    )
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROFILES", None)
    stack = Stack(f"brick-e2e-{secrets.token_hex(4)}", port, client, env)
    started = False
    try:
        up = stack.compose(
            "up",
            "-d",
            "--build",
            "--wait",
            f"--wait-timeout={HEALTHY_TIMEOUT}",
            timeout=UP_TIMEOUT,
            check=False,
        )
        if up.returncode != 0:
            pytest.fail(
                f"docker compose up failed ({up.returncode}):\n{up.stderr[-6000:]}\n"
                f"--- logs ---\n{stack.logs(tail=40)}",
                pytrace=False,
            )
        started = True
        yield stack
    finally:
        if not started or request.config.stash.get(FAILED, False):
            _save_logs(request.config, stack)
        stack.compose("down", "-v", "--remove-orphans", "--timeout=10", check=False)
        client.close()


def _save_logs(config: pytest.Config, stack: Stack) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / f"{stack.project}.log"
    path.write_text(stack.logs())
    config.stash[LOGS] = f"{stack.logs(tail=60)}\n(all of it: {path})\n"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the first test that uses the stack (after any deselection) SETUP_TIMEOUT."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT), append=False)
            break


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and item.get_closest_marker("e2e"):
        item.config.stash[FAILED] = True
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    logs = config.stash.get(LOGS, "")
    if logs:
        terminalreporter.section("docker compose logs of the e2e stack (last lines)")
        terminalreporter.write(logs)
