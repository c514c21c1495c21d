"""The one typed `Config`: every option, its default, its CLI flags, its help and its check.

The command line, `BRICK_CMD_ARGS`, the config file (`-c`, a Python file of `name = value`
lines, as gunicorn's) and the environment all fill this one dataclass. Its field metadata
generates the argparse parser, so `--help`, the docs and the code cannot drift apart.

Precedence: defaults (some read from the environment: PORT, WEB_CONCURRENCY,
FORWARDED_ALLOW_IPS, SCRIPT_NAME) < config file < BRICK_CMD_ARGS < command line.
Option names and meanings follow gunicorn's wherever the two servers share an option.
"""

from __future__ import annotations

import argparse
import os
import runpy
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from brick import __version__
from brick.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


# -- value checks: each takes what the user wrote and returns the typed value -----------


def _int(minimum: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        number = int(value) if isinstance(value, (int, str)) else None
        if number is None or number < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        return number

    return check


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number of seconds")
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError("expected a number of seconds >= 0")
    return number


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _str_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("expected a string or a list of strings")


def _comma_list(value: object) -> list[str]:
    items = _str_list(value)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _log_level(value: object) -> str:
    text = _str(value).lower()
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return text


def _root_path(value: object) -> str:
    text = _str(value).rstrip("/")
    if text and not text.startswith("/"):
        raise ValueError("must start with '/'")
    return text


def _bind(value: object) -> list[str]:
    from brick.listeners import parse_address

    binds = _str_list(value)
    for bind in binds:
        parse_address(bind)
    return binds


# -- option metadata --------------------------------------------------------------------


def opt(
    default: Any,
    *flags: str,
    help: str,
    check: Callable[[object], Any],
    metavar: str | None = None,
    action: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    meta = {"flags": flags, "help": help, "check": check, "metavar": metavar, "action": action}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _default_bind() -> list[str]:
    port = os.environ.get("PORT")
    return [f"0.0.0.0:{port}"] if port else ["127.0.0.1:8000"]


def _default_workers() -> int:
    try:
        return max(1, int(os.environ.get("WEB_CONCURRENCY", "1")))
    except ValueError:
        return 1


def _env(name: str, default: str) -> Callable[[], str]:
    return lambda: os.environ.get(name, default)


DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


@dataclass
class Config:
    """Every option brick has. Field names are gunicorn's setting names where shared."""

    wsgi_app: str | None = opt(
        None, help="the app as MODULE:CALLABLE or MODULE:factory(args)", check=_opt_str
    )
    # -- server socket
    bind: list[str] = opt(
        None,
        "-b",
        "--bind",
        help="address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable "
        "(default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set)",
        check=_bind,
        metavar="ADDRESS",
        action="append",
        default_factory=_default_bind,
    )
    backlog: int = opt(2048, "--backlog", help="listen queue size", check=_int(1), metavar="INT")
    reuse_port: bool = opt(
        False,
        "--reuse-port",
        help="give each worker its own SO_REUSEPORT socket",
        check=_bool,
        action="store_true",
    )
    # -- processes
    workers: int = opt(
        None,
        "-w",
        "--workers",
        help="worker processes (default $WEB_CONCURRENCY, else 1)",
        check=_int(1),
        metavar="INT",
        default_factory=_default_workers,
    )
    threads: int = opt(
        1,
        "--threads",
        help="app threads per worker; 1 runs the app in the event-loop thread",
        check=_int(1),
        metavar="INT",
    )
    worker_connections: int = opt(
        1000,
        "--worker-connections",
        help="open connections per worker; beyond it, new ones wait in the backlog",
        check=_int(1),
        metavar="INT",
    )
    timeout: float = opt(
        30,
        "-t",
        "--timeout",
        help="seconds a worker may be silent (stuck in one request) before it is killed; 0 = off",
        check=_seconds,
        metavar="SECONDS",
    )
    graceful_timeout: float = opt(
        30,
        "--graceful-timeout",
        help="seconds in-flight requests get to finish on TERM or HUP",
        check=_seconds,
        metavar="SECONDS",
    )
    max_requests: int = opt(
        0,
        "--max-requests",
        help="restart a worker gracefully after this many requests; 0 = never",
        check=_int(0),
        metavar="INT",
    )
    max_requests_jitter: int = opt(
        0,
        "--max-requests-jitter",
        help="add up to this many requests, at random, to --max-requests per worker",
        check=_int(0),
        metavar="INT",
    )
    preload_app: bool = opt(
        False,
        "--preload",
        help="import the app once in the master, before forking",
        check=_bool,
        action="store_true",
    )
    reload: bool = opt(
        False,
        "--reload",
        help="restart workers when a source file changes (development)",
        check=_bool,
        action="store_true",
    )
    pidfile: str | None = opt(
        None,
        "-p",
        "--pid",
        help="write the master's PID to this file",
        check=_opt_str,
        metavar="FILE",
    )
    proc_name: str | None = opt(
        None,
        "-n",
        "--name",
        help="process title base (needs setproctitle)",
        check=_opt_str,
        metavar="STRING",
    )
    # -- loading the app
    chdir: str | None = opt(
        None,
        "--chdir",
        help="change to this directory before loading the app",
        check=_opt_str,
        metavar="DIR",
    )
    pythonpath: list[str] = opt(
        None,
        "--pythonpath",
        help="comma-separated directories to add to sys.path",
        check=_comma_list,
        metavar="DIRS",
        default_factory=list,
    )
    # -- HTTP limits and timeouts
    keepalive: float = opt(
        5,
        "--keep-alive",
        help="seconds an idle keep-alive connection is kept open",
        check=_seconds,
        metavar="SECONDS",
    )
    header_timeout: float = opt(
        10,
        "--header-timeout",
        help="seconds a client gets to send a whole request head (slowloris guard)",
        check=_seconds,
        metavar="SECONDS",
    )
    body_timeout: float = opt(
        30,
        "--body-timeout",
        help="seconds of silence allowed while a request body is being received",
        check=_seconds,
        metavar="SECONDS",
    )
    send_timeout: float = opt(
        30,
        "--send-timeout",
        help="seconds a client may stall reading a large response before it is dropped",
        check=_seconds,
        metavar="SECONDS",
    )
    limit_request_line: int = opt(
        4094,
        "--limit-request-line",
        help="longest request line, in bytes (longer: 414)",
        check=_int(16),
        metavar="BYTES",
    )
    limit_request_fields: int = opt(
        100,
        "--limit-request-fields",
        help="most header fields in a request (more: 431)",
        check=_int(1),
        metavar="INT",
    )
    limit_request_field_size: int = opt(
        8190,
        "--limit-request-field_size",
        "--limit-request-field-size",
        help="largest header field, in bytes (larger: 431)",
        check=_int(16),
        metavar="BYTES",
    )
    limit_request_body: int = opt(
        1 << 30,
        "--limit-request-body",
        help="largest request body, in bytes (larger: 413)",
        check=_int(0),
        metavar="BYTES",
    )
    body_spool_threshold: int = opt(
        1 << 20,
        "--body-spool-threshold",
        help="request bodies larger than this are spooled to a temp file",
        check=_int(0),
        metavar="BYTES",
    )
    tmp_upload_dir: str | None = opt(
        None,
        "--tmp-upload-dir",
        help="directory for spooled request bodies",
        check=_opt_str,
        metavar="DIR",
    )
    # -- proxies and mounting
    forwarded_allow_ips: list[str] = opt(
        None,
        "--forwarded-allow-ips",
        help="comma-separated proxy IPs trusted for X-Forwarded-For/-Proto/-Prefix, or '*' "
        "(default $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1)",
        check=_comma_list,
        metavar="IPS",
        default_factory=lambda: _comma_list(_env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")()),
    )
    root_path: str = opt(
        None,
        "--root-path",
        help="mount prefix: becomes SCRIPT_NAME and is stripped from PATH_INFO "
        "(default $SCRIPT_NAME)",
        check=_root_path,
        metavar="PATH",
        default_factory=_env("SCRIPT_NAME", ""),
    )
    # -- logging
    accesslog: str | None = opt(
        None,
        "--access-logfile",
        help="access log file, '-' for stdout (default: none)",
        check=_opt_str,
        metavar="FILE",
    )
    access_log_format: str = opt(
        DEFAULT_ACCESS_LOG_FORMAT,
        "--access-logformat",
        help="access log format, with gunicorn's atoms (h l u t r s b f a T D M ...)",
        check=_str,
        metavar="FORMAT",
    )
    errorlog: str = opt(
        "-",
        "--error-logfile",
        "--log-file",
        help="error log file, '-' for stderr",
        check=_str,
        metavar="FILE",
    )
    loglevel: str = opt(
        "info",
        "--log-level",
        help="error log level: " + ", ".join(LOG_LEVELS),
        check=_log_level,
        metavar="LEVEL",
    )
    debug_http: bool = opt(
        False,
        "--debug-http",
        help="print every request and response head (< request, > response)",
        check=_bool,
        action="store_true",
    )

    def validate(self) -> None:
        """Re-check every field (values from a config file arrive untyped)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None and f.default_factory is None:
                continue
            try:
                setattr(self, f.name, f.metadata["check"](value))
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"invalid value for {option_name(f.name)}: {value!r} ({exc})"
                ) from None


def option_name(name: str) -> str:
    for f in fields(Config):
        if f.name == name and f.metadata["flags"]:
            return str(f.metadata["flags"][-1])
    return name


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="brick",
        description="brick: a strict, fast pre-fork WSGI server.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "wsgi_app",
        nargs="?",
        metavar="MODULE:CALLABLE",
        help="the WSGI app, e.g. myapp:app or myapp:create_app()",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="a Python config file")
    parser.add_argument("--version", action="version", version=f"brick {__version__}")
    parser.add_argument(
        "--check-config", action="store_true", help="check the configuration and the app; exit"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the final configuration; exit"
    )
    for f in fields(Config):
        meta = f.metadata
        if not meta["flags"]:
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if meta["action"] == "store_true":
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = meta["metavar"]
            if meta["action"] == "append":
                kwargs["action"] = "append"
        parser.add_argument(*meta["flags"], **kwargs)
    return parser


def load_config_file(path: str) -> dict[str, Any]:
    """Run a gunicorn-style Python config file and keep the names that are options."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        namespace = runpy.run_path(path)
    except Exception as exc:
        raise ConfigError(f"error in config file {path}: {exc.__class__.__name__}: {exc}") from None
    known = {f.name for f in fields(Config)}
    return {k: v for k, v in namespace.items() if k in known}


@dataclass
class Invocation:
    """What the command line asked for: the config, and any one-shot action."""

    config: Config
    check_config: bool = False
    print_config: bool = False


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Invocation:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    cli = vars(parser.parse_args(list(argv)))
    env_args = environ.get("BRICK_CMD_ARGS", "")
    from_env: dict[str, Any] = {}
    if env_args:
        try:
            from_env = vars(parser.parse_args(shlex.split(env_args)))
        except ValueError as exc:
            raise ConfigError(f"invalid BRICK_CMD_ARGS: {exc}") from None

    config_path = cli.pop("config", None) or from_env.pop("config", None)
    from_env.pop("config", None)
    from_file = load_config_file(config_path) if config_path else {}

    check = bool(cli.pop("check_config", False) or from_env.pop("check_config", False))
    show = bool(cli.pop("print_config", False) or from_env.pop("print_config", False))
    from_env.pop("check_config", None)
    from_env.pop("print_config", None)

    config = Config()
    for source in (from_file, from_env, cli):
        for name, value in source.items():
            setattr(config, name, value)
    config.validate()
    if config.wsgi_app is None and not show:
        raise ConfigError("no app given: brick MODULE:CALLABLE [options]")
    return Invocation(config, check_config=check, print_config=show)


def describe(config: Config) -> str:
    """`--print-config`: every option and its final value, one per line."""
    width = max(len(f.name) for f in fields(config))
    return "\n".join(f"{f.name:<{width}} = {getattr(config, f.name)!r}" for f in fields(config))
