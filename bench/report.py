"""The benchmark's report: markdown tables (with ratios against gunicorn) from the raw results.

The raw results are the dict `runner.run` returns, saved as JSON next to the report:

    meta          when, which commit, the machine, versions, settings, load averages
    throughput    one entry per app x server x mode: app, server, family, label, config
                  ("WxT"), mode, summary (stats.Summary.as_dict), runs, warmups
    memory        one entry per app x server: idle_kib and loaded_kib (one number per worker),
                  master_idle_kib, master_loaded_kib (None for a one-process server)
    concurrency   one entry per server: summary, bound_rps, share_of_bound, connections, path
    failures      app, server, error: servers that did not start or died

`render` turns that into the markdown file; it reads nothing else, so `python -m bench report`
can render an old JSON again and the unit tests can feed it made-up numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.stats import ratio

FAMILY_ORDER = ("brick", "gunicorn-sync", "gunicorn-gthread", "granian", "waitress", "floor")
APP_ORDER = ("wsgi", "flask", "pyramid", "django")
APP_LABELS = {"wsgi": "bare WSGI", "flask": "Flask", "pyramid": "Pyramid", "django": "Django"}
MODE_ORDER = ("keep-alive", "close")
MODE_LABELS = {"keep-alive": "keep-alive", "close": "`Connection: close`"}
LOADED = 0.10  # other processes using more than this share of the server's core: a noisy run
TARGET_GTHREAD_RATIO = 0.10  # issue 6: bare WSGI app, brick ≤ 1/10 of gunicorn gthread
TARGET_BOUND_SHARE = 0.90  # issue 6: the concurrency scenario reaches 90 % of its bound

Results = Mapping[str, Any]
TIMES = "\u00d7"  # the multiplication sign, in the tables


# -- number formatting ---------------------------------------------------------------------


def fmt_us(value: float | None) -> str:
    if value is None or value == float("inf"):
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}{TIMES}"


def fmt_ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_mib(kib: Iterable[int] | int | None) -> str:
    if kib is None:
        return "—"
    values = [kib] if isinstance(kib, int) else list(kib)
    if not values:
        return "—"
    return f"{sum(values) / len(values) / 1024:.1f}"


def table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A markdown table; `align` holds "l" or "r" per column (default: first left, rest right)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


# -- lookups -------------------------------------------------------------------------------


def ordered(values: Iterable[str], preferred: Iterable[str]) -> list[str]:
    preferred = list(preferred)
    unique = list(dict.fromkeys(values))
    return sorted(
        unique, key=lambda v: (preferred.index(v) if v in preferred else len(preferred), v)
    )


def config_key(config: str) -> tuple[int, ...]:
    """Sort key of a configuration: "1x1" < "1x4" < "2x8" < anything else ("stack")."""
    w, sep, t = config.partition("x")
    if sep and w.isdigit() and t.isdigit():
        return (int(w), int(t))
    return (1 << 30, 0)


def config_title(config: str) -> str:
    """A configuration as a heading: "1 worker x 4 threads" (with a multiplication sign)."""
    w, sep, t = config.partition("x")
    if not (sep and w.isdigit() and t.isdigit()):
        return "through nginx (compose stack)" if config == "stack" else config
    return f"{w} worker{'s' if w != '1' else ''} {TIMES} {t} thread{'s' if t != '1' else ''}"


def configs(results: Results) -> list[str]:
    """The workers x threads configurations in the run, smallest first."""
    return sorted({e["config"] for e in results.get("throughput", [])}, key=config_key)


def _index(results: Results) -> dict[tuple[str, str, str, str], Mapping[str, Any]]:
    """(app, family, config, mode) -> summary."""
    return {
        (e["app"], e["family"], e["config"], e["mode"]): e["summary"]
        for e in results.get("throughput", [])
    }


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else ratio(value, reference)


def cost(results: Results, app: str, family: str, config: str, mode: str) -> float | None:
    summary = _index(results).get((app, family, config, mode))
    return None if summary is None else float(summary["cpu_us_per_request"])


# -- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One of issue 6's targets, checked on this run: ok is None when it could not be checked."""

    goal: str
    ok: bool | None
    detail: str

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**missed**", None: "not measured"}[self.ok]


def _cost_target(
    results: Results, goal: str, app: str, other: str, config: str, mode: str, factor: float
) -> Target:
    brick = cost(results, app, "brick", config, mode)
    reference = cost(results, app, other, config, mode)
    if brick is None or reference is None or reference == float("inf"):
        return Target(goal, None, "not in this run")
    share = ratio(brick, reference)
    detail = f"{fmt_us(brick)} vs {fmt_us(reference)} µs/req ({fmt_ratio(share)})"
    return Target(goal, brick <= reference * factor, detail)


def targets(results: Results) -> list[Target]:
    """Issue 6's targets, for every configuration and mode measured."""
    found: list[Target] = []
    modes = ordered({e["mode"] for e in results.get("throughput", [])}, MODE_ORDER)
    apps = {e["app"] for e in results.get("throughput", [])}
    # Issue 6's cost targets are for `make bench` (a server per core), not the stack.
    for config in (c for c in configs(results) if config_key(c)[0] < 1 << 30):
        for mode in modes:
            where = f"{config.replace('x', f' {TIMES} ')}, {mode}"
            if "wsgi" in apps:
                found.append(
                    _cost_target(
                        results,
                        f"bare WSGI: brick ≤ 1/10 of gunicorn gthread ({where})",
                        "wsgi",
                        "gunicorn-gthread",
                        config,
                        mode,
                        TARGET_GTHREAD_RATIO,
                    )
                )
            for app in APP_ORDER:
                if app not in apps:
                    continue
                found.append(
                    _cost_target(
                        results,
                        f"{APP_LABELS[app]}: brick ≤ granian ({where})",
                        app,
                        "granian",
                        config,
                        mode,
                        1.0,
                    )
                )
    # Beyond the one-worker, one-thread configuration, show only what the run compared.
    found = [t for t in found if t.ok is not None or f"(1 {TIMES} 1," in t.goal]
    brick_entries = [
        e for e in [*results.get("throughput", []), *results.get("concurrency", [])]
        if e["family"] == "brick"
    ]  # fmt: skip
    errors = sum(int(e["summary"]["errors"]) for e in brick_entries)
    brick_failures = [f for f in results.get("failures", []) if f["server"].startswith("brick")]
    if brick_entries or brick_failures:
        detail = f"{errors} errors in {len(brick_entries)} brick scenarios"
        if brick_failures:
            detail += f"; {len(brick_failures)} brick servers failed"
        found.append(
            Target("zero errors in every brick run", errors == 0 and not brick_failures, detail)
        )
    for entry in results.get("concurrency", []):
        if entry["family"] == "brick":
            share = float(entry["share_of_bound"])
            found.append(
                Target(
                    f"concurrency: brick ≥ {TARGET_BOUND_SHARE:.0%} of the bound",
                    share >= TARGET_BOUND_SHARE,
                    f"{entry['summary']['rps']:.1f} of {entry['bound_rps']:g} req/s ({share:.1%})",
                )
            )
    return found


# -- sections ------------------------------------------------------------------------------


def cost_table(results: Results, config: str) -> str:
    """CPU µs/request per app and mode for one configuration, with brick ÷ each other server."""
    entries = [e for e in results.get("throughput", []) if e["config"] == config]
    families = ordered((e["family"] for e in entries), FAMILY_ORDER)
    labels = {e["family"]: e["label"] for e in entries}
    others = [f for f in families if f != "brick"]
    header = ["app", "mode"] + [labels[f] for f in families]
    if "brick" in families:
        header += [f"brick ÷ {labels[f]}" for f in others]
    rows = []
    for app in ordered((e["app"] for e in entries), APP_ORDER):
        for mode in ordered((e["mode"] for e in entries if e["app"] == app), MODE_ORDER):
            values = {f: cost(results, app, f, config, mode) for f in families}
            row = [APP_LABELS.get(app, app), MODE_LABELS.get(mode, mode)]
            row += [fmt_us(values[f]) for f in families]
            if "brick" in families:
                brick = values["brick"]
                row += [fmt_ratio(_ratio(brick, values[f])) for f in others]
            rows.append(row)
    return table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2))


def detail_table(results: Results) -> str:
    header = ["app", "mode", "server", "CPU µs/req", "req/s", "p50 ms", "p99 ms", "errors",
              "spread", "other load"]  # fmt: skip
    rows = []
    entries = sorted(
        results.get("throughput", []),
        key=lambda e: (
            _rank(e["app"], APP_ORDER),
            _rank(e["mode"], MODE_ORDER),
            config_key(e["config"]),
            _rank(e["family"], FAMILY_ORDER),
        ),
    )
    for e in entries:
        s = e["summary"]
        rows.append(
            [
                APP_LABELS.get(e["app"], e["app"]),
                e["mode"],
                e["label"],
                fmt_us(s["cpu_us_per_request"]),
                f"{s['rps']:.0f}",
                fmt_ms(s["p50_ms"]),
                fmt_ms(s["p99_ms"]),
                _errors(s),
                f"{s['spread']:.0%}",
                f"{s['other_load']:.0%}",
            ]
        )
    return table(header, rows, ["l", "l", "l"] + ["r"] * 7)


def _rank(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def _errors(summary: Mapping[str, Any]) -> str:
    if not summary["errors"]:
        return "0"
    return (
        f"**{summary['errors']}** ({summary['non_2xx']} non-2xx/3xx,"
        f" {summary['socket_errors']} socket)"
    )


def concurrency_table(results: Results) -> str:
    header = ["server", f"workers {TIMES} threads", "req/s", "bound", "share of bound", "p50 ms",
              "p99 ms", "errors", "CPU µs/req"]  # fmt: skip
    rows = []
    for e in results.get("concurrency", []):
        s = e["summary"]
        rows.append(
            [
                LABEL_BASE.get(e["family"], e["family"]),
                f"{e['workers']} {TIMES} {e['threads']}",
                f"{s['rps']:.1f}",
                f"{e['bound_rps']:g}",
                f"{e['share_of_bound']:.1%}",
                fmt_ms(s["p50_ms"]),
                fmt_ms(s["p99_ms"]),
                _errors(s),
                fmt_us(s["cpu_us_per_request"]),
            ]
        )
    return table(header, rows)


LABEL_BASE = {
    "brick": "brick",
    "gunicorn-sync": "gunicorn sync",
    "gunicorn-gthread": "gunicorn gthread",
    "granian": "granian",
    "waitress": "waitress",
    "floor": "Python floor",
}


def memory_table(results: Results) -> str:
    header = ["app", "server", "workers", "RSS per worker, idle (MiB)",
              "after load (MiB)", "master (MiB)"]  # fmt: skip
    rows = []
    entries = sorted(
        results.get("memory", []),
        key=lambda e: (
            _rank(e["app"], APP_ORDER),
            config_key(e["config"]),
            _rank(e["family"], FAMILY_ORDER),
        ),
    )
    for e in entries:
        rows.append(
            [
                APP_LABELS.get(e["app"], e["app"]),
                e["label"],
                str(len(e["loaded_kib"])),
                fmt_mib(e["idle_kib"]),
                fmt_mib(e["loaded_kib"]),
                fmt_mib(e["master_loaded_kib"]),
            ]
        )
    return table(header, rows, ["l", "l", "r", "r", "r", "r"])


def floor_note(results: Results) -> str | None:
    """What the Python floor (bench/floor.py) cost on the bare app, against gunicorn gthread's
    tenth and brick: the part of a request no Python server can remove here."""
    parts = []
    for mode in ordered({e["mode"] for e in results.get("throughput", [])}, MODE_ORDER):
        floor = cost(results, "wsgi", "floor", "1x1", mode)
        gthread = cost(results, "wsgi", "gunicorn-gthread", "1x1", mode)
        brick = cost(results, "wsgi", "brick", "1x1", mode)
        if floor is None or gthread is None or brick is None:
            continue
        parts.append(
            f"{MODE_LABELS.get(mode, mode)}: {fmt_us(floor)} µs"
            f" ({fmt_ratio(ratio(floor, gthread))} gunicorn gthread; brick"
            f" {fmt_us(brick)}, {fmt_us(brick - floor)} µs over it)"
        )
    if not parts:
        return None
    return (
        "**The floor.** `bench/floor.py` serves the bare app with nothing but what every"
        " Python server must do (accept, read, call the app, send, close: no HTTP checks, no"
        " limits, no timeouts), with the same kernel help brick takes. Its cost is the part"
        " of a request no Python server removes on this machine: " + "; ".join(parts) + "."
    )


def load_note(results: Results) -> str | None:
    """A warning when other processes shared the server's core during the measured runs."""
    loads = [float(e["summary"]["other_load"]) for e in results.get("throughput", [])]
    before = results.get("meta", {}).get("loadavg_before") or [0.0]
    if (loads and max(loads) > LOADED) or float(before[0]) > 0.5:
        worst = max(loads, default=0.0)
        core = f" other processes used up to {worst:.0%} of the server's core during a run;"
        return (
            f"**Taken on a loaded machine**: load average {float(before[0]):.2f} at the start;"
            f"{core if worst > 0 else ''}"
            " CPU per request is the figure least affected, but treat every number as noisy."
        )
    return None


def _settings_line(meta: Mapping[str, Any]) -> str:
    s = meta.get("settings", {})
    m = meta.get("machine", {})
    v = meta.get("versions", {})
    servers = ", ".join(
        f"{k} {v[k]}" for k in ("brick", "gunicorn", "granian", "waitress") if k in v
    )
    if meta.get("stack"):
        return (
            f"{meta.get('started', '?')}, commit {meta.get('commit', '?')}; through nginx at"
            f" {s.get('base_url')} (compose project {v.get('stack')}); {m.get('cores', '?')} cores"
            f" ({m.get('cpu_model', '?')}); wrk (1 thread, {s.get('connections')} connections)"
            f" on core {s.get('client_cpu')}; server CPU = the app container's cgroup CPU time;"
            f" one {s.get('warmup')} s warm-up, then the median of {s.get('repeat')} runs of"
            f" {s.get('duration')} s."
        )
    return (
        f"{meta.get('started', '?')}, commit {meta.get('commit', '?')}; {m.get('cores', '?')} cores"
        f" ({m.get('cpu_model', '?')}), Python {m.get('python', '?')}, wrk {v.get('wrk', '?')};"
        f" {servers}. Server pinned to core {s.get('server_cpu')}, wrk (1 thread,"
        f" {s.get('connections')} connections) to core {s.get('client_cpu')};"
        f" `GET {s.get('path', '/hello')}`, one {s.get('warmup')} s warm-up, then the median of"
        f" {s.get('repeat')} runs of {s.get('duration')} s."
    )


def render(results: Results, chart: str | None = None) -> str:
    """The whole markdown report. `chart` is the PNG's path relative to the report."""
    meta = results.get("meta", {})
    stack = bool(meta.get("stack"))
    title = "# brick benchmark through nginx" if stack else "# brick benchmark"
    parts = [title, "", _settings_line(meta), ""]
    if meta.get("settings", {}).get("quick"):
        parts += ["*Quick smoke run (BENCH_QUICK=1): one short run each; not for quoting.*", ""]
    note = load_note(results)
    if note:
        parts += [note, ""]
    where = (
        "the app container's CPU time (its cgroup, through the Docker API)"
        if stack
        else "the CPU time of the server's whole process tree (master and workers, from /proc)"
    )
    parts += [
        f"**Server CPU µs per request** is {where} over a run, divided by the requests wrk saw",
        "answered. Lower is better; `brick ÷ X` below 1 means brick spends less CPU per request",
        "than X.",
        "",
    ]
    if chart:
        parts += [f"![server CPU per request]({chart})", ""]
    found = targets(results)
    if found:
        parts += ["## Targets (issue 6)", ""]
        parts += [
            table(
                ["target", "result", "measured"],
                [[t.goal, t.verdict, t.detail] for t in found],
                ["l", "l", "l"],
            )
        ]
        parts += [""]
    floor = floor_note(results)
    if floor:
        parts += [floor, ""]
    parts += ["## Server CPU per request (µs)", ""]
    for config in configs(results):
        parts += [f"### {config_title(config)}", ""]
        parts += [cost_table(results, config), ""]
    if results.get("throughput"):
        parts += [
            "## Every scenario (medians)",
            "",
            "`spread`: (max - min) / median of the CPU cost over the runs;"
            " `other load`: the share of the server's core used by other processes.",
            "",
        ]
        parts += [detail_table(results), ""]
    if results.get("concurrency"):
        first = results["concurrency"][0]
        parts += [
            "## Concurrency",
            "",
            f"`GET {first['path']}` from {first['connections']} connections, runs of"
            f" {first.get('duration', '?')} s; the bound is workers {TIMES} threads ÷ the sleep.",
            "",
            concurrency_table(results),
            "",
        ]
    if results.get("memory"):
        parts += [
            "## Memory",
            "",
            f"Resident set size ({'docker top' if meta.get('stack') else 'VmRSS in /proc'}) of"
            " each worker right after start-up and after the runs; the master separately.",
            "",
            memory_table(results),
            "",
        ]
    if results.get("failures"):
        parts += ["## Failures", ""]
        for f in results["failures"]:
            first_line = str(f["error"]).strip().splitlines()[0] if f["error"] else ""
            parts += [f"- {f['app']} on {f['server']}: {first_line}"]
        parts += [""]
    if meta.get("left_out"):
        parts += ["Left out: " + "; ".join(meta["left_out"]) + ".", ""]
    if not stack:
        parts += [readme_section(results, chart), ""]
    return "\n".join(parts)


# -- the README's Performance section ------------------------------------------------------


README_START = "<!-- README performance section: from here -->"
README_END = "<!-- README performance section: to here -->"


def readme_section(results: Results, chart: str | None) -> str:
    """The text of the README's Performance section, between markers, ready to paste."""
    meta = results.get("meta", {})
    m = meta.get("machine", {})
    s = meta.get("settings", {})
    lines = [
        README_START,
        "## Performance",
        "",
        "The figure that matters is the server's CPU time per request: `make bench` pins the",
        "server to one core and wrk to the other, reads the CPU time of the server's whole",
        "process tree from /proc around each run and divides it by the requests answered.",
        f"On {m.get('cores', '?')} cores ({m.get('cpu_model', '?')}),"
        f" Python {m.get('python', '?')},"
        f" median of {s.get('repeat')} {TIMES} {s.get('duration')} s, one worker, one thread:",
        "",
    ]
    if "1x1" in configs(results):
        families = ordered(
            (e["family"] for e in results["throughput"] if e["config"] == "1x1"), FAMILY_ORDER
        )
        header = ["app", "mode", *(LABEL_BASE[f] for f in families)]
        if "brick" in families and "gunicorn-gthread" in families:
            header.append("brick ÷ gunicorn gthread")
        rows = []
        for app in ordered((e["app"] for e in results["throughput"]), APP_ORDER):
            for mode in ordered((e["mode"] for e in results["throughput"]), MODE_ORDER):
                values = {f: cost(results, app, f, "1x1", mode) for f in families}
                row = [APP_LABELS.get(app, app), MODE_LABELS.get(mode, mode)]
                row += [fmt_us(values[f]) for f in families]
                if len(header) > len(row):
                    row.append(fmt_ratio(_ratio(values["brick"], values["gunicorn-gthread"])))
                rows.append(row)
        lines += ["Server CPU µs per request (lower is better):", ""]
        lines += [table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2)), ""]
    if chart:
        lines += [f"![server CPU per request](bench/results/{chart.rsplit('/', 1)[-1]})", ""]
    for entry in results.get("concurrency", []):
        lines.append(
            f"- Concurrency, `{entry['path']}` from {entry['connections']} connections at"
            f" {entry['workers']} {TIMES} {entry['threads']}: {LABEL_BASE.get(entry['family'])}"
            f" {entry['summary']['rps']:.0f} req/s, {entry['share_of_bound']:.0%} of the"
            f" {entry['bound_rps']:g} req/s bound."
        )
    memory = [
        f"{e['label']} {fmt_mib(e['loaded_kib'])} MiB"
        for e in results.get("memory", [])
        if e["app"] == "wsgi" and e["config"] == "1x1"
    ]
    if memory:
        lines.append("- Memory per worker after load, bare WSGI app: " + ", ".join(memory) + ".")
    lines += [
        "",
        "Run it yourself with `make bench` (`BENCH_QUICK=1` for a one-minute smoke run);",
        "bench/README.md explains the method.",
        README_END,
    ]
    return "\n".join(lines)


def replace_readme_section(readme: str, section: str) -> str:
    """`readme` with the text between its Performance markers replaced by `section`.

    `section` is what `readme_section` returns, markers included. A README without exactly
    one pair of markers, in order, is an error: nothing is replaced by guesswork.
    """
    if readme.count(README_START) != 1 or readme.count(README_END) != 1:
        raise ValueError("the README needs exactly one pair of Performance section markers")
    start = readme.index(README_START)
    end = readme.index(README_END)
    if end < start:
        raise ValueError("the README's Performance section markers are out of order")
    return readme[:start] + section + readme[end + len(README_END) :]
