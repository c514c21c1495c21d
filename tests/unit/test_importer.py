"""Loading the app named on the command line: the forms gunicorn accepts, and one clear
line (an AppImportError) for every way it can fail, with the traceback at debug level only."""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from brick.errors import AppImportError, ConfigError
from brick.importer import _parse_target, load_app, prepare_path

pytestmark = pytest.mark.unit

_counter = itertools.count()

APP_SOURCE = """
def application(environ, start_response):
    return [b"application"]

def app(environ, start_response):
    return [b"app"]

class holder:
    inner = staticmethod(app)

def factory(*args, **kwargs):
    def made(environ, start_response):
        return [repr((args, kwargs)).encode()]
    return made

def broken_factory():
    raise KeyError("factory\\nbroke")

def returns_none():
    return None

value = 42
"""


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write a uniquely named module into a directory on sys.path; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str = APP_SOURCE) -> str:
        name = f"importer_fixture_{os.getpid()}_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def call(app: Any) -> bytes:
    return b"".join(app({}, lambda *a: None))


def load_error(spec: str) -> str:
    with pytest.raises(AppImportError) as info:
        load_app(spec)
    assert info.value.exit_code == 1
    message = str(info.value)
    assert message and "\n" not in message
    return message


# -- the forms -----------------------------------------------------------------------------


def test_module_alone_means_application(make_module: Callable[..., str]) -> None:
    assert call(load_app(make_module())) == b"application"


def test_module_colon_name(make_module: Callable[..., str]) -> None:
    assert call(load_app(f"{make_module()}:app")) == b"app"


def test_dotted_attribute(make_module: Callable[..., str]) -> None:
    assert call(load_app(f"{make_module()}:holder.inner")) == b"app"


def test_factory_without_arguments(make_module: Callable[..., str]) -> None:
    assert call(load_app(f"{make_module()}:factory()")) == b"((), {})"


def test_factory_with_literal_arguments(make_module: Callable[..., str]) -> None:
    app = load_app(f"{make_module()}:factory('arg', x=1)")
    assert call(app) == b"(('arg',), {'x': 1})"
    app = load_app(f"{make_module()}:factory([1, 2], flag=True, none=None, d={{'k': -1.5}})")
    assert call(app) == b"(([1, 2],), {'flag': True, 'none': None, 'd': {'k': -1.5}})"


def test_package_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / f"importer_pkg_{os.getpid()}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "web.py").write_text(APP_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert call(load_app(f"{package.name}.web:app")) == b"app"
    finally:
        sys.modules.pop(f"{package.name}.web", None)
        sys.modules.pop(package.name, None)


def test_parse_target() -> None:
    assert _parse_target("m") == ("m", "application", None, {})
    assert _parse_target("m:") == ("m", "application", None, {})
    assert _parse_target("m.n:a.b") == ("m.n", "a.b", None, {})
    assert _parse_target("m:f()") == ("m", "f", (), {})
    assert _parse_target("m:f(1, 'a', k=(1, 2))") == ("m", "f", (1, "a"), {"k": (1, 2)})


# -- failures: one line each ---------------------------------------------------------------


def test_missing_module() -> None:
    assert (
        load_error("importer_no_such_module_xyz") == "no module named 'importer_no_such_module_xyz'"
    )


def test_missing_submodule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / f"importer_pkg2_{os.getpid()}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_error(f"{package.name}.nope:app") == f"no module named '{package.name}.nope'"
    finally:
        sys.modules.pop(package.name, None)


def test_module_whose_dependency_is_missing(make_module: Callable[..., str]) -> None:
    name = make_module("import importer_missing_dependency_xyz\n")
    message = load_error(name)
    assert message.startswith(f"error importing '{name}': ModuleNotFoundError")
    assert "importer_missing_dependency_xyz" in message


def test_missing_attribute(make_module: Callable[..., str]) -> None:
    name = make_module()
    assert load_error(f"{name}:nope") == f"module '{name}' has no attribute 'nope'"
    assert load_error(f"{name}:holder.nope") == f"module '{name}' has no attribute 'holder.nope'"


def test_module_without_application(make_module: Callable[..., str]) -> None:
    name = make_module("x = 1\n")
    assert load_error(name) == f"module '{name}' has no attribute 'application'"


def test_not_callable(make_module: Callable[..., str]) -> None:
    name = make_module()
    assert load_error(f"{name}:value") == f"{name}:value is not callable (its type is int)"
    assert "is not callable" in load_error(f"{name}:value()")


def test_factory_returning_a_non_app(make_module: Callable[..., str]) -> None:
    name = make_module()
    assert "is not callable (its type is NoneType)" in load_error(f"{name}:returns_none()")


def test_module_raising_on_import(make_module: Callable[..., str]) -> None:
    name = make_module("raise RuntimeError('boom\\nsecond line')\n")
    assert load_error(name) == f"error importing '{name}': RuntimeError: boom second line"


def test_module_with_syntax_error(make_module: Callable[..., str]) -> None:
    name = make_module("def (:\n")
    assert load_error(name).startswith(f"error importing '{name}': SyntaxError")


def test_module_calling_sys_exit(make_module: Callable[..., str]) -> None:
    name = make_module("import sys\nsys.exit(3)\n")
    assert load_error(name) == f"error importing '{name}': SystemExit: 3"


def test_factory_raising(make_module: Callable[..., str]) -> None:
    name = make_module()
    assert load_error(f"{name}:broken_factory()") == (
        f"app factory {name}:broken_factory failed: KeyError: 'factory\\nbroke'"
    )


@pytest.mark.parametrize(
    "spec",
    [
        ":app",
        "my-app:app",
        "m:app[0]",
        "m:1abc",
        "m:f(x)",
        "m:f(*a)",
        "m:f(**k)",
        "m:f(open('x'))",
        "m:f(",
    ],
)
def test_invalid_specs(spec: str) -> None:
    assert load_error(spec).startswith(f"invalid app {spec!r}")


# -- the traceback: debug level only -------------------------------------------------------


def test_traceback_is_logged_at_debug_only(
    make_module: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    name = make_module("raise RuntimeError('boom')\n")
    with caplog.at_level(logging.DEBUG, logger="brick.error"):
        load_error(name)
    records = [r for r in caplog.records if r.exc_info]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert "RuntimeError: boom" in caplog.text and "Traceback" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="brick.error"):
        load_error(name)
    assert caplog.text == ""


# -- --chdir and --pythonpath --------------------------------------------------------------


@pytest.fixture
def saved_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(os.getcwd())  # restored after the test


@pytest.mark.usefixtures("saved_path")
def test_chdir_and_pythonpath(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "libs").mkdir()
    prepare_path(str(tmp_path / "work"), ["libs", str(tmp_path)])
    assert os.getcwd() == str(tmp_path / "work")
    # --pythonpath is relative to the new directory, made absolute; then the directory itself.
    assert sys.path[:3] == [str(tmp_path / "work"), str(tmp_path / "work" / "libs"), str(tmp_path)]


@pytest.mark.usefixtures("saved_path")
def test_current_directory_is_importable(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    prepare_path(None, [])
    assert sys.path[0] == str(tmp_path)


@pytest.mark.usefixtures("saved_path")
def test_missing_chdir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prepare_path(str(tmp_path / "nope"), [])
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f"cannot change to directory '{tmp_path / 'nope'}': No such file or directory"
    )
