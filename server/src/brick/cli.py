"""The `brick` command: parse options, open the logs, load the app (maybe), bind, run the master.

The order follows gunicorn: the config is read first (relative `-c` paths are relative to
where the command was started), then `--chdir` and `--pythonpath` apply, so the log files,
the pidfile, unix sockets and the app are all found relative to the new directory.

Every failure the user can fix ends with one line on stderr, `brick: error: ...`: exit 2 for
a bad option, 1 for an app that cannot be loaded or an address that cannot be bound.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from brick.arbiter import Arbiter
from brick.config import Config, describe, parse
from brick.errors import AppImportError, ConfigError
from brick.importer import load_app, prepare_path
from brick.logs import setup_error_log
from brick.wsgi import WSGIApp


def _fail(message: str, code: int) -> int:
    print(f"brick: error: {message}", file=sys.stderr, flush=True)
    return code


def app_loader(config: Config) -> WSGIApp:
    assert config.wsgi_app is not None
    app: WSGIApp = load_app(config.wsgi_app)
    return app


def _check_writable(path: str | None, what: str) -> None:
    """Open a log file in the master, so a bad path is one line and exit 2 here rather
    than a crash in every worker."""
    if path is None or path == "-":
        return
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot open the {what} {path}: {exc.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        invocation = parse(sys.argv[1:] if argv is None else argv)
        config = invocation.config
        if invocation.print_config:
            print(describe(config))
            return 0
        prepare_path(config.chdir, config.pythonpath)
        _check_writable(config.errorlog, "error log")
        _check_writable(config.accesslog, "access log")
        errors = setup_error_log(config.errorlog, config.loglevel)
    except ConfigError as exc:
        return _fail(str(exc), exc.exit_code)

    app: WSGIApp | None = None
    if config.preload_app or invocation.check_config:
        try:
            app = app_loader(config)
        except AppImportError as exc:
            return _fail(str(exc), exc.exit_code)
    if invocation.check_config:
        print(f"brick: configuration OK; app {config.wsgi_app} loads")
        return 0

    arbiter = Arbiter(config, lambda: app_loader(config), app=app, errors=errors)
    try:
        arbiter.bind()
    except OSError as exc:
        where = f" on {exc.filename}" if exc.filename else ""
        return _fail(f"cannot listen{where}: {exc.strerror or exc}", 1)
    except ValueError as exc:
        return _fail(str(exc), 2)
    try:
        code = arbiter.run()
    except KeyboardInterrupt:
        code = 0
    if arbiter.failure:
        return _fail(arbiter.failure, code or 1)
    return code
