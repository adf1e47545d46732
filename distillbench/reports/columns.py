"""The columns of a displayed leaderboard (Markdown, rich, HTML): what each shows of a row, and the legend.

Numbers are shown rounded here; CSV and JSON carry the rows' values at full precision instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from distillbench.reports.declared import header, with_random
from distillbench.reports.leaderboard import CI_NOTE, STD_NOTE, TEST_NOTE, Leaderboard
from distillbench.reports.rows import Row

STATUS_LIMIT = 160  # characters of the status text shown in md/rich tables (CSV/JSON/HTML: all)
#: Columns whose text the report computes from numbers only ("[80.22, 80.50] t", "93.7 [1]"): no user text.
NUMERIC_COLUMNS = frozenset({"rank", "ipc", "acc", "ci", "vs_top", "seeds", "random", "gain", "recovery", "step",
                             "distill", "compile", "paper", "paper_diff"})


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def mean_std(mean: float | None, std: float | None, sign: bool = False) -> str:
    if mean is None:
        return "-"
    return f"{_num(mean, sign=sign)} ± {'n/a' if std is None else _num(std)}"


def _sig(value: float | None, scale: float = 1.0) -> str:
    """Three significant digits, never e-notation: ``5.55``, ``0.0999``, ``1930``."""
    if value is None:
        return "-"
    shown = value * scale
    return f"{shown:.3g}" if abs(shown) < 1000 else f"{shown:.0f}"


def _gain(row: Row) -> str:
    """The gain, marked ``!`` when the mean is below zero (the distilled set loses to random images)."""
    text = mean_std(row.gain_mean_pts, row.gain_std_pts, True)
    return text + " !" if row.gain_mean_pts is not None and row.gain_mean_pts < 0 else text


def _robust_gain(row: Row) -> str:
    """``-1.42 (dsa -1.42, none +0.40)``: the least gain over the augmentations, then each."""
    if row.robust_gain_pts is None:
        return "-"
    each = ", ".join(f"{name} {gain:+.2f}" for name, gain in row.gain_by_augment_pts.items())
    return f"{row.robust_gain_pts:+.2f} ({each})"


def _recovery(row: Row) -> str:
    """``93.1 (57.2) of 97.40``: the set's and the random subset's share of the full-data accuracy."""
    if row.full_data_pct is None or row.recovery_pct is None:
        return "-"
    return f"{row.recovery_pct:.1f} ({_num(row.random_recovery_pct, 1)}) of {row.full_data_pct:.2f}"


def _paper(row: Row, sources: dict[str, int]) -> str:
    if row.paper_acc_pct is None:
        return "-"
    std = f" ± {row.paper_std_pct:g}" if row.paper_std_pct is not None else ""
    return f"{row.paper_acc_pct:g}{std} [{sources[row.paper_source]}]"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rank_text(row: Row) -> str:
    """``2``; ``2 ≈`` when the difference to the top row is not significant (a statistical tie)."""
    if row.rank is None:
        return "-"
    return f"{row.rank} ≈" if row.tied_with_top else str(row.rank)


def _ci(row: Row) -> str:
    if row.acc_ci_low_pct is None:
        return "-"
    return f"[{row.acc_ci_low_pct:.2f}, {row.acc_ci_high_pct:.2f}] {row.ci_method}"


def _vs_top(row: Row) -> str:
    if row.vs_top_p is None:
        return "top" if row.rank == 1 else "-"
    p = f"p={row.vs_top_p:.2g}" if row.vs_top_p >= 0.001 else "p<0.001"
    return f"{p} {row.vs_top_test}{', tied' if row.tied_with_top else ''}"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    right: bool
    text: Callable[[Row], str]
    sort: Callable[[Row], Any]  # number, str or None (sorted last)


def _declared_columns(board: Leaderboard) -> list[Column]:
    """One column per evaluator whose declared metrics the rows hold: ``privacy: nearest train × · MIA %``."""
    cols = []
    for evaluator, declared in board.metrics.items():
        text = partial(_declared_text, evaluator, declared)
        cols.append(Column(f"metrics-{evaluator}", f"{evaluator}: " + " · ".join(header(m) for m in declared),
                           False, text, text))
    return cols


def _declared_text(evaluator: str, declared, row: Row) -> str:
    """``1.23× (random 0.00×) · 55.2 (random 51.4)``: the means of what ``evaluator`` declares."""
    if row.evaluator_name != evaluator or not row.evaluator_metrics:
        return "-"
    return " · ".join(with_random(m, row.evaluator_metrics) for m in declared)


def columns(board: Leaderboard, sources: dict[str, int], status_limit: int | None = STATUS_LIMIT) -> list[Column]:
    """The displayed columns (md, rich, html); dataset/ipc/setting only where they vary."""
    rows = [r for _, r in board.all_rows()]
    cols = [Column("rank", "rank", True, _rank_text, lambda r: r.rank)]
    if "dataset" not in board.group_by:
        cols.append(Column("dataset", "dataset", False, lambda r: r.dataset, lambda r: r.dataset))
    if "ipc" not in board.group_by:
        cols.append(Column("ipc", "ipc", True, lambda r: str(r.ipc), lambda r: r.ipc))
    cols += [
        Column("method", "method", False, lambda r: r.method, lambda r: r.method),
        Column("labels", "labels", False, lambda r: r.labels_text(), lambda r: r.labels_text()),
        Column("evaluator", "evaluator", False, lambda r: r.evaluator, lambda r: r.evaluator),
    ]
    if any(r.setting for r in rows):
        cols.append(Column("setting", "setting", False, lambda r: r.setting or "-", lambda r: r.setting))
    status = (lambda r: _clip(r.status_text, status_limit)) if status_limit else (lambda r: r.status_text)
    cols += _declared_columns(board)
    cols += [
        Column("acc", "accuracy % (mean ± std)", True, lambda r: mean_std(r.acc_mean_pct, r.acc_std_pct),
               lambda r: r.acc_mean_pct),
        Column("ci", "95% CI", True, _ci, lambda r: r.acc_ci_low_pct),
        Column("vs_top", "vs top", False, _vs_top, lambda r: r.vs_top_p),
        Column("seeds", "seeds", True, lambda r: str(len(r.seeds)), lambda r: len(r.seeds)),
        Column("random", "random %", True, lambda r: _num(r.random_mean_pct), lambda r: r.random_mean_pct),
        Column("gain", "gain pts (mean ± std)", True, _gain, lambda r: r.gain_mean_pts),
    ]
    if any(r.robust_gain_pts is not None for r in rows):
        cols.append(Column("robust_gain", "robust gain pts (by augment)", True, _robust_gain,
                           lambda r: r.robust_gain_pts))
    if any(r.full_data_pct is not None for r in rows):
        cols.append(Column("recovery", "recovery % (random)", True, _recovery, lambda r: r.recovery_pct))
    cols += [
        Column("step", "step ms", True, lambda r: _sig(r.step_s_mean, 1e3), lambda r: r.step_s_mean),
        Column("distill", "distill s", True, lambda r: _sig(r.distill_s_mean), lambda r: r.distill_s_mean),
        Column("compile", "compile s", True, lambda r: _sig(r.compile_s_mean), lambda r: r.compile_s_mean),
        Column("peak", "peak MiB", True, lambda r: _sig(r.peak_rss_mb_mean), lambda r: r.peak_rss_mb_mean),
        Column("paper", "paper %", True, lambda r: _paper(r, sources), lambda r: r.paper_acc_pct),
        Column("paper_diff", "Δ paper pts", True, lambda r: _num(r.paper_diff_pts, sign=True),
               lambda r: r.paper_diff_pts),
        Column("device", "device", False, lambda r: ", ".join(r.devices), lambda r: ", ".join(r.devices)),
        Column("status", "status", False, status, lambda r: r.status_text),
    ]
    return cols


def paper_sources(board: Leaderboard) -> dict[str, int]:
    """Source label -> footnote number, in order of first appearance."""
    out: dict[str, int] = {}
    for _, row in board.all_rows():
        if row.paper_source and row.paper_source not in out:
            out[row.paper_source] = len(out) + 1
    return out


def legend_lines(board: Leaderboard, merge_line: str | None = None, user=str) -> list[str]:
    """The legend; ``user`` renders the user's filter values (``md_text`` in Markdown)."""
    lines = []
    if merge_line:
        lines.append(merge_line + ".")
    lines.append(f"Accuracy and gain: mean ± {STD_NOTE}. 95% CI: {CI_NOTE}. vs top: {TEST_NOTE}. Gain: over the class-balanced random real subset "
                 f"of the same size, in percentage points; ! marks a mean gain below zero (the status names every "
                 f"seed below random). Times: mean over the done seeds; step = steady-state "
                 f"time per distillation step, distill = total distillation time, compile = step compilation; "
                 f"peak = the run's peak resident memory in MiB (mean over the done seeds).")
    if any(r.robust_gain_pts is not None for _, r in board.all_rows()):
        lines.append("Robust gain: the least mean gain of the same sets under each augmentation they were scored "
                     "with (evaluator.augment), then each.")
    if any(r.full_data_pct is not None for _, r in board.all_rows()):
        lines.append("Recovery: mean accuracy in percent of the same evaluation trained on the whole training split "
                     "(`distillbench evaluate --full-data`), the random subset's in brackets, then that accuracy.")
    declared = [m for metrics in board.metrics.values() for m in metrics if m.higher_is_better is not None]
    if board.metrics:
        better = ", ".join(f"{header(m)}: {'higher' if m.higher_is_better else 'lower'} is better" for m in declared)
        lines.append(f"Evaluator metrics: mean over the done seeds, the random subset's in brackets"
                     f"{'; ' + better if better else ''}.")
    if board.filters:
        lines.append("Filters: " + " ".join(
            user(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}") for k, v in board.filters.items())
            + f" ({board.runs} run{'s' if board.runs != 1 else ''} pass).")
    return lines
