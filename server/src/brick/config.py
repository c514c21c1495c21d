"""The one typed `Config`: every option, its default, its CLI flags, its help and its check.

The command line, `BRICK_CMD_ARGS`, the config file (`-c`, a Python file of `name = value`
lines, as gunicorn's) and the environment all fill this one dataclass. Its field metadata
generates the argparse parser, `--help`, `--print-config` and docs/configuration.md, so
they cannot drift apart.

Precedence, lowest first: defaults, some read from the environment (PORT, WEB_CONCURRENCY,
FORWARDED_ALLOW_IPS, SCRIPT_NAME); the config file; BRICK_CMD_ARGS; the command line.
Every value, whatever its source, goes through its field's check, and a bad one is reported
in one line naming where it came from (a `ConfigError`: the command exits 2).

Option names and meanings follow gunicorn's wherever the two servers share an option, so a
gunicorn command line works with brick for those.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import ipaddress
import os
import runpy
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any

from brick import __version__
from brick.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# gunicorn reads 0 as "no limit" for these; brick keeps a ceiling so one client cannot make a
# worker buffer gigabytes of request head. 32768 fields is gunicorn's own ceiling.
MAX_REQUEST_LINE = 1 << 20
MAX_HEADER_FIELDS = 32768
MAX_FIELD_SIZE = 1 << 20


# -- value checks: each takes what the user wrote and returns the typed value -----------
# They raise ValueError with a short phrase ("expected ..."); the caller adds which option
# and which source the value came from.


def _int(minimum: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"expected a whole number >= {minimum}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number >= {minimum}") from None
        if number < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        return number

    return check


def _limit(minimum: int, ceiling: int) -> Callable[[object], int]:
    """A size limit where 0 means "no limit" (as gunicorn), i.e. brick's ceiling."""
    whole = _int(0)

    def check(value: object) -> int:
        number = whole(value)
        if number == 0:
            return ceiling
        if not minimum <= number <= ceiling:
            raise ValueError(f"expected 0 (no limit) or a whole number from {minimum} to {ceiling}")
        return number

    return check


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number of seconds")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 <= number < float("inf"):  # also refuses NaN
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


def _ip_list(value: object) -> list[str]:
    """'*', IP addresses or networks, comma-separated; addresses in canonical form."""
    result = []
    for item in _comma_list(value):
        if item == "*":
            result.append(item)
            continue
        try:
            result.append(ipaddress.ip_address(item).compressed)
            continue
        except ValueError:
            pass
        try:
            result.append(ipaddress.ip_network(item).compressed)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address, a network or '*'") from None
    return result


class _AnyAtom(dict[str, object]):
    """Stands for every access-log atom when a format runs without a request: fits %s, %d
    and %f, and keeps each name the format asks for."""

    def __missing__(self, key: str) -> object:
        self[key] = 0
        return 0


def log_format_names(fmt: str) -> list[str]:
    """The atom names an access-log format asks for, once each, in order, as `%` itself
    reads them. Raises ValueError or TypeError for a format `%` cannot use."""
    atoms = _AnyAtom()
    fmt % atoms
    return list(atoms)


def _log_format(value: object) -> str:
    text = _str(value)
    try:
        log_format_names(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"expected a %(atom)s format: {exc}") from None
    return text


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
    if not binds:
        raise ValueError("expected at least one address")
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
    env: str | None = None,
    env_value: Callable[[str], object] | None = None,
    env_help: str | None = None,
    default_help: str | None = None,
) -> Any:
    """A Config field. `env` names an environment variable that, when set and not empty,
    replaces the default (through `env_value`, then `check`); `env_help` says so in --help.
    `default_help` describes a default whose value alone says little."""
    meta = {
        "flags": flags,
        "help": help,
        "check": check,
        "metavar": metavar,
        "action": action,
        "default": default,
        "env": env,
        "env_value": env_value or (lambda text: text),
        "env_help": env_help or (f"${env} when set" if env else None),
        "default_help": default_help,
    }
    if env is None and not isinstance(default, list):
        return field(default=default, metadata=meta)

    def factory() -> Any:
        value = _env_default(meta, os.environ)
        return copy.copy(default) if value is _UNSET else value

    return field(default_factory=factory, metadata=meta)


_UNSET: Any = object()


def _env_default(meta: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    """The checked value the environment gives this option, or _UNSET.

    A bad environment value is ignored here (a Config built directly still works); `parse`
    reports it as an error.
    """
    name = meta["env"]
    text = environ.get(name, "") if name else ""
    if not text:
        return _UNSET
    try:
        return meta["check"](meta["env_value"](text))
    except ValueError:
        return _UNSET


@dataclass
class Config:
    """Every option brick has. Field names are gunicorn's setting names where shared."""

    wsgi_app: str | None = opt(
        None,
        help="the WSGI app: MODULE, MODULE:CALLABLE, or MODULE:factory(literal args)",
        check=_opt_str,
    )
    # -- server socket
    bind: list[str] = opt(
        ["127.0.0.1:8000"],
        "-b",
        "--bind",
        help="address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable",
        check=_bind,
        metavar="ADDRESS",
        action="append",
        env="PORT",
        env_value=lambda port: [f"0.0.0.0:{port}"],
        env_help="0.0.0.0:$PORT when $PORT is set",
    )
    backlog: int = opt(2048, "--backlog", help="listen queue size", check=_int(1), metavar="INT")
    reuse_port: bool = opt(
        False,
        "--reuse-port",
        help="give each worker its own SO_REUSEPORT socket",
        check=_bool,
        action="store_true",
    )
    defer_accept: int = opt(
        1,
        "--defer-accept",
        help="TCP: seconds the kernel holds a new connection until its first bytes arrive,"
        " so accepting it and reading the request take one wake-up; 0 = off (Linux)",
        check=_int(0),
        metavar="SECONDS",
    )
    # -- processes
    workers: int = opt(
        1,
        "-w",
        "--workers",
        help="worker processes",
        check=_int(1),
        metavar="INT",
        env="WEB_CONCURRENCY",
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
        [],
        "--pythonpath",
        help="comma-separated directories to add to sys.path",
        check=_comma_list,
        metavar="DIRS",
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
        help=f"longest request line, in bytes (longer: 414); 0 = the ceiling, {MAX_REQUEST_LINE}",
        check=_limit(16, MAX_REQUEST_LINE),
        metavar="BYTES",
    )
    limit_request_fields: int = opt(
        100,
        "--limit-request-fields",
        help=f"most header fields in a request (more: 431); 0 = the ceiling, {MAX_HEADER_FIELDS}",
        check=_limit(1, MAX_HEADER_FIELDS),
        metavar="INT",
    )
    limit_request_field_size: int = opt(
        8190,
        "--limit-request-field_size",
        "--limit-request-field-size",
        help=f"largest header field, in bytes (larger: 431); 0 = the ceiling, {MAX_FIELD_SIZE}",
        check=_limit(16, MAX_FIELD_SIZE),
        metavar="BYTES",
    )
    limit_request_body: int = opt(
        1 << 30,
        "--limit-request-body",
        help="largest request body, in bytes (larger: 413)",
        check=_int(0),
        metavar="BYTES",
    )
    limit_pending_heads: int = opt(
        64 << 20,
        "--limit-pending-heads",
        help="bytes of unfinished request heads one worker holds across all its clients;"
        " past it the largest get 503 (0 = no limit)",
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
        default_help="the system's temp directory",
        metavar="DIR",
    )
    # -- proxies and mounting
    forwarded_allow_ips: list[str] = opt(
        ["127.0.0.1", "::1"],
        "--forwarded-allow-ips",
        help="comma-separated proxy addresses or networks trusted for X-Forwarded-For, "
        "-Proto and -Prefix, or '*' for any",
        check=_ip_list,
        metavar="IPS",
        env="FORWARDED_ALLOW_IPS",
    )
    root_path: str = opt(
        "",
        "--root-path",
        help="mount prefix: becomes SCRIPT_NAME and is stripped from PATH_INFO",
        check=_root_path,
        metavar="PATH",
        env="SCRIPT_NAME",
    )
    # -- logging
    accesslog: str | None = opt(
        None,
        "--access-logfile",
        help="access log file, '-' for stdout",
        check=_opt_str,
        default_help="none (no access log)",
        metavar="FILE",
    )
    access_log_format: str = opt(
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
        "--access-logformat",
        help="access log format, with gunicorn's atoms (h l u t r s b f a T D M L p m U q H B, "
        "{header}i, {header}o, {variable}e)",
        check=_log_format,
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
        help="print every request and response head to the error log (< request, > response)",
        check=_bool,
        action="store_true",
    )

    def validate(self) -> None:
        """Re-check every field, e.g. after setting attributes by hand."""
        for f in fields(self):
            set_option(self, f.name, getattr(self, f.name))


def option_name(name: str) -> str:
    """How the user knows an option: its first long flag, else its field name."""
    flags = Config.__dataclass_fields__[name].metadata["flags"]
    return next((str(flag) for flag in flags if flag.startswith("--")), name)


def set_option(config: Config, name: str, value: object, where: str = "") -> None:
    """Check `value` with the field's check and store it; a bad value is a ConfigError.

    `where` names the source for the message; a config file knows options by setting name.
    """
    meta = Config.__dataclass_fields__[name].metadata
    try:
        setattr(config, name, meta["check"](value))
    except (ValueError, TypeError) as exc:
        shown = value[0] if isinstance(value, list) and len(value) == 1 else value
        what = name if where.startswith("config file") else option_name(name)
        source = f" in {where}" if where else ""
        raise ConfigError(f"invalid value for {what}{source}: {shown!r} ({exc})") from None


def default_text(f: Field[Any]) -> str:
    """The default as the docs and --help show it."""
    meta = f.metadata
    value = meta["default"]
    text: str
    if meta["default_help"]:
        text = str(meta["default_help"])
    elif isinstance(value, bool):
        text = "on" if value else "off"
    elif value is None or value == "" or value == []:
        text = "none"
    elif isinstance(value, list):
        text = ",".join(value)
    else:
        text = str(value)
    if meta["env_help"]:
        text = f"{meta['env_help']}, else {text}"
    return text


# -- the command line -------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (no usage block)
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="brick",
        description="brick: a strict, fast pre-fork WSGI server.",
        epilog="Options also come from a config file (-c) and from $BRICK_CMD_ARGS; the "
        "command line wins over both. Reference: docs/configuration.md.",
        argument_default=argparse.SUPPRESS,
    )
    app_field = Config.__dataclass_fields__["wsgi_app"]
    parser.add_argument(
        "wsgi_app", nargs="?", metavar="MODULE:CALLABLE", help=_escape(app_field.metadata["help"])
    )
    # Command-only options: they choose what the command does, so they are not in Config.
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="a gunicorn-style Python config file of `name = value` lines, or python:MODULE",
    )
    parser.add_argument("-v", "--version", action="version", version=f"brick {__version__}")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration and load the app, then exit (0 when both are fine)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the final value of every option (as a config file) and exit",
    )
    for f in fields(Config):
        meta = f.metadata
        if not meta["flags"]:
            continue
        kwargs: dict[str, Any] = {"dest": f.name}
        help_text = meta["help"]
        if meta["action"] == "store_true":
            kwargs["action"] = "store_true"
            if meta["default"]:
                help_text += " (default: on)"
        else:
            kwargs["metavar"] = meta["metavar"]
            help_text += f" (default: {default_text(f)})"
            if meta["action"] == "append":
                kwargs["action"] = "append"
        kwargs["help"] = _escape(help_text)
        parser.add_argument(*meta["flags"], **kwargs)
    return parser


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def load_config_file(path: str) -> dict[str, Any]:
    """Run a gunicorn-style Python config file (or `python:MODULE`) and keep the options."""
    try:
        if path.startswith("python:"):
            namespace = vars(importlib.import_module(path[len("python:") :]))
        elif not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        else:
            namespace = runpy.run_path(path)
    except ConfigError:
        raise
    except SyntaxError as exc:
        raise ConfigError(
            f"syntax error in config file {path}, line {exc.lineno}: {exc.msg}"
        ) from None
    except (Exception, SystemExit) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"error in config file {path}: {exc.__class__.__name__}: {detail}"
        ) from None
    known = {f.name for f in fields(Config)}
    return {k: v for k, v in namespace.items() if k in known}


@dataclass
class Invocation:
    """What the command line asked for: the config, and any one-shot action."""

    config: Config
    check_config: bool = False
    print_config: bool = False


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Invocation:
    """Build the Config from the environment, the config file, BRICK_CMD_ARGS and `argv`."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    cli = vars(parser.parse_args(list(argv)))
    from_env: dict[str, Any] = {}
    env_args = environ.get("BRICK_CMD_ARGS", "")
    if env_args:
        try:
            from_env = vars(parser.parse_args(shlex.split(env_args)))
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"invalid BRICK_CMD_ARGS: {exc}") from None

    actions = {}
    for name in ("config", "check_config", "print_config"):
        actions[name] = cli.pop(name, None) or from_env.pop(name, None)
        from_env.pop(name, None)
    config_path = actions["config"]
    from_file = load_config_file(config_path) if config_path else {}

    config = Config()
    for f in fields(Config):  # defaults from `environ`, whatever os.environ holds
        meta = f.metadata
        if meta["env"] is None:
            continue
        setattr(config, f.name, copy.copy(meta["default"]))
        text = environ.get(meta["env"], "")
        if text:
            try:
                setattr(config, f.name, meta["check"](meta["env_value"](text)))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"invalid ${meta['env']}: {text!r} ({exc})") from None
    layers = (
        (f"config file {config_path}", from_file),
        ("BRICK_CMD_ARGS", from_env),
        ("", cli),
    )
    for where, values in layers:
        for name, value in values.items():
            set_option(config, name, value, where)
    if config.wsgi_app is None and not actions["print_config"]:
        raise ConfigError("no app given: brick MODULE:CALLABLE [options]")
    return Invocation(
        config,
        check_config=bool(actions["check_config"]),
        print_config=bool(actions["print_config"]),
    )


def describe(config: Config) -> str:
    """`--print-config`: every option and its final value, one per line (a valid config file)."""
    width = max(len(f.name) for f in fields(config))
    return "\n".join(f"{f.name:<{width}} = {getattr(config, f.name)!r}" for f in fields(config))


# -- docs/configuration.md --------------------------------------------------------------

REFERENCE_HEADER = """\
# Configuration reference

<!-- Generated from brick.config.Config; do not edit by hand. Regenerate with:
     python -c "import brick.config as c; print(c.reference(), end='')" > docs/configuration.md
-->

Every option can be set in four places. Later ones win:

1. the default (a few defaults come from the environment, as noted below; a variable counts
   when it is set and not empty);
2. the config file given with `-c FILE` (a Python file of `name = value` lines, as gunicorn's;
   `-c python:MODULE` imports a module instead); the name to use is the *setting* below;
3. the `BRICK_CMD_ARGS` environment variable, holding command-line options;
4. the command line.

A bad value, from any of them, ends the command with one line on stderr and exit code 2.
Options shared with gunicorn have gunicorn's names and meanings, so a gunicorn command line
works with brick for those.

## Command-only options

| flags | meaning |
|---|---|
"""


def reference() -> str:
    """The Markdown reference of every option (docs/configuration.md)."""
    lines = [REFERENCE_HEADER.rstrip("\n")]
    parser = build_parser()
    for action in parser._actions:
        if action.dest in Config.__dataclass_fields__:
            continue
        flags = ", ".join(f"`{s}`" for s in action.option_strings)
        lines.append(f"| {flags} | {_cell(action.help or '')} |")
    lines += [
        "",
        "## Options",
        "",
        "| setting | flags | default | meaning |",
        "|---|---|---|---|",
    ]
    for f in fields(Config):
        meta = f.metadata
        flags = ", ".join(
            f"`{flag} {meta['metavar']}`" if meta["metavar"] else f"`{flag}`"
            for flag in meta["flags"]
        )
        if not flags:
            flags = "first argument `MODULE:CALLABLE`"
        lines.append(f"| `{f.name}` | {flags} | {_cell(default_text(f))} | {_cell(meta['help'])} |")
    from brick.logs import ATOMS

    lines += [
        "",
        "## Access log atoms",
        "",
        '`--access-logformat` is a Python %-format over these names, e.g. `%(h)s "%(r)s" %(s)s`.'
        ' Header and variable names are case-insensitive; a missing value is `-`; `"` in a value'
        ' is written `\\"`, as gunicorn does.',
        "",
        "| atom | value |",
        "|---|---|",
    ]
    lines += [f"| `{atom}` | {_cell(text)} |" for atom, text in ATOMS.items()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
