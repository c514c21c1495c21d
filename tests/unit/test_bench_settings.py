"""The benchmark's settings (BENCH_* variables and flags) and its servers' command lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.__main__ import settings_from  # noqa: E402
from bench.runner import DEFAULT_SERVERS, QUICK_SERVERS, Settings, wrk_runs  # noqa: E402
from bench.servers import ServerSpec, parse_spec, pinned  # noqa: E402

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.duration, settings.repeat, settings.warmup) == (5, 3, 2)
    assert settings.apps == ["wsgi", "flask", "pyramid", "django"]
    assert settings.servers == list(DEFAULT_SERVERS)
    assert settings.modes == ["keep-alive", "close"]
    assert settings.concurrency
    assert (settings.server_cpu, settings.client_cpu) == (0, 1)
    assert not settings.quick


def test_quick_is_short_and_can_still_be_overridden() -> None:
    settings = Settings.from_env({"BENCH_QUICK": "1"})
    assert settings.quick
    assert (settings.duration, settings.repeat, settings.warmup) == (1, 1, 1)
    assert settings.servers == list(QUICK_SERVERS)
    assert not Settings.from_env({"BENCH_QUICK": "0"}).quick
    override = Settings.from_env({"BENCH_QUICK": "1", "BENCH_SERVERS": "brick,waitress"})
    assert override.servers == ["brick", "waitress"]


def test_environment() -> None:
    settings = Settings.from_env(
        {
            "BENCH_DURATION": "10",
            "BENCH_REPEAT": "5",
            "BENCH_WARMUP": "0",
            "BENCH_CONNECTIONS": "32",
            "BENCH_APPS": "wsgi, django",
            "BENCH_SERVERS": "brick-1x4,gunicorn-gthread-1x4",
            "BENCH_MODES": "close",
            "BENCH_CONCURRENCY": "0",
        }
    )
    assert (settings.duration, settings.repeat, settings.warmup) == (10, 5, 0)
    assert settings.connections == 32
    assert settings.apps == ["wsgi", "django"]
    assert settings.servers == ["brick-1x4", "gunicorn-gthread-1x4"]
    assert settings.modes == ["close"]
    assert not settings.concurrency


@pytest.mark.parametrize(
    "env",
    [
        {"BENCH_DURATION": "1.5"},  # wrk runs whole seconds
        {"BENCH_DURATION": "0"},
        {"BENCH_REPEAT": "0"},
        {"BENCH_WARMUP": "-1"},
        {"BENCH_APPS": "rails"},
        {"BENCH_MODES": "pipelined"},
        {"BENCH_CONNECTIONS": "none"},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.from_env(env)


def options(**given: object) -> argparse.Namespace:
    names = ("apps", "servers", "modes", "duration", "repeat", "warmup", "connections")
    values: dict[str, object] = dict.fromkeys(names)
    values.update(quick=False, no_concurrency=False)
    values.update(given)
    return argparse.Namespace(**values)


def test_flags_override_the_environment() -> None:
    env = {"BENCH_DURATION": "10", "BENCH_APPS": "flask"}
    settings = settings_from(options(duration=2, quick=True, no_concurrency=True), env)
    assert settings.duration == 2
    assert settings.apps == ["flask"]  # from the environment, no flag given
    assert settings.quick
    assert settings.repeat == 1  # from quick
    assert not settings.concurrency


def test_the_progress_bar_counts_every_wrk_run() -> None:
    settings = Settings.from_env({"BENCH_APPS": "wsgi,flask", "BENCH_REPEAT": "3"})
    specs = [ServerSpec("brick"), ServerSpec("granian")]
    # 2 apps x 2 servers x (1 warm-up + 2 modes x 3) + concurrency 2 servers x (1 + 3)
    assert wrk_runs(settings, specs) == 2 * 2 * (1 + 2 * 3) + 2 * 4
    settings.warmup, settings.concurrency = 0, False
    assert wrk_runs(settings, specs) == 2 * 2 * 2 * 3


@pytest.mark.parametrize(
    ("name", "family", "workers", "threads", "key"),
    [
        ("brick", "brick", 1, 1, "brick"),
        ("brick-1x4", "brick", 1, 4, "brick-1x4"),
        ("gunicorn-gthread-2x8", "gunicorn-gthread", 2, 8, "gunicorn-gthread-2x8"),
        ("gunicorn-sync", "gunicorn-sync", 1, 1, "gunicorn-sync"),
        ("granian-1x1", "granian", 1, 1, "granian"),
        ("waitress-1x4", "waitress", 1, 4, "waitress-1x4"),
        ("floor", "floor", 1, 1, "floor"),
    ],
)
def test_parse_spec(name: str, family: str, workers: int, threads: int, key: str) -> None:
    spec = parse_spec(name)
    assert (spec.family, spec.workers, spec.threads, spec.key) == (family, workers, threads, key)


@pytest.mark.parametrize(
    "name",
    ["uwsgi", "gunicorn", "brick-0x1", "brick-2", "gunicorn-sync-1x4", "waitress-2x4", "floor-1x4"],
)
def test_parse_spec_refuses(name: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(name)


def test_labels_and_process_counts() -> None:
    assert ServerSpec("gunicorn-gthread", 2, 8).label == "gunicorn gthread 2\u00d78"
    assert ServerSpec("brick").label == "brick"
    assert ServerSpec("brick", 2, 8).processes == 3  # master and two workers
    assert ServerSpec("granian").processes == 2
    assert ServerSpec("waitress", 1, 4).processes == 1
    assert ServerSpec("floor").processes == 1
    assert ServerSpec("floor").label == "Python floor"


def test_commands_give_every_server_the_same_workers_and_threads() -> None:
    host, port, py = "127.0.0.1", 8123, "/py"
    brick = ServerSpec("brick", 2, 8).command("flask", host, port, py)
    assert brick == [py, "-m", "brick", "flaskapp:app", "--bind", "127.0.0.1:8123",
                     "--workers", "2", "--threads", "8"]  # fmt: skip
    gthread = ServerSpec("gunicorn-gthread", 2, 8).command("flask", host, port, py)
    assert gthread == [py, "-m", "gunicorn", "flaskapp:app", "--bind", "127.0.0.1:8123",
                       "--workers", "2", "--worker-class", "gthread", "--threads", "8"]  # fmt: skip
    sync = ServerSpec("gunicorn-sync").command("wsgi", host, port, py)
    assert sync[-2:] == ["--worker-class", "sync"]
    assert "wsgiapp:app" in sync
    granian = ServerSpec("granian", 1, 4).command("django", host, port, py)
    assert granian[:3] == [py, "-m", "granian"]
    assert granian[-1] == "djangoapp:app"
    for flag, value in (("--interface", "wsgi"), ("--port", "8123"), ("--workers", "1"),
                        ("--blocking-threads", "4"), ("--http", "1")):  # fmt: skip
        assert granian[granian.index(flag) + 1] == value
    waitress = ServerSpec("waitress", 1, 4).command("pyramid", host, port, py)
    assert waitress == [py, "-m", "waitress", "--listen=127.0.0.1:8123", "--threads=4",
                        "pyramidapp:app"]  # fmt: skip


def test_pinned() -> None:
    assert pinned(["wrk", "x"], None) == ["wrk", "x"]
    command = pinned(["wrk", "x"], 1)
    assert command[0].endswith("taskset")
    assert command[1:] == ["-c", "1", "wrk", "x"]
