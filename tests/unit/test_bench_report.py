# ruff: noqa: RUF001  (the report prints the multiplication sign; the tests expect it)
"""The benchmark's report: tables, ratios against gunicorn, issue 6's targets, the chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

pytestmark = pytest.mark.unit

LABELS = {
    "brick": "brick",
    "gunicorn-sync": "gunicorn sync",
    "gunicorn-gthread": "gunicorn gthread",
    "granian": "granian",
    "waitress": "waitress",
}


def summary(
    cost: float, rps: float = 1000.0, errors: int = 0, other: float = 0.0
) -> dict[str, Any]:
    return {
        "runs": 3,
        "cpu_us_per_request": cost,
        "rps": rps,
        "p50_ms": 1.5,
        "p99_ms": 12.0,
        "requests": 30000,
        "errors": errors,
        "non_2xx": errors,
        "socket_errors": 0,
        "other_load": other,
        "spread": 0.04,
    }


def entry(
    app: str, family: str, mode: str, cost: float, config: str = "1x1", errors: int = 0
) -> dict[str, Any]:
    w, t = (int(n) for n in config.split("x"))
    label = LABELS[family] if config == "1x1" else f"{LABELS[family]} {w}\u00d7{t}"
    return {
        "app": app,
        "server": family if config == "1x1" else f"{family}-{config}",
        "family": family,
        "label": label,
        "config": config,
        "workers": w,
        "threads": t,
        "mode": mode,
        "summary": summary(cost, errors=errors),
        "runs": [],
        "warmups": [],
    }


def results(
    costs: dict[tuple[str, str, str], float] | None = None,
    concurrency_share: float | None = 0.95,
    brick_errors: int = 0,
    loadavg: float = 0.1,
) -> dict[str, Any]:
    """Made-up results: (app, family, mode) -> CPU µs/request in the 1x1 configuration."""
    costs = costs or {
        ("wsgi", "brick", "keep-alive"): 20.0,
        ("wsgi", "gunicorn-gthread", "keep-alive"): 250.0,
        ("wsgi", "granian", "keep-alive"): 25.0,
        ("wsgi", "brick", "close"): 60.0,
        ("wsgi", "gunicorn-gthread", "close"): 300.0,
        ("wsgi", "granian", "close"): 50.0,
        ("django", "brick", "keep-alive"): 700.0,
        ("django", "gunicorn-gthread", "keep-alive"): 1000.0,
        ("django", "granian", "keep-alive"): 720.0,
    }
    throughput = [
        entry(app, family, mode, cost, errors=brick_errors if family == "brick" else 0)
        for (app, family, mode), cost in costs.items()
    ]
    concurrency = []
    if concurrency_share is not None:
        for family in ("brick", "gunicorn-gthread"):
            concurrency.append(
                {
                    **entry("wsgi", family, "keep-alive", 300.0, config="2x8"),
                    "path": "/sleep?seconds=0.1",
                    "connections": 64,
                    "bound_rps": 160.0,
                    "share_of_bound": concurrency_share,
                    "summary": summary(300.0, rps=160.0 * concurrency_share),
                }
            )
    memory = [
        {
            **entry("wsgi", "brick", "keep-alive", 0.0),
            "idle_kib": [17 * 1024],
            "loaded_kib": [18 * 1024],
            "master_idle_kib": 16 * 1024,
            "master_loaded_kib": 16 * 1024,
        },
        {
            **entry("wsgi", "waitress", "keep-alive", 0.0),
            "idle_kib": [15 * 1024],
            "loaded_kib": [15 * 1024 + 512],
            "master_idle_kib": None,
            "master_loaded_kib": None,
        },
    ]
    return {
        "meta": {
            "started": "2026-01-01T00:00:00+00:00",
            "commit": "abc1234",
            "machine": {"cores": 2, "cpu_model": "Test CPU", "python": "3.11.7"},
            "versions": {"brick": "0.1.0", "gunicorn": "27.0.1", "wrk": "4.1.0"},
            "settings": {
                "server_cpu": 0,
                "client_cpu": 1,
                "connections": 16,
                "duration": 5,
                "repeat": 3,
                "warmup": 2,
                "path": "/hello",
            },
            "left_out": [],
            "loadavg_before": [loadavg, loadavg, loadavg],
        },
        "throughput": throughput,
        "memory": memory,
        "concurrency": concurrency,
        "failures": [],
    }


def row(markdown: str, *cells: str) -> str:
    """The first table row of `markdown` that starts with these cells."""
    start = "| " + " | ".join(cells) + " |"
    for line in markdown.splitlines():
        if line.startswith(start):
            return line
    raise AssertionError(f"no row starting {start!r} in:\n{markdown}")


def test_cost_table_has_the_servers_and_brick_ratios() -> None:
    table = report.cost_table(results(), "1x1")
    header = table.splitlines()[0]
    assert header == (
        "| app | mode | brick | gunicorn gthread | granian |"
        " brick ÷ gunicorn gthread | brick ÷ granian |"
    )
    assert row(table, "bare WSGI", "keep-alive") == (
        "| bare WSGI | keep-alive | 20.0 | 250 | 25.0 | 0.08× | 0.80× |"
    )
    assert row(table, "bare WSGI", "`Connection: close`") == (
        "| bare WSGI | `Connection: close` | 60.0 | 300 | 50.0 | 0.20× | 1.20× |"
    )
    # Django has no close run: the table shows only what was measured.
    assert "| Django | `Connection: close`" not in table
    # Apps in the usual order, the bare WSGI app first.
    assert table.index("bare WSGI") < table.index("Django")


def test_a_missing_server_shows_a_dash() -> None:
    costs = {("wsgi", "brick", "keep-alive"): 20.0, ("wsgi", "granian", "close"): 40.0}
    table = report.cost_table(results(costs), "1x1")
    assert row(table, "bare WSGI", "keep-alive") == "| bare WSGI | keep-alive | 20.0 | — | — |"
    assert row(table, "bare WSGI", "`Connection: close`") == (
        "| bare WSGI | `Connection: close` | — | 40.0 | — |"
    )


def verdicts(data: dict[str, Any]) -> dict[str, bool | None]:
    return {t.goal: t.ok for t in report.targets(data)}


def test_targets_met_and_missed() -> None:
    found = verdicts(results())
    assert found["bare WSGI: brick ≤ 1/10 of gunicorn gthread (1 × 1, keep-alive)"] is True
    assert found["bare WSGI: brick ≤ 1/10 of gunicorn gthread (1 × 1, close)"] is False
    assert found["bare WSGI: brick ≤ granian (1 × 1, keep-alive)"] is True
    assert found["bare WSGI: brick ≤ granian (1 × 1, close)"] is False
    assert found["Django: brick ≤ granian (1 × 1, keep-alive)"] is True
    assert found["zero errors in every brick run"] is True
    assert found["concurrency: brick ≥ 90% of the bound"] is True


def test_target_boundaries_are_inclusive() -> None:
    costs = {
        ("wsgi", "brick", "keep-alive"): 25.0,
        ("wsgi", "gunicorn-gthread", "keep-alive"): 250.0,
        ("wsgi", "granian", "keep-alive"): 25.0,
    }
    found = verdicts(results(costs, concurrency_share=0.9))
    assert found["bare WSGI: brick ≤ 1/10 of gunicorn gthread (1 × 1, keep-alive)"] is True
    assert found["bare WSGI: brick ≤ granian (1 × 1, keep-alive)"] is True
    assert found["concurrency: brick ≥ 90% of the bound"] is True
    assert verdicts(results(costs, concurrency_share=0.89))[
        "concurrency: brick ≥ 90% of the bound"
    ] is False  # fmt: skip


def test_an_error_in_any_brick_run_misses_the_target() -> None:
    found = report.targets(results(brick_errors=1))
    target = next(t for t in found if t.goal == "zero errors in every brick run")
    assert target.ok is False
    assert target.detail.startswith("3 errors")  # one in each of the three brick scenarios


def test_a_brick_server_that_failed_misses_the_error_target() -> None:
    data = results()
    data["failures"] = [{"app": "flask", "server": "brick", "error": "exited with 1"}]
    assert verdicts(data)["zero errors in every brick run"] is False


def test_without_granian_its_targets_are_not_measured() -> None:
    costs = {
        ("wsgi", "brick", "keep-alive"): 20.0,
        ("wsgi", "gunicorn-gthread", "keep-alive"): 250.0,
    }
    found = {t.goal: t for t in report.targets(results(costs))}
    target = found["bare WSGI: brick ≤ granian (1 × 1, keep-alive)"]
    assert target.ok is None
    assert target.verdict == "not measured"
    # Apps not in the run get no target at all.
    assert not any(goal.startswith("Django") for goal in found)


def test_render_has_every_section_and_a_pasteable_readme_section() -> None:
    text = report.render(results(), chart="latest.png")
    for heading in (
        "# brick benchmark",
        "## Targets (issue 6)",
        "## Server CPU per request (µs)",
        "### 1 worker × 1 thread",
        "## Every scenario (medians)",
        "## Concurrency",
        "## Memory",
        "## Performance",
    ):
        assert f"\n{heading}\n" in f"\n{text}"
    assert "![server CPU per request](latest.png)" in text
    start = text.index("<!-- README performance section: from here -->")
    end = text.index("<!-- README performance section: to here -->")
    section = text[start:end]
    assert "![server CPU per request](bench/results/latest.png)" in section
    assert row(section, "bare WSGI", "keep-alive").endswith("| 0.08× |")
    assert "brick 152 req/s, 95% of the 160 req/s bound" in section
    assert "brick 18.0 MiB, waitress 15.5 MiB" in section
    assert "Taken on a loaded machine" not in text


def test_render_flags_a_loaded_machine() -> None:
    assert "Taken on a loaded machine" in report.render(results(loadavg=3.0))
    data = results()
    data["throughput"][0]["summary"]["other_load"] = 0.5
    assert "Taken on a loaded machine" in report.render(data)


def test_render_lists_failures_and_errors() -> None:
    data = results(brick_errors=4)
    data["failures"] = [{"app": "pyramid", "server": "granian", "error": "exited with 1\nlog"}]
    text = report.render(data)
    assert "- pyramid on granian: exited with 1" in text
    assert "**4** (4 non-2xx/3xx, 0 socket)" in text


def test_render_survives_a_json_round_trip() -> None:
    data = results()
    assert report.render(json.loads(json.dumps(data))) == report.render(data)


def test_the_second_configuration_gets_its_own_table() -> None:
    data = results()
    data["throughput"] += [
        entry("wsgi", "brick", "keep-alive", 22.0, config="1x4"),
        entry("wsgi", "gunicorn-gthread", "keep-alive", 330.0, config="1x4"),
    ]
    text = report.render(data)
    assert "### 1 worker × 4 threads" in text
    table = report.cost_table(data, "1x4")
    assert row(table, "bare WSGI", "keep-alive") == (
        "| bare WSGI | keep-alive | 22.0 | 330 | 0.07× |"
    )
    assert verdicts(data)["bare WSGI: brick ≤ 1/10 of gunicorn gthread (1 × 4, keep-alive)"]
    # No granian in 1x4, and that is not reported as a missing measurement.
    assert not any("granian (1 × 4" in goal for goal in verdicts(data))


def test_config_helpers() -> None:
    assert report.config_title("1x1") == "1 worker × 1 thread"
    assert report.config_title("2x8") == "2 workers × 8 threads"
    assert report.config_title("stack") == "through nginx (compose stack)"
    assert sorted(["stack", "2x8", "1x4", "1x1"], key=report.config_key) == [
        "1x1", "1x4", "2x8", "stack",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (float("inf"), "—"), (7.25, "7.2"), (99.94, "99.9"), (250.4, "250")],
)
def test_fmt_us(value: float | None, text: str) -> None:
    assert report.fmt_us(value) == text


def test_table_alignment() -> None:
    assert report.table(["a", "b"], [["x", "1"]]) == "| a | b |\n| --- | ---: |\n| x | 1 |"


def test_chart(tmp_path: Path) -> None:
    from bench.chart import draw  # matplotlib: requirements/dev.txt

    path = tmp_path / "chart.png"
    assert draw(results(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not draw({"throughput": []}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


README = """# brick

Intro.

<!-- README performance section: from here -->
## Performance

Old table.
<!-- README performance section: to here -->

Prose written by hand stays.
"""


def test_readme_section_replaces_only_what_is_between_the_markers() -> None:
    section = report.readme_section(results(), chart="latest.png")
    updated = report.replace_readme_section(README, section)
    assert "Old table." not in updated
    assert updated.startswith("# brick\n\nIntro.\n\n<!-- README performance section: from here")
    assert updated.endswith(f"{report.README_END}\n\nProse written by hand stays.\n")
    assert row(updated, "bare WSGI", "keep-alive").endswith("| 0.08× |")
    # Running it again changes nothing.
    assert report.replace_readme_section(updated, section) == updated


@pytest.mark.parametrize(
    "readme",
    [
        "# brick\n\nNo markers.\n",
        README.replace(report.README_END, ""),
        README + f"\n{report.README_START}\n",
        f"{report.README_END}\n{report.README_START}\n",
    ],
)
def test_readme_without_one_ordered_pair_of_markers_is_refused(readme: str) -> None:
    with pytest.raises(ValueError, match="markers"):
        report.replace_readme_section(readme, "<!-- x -->")


def test_bench_readme_command_rewrites_the_readme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    source = tmp_path / "latest.json"
    source.write_text(json.dumps(results()))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert main(["readme", str(source), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "Old table." not in text and "Prose written by hand stays." in text
    assert "brick 152 req/s, 95% of the 160 req/s bound" in text
    # No chart beside the JSON: the section links none.
    assert "![server CPU per request]" not in text

    readme.write_text("# brick\n")
    assert main(["readme", str(source), "--readme", str(readme)]) == 1
    assert "bench readme: the README needs exactly one pair" in capsys.readouterr().err
    assert readme.read_text() == "# brick\n"
    assert main(["readme", str(tmp_path / "missing.json"), "--readme", str(readme)]) == 1
