"""`python -m bench`: run the benchmark, the stack benchmark, the profiler or the instruction
count; render a report.

Run it from the repository root with the interpreter that has every server installed
(`make bench` uses bench/.venv). Options override the BENCH_* environment variables, which
override the defaults; `python -m bench run --help` lists them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench import report
from bench.runner import MODES, Progress, Settings
from bench.servers import APPS, ROOT, ServerError

RESULTS = ROOT / "bench" / "results"


class RichProgress(Progress):
    """A progress bar over every wrk run, with each scenario's medians printed as it ends."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.console = Console(stderr=True)
        self.bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=None)

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)
        self.bar.start()

    def step(self, description: str) -> None:
        self.bar.update(self.task, description=description)

    def advance(self) -> None:
        self.bar.advance(self.task)

    def result(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def warn(self, line: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)

    def stop(self) -> None:
        self.bar.stop()


def progress() -> Progress:
    try:
        return RichProgress()
    except ImportError:
        return Progress()


def write_outputs(results: dict[str, Any], prefix: Path, title: str = "") -> list[Path]:
    """prefix.json (raw), prefix.png (chart, when matplotlib is there) and prefix.md."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    raw = prefix.with_suffix(".json")
    raw.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    written.append(raw)
    png = prefix.with_suffix(".png")
    chart: str | None = None
    try:
        from bench.chart import draw

        if draw(results, png, title=title):
            chart = png.name
            written.append(png)
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
    md = prefix.with_suffix(".md")
    md.write_text(report.render(results, chart))
    written.append(md)
    return written


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serializable: {value!r}")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--apps", help=f"comma-separated, from {','.join(APPS)} (BENCH_APPS)")
    parser.add_argument(
        "--servers",
        help="comma-separated family[-WxT], e.g. brick,gunicorn-gthread-1x4 (BENCH_SERVERS)",
    )
    parser.add_argument("--modes", help=f"comma-separated, from {','.join(MODES)} (BENCH_MODES)")
    parser.add_argument("--duration", type=int, help="seconds per measured run (BENCH_DURATION)")
    parser.add_argument("--repeat", type=int, help="measured runs per scenario (BENCH_REPEAT)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up, 0 for none (BENCH_WARMUP)")
    parser.add_argument("--connections", type=int, help="wrk connections (BENCH_CONNECTIONS)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")


def settings_from(options: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    import os

    env = dict(os.environ if environ is None else environ)
    if options.quick:
        env["BENCH_QUICK"] = "1"
    names = {
        "apps": "BENCH_APPS",
        "servers": "BENCH_SERVERS",
        "modes": "BENCH_MODES",
        "duration": "BENCH_DURATION",
        "repeat": "BENCH_REPEAT",
        "warmup": "BENCH_WARMUP",
        "connections": "BENCH_CONNECTIONS",
    }
    for attr, var in names.items():
        value = getattr(options, attr, None)
        if value is not None:
            env[var] = str(value)
    if getattr(options, "no_concurrency", False):
        env["BENCH_CONCURRENCY"] = "0"
    return Settings.from_env(env)


def cmd_run(options: argparse.Namespace) -> int:
    try:
        settings = settings_from(options)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    prefix = (
        Path(options.out) if options.out else RESULTS / ("quick" if settings.quick else "latest")
    )
    try:
        results = run_with_progress(settings)
    except ServerError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    for path in write_outputs(results, prefix):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return summarize_targets(results)


def run_with_progress(settings: Settings) -> dict[str, Any]:
    from bench.runner import run

    return run(settings, progress())


def summarize_targets(results: dict[str, Any]) -> int:
    """Print issue 6's targets; exit status 1 when a server could not be measured."""
    note = report.load_note(results)
    if note:
        print(note.replace("**", ""))
    for target in report.targets(results):
        print(f"  {target.verdict.strip('*'):>12}  {target.goal}: {target.detail}")
    for failure in results.get("failures", []):
        first = str(failure["error"]).strip().splitlines()[0]
        print(f"  failed: {failure['app']} on {failure['server']}: {first}", file=sys.stderr)
    return 1 if results.get("failures") else 0


def cmd_report(options: argparse.Namespace) -> int:
    source = Path(options.json)
    results = json.loads(source.read_text())
    prefix = Path(options.out) if options.out else source.with_suffix("")
    for path in write_outputs(results, prefix):
        print(f"wrote {path}")
    return 0


def cmd_readme(options: argparse.Namespace) -> int:
    """Rewrite the README's Performance section from a results JSON (default: the latest)."""
    source = Path(options.json) if options.json else RESULTS / "latest.json"
    readme = Path(options.readme) if options.readme else ROOT / "README.md"
    try:
        results = json.loads(source.read_text())
        if results.get("meta", {}).get("stack"):
            raise ValueError(f"{source} holds stack results; the README shows `make bench`'s")
        chart = source.with_suffix(".png")
        section = report.readme_section(results, chart.name if chart.exists() else None)
        readme.write_text(report.replace_readme_section(readme.read_text(), section))
    except (OSError, ValueError) as exc:
        print(f"bench readme: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the Performance section of {readme} from {source}")
    return 0


def cmd_stack(options: argparse.Namespace) -> int:
    from bench import stack

    try:
        settings = settings_from(options)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    prefix = Path(options.out) if options.out else RESULTS / "stack"
    try:
        results = stack.run(settings, base_url=options.url, progress=progress())
    except (ServerError, stack.StackError) as exc:
        print(f"bench stack: {exc}", file=sys.stderr)
        return 1
    for path in write_outputs(results, prefix, title="Server CPU per request (lower is better)"):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return summarize_targets(results)


def cmd_profile(options: argparse.Namespace) -> int:
    from bench import profiling

    return profiling.main(options)


def cmd_count(options: argparse.Namespace) -> int:
    from bench import instructions

    return instructions.main(options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="every app on every server, pinned, driven by wrk")
    _add_run_options(run)
    run.add_argument("--no-concurrency", action="store_true", help="skip the /sleep scenario")
    run.add_argument("--out", help="output prefix (default bench/results/latest, or quick)")
    run.set_defaults(func=cmd_run)

    stack_parser = sub.add_parser("stack", help="the same comparison through nginx (compose)")
    _add_run_options(stack_parser)
    stack_parser.add_argument(
        "--url",
        help="the stack's base URL (default: http://127.0.0.1:$BRICK_PORT, or where nginx is"
        " published)",
    )
    stack_parser.add_argument("--out", help="output prefix (default bench/results/stack)")
    stack_parser.set_defaults(func=cmd_stack)

    profile = sub.add_parser("profile", help="profile brick under wrk; top functions")
    from bench.profiling import add_options

    add_options(profile)
    profile.set_defaults(func=cmd_profile)

    count = sub.add_parser("count", help="instructions per request, under callgrind")
    from bench.instructions import add_options as add_count_options

    add_count_options(count)
    count.set_defaults(func=cmd_count)

    rep = sub.add_parser("report", help="render the markdown and the chart from a results JSON")
    rep.add_argument("json")
    rep.add_argument("--out", help="output prefix (default: beside the JSON)")
    rep.set_defaults(func=cmd_report)

    readme = sub.add_parser("readme", help="put a results JSON's tables in the README")
    readme.add_argument("json", nargs="?", help="default: bench/results/latest.json")
    readme.add_argument("--readme", help="the file to rewrite (default: README.md)")
    readme.set_defaults(func=cmd_readme)

    options = parser.parse_args(argv)
    result: int = options.func(options)
    return result


if __name__ == "__main__":
    sys.exit(main())
