"""Leaderboard plots (matplotlib, no pyplot state): PNG bytes for the HTML page and for files.

* ``accuracy_vs_ipc``: accuracy (mean ± sample std over seeds) against images per class, one
  line per method configuration, with the random real subset of the same size dashed.
* ``accuracy_vs_step_time``: accuracy against steady-state time per step on a log axis, one
  point per configuration and images per class (the view of RFAD's Figure 2).
* ``step_time_vs_support``: time per step against support size (images per class x classes),
  log-log, one line per configuration.

One panel per dataset. Only rows with at least one done run are drawn.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from distillbench.reports.leaderboard import Leaderboard, Row

#: Markers of the rows whose objective declares none (``Component.marker``), by series position.
_OTHER_MARKERS = "DvP*Xh<>"


@dataclass(frozen=True)
class Plot:
    name: str  # file-name part: "accuracy_vs_ipc"
    title: str
    caption: str
    png: bytes


def series_label(row: Row) -> str:
    """A row's method configuration without its images per class (one line across ipc)."""
    parts = [row.method]
    if row.learn_labels is not None:
        parts.append(f"{row.labels_text()} labels")
    parts.append(row.evaluator)
    if row.setting:
        parts.append(row.setting)
    return " ".join(parts)


def _by_dataset(board: Leaderboard) -> dict[str, dict[str, list[Row]]]:
    """dataset -> series label -> rows (done rows only, sorted by ipc)."""
    out: dict[str, dict[str, list[Row]]] = {}
    several_devices = len({d for _, r in board.all_rows() for d in r.devices}) > 1
    for _, row in board.all_rows():
        if row.acc_mean_pct is None:
            continue
        label = series_label(row)
        if several_devices:
            label += " @ " + ", ".join(row.devices)
        out.setdefault(row.dataset, {}).setdefault(label, []).append(row)
    for series in out.values():
        for rows in series.values():
            rows.sort(key=lambda r: r.ipc)
    return dict(sorted(out.items()))


def plain_text(draw):
    """Run a plot function with every text plain: names come from users (``evaluate --name 'x$'``),
    and matplotlib would otherwise parse ``$...$`` in a label, title or legend as mathtext and fail.
    Its warnings (a log axis without positive values, from a damaged store) are not printed."""
    import functools

    @functools.wraps(draw)
    def plain(*args, **kwargs):
        import warnings

        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a report's stderr is its one warning line, not matplotlib's
            return draw(*args, **kwargs)

    return plain


def _figure(n_panels: int):
    from matplotlib.figure import Figure

    panels = max(n_panels, 1)
    fig = Figure(figsize=(11.0, 4.2 * panels), dpi=100, layout="constrained")
    axes = [fig.add_subplot(panels, 1, i + 1) for i in range(panels)]
    return fig, axes


def objective_markers(registry) -> dict[str, str]:
    """Objective name -> the marker its declaration asks for (``Component.marker``)."""
    return {e.component.name: e.component.marker for e in registry.entries("objective") if e.component.marker}


def _style(index: int, row: Row, markers: Mapping[str, str]) -> dict:
    import matplotlib

    palette = list(matplotlib.colormaps["tab10"].colors) + list(matplotlib.colormaps["tab20"].colors[1::2])
    marker = markers.get(row.objective) or _OTHER_MARKERS[index % len(_OTHER_MARKERS)]
    return {"color": palette[index % len(palette)], "marker": marker}


def _empty(ax, text: str = "no completed runs to plot") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _ci_err(rows: list[Row]) -> list[list[float]]:
    """Asymmetric error bars: each row's 95% interval of the mean (stats.py); none with one seed."""
    low = [r.acc_mean_pct - r.acc_ci_low_pct if r.acc_ci_low_pct is not None else 0.0 for r in rows]
    high = [r.acc_ci_high_pct - r.acc_mean_pct if r.acc_ci_high_pct is not None else 0.0 for r in rows]
    return [low, high]


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


@plain_text
def accuracy_vs_ipc(board: Leaderboard, markers: Mapping[str, str]) -> bytes:
    data = _by_dataset(board)
    fig, axes = _figure(len(data))
    if not data:
        _empty(axes[0])
    for ax, (dataset, series) in zip(axes, data.items()):
        baseline: dict[int, list[float]] = {}
        for index, (label, rows) in enumerate(series.items()):
            dodge = 1.0 + 0.02 * (index - (len(series) - 1) / 2)  # side by side, so error bars stay readable
            ipcs = [r.ipc * dodge for r in rows]
            ax.errorbar(ipcs, [r.acc_mean_pct for r in rows], yerr=_ci_err(rows),
                        label=label, capsize=3, linewidth=1.2, markersize=6, **_style(index, rows[0], markers))
            for r in rows:
                if r.random_mean_pct is not None:
                    baseline.setdefault(r.ipc, []).append(r.random_mean_pct)
        if baseline:
            xs = sorted(baseline)
            ax.plot(xs, [sum(baseline[x]) / len(baseline[x]) for x in xs], linestyle="--", color="0.4",
                    marker="x", label="random real subset (mean)")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted({r.ipc for rows in series.values() for r in rows}))
        ax.get_xaxis().set_major_formatter("{x:g}")
        ax.set_xlabel("images per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: accuracy vs images per class (mean and 95% interval over seeds)")
        ax.grid(True, alpha=0.3)
        _legend(ax)
    return _png(fig)


def _timed_panels(board: Leaderboard, draw_rows, finish) -> bytes:
    """One panel per dataset; ``draw_rows(ax, index, label, rows)`` per series with step times."""
    data = _by_dataset(board)
    fig, axes = _figure(len(data))
    if not data:
        _empty(axes[0])
    for ax, (dataset, series) in zip(axes, data.items()):
        drawn = False
        for index, (label, rows) in enumerate(series.items()):
            rows = [r for r in rows if r.step_s_mean and r.step_s_mean > 0]  # log axes
            if rows:
                drawn = True
                draw_rows(ax, index, label, rows)
        if not drawn:
            _empty(ax, "no step times recorded")
            continue
        finish(ax, dataset, series)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax)
    return _png(fig)


@plain_text
def accuracy_vs_step_time(board: Leaderboard, markers: Mapping[str, str]) -> bytes:
    def draw_rows(ax, index, label, rows):
        ax.errorbar([r.step_s_mean for r in rows], [r.acc_mean_pct for r in rows],
                    yerr=_ci_err(rows), linestyle="none", capsize=3, markersize=7,
                    label=label, **_style(index, rows[0], markers))
        if len({r.ipc for r in rows}) > 1:
            for r in rows:
                ax.annotate(f"{r.ipc}", (r.step_s_mean, r.acc_mean_pct), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)

    def finish(ax, dataset, series):
        ax.set_xscale("log")
        ax.set_xlabel("steady-state time per step (s, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: accuracy vs time per step (labels: images per class)")

    return _timed_panels(board, draw_rows, finish)


@plain_text
def step_time_vs_support(board: Leaderboard, markers: Mapping[str, str]) -> bytes:
    def draw_rows(ax, index, label, rows):
        xs = [r.support_size if r.support_size else r.ipc for r in rows]
        ax.plot(xs, [r.step_s_mean for r in rows], label=label, linewidth=1.2, markersize=6,
                **_style(index, rows[0], markers))

    def finish(ax, dataset, series):
        known = all(r.support_size for rows in series.values() for r in rows)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("support size (images)" if known else "support size (images; images per class where unknown)")
        ax.set_ylabel("steady-state time per step (s)")
        ax.set_title(f"{dataset}: time per step vs support size")

    return _timed_panels(board, draw_rows, finish)


PLOTS = (
    ("accuracy_vs_ipc", "Accuracy vs images per class", accuracy_vs_ipc,
     "Test accuracy (mean and 95% interval over seeds: t with 5+ seeds, bootstrap with 2-4) per method "
     "configuration; dashed: the random real subset."),
    ("accuracy_vs_step_time", "Accuracy vs time per step", accuracy_vs_step_time,
     "Each point a configuration, with its 95% interval; x: steady-state time per distillation step, log scale "
     "(RFAD Figure 2 view)."),
    ("step_time_vs_support", "Time per step vs support size", step_time_vs_support,
     "Steady-state time per step against the support size (images per class × classes), log-log."),
)


def render_plots(board: Leaderboard, markers: Mapping[str, str] | None = None) -> list[Plot]:
    """Every plot of ``board``; ``markers``: objective name -> marker (:func:`objective_markers`)."""
    return [Plot(name, title, caption, draw(board, markers or {})) for name, title, draw, caption in PLOTS]


def write_plots(plots: list[Plot], directory: str | Path, stem: str = "leaderboard") -> list[Path]:
    """Each plot as ``<stem>_<name>.png`` in ``directory``, each file replaced whole or not at all."""
    from distillbench.reports.output import write_atomic

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(directory))
    paths = []
    for plot in plots:
        path = directory / f"{stem}_{plot.name}.png"
        write_atomic(path, plot.png)
        paths.append(path)
    return paths
