"""The `brick` command: parse options, load logs and (maybe) the app, bind, run the master.

Every failure the user can fix ends with one line on stderr: exit 2 for a bad option,
1 for an app that cannot be loaded or an address that cannot be bound.
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
    print(f"brick: error: {message}", file=sys.stderr)
    return code


def app_loader(config: Config) -> WSGIApp:
    prepare_path(config.chdir, config.pythonpath)
    assert config.wsgi_app is not None
    app: WSGIApp = load_app(config.wsgi_app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    try:
        invocation = parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        return _fail(str(exc), exc.exit_code)
    config = invocation.config
    if invocation.print_config:
        print(describe(config))
        return 0
    try:
        errors = setup_error_log(config.errorlog, config.loglevel)
    except OSError as exc:
        return _fail(f"cannot open the error log {config.errorlog}: {exc.strerror}", 2)

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
        return _fail(f"cannot listen: {exc.strerror or exc}", 1)
    except ValueError as exc:
        return _fail(str(exc), 2)
    try:
        code = arbiter.run()
    except KeyboardInterrupt:
        code = 0
    if arbiter.failure:
        return _fail(arbiter.failure, code or 1)
    return code
