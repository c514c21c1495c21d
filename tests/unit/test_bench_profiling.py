"""`make profile`'s reading of cProfile and py-spy output, and the stack mode's helpers."""

from __future__ import annotations

import cProfile
import pstats
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import profiling, stack  # noqa: E402

pytestmark = pytest.mark.unit

MAIN = "main (brick/cli.py:80);run (brick/loop.py:123)"
COLLAPSED = f"""\
{MAIN};process (brick/connection.py:204);parse (brick/parser.py:10) 5
{MAIN};process (brick/connection.py:210);send (brick/connection.py:400) 3
main (brick/cli.py:80);run (brick/loop.py:124);select (selectors.py:451) 2
main (brick/cli.py:80);walk (x.py:1);walk (x.py:2);walk (x.py:3) 4

garbage line
"""


def test_collapsed_stacks_give_own_and_cumulative_samples() -> None:
    total, rows = profiling.collapsed_rows(COLLAPSED.splitlines())
    assert total == 14
    by_name = {row.function: row for row in rows}
    # Lines of one function merge into one entry.
    assert by_name["process (brick/connection.py)"].cumulative == 8
    assert by_name["process (brick/connection.py)"].total == 0
    assert by_name["parse (brick/parser.py)"].total == 5
    assert by_name["main (brick/cli.py)"].cumulative == 14
    # A recursive function counts once per stack in its cumulative time.
    assert by_name["walk (x.py)"].cumulative == 4
    assert by_name["walk (x.py)"].total == 4
    assert [r.function for r in profiling.top(rows, "total", 2)] == [
        "parse (brick/parser.py)",
        "walk (x.py)",
    ]


def busy(n: int) -> int:
    return sum(i * i for i in range(n))


def test_cprofile_rows(tmp_path: Path) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3):
        busy(20_000)
    profiler.disable()
    path = tmp_path / "p.prof"
    profiler.dump_stats(path)
    total, rows = profiling.cprofile_rows(pstats.Stats(str(path)))
    assert total > 0
    row = next(r for r in rows if r.function.startswith("busy ("))
    assert row.calls == 3
    assert "test_bench_profiling.py" in row.function
    assert 0 < row.total <= row.cumulative <= total
    table = profiling.format_rows([row], total, "s")
    assert table.splitlines()[0].split() == ["total", "share", "cumul.", "share", "calls",
                                             "function"]  # fmt: skip
    assert table.splitlines()[1].split()[4] == "3"


def test_format_rows_with_samples() -> None:
    rows = [profiling.Row("f (a.py)", 0, 25.0, 50.0)]
    line = profiling.format_rows(rows, 100.0, "samples").splitlines()[1]
    assert line.split() == ["25", "25.0%", "50", "50.0%", "f", "(a.py)"]


@pytest.mark.parametrize(
    ("path", "short"),
    [
        ("/work/main/server/src/brick/loop.py", "brick/loop.py"),
        ("/x/.venv/lib/python3.11/site-packages/flask/app.py", "flask/app.py"),
        ("/work/main/apps/wsgi/wsgiapp.py", "wsgiapp.py"),
        ("/usr/lib/python3.11/selectors.py", "selectors.py"),
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/http/client.py", "http/client.py"),
        ("<frozen runpy>", "<frozen runpy>"),
    ],
)
def test_short_path(path: str, short: str) -> None:
    assert profiling.short_path(path) == short


# -- the stack mode ------------------------------------------------------------------------


def labels(project: str, service: str, workdir: str) -> dict[str, str]:
    return {
        stack.PROJECT_LABEL: project,
        stack.SERVICE_LABEL: service,
        stack.WORKDIR_LABEL: workdir,
    }


def test_choose_project() -> None:
    here = [labels("main", "nginx", "/work/main"), labels("main", "flask", "/work/main")]
    other = [labels("other", "nginx", "/elsewhere")]
    assert stack.choose_project(here + other, "/work/main") == "main"
    assert stack.choose_project(other, "/work/main") == "other"  # the only one running
    assert stack.choose_project(here + other, "/work/main", wanted="other") == "other"
    with pytest.raises(stack.StackError, match="BENCH_COMPOSE_PROJECT"):
        stack.choose_project([*other, labels("third", "x", "/t")], "/work/main")
    with pytest.raises(stack.StackError, match="make up"):
        stack.choose_project([], "/work/main")
    with pytest.raises(stack.StackError, match="no running compose project"):
        stack.choose_project(here, "/work/main", wanted="nope")


def test_the_stack_url_is_where_nginx_is_published() -> None:
    def ports(*bindings: tuple[str, str]) -> dict[str, object]:
        return {"8080/tcp": [{"HostIp": ip, "HostPort": port} for ip, port in bindings]}

    assert stack.published_url(ports(("127.0.0.1", "8080"))) == "http://127.0.0.1:8080"
    assert stack.published_url(ports(("0.0.0.0", "9000"), ("::", "9000"))) == (
        "http://127.0.0.1:9000"
    )
    assert stack.published_url(ports(("::1", "8081"))) == "http://[::1]:8081"
    with pytest.raises(stack.StackError, match="does not publish"):
        stack.published_url({"8080/tcp": None})
    with pytest.raises(stack.StackError, match="does not publish"):
        stack.published_url(None)


def test_container_cpu() -> None:
    answer = {"cpu_stats": {"cpu_usage": {"total_usage": 123456789}}, "memory_stats": {}}
    assert stack.cpu_ns(answer) == 123456789
    with pytest.raises(stack.StackError):
        stack.cpu_ns({"cpu_stats": {}})


def test_container_worker_memory_from_docker_top() -> None:
    top = {
        "Titles": ["PID", "PPID", "RSS"],
        "Processes": [["900", "880", "20000"], ["950", "900", "30000"], ["951", "900", "31000"]],
    }
    assert stack.top_rss_kib(top) == ([30000, 31000], 20000)
    alone = {"Titles": ["PID", "PPID", "RSS"], "Processes": [["900", "880", "15000"]]}
    assert stack.top_rss_kib(alone) == ([15000], None)
    assert stack.top_rss_kib({"Titles": ["PID", "PPID", "RSS"], "Processes": None}) == ([], None)
    with pytest.raises(stack.StackError):
        stack.top_rss_kib({"Titles": ["UID", "CMD"], "Processes": []})


@pytest.mark.parametrize(
    ("command", "family"),
    [
        ("gunicorn wsgiapp:app --workers 2 --threads 1 --worker-class gthread", "gunicorn-gthread"),
        ("gunicorn wsgiapp:app --worker-class=gthread", "gunicorn-gthread"),
        ("gunicorn app -k gunicorn.workers.gthread.ThreadWorker", "gunicorn-gthread"),
        ("gunicorn app -k sync --threads 4", "gunicorn-gthread"),
        ("gunicorn app -k sync --threads 1", "gunicorn-sync"),
        ("gunicorn app --threads 4", "gunicorn-gthread"),
        ("gunicorn app --workers 2", "gunicorn-sync"),
    ],
)
def test_the_gunicorn_twins_worker_class(command: str, family: str) -> None:
    assert stack.gunicorn_family(command) == family


@pytest.mark.parametrize(
    ("function", "waiting"),
    [
        ("<method 'poll' of 'select.epoll' objects>", True),
        ("select (selectors.py:451)", True),
        ("EpollSelector.select (selectors.py)", True),
        ("run_once (brick/loop.py:99)", False),
        ("<method 'sendmsg' of '_socket.socket' objects>", False),
        ("select_best (myapp.py:3)", False),
        ("_serve (brick/worker.py)", True),
        ("submit (brick/worker.py)", False),
    ],
)
def test_waiting_in_the_poll(function: str, waiting: bool) -> None:
    assert profiling.is_waiting(function) is waiting


def test_render_leaves_the_wait_out_of_the_shares() -> None:
    rows = [
        profiling.Row("EpollSelector.select (selectors.py)", 0, 60.0, 60.0),
        profiling.Row("run (brick/loop.py)", 0, 0.0, 100.0),
        profiling.Row("process (brick/connection.py)", 0, 10.0, 40.0),
        profiling.Row("send (brick/connection.py)", 0, 30.0, 30.0),
        profiling.Row("sweep (brick/worker.py)", 0, 10.0, 10.0),
    ]
    text = profiling.render(rows, 110.0, "samples", 5)
    assert text.splitlines()[0] == (
        "Waiting (the event loop in its poll, idle app threads): 60 samples, 55% of the profile;"
        " the shares below are of the other 50 samples."
    )
    totals = text.split("Top 5 by total time")[1].split("Top 5 by cumulative")[0]
    assert "selectors.py" not in totals
    send = next(line for line in totals.splitlines() if line.endswith("send (brick/connection.py)"))
    assert send.split()[:2] == ["30", "60.0%"]
    cumulative = text.split("Top 5 by cumulative")[1]
    # run() holds the wait too: it is the entry chain, left out of the cumulative list.
    assert "run (brick/loop.py)" not in cumulative
    assert "process (brick/connection.py)" in cumulative
