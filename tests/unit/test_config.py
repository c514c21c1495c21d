"""Config: one dataclass behind the CLI, the config file, BRICK_CMD_ARGS, the environment,
--help, --print-config and docs/configuration.md; gunicorn's names and meanings."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from brick import config as config_module
from brick.config import Config, ConfigError, build_parser, describe, parse, reference

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
APP = ["cli_app:application"]


def parse_ok(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    return parse(argv, environ or {}).config


def parse_error(argv: list[str], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(argv, environ or {})
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message and message
    return message


# -- the dataclass is the single source ----------------------------------------------------


def test_every_field_has_help_check_and_flags() -> None:
    for f in fields(Config):
        meta = f.metadata
        assert meta["help"], f.name
        assert callable(meta["check"]), f.name
        if f.name != "wsgi_app":
            assert any(flag.startswith("--") for flag in meta["flags"]), f.name


def test_defaults_pass_their_own_checks() -> None:
    config = Config()
    before = {f.name: getattr(config, f.name) for f in fields(config)}
    config.validate()
    assert {f.name: getattr(config, f.name) for f in fields(config)} == before


def test_parser_dests_are_config_fields() -> None:
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    option_dests = dests - {"help", "version", "config", "check_config", "print_config"}
    assert option_dests == {f.name for f in fields(Config)}


def test_help_lists_every_option_with_its_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping, so each help text is one run
    text = " ".join(build_parser().format_help().split())
    for f in fields(Config):
        for flag in f.metadata["flags"]:
            assert flag in text, flag
        assert " ".join(f.metadata["help"].split()) in text, f.name


def test_docs_configuration_md_is_generated_from_config() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == reference(), (
        "docs/configuration.md is out of date; regenerate it with: "
        "python -c \"import brick.config as c; print(c.reference(), end='')\" "
        "> docs/configuration.md"
    )


def test_reference_names_every_option_flag_and_default() -> None:
    text = reference()
    for f in fields(Config):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{f.name}` |"))
        for flag in f.metadata["flags"]:
            assert f"`{flag}" in row
        assert config_module.default_text(f).replace("|", "\\|") in row


def test_print_config_round_trips_as_a_config_file(tmp_path: Path) -> None:
    config = parse_ok([*APP, "-w", "3", "-b", "unix:/tmp/x.sock", "--root-path", "/mnt"])
    path = tmp_path / "printed.py"
    path.write_text(describe(config))
    again = parse_ok(["-c", str(path)])
    assert again == config


# -- precedence ----------------------------------------------------------------------------


def test_precedence_defaults_file_env_args_command_line(tmp_path: Path) -> None:
    conf = tmp_path / "brick.conf.py"
    conf.write_text("workers = 3\n")
    env = {"WEB_CONCURRENCY": "2"}
    assert parse_ok(APP).workers == 1
    assert parse_ok(APP, env).workers == 2
    assert parse_ok([*APP, "-c", str(conf)], env).workers == 3
    env["BRICK_CMD_ARGS"] = "-w 4"
    assert parse_ok([*APP, "-c", str(conf)], env).workers == 4
    assert parse_ok([*APP, "-c", str(conf), "-w", "5"], env).workers == 5


def test_config_file_named_in_brick_cmd_args(tmp_path: Path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text("threads = 7\nwsgi_app = 'cli_app:factory()'\n")
    config = parse_ok([], {"BRICK_CMD_ARGS": f"-c {conf}"})
    assert (config.threads, config.wsgi_app) == (7, "cli_app:factory()")


def test_bind_from_the_command_line_replaces_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text("bind = ['127.0.0.1:1', '127.0.0.1:2']\n")
    assert parse_ok([*APP, "-c", str(conf)]).bind == ["127.0.0.1:1", "127.0.0.1:2"]
    assert parse_ok([*APP, "-c", str(conf), "-b", "unix:/s", "-b", "fd://3"]).bind == [
        "unix:/s",
        "fd://3",
    ]


def test_config_file_ignores_names_that_are_not_options(tmp_path: Path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text("import os\nworker_class = 'sync'\n_private = 1\nloglevel = 'DEBUG'\n")
    assert parse_ok([*APP, "-c", str(conf)]).loglevel == "debug"


def test_config_from_python_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cli_conf_module.py").write_text("workers = 6\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert parse_ok([*APP, "-c", "python:cli_conf_module"]).workers == 6


# -- environment defaults ------------------------------------------------------------------


def test_plain_defaults() -> None:
    config = parse_ok(APP)
    assert config.bind == ["127.0.0.1:8000"]
    assert config.workers == 1
    assert config.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert config.root_path == ""


def test_environment_defaults() -> None:
    env = {
        "PORT": "9123",
        "WEB_CONCURRENCY": "4",
        "FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2",
        "SCRIPT_NAME": "/mounted/",
    }
    config = parse_ok(APP, env)
    assert config.bind == ["0.0.0.0:9123"]
    assert config.workers == 4
    assert config.forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"]
    assert config.root_path == "/mounted"


def test_environment_defaults_lose_to_options() -> None:
    env = {"PORT": "9123", "WEB_CONCURRENCY": "4", "SCRIPT_NAME": "/a"}
    config = parse_ok([*APP, "-b", "127.0.0.1:1", "-w", "2", "--root-path", "/b"], env)
    assert (config.bind, config.workers, config.root_path) == (["127.0.0.1:1"], 2, "/b")


def test_parse_ignores_os_environ_when_given_an_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    config = parse_ok(APP, {})
    assert (config.bind, config.workers) == (["127.0.0.1:8000"], 1)


def test_config_built_directly_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("WEB_CONCURRENCY", "nonsense")  # ignored here; parse() reports it
    config = Config()
    assert (config.bind, config.workers) == (["0.0.0.0:9999"], 1)


def test_empty_environment_variables_count_as_unset() -> None:
    config = parse_ok(APP, {"PORT": "", "WEB_CONCURRENCY": "", "FORWARDED_ALLOW_IPS": ""})
    assert (config.bind, config.workers) == (["127.0.0.1:8000"], 1)
    assert config.forwarded_allow_ips == ["127.0.0.1", "::1"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "http"), ("WEB_CONCURRENCY", "many"), ("FORWARDED_ALLOW_IPS", "proxy.local")],
)
def test_bad_environment_value_names_the_variable(name: str, value: str) -> None:
    message = parse_error(APP, {name: value})
    assert message.startswith(f"invalid ${name}: {value!r}")


# -- values --------------------------------------------------------------------------------


def test_gunicorn_spellings() -> None:
    config = parse_ok(
        [*APP, "--limit-request-field_size", "100", "--log-file", "/tmp/e.log", "-p", "/tmp/p"]
    )
    assert (config.limit_request_field_size, config.errorlog, config.pidfile) == (
        100,
        "/tmp/e.log",
        "/tmp/p",
    )
    assert parse_ok([*APP, "--limit-request-field-size", "200"]).limit_request_field_size == 200


def test_zero_limits_mean_the_ceiling_as_gunicorns_no_limit() -> None:
    config = parse_ok(
        [
            *APP,
            "--limit-request-line",
            "0",
            "--limit-request-fields",
            "0",
            "--limit-request-field_size",
            "0",
        ]
    )
    assert config.limit_request_line == config_module.MAX_REQUEST_LINE
    assert config.limit_request_fields == config_module.MAX_HEADER_FIELDS
    assert config.limit_request_field_size == config_module.MAX_FIELD_SIZE


def test_forwarded_allow_ips_forms() -> None:
    config = parse_ok([*APP, "--forwarded-allow-ips", "10.0.0.1,0:0::1, 192.168.0.0/16"])
    assert config.forwarded_allow_ips == ["10.0.0.1", "::1", "192.168.0.0/16"]
    assert parse_ok([*APP, "--forwarded-allow-ips", "*"]).forwarded_allow_ips == ["*"]
    assert parse_ok([*APP, "--forwarded-allow-ips", ""]).forwarded_allow_ips == []


def test_pythonpath_is_comma_separated() -> None:
    assert parse_ok([*APP, "--pythonpath", "a,b, c"]).pythonpath == ["a", "b", "c"]


def test_seconds_accept_fractions() -> None:
    assert parse_ok([*APP, "--keep-alive", "0.5", "-t", "0"]).keepalive == 0.5


def test_booleans_from_a_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text("preload_app = True\nreuse_port = 'yes'\ndebug_http = 'off'\n")
    config = parse_ok([*APP, "-c", str(conf)])
    assert (config.preload_app, config.reuse_port, config.debug_http) == (True, True, False)


def test_no_app_is_an_error_unless_printing() -> None:
    assert parse_error([]).startswith("no app given")
    invocation = parse(["--print-config"], {})
    assert invocation.print_config and invocation.config.wsgi_app is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-w", "-1"], "invalid value for --workers: '-1'"),
        (["-w", "0"], "invalid value for --workers: '0'"),
        (["--threads", "two"], "invalid value for --threads: 'two'"),
        (["-t", "soon"], "invalid value for --timeout: 'soon'"),
        (["--keep-alive", "nan"], "invalid value for --keep-alive: 'nan'"),
        (["--graceful-timeout", "-1"], "invalid value for --graceful-timeout: '-1'"),
        (["-b", "127.0.0.1:http"], "invalid value for --bind: '127.0.0.1:http'"),
        (["-b", "::1:80"], "invalid value for --bind: '::1:80'"),
        (["-b", "127.0.0.1:70000"], "invalid value for --bind: '127.0.0.1:70000'"),
        (["-b", "unix:"], "invalid value for --bind: 'unix:'"),
        (["-b", "fd://x"], "invalid value for --bind: 'fd://x'"),
        (["--log-level", "loud"], "invalid value for --log-level: 'loud'"),
        (["--root-path", "mnt"], "invalid value for --root-path: 'mnt'"),
        (["--forwarded-allow-ips", "proxy"], "invalid value for --forwarded-allow-ips"),
        (["--access-logformat", "%(h"], "invalid value for --access-logformat"),
        (["--limit-request-line", "8"], "invalid value for --limit-request-line: '8'"),
        (["--backlog", "0"], "invalid value for --backlog: '0'"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["-w"], "argument -w/--workers: expected one argument"),
        (["-c", "/nonexistent/brick.conf.py"], "config file not found"),
    ],
)
def test_invalid_values_are_one_line_errors(argv: list[str], expected: str) -> None:
    assert expected in parse_error([*APP, *argv])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workers = (\n", "syntax error in config file"),
        ("workers = 'many'\n", "invalid value for workers in config file"),
        ("workers = 2.5\n", "invalid value for workers in config file"),
        ("bind = 8000\n", "invalid value for bind in config file"),
        ("timeout = [30]\n", "invalid value for timeout in config file"),
        ("preload_app = 1\n", "invalid value for preload_app in config file"),
        ("loglevel = None\n", "invalid value for loglevel in config file"),
        ("raise ValueError('no\\nway')\n", "error in config file"),
        ("import sys\nsys.exit(4)\n", "error in config file"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    conf = tmp_path / "bad.conf.py"
    conf.write_text(text)
    message = parse_error([*APP, "-c", str(conf)])
    assert expected in message and str(conf) in message


def test_bad_brick_cmd_args_say_so() -> None:
    assert parse_error(APP, {"BRICK_CMD_ARGS": "--nope"}).startswith("invalid BRICK_CMD_ARGS")
    assert parse_error(APP, {"BRICK_CMD_ARGS": "'unclosed"}).startswith("invalid BRICK_CMD_ARGS")
    assert "in BRICK_CMD_ARGS" in parse_error(APP, {"BRICK_CMD_ARGS": "-w x"})


# -- gunicorn compatibility ----------------------------------------------------------------


def _gunicorn_settings() -> dict[str, Any]:
    from gunicorn.config import Config as GunicornConfig

    return dict(GunicornConfig().settings)


def test_shared_options_have_gunicorns_flags() -> None:
    settings = _gunicorn_settings()
    shared = 0
    for f in fields(Config):
        setting = settings.get(f.name)
        if setting is None or not setting.cli:
            continue
        shared += 1
        assert set(setting.cli) <= set(f.metadata["flags"]), f.name
    assert shared >= 25


def test_command_only_options_have_gunicorns_flags() -> None:
    settings = _gunicorn_settings()
    flags = {s for a in build_parser()._actions for s in a.option_strings}
    for name in ("config", "check_config", "print_config"):
        assert set(settings[name].cli) <= flags, name
    assert {"-v", "--version"} <= flags


GUNICORN_LINE = shlex.split(
    "-w 2 --threads 2 -b 127.0.0.1:0 --timeout 20 --graceful-timeout 5 --keep-alive 5 "
    "--max-requests 100 --max-requests-jitter 10 --access-logfile - --error-logfile - "
    "--log-level info --limit-request-line 4094 --limit-request-fields 100 "
    "--limit-request-field_size 8190 --forwarded-allow-ips '*' --backlog 64 --pid {pid} "
    "--chdir {dir} --pythonpath {dir} -n NAME --preload --reuse-port"
)


def test_a_gunicorn_command_line_means_the_same(tmp_path: Path) -> None:
    """Parse one realistic gunicorn command line with both servers' parsers and compare."""
    from gunicorn.config import Config as GunicornConfig

    argv = [part.format(pid=tmp_path / "pid", dir=tmp_path) for part in GUNICORN_LINE]
    brick = parse_ok([*argv, "cli_app:application"])

    gunicorn = GunicornConfig()
    parsed = gunicorn.parser().parse_args([*argv, "cli_app:application"])
    for name, value in vars(parsed).items():
        if value is not None and name in gunicorn.settings:
            gunicorn.set(name.lower(), value)

    compared = 0
    for f in fields(Config):
        if f.name not in gunicorn.settings or f.name == "wsgi_app":
            continue
        theirs = getattr(gunicorn, f.name)
        ours = getattr(brick, f.name)
        if f.name == "chdir":
            theirs, ours = os.path.realpath(theirs), os.path.realpath(str(ours))
        elif f.name == "pythonpath":
            theirs = theirs.split(",")
        elif f.name == "proc_name":
            theirs = gunicorn.settings["proc_name"].get()
        elif f.name in ("accesslog", "errorlog"):
            theirs = gunicorn.settings[f.name].get()
        assert ours == theirs, f.name
        compared += 1
    assert compared >= 25


def test_gunicorn_config_file_works(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "import multiprocessing\n"
        "bind = '127.0.0.1:8001'\n"
        "workers = 2\n"
        "threads = 4\n"
        "timeout = 60\n"
        "keepalive = 3\n"
        "accesslog = '-'\n"
        "errorlog = '-'\n"
        "loglevel = 'warning'\n"
        "forwarded_allow_ips = '*'\n"
        "pythonpath = 'a,b'\n"
        "worker_class = 'gthread'\n"
        "def post_fork(server, worker):\n"
        "    pass\n"
    )
    config = parse_ok([*APP, "-c", str(conf)])
    assert config.bind == ["127.0.0.1:8001"]
    assert (config.workers, config.threads, config.timeout, config.keepalive) == (2, 4, 60, 3)
    assert (config.accesslog, config.errorlog, config.loglevel) == ("-", "-", "warning")
    assert config.forwarded_allow_ips == ["*"]
    assert config.pythonpath == ["a", "b"]


def test_parser_errors_print_no_usage_block(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError):
        build_parser().parse_args(["--workers"])
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_help_percent_signs_are_escaped() -> None:
    text = build_parser().format_help()
    assert re.search(r"%\(h\)s %\(l\)s", text)  # the default access log format, intact
