"""Loads the WSGI app named on the command line: `MODULE`, `MODULE:NAME`, `MODULE:a.b`,
or `MODULE:factory(args)` with literal arguments (as gunicorn accepts).

Every failure becomes an `AppImportError` with one line saying what went wrong (the CLI
exits 1); the traceback is logged at debug level only. A `--chdir` that cannot be entered is
a `ConfigError` (exit 2), like any other bad option value.
"""

from __future__ import annotations

import ast
import importlib
import logging
import os
import sys
from typing import Any

from brick.errors import AppImportError, ConfigError

log = logging.getLogger("brick.error")


def _parse_target(spec: str) -> tuple[str, str, tuple[Any, ...] | None, dict[str, Any]]:
    module, _, expr = spec.partition(":")
    expr = expr or "application"
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise AppImportError(f"invalid app {spec!r}: expected MODULE:CALLABLE")
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppImportError(f"invalid app {spec!r}: cannot parse {expr!r}") from None
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] = {}
    if isinstance(node, ast.Call):
        try:
            if any(k.arg is None for k in node.keywords):
                raise ValueError("**kwargs")
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise AppImportError(
                f"invalid app {spec!r}: factory arguments must be literals"
            ) from None
        node = node.func
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise AppImportError(f"invalid app {spec!r}: expected a name after ':'")
    parts.append(node.id)
    return module, ".".join(reversed(parts)), args, kwargs


def prepare_path(chdir: str | None, pythonpath: list[str]) -> None:
    """`--chdir`, then `--pythonpath` (relative to the new directory), then the directory
    itself at the front of sys.path, so `brick app:app` finds ./app.py (as gunicorn)."""
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise ConfigError(f"cannot change to directory {chdir!r}: {exc.strerror}") from None
    for path in reversed([os.path.abspath(p) for p in pythonpath]):
        if path not in sys.path:
            sys.path.insert(0, path)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def load_app(spec: str) -> Any:
    module_name, attr, args, kwargs = _parse_target(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        log.debug("import of %s failed", module_name, exc_info=True)
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppImportError(f"no module named {module_name!r}") from None
        raise AppImportError(f"error importing {module_name!r}: {_one_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # SystemExit: a module that calls sys.exit()
        log.debug("import of %s failed", module_name, exc_info=True)
        raise AppImportError(f"error importing {module_name!r}: {_one_line(exc)}") from None
    obj: Any = module
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise AppImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    if args is not None:
        if not callable(obj):
            raise AppImportError(f"{module_name}:{attr} is not callable")
        try:
            obj = obj(*args, **kwargs)
        except (Exception, SystemExit) as exc:
            log.debug("app factory failed", exc_info=True)
            raise AppImportError(
                f"app factory {module_name}:{attr} failed: {_one_line(exc)}"
            ) from None
    if not callable(obj):
        raise AppImportError(
            f"{module_name}:{attr} is not callable (its type is {type(obj).__name__})"
        )
    return obj
