"""The stack's life: health checks, logs, a graceful stop, a restart, an app on a new address.

Each test that stops or moves a service brings it back, healthy and served, before it ends.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import APPS, WORKERS, Route, Stack

pytestmark = pytest.mark.e2e

SERVICES = ["nginx", *APPS, *(f"gunicorn-{app}" for app in APPS)]
# How long nginx may take to serve an app again once its container is back.
RECOVERY_TIMEOUT = 30.0


def test_every_service_is_healthy(stack: Stack) -> None:
    for service in SERVICES:
        assert stack.health(service) == "healthy", service


def test_nginx_is_the_only_published_port(stack: Stack) -> None:
    for service in SERVICES:
        container = stack.container(service)
        published = {
            port: bindings
            for port, bindings in container.attrs["NetworkSettings"]["Ports"].items()
            if bindings
        }
        if service == "nginx":
            assert list(published) == ["8080/tcp"]
            assert {b["HostPort"] for b in published["8080/tcp"]} == {str(stack.port)}
        else:
            assert published == {}, service


def test_access_logs_go_to_the_container_logs(stack: Stack) -> None:
    token = secrets.token_hex(8)
    for route in (Route("flask", "brick"), Route("flask", "gunicorn")):
        assert stack.get(f"{route.prefix}/hello?token={token}").status_code == 200
    deadline = time.monotonic() + 10
    missing = {"nginx", "flask", "gunicorn-flask"}
    while missing and time.monotonic() < deadline:
        missing = {s for s in missing if token not in stack.container(s).logs().decode()}
        if missing:
            time.sleep(0.25)
    assert not missing, f"no access log line for the request in {missing}"


@pytest.fixture
def restore() -> Iterator[list[tuple[Stack, str]]]:
    """Services a test stopped: started again, and waited for, whatever the test did."""
    stopped: list[tuple[Stack, str]] = []
    yield stopped
    for stack, service in stopped:
        stack.compose("start", service)
        stack.wait_healthy(service)


@pytest.mark.parametrize("route", [Route("flask", "brick"), Route("flask", "gunicorn")], ids=str)
def test_graceful_stop_finishes_the_request_in_flight(
    stack: Stack, route: Route, restore: list[tuple[Stack, str]]
) -> None:
    url = stack.url(f"{route.prefix}/sleep?seconds=3")
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(requests.get, url, timeout=30)
        time.sleep(1)  # the request is now sleeping in the app
        restore.append((stack, route.service))
        stop = time.monotonic()
        stack.compose("stop", "--timeout=30", route.service)
        stopped_after = time.monotonic() - stop
        response = in_flight.result(timeout=30)
    assert response.status_code == 200
    assert response.text == "slept 3\n"
    # It waited for the request (about 2 s left), and did not need to be killed.
    assert 1.0 < stopped_after < 20, stopped_after
    container = stack.container(route.service)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs(tail=20).decode()


def test_nginx_recovers_when_an_app_restarts(stack: Stack) -> None:
    stack.compose("restart", "django")
    response, _ = stack.wait_serving("/django/hello", timeout=RECOVERY_TIMEOUT)
    assert response.text == "Hello world from Django!\n"
    stack.wait_healthy("django")


def test_nginx_follows_an_app_to_a_new_address(
    stack: Stack, restore: list[tuple[Stack, str]]
) -> None:
    # Stop the app, let another container take its address, start the app again: it comes
    # back under the same name at a new address, which nginx must look up again.
    old = stack.address("wsgi")
    restore.append((stack, "wsgi"))
    stack.compose("stop", "wsgi")
    image = stack.container("wsgi").image
    placeholder = stack.client.containers.run(
        image,
        entrypoint=["sleep"],
        command=["300"],
        network=stack.network(),
        name=f"{stack.project}-placeholder",
        # The image carries the wsgi service's compose labels; this is no service of the
        # project (`down --remove-orphans` removes it should the test not get to).
        labels={
            "com.docker.compose.project": stack.project,
            "com.docker.compose.service": "placeholder",
        },
        detach=True,
    )
    try:
        stack.compose("start", "wsgi")
        new = stack.address("wsgi")
        response, _ = stack.wait_serving("/wsgi/hello", timeout=RECOVERY_TIMEOUT)
        assert response.text == "Hello world from a simple WSGI application!\n"
        # Several answers in a row, so that no nginx worker is left on the old address.
        for _ in range(10):
            assert stack.get("/wsgi/hello").status_code == 200
    finally:
        placeholder.remove(force=True)
    assert new != old, "the app came back at its old address: the test proved nothing"


@pytest.mark.parametrize("service", [*APPS, *(f"gunicorn-{app}" for app in APPS)])
def test_app_servers_run_unprivileged(stack: Stack, service: str) -> None:
    result = stack.container(service).exec_run(["id", "-un"])
    assert result.exit_code == 0
    assert result.output.decode().strip() == "brick"


# Lists the PIDs of the processes whose parent is PID 1 (the server's master): its workers.
WORKER_PIDS = (
    "import os\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        status = open(f'/proc/{pid}/status').read()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if '\\nPPid:\\t1\\n' in status:\n"
    "        print(pid)\n"
)


def worker_pids(stack: Stack, service: str) -> set[int]:
    result = stack.container(service).exec_run(["python", "-c", WORKER_PIDS])
    assert result.exit_code == 0, result.output
    return {int(pid) for pid in result.output.split()}


@pytest.mark.parametrize(
    "route", [Route("pyramid", "brick"), Route("pyramid", "gunicorn")], ids=str
)
def test_a_killed_worker_is_replaced(stack: Stack, route: Route) -> None:
    # The server's master notices the dead worker and forks a new one; nothing else changes.
    before = worker_pids(stack, route.service)
    workers = len(before)
    assert workers == WORKERS, before
    victim = min(before)
    kill = f"import os, signal; os.kill({victim}, signal.SIGKILL)"
    killed = stack.container(route.service).exec_run(["python", "-c", kill])
    assert killed.exit_code == 0, killed.output
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    now = worker_pids(stack, route.service)
    while (victim in now or len(now) < workers) and time.monotonic() < deadline:
        time.sleep(0.25)
        now = worker_pids(stack, route.service)
    assert victim not in now
    assert len(now) == workers, (before, now)
    for _ in range(2 * workers):
        assert stack.get(f"{route.prefix}/hello").status_code == 200
