"""Serve one demo app under brick and under gunicorn side by side, and show both answers.

    python apps/compare.py flask [--root-path /flask]

The script binds two sockets on 127.0.0.1 and hands them to the servers as `--bind fd://N`,
so the servers need no start-up wait and no port can race. It then runs the same curl
requests against both, prints each answer (status line, headers, body) one after the other,
and says whether status and body agree (each server's own port aside). Both servers are
stopped before it exits, and every request, like the whole run, has a time limit.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APPS = Path(__file__).resolve().parent
APP_NAMES = ["flask", "pyramid", "django", "wsgi"]
REQUEST_SECONDS = 15

# curl arguments; the path is relative to the mount.
REQUESTS: list[tuple[str, list[str]]] = [
    ("/hello", []),
    ("/healthz", []),
    ("/url", []),
    ("/url", ["-H", "X-Forwarded-Proto: https"]),
    ("/echo", ["-H", "Content-Type: text/plain", "--data-binary", "hello, echo"]),
    (
        "/echo",
        [
            "-H",
            "Content-Type: application/json",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            '{"upload": "chunked"}',
        ],
    ),
    ("/stream?chunks=3&delay=0.2", ["-N"]),
    ("/stream?chunks=lots", []),
    ("/sleep?seconds=0.5", []),
    ("/file", []),
    ("/environ?from=compare", []),
]


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def start(name: str, app: str, root_path: str, logdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start `name` (brick or gunicorn) serving `app`; the process and its port."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    command = [sys.executable, "-m", name, f"{app}app:app", "--bind", f"fd://{sock.fileno()}"]
    env = None
    if root_path and name == "brick":
        command += ["--root-path", root_path]
    elif root_path:
        # gunicorn takes the mount from SCRIPT_NAME and strips it from PATH_INFO.
        env = {**os.environ, "SCRIPT_NAME": root_path}
    with open(logdir / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=APPS / app,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
        )
    sock.close()
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def curl(url: str, args: list[str]) -> tuple[str, str, str]:
    """Run curl; its output, the status line, and the body (after the last header block)."""
    command = ["curl", "-sS", "-i", "--max-time", str(REQUEST_SECONDS), *args, url]
    try:
        result = subprocess.run(
            command, capture_output=True, timeout=REQUEST_SECONDS + 5, check=False
        )
    except subprocess.TimeoutExpired:
        return "(curl did not finish)\n", "", ""
    text = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    return text, head.split("\n", 1)[0], body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=APP_NAMES)
    parser.add_argument("--root-path", default="", help="mount the app under this prefix")
    parser.add_argument("--timeout", type=float, default=120.0, help="stop after this many seconds")
    options = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("compare.py needs curl on PATH", file=sys.stderr)
        return 2
    root_path = options.root_path.rstrip("/")
    deadline = time.monotonic() + options.timeout
    logdir = Path(tempfile.mkdtemp(prefix="brick-compare-"))
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    differing = 0
    try:
        for name in ("brick", "gunicorn"):
            servers[name] = start(name, options.app, root_path, logdir)
        for path, args in REQUESTS:
            if time.monotonic() > deadline:
                print(f"stopping: the run took longer than {options.timeout:g} s")
                break
            print(f"\n===== {shlex.join(['curl', '-i', *args, root_path + path])}")
            answers = {}
            for name, (process, port) in servers.items():
                if process.poll() is not None:
                    print(f"----- {name} exited with {process.returncode}; its log:")
                    print((logdir / f"{name}.log").read_text(errors="replace")[-4000:])
                    return 1
                text, status, body = curl(f"http://127.0.0.1:{port}{root_path}{path}", args)
                # Each server names its own port in URLs; that difference is expected.
                answers[name] = (status, body.replace(f"127.0.0.1:{port}", "127.0.0.1:PORT"))
                print(f"----- {name} (127.0.0.1:{port})")
                print(text.rstrip("\n"))
            if answers["brick"] == answers["gunicorn"]:
                print("----- same status line and body")
            else:
                differing += 1
                print("----- status line or body differ")
        print(f"\n{differing} of {len(REQUESTS)} answers differ; server logs in {logdir}")
        return 0
    finally:
        for process, _ in servers.values():
            stop(process)


if __name__ == "__main__":
    raise SystemExit(main())
