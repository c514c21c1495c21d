"""`make count`: reading callgrind's totals, the per-request arithmetic, and its client."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import instructions  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402
from bench.servers import ServerError  # noqa: E402

pytestmark = pytest.mark.unit

CALLGRIND_OUT = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  python -m brick wsgiapp:app
events: Ir
summary: 575495968
fn=(1) main
16 3

totals: 575495968
"""


def test_the_total_comes_from_the_totals_line() -> None:
    assert instructions.total_instructions(CALLGRIND_OUT) == 575_495_968


def test_a_file_cut_short_is_refused() -> None:
    with pytest.raises(ValueError, match="no totals line"):
        instructions.total_instructions("# callgrind format\nevents: Ir\nfn=(1) main\n")


def test_start_up_cancels_out_of_the_per_request_cost() -> None:
    # 300 requests cost 10M over a 500M start-up; 2300 requests, 2000 more, cost 20k each.
    short = 500_000_000 + 300 * 20_000
    long = 500_000_000 + 2300 * 20_000
    assert instructions.per_request(short, long, 2000) == 20_000


@pytest.mark.parametrize(
    ("short", "long", "extra", "message"),
    [(100, 200, 0, "more requests"), (200, 200, 10, "no more instructions")],
)
def test_impossible_runs_are_refused(short: int, long: int, extra: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        instructions.per_request(short, long, extra)


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list[tuple[int, str]] = []  # (client port, Connection header)
    status = 200

    def do_GET(self) -> None:
        Recorder.requests.append((self.client_address[1], self.headers.get("Connection", "")))
        body = b"hello\n"
        self.send_response(Recorder.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    Recorder.requests = []
    Recorder.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_keep_alive_requests_share_one_connection(recorder: ThreadingHTTPServer) -> None:
    instructions.drive("127.0.0.1", recorder.server_address[1], "/hello", 20, close=False)
    assert len(Recorder.requests) == 20
    assert len({port for port, _ in Recorder.requests}) == 1


def test_close_requests_each_open_a_connection(recorder: ThreadingHTTPServer) -> None:
    instructions.drive("127.0.0.1", recorder.server_address[1], "/hello", 20, close=True)
    assert len(Recorder.requests) == 20
    assert len({port for port, _ in Recorder.requests}) == 20
    assert {header for _, header in Recorder.requests} == {"close"}


def test_an_answer_other_than_200_stops_the_count(recorder: ThreadingHTTPServer) -> None:
    Recorder.status = 404
    with pytest.raises(ServerError, match="request 1 to /nope answered 404"):
        instructions.drive("127.0.0.1", recorder.server_address[1], "/nope", 5, close=False)


def test_without_valgrind_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    assert bench_main(["count", "--app", "wsgi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bench count: valgrind is needed (apt-get install valgrind)"


@pytest.mark.parametrize("flag", ["--requests", "--base"])
def test_a_request_count_below_one_is_refused(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_main(["count", flag, "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bench count: --requests and --base must be at least 1"


def test_the_floor_with_threads_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["count", "--server", "floor", "--threads", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bench count: the floor has one thread (no --threads)"


def test_brick_is_counted_in_its_worker_not_its_master(tmp_path: Path) -> None:
    master, worker = tmp_path / "callgrind.100", tmp_path / "callgrind.101"
    assert instructions.serving_file([master, worker], 100, one_process=False) == worker


def test_the_floor_is_counted_in_its_only_process(tmp_path: Path) -> None:
    floor = tmp_path / "callgrind.100"
    assert instructions.serving_file([floor], 100, one_process=True) == floor


def test_more_serving_processes_than_one_is_an_error(tmp_path: Path) -> None:
    files = [tmp_path / f"callgrind.{pid}" for pid in (100, 101, 102)]
    with pytest.raises(ServerError, match=r"found \['callgrind.101', 'callgrind.102'\]"):
        instructions.serving_file(files, 100, one_process=False)
