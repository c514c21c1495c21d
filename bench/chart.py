"""The benchmark's chart: server CPU µs per request, one panel per app and mode (PNG).

One bar per server of one workers x threads configuration (1x1 unless told), each labelled
with its value, so a reader sees at a glance which server costs least per request. Each panel
has its own scale: Django's costs dwarf the bare WSGI app's.
"""

from __future__ import annotations

from pathlib import Path

from bench.report import (
    APP_LABELS,
    APP_ORDER,
    FAMILY_ORDER,
    LABEL_BASE,
    MODE_LABELS,
    MODE_ORDER,
    Results,
    config_title,
    configs,
    cost,
    ordered,
)

COLOURS = {
    "brick": "#d95f02",
    "gunicorn-sync": "#7570b3",
    "gunicorn-gthread": "#1b9e77",
    "granian": "#e7298a",
    "waitress": "#66a61e",
    "floor": "#999999",
}


def draw(results: Results, path: Path, config: str | None = None, title: str = "") -> bool:
    """Write the chart to `path`; False when there is nothing to draw.

    `config` is the workers x threads configuration drawn: "1x1" when the run has it,
    else the first one (the stack's).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = configs(results)
    if config is None:
        config = "1x1" if "1x1" in found else (found[0] if found else "1x1")
    entries = [e for e in results.get("throughput", []) if e["config"] == config]
    if not entries:
        return False
    apps = ordered((e["app"] for e in entries), APP_ORDER)
    modes = ordered((e["mode"] for e in entries), MODE_ORDER)
    families = ordered((e["family"] for e in entries), FAMILY_ORDER)
    per_app = max(3.2, 0.62 * len(families))  # inches: room for every server's label
    width = max(6.4, per_app * len(apps) + 0.6)
    fig, axes = plt.subplots(
        len(modes), len(apps), figsize=(width, 3.0 * len(modes) + 1.1), squeeze=False
    )
    for row, mode in enumerate(modes):
        for col, app in enumerate(apps):
            ax = axes[row][col]
            values = [cost(results, app, f, config, mode) for f in families]
            heights = [v if v is not None and v != float("inf") else 0.0 for v in values]
            bars = ax.bar(
                range(len(families)),
                heights,
                color=[COLOURS.get(f, "#999999") for f in families],
            )
            for bar, value in zip(bars, values, strict=True):
                text = "—" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"
                ax.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.set_xticks(range(len(families)))
            ax.set_xticklabels(
                [LABEL_BASE.get(f, f).replace(" ", "\n") for f in families], fontsize=8
            )
            ax.set_ylim(0, max([*heights, 1.0]) * 1.18)
            ax.set_title(
                f"{APP_LABELS.get(app, app)}, {MODE_LABELS.get(mode, mode).strip('`')}",
                fontsize=10,
            )
            if col == 0:
                ax.set_ylabel("server CPU µs / request")
            ax.spines[["top", "right"]].set_visible(False)
    heading = title or "Server CPU per request (lower is better)"
    where = "server and wrk each on one core" if config != "stack" else "wrk on one core"
    fig.suptitle(f"{heading}\n{config_title(config)}, {where}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
