"""Leaderboard writers: rich (terminal), Markdown, CSV, JSON and a self-contained HTML page.

CSV and JSON carry every value at full precision (floats as ``repr``), so reading them back with
:func:`read_csv` / ``json.loads`` gives exactly the leaderboard's values. The HTML page needs
no network: inline CSS, a small inline table sorter, and plots embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import resources
from typing import Any

from distillbench.reports.declared import header, with_random
from distillbench.reports.leaderboard import CI_NOTE, STD_NOTE, TEST_NOTE, Leaderboard
from distillbench.reports.rows import ROW_FIELDS, Row

FORMATS = ("rich", "md", "csv", "json", "html")  # cli.report keeps a copy (its --help imports nothing); a test compares
STATUS_LIMIT = 160  # characters of the status text shown in md/rich tables (CSV/JSON/HTML: all)


# -- cell text ----------------------------------------------------------------------------------
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
        Column("step", "step ms", True, lambda r: _sig(r.step_s_mean, 1e3), lambda r: r.step_s_mean),
        Column("distill", "distill s", True, lambda r: _sig(r.distill_s_mean), lambda r: r.distill_s_mean),
        Column("compile", "compile s", True, lambda r: _sig(r.compile_s_mean), lambda r: r.compile_s_mean),
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
                 f"time per distillation step, distill = total distillation time, compile = step compilation.")
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


# -- Markdown -----------------------------------------------------------------------------------
#: Columns whose text the report computes from numbers only ("[80.22, 80.50] t", "93.7 [1]"): no user text.
NUMERIC_COLUMNS = frozenset({"rank", "ipc", "acc", "ci", "vs_top", "seeds", "random", "gain", "step", "distill",
                             "compile", "paper", "paper_diff"})
_MD_ACTIVE = str.maketrans({c: "\\" + c for c in "\\`*_[]#~!|"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"})


def md_text(text: str) -> str:
    """User text (names, messages, settings) as literal Markdown: HTML and Markdown syntax escaped,
    and on one line, so a name like ``<script>`` or ``a|b`` is shown, never interpreted."""
    return " ".join(str(text).split()).translate(_MD_ACTIVE)


def _md_cell(text: str, column: str) -> str:
    return text.replace("|", "\\|") if column in NUMERIC_COLUMNS else md_text(text)


def to_markdown(board: Leaderboard, merge_line: str | None = None) -> str:
    sources = paper_sources(board)
    cols = columns(board, sources)
    out = ["# distillbench leaderboard", ""]
    out += [" ".join(legend_lines(board, merge_line, md_text)), ""]
    for table in board.tables:
        out += [f"## {md_text(table.title)}", ""]
        out.append("| " + " | ".join(md_text(c.header) for c in cols) + " |")
        out.append("|" + "|".join("---:" if c.right else "---" for c in cols) + "|")
        for row in table.rows:
            out.append("| " + " | ".join(_md_cell(c.text(row), c.key) for c in cols) + " |")
        out.append("")
    if sources:
        out.append("Paper numbers: " + "; ".join(f"[{n}] {label}" for label, n in sources.items()) + ".")
        out.append("")
    return "\n".join(out)


# -- rich ---------------------------------------------------------------------------------------
_STATUS_STYLE = {"done": "green", "partial": "yellow", "failed": "red"}


def print_rich(board: Leaderboard, console, merge_line: str | None = None) -> None:
    from rich.table import Table as RichTable

    sources = paper_sources(board)
    cols = columns(board, sources)
    for line in legend_lines(board, merge_line):
        console.print(line, highlight=False, markup=False)
    for table in board.tables:
        rt = RichTable(title=_escape_rich(table.title), title_justify="left", title_style="bold")
        for c in cols:
            rt.add_column(_escape_rich(c.header), justify="right" if c.right else "left")
        for row in table.rows:
            cells = []
            for c in cols:
                text = _escape_rich(c.text(row))
                if c.key == "status":
                    text = f"[{_STATUS_STYLE.get(row.status, 'white')}]{text}[/]"
                cells.append(text)
            rt.add_row(*cells)
        console.print(rt)
    if sources:
        console.print("Paper numbers: " + "; ".join(f"[{n}] {label}" for label, n in sources.items()),
                      highlight=False, markup=False)


def _escape_rich(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- JSON ---------------------------------------------------------------------------------------
def to_json(board: Leaderboard) -> str:
    """Schema ``distillbench.leaderboard`` (``SCHEMA_VERSION``); keys in a fixed order; floats at full precision."""
    return json.dumps(board.to_dict(), indent=2, ensure_ascii=False) + "\n"


# -- CSV ----------------------------------------------------------------------------------------
#: One CSV row per (table, configuration). Types: str, "str?" (empty = none), "int?", "float?",
#: "bool?" (true/false/empty), json (lists and objects, compact JSON text).
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("table", "str"), ("table_key", "json"),
    ("rank", "int?"), ("dataset", "str"), ("ipc", "int"), ("method", "str"), ("objective", "str"),
    ("kernel", "str"), ("arch", "str?"), ("loss", "str"), ("learn_labels", "bool?"), ("evaluator", "str"),
    ("setting", "str"), ("status", "str"), ("status_text", "str"), ("runs", "int"), ("seeds", "json"),
    ("acc_mean_pct", "float?"), ("acc_std_pct", "float?"), ("random_mean_pct", "float?"),
    ("gain_mean_pts", "float?"), ("gain_std_pts", "float?"), ("step_s_mean", "float?"),
    ("distill_s_mean", "float?"), ("compile_s_mean", "float?"), ("support_size", "int?"),
    ("paper_acc_pct", "float?"), ("paper_std_pct", "float?"), ("paper_diff_pts", "float?"),
    ("paper_source", "str?"), ("devices", "json"), ("failures", "json"), ("run_ids", "json"), ("params", "json"),
    ("acc_by_seed_pct", "json"), ("acc_ci_low_pct", "float?"), ("acc_ci_high_pct", "float?"), ("ci_method", "str?"),
    ("vs_top_test", "str?"), ("vs_top_p", "float?"), ("tied_with_top", "bool?"), ("evaluated_from", "json"),
    ("evaluator_metrics", "json"),
)
assert [name for name, _ in CSV_COLUMNS[2:]] == list(ROW_FIELDS), "CSV columns must follow Row"


def csv_records(board: Leaderboard) -> list[dict[str, Any]]:
    """The values the CSV holds, one dict per (table, configuration), before text encoding."""
    out = []
    for table, row in board.all_rows():
        record = {"table": table.title, "table_key": dict(table.key)}
        record.update(row.to_dict())
        out.append(record)
    return out


def _encode(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if kind == "bool?":
        return "true" if value else "false"
    if kind == "float?":
        return repr(float(value))
    return str(value)


def _decode(text: str, kind: str) -> Any:
    if kind == "str":
        return text
    if kind == "json":
        return json.loads(text)
    if text == "":
        return None
    if kind == "bool?":
        return {"true": True, "false": False}[text]
    if kind in ("int", "int?"):
        return int(text)
    if kind == "float?":
        return float(text)
    return text  # "str?"


def to_csv(board: Leaderboard) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in CSV_COLUMNS])
    for record in csv_records(board):
        writer.writerow([_encode(record[name], kind) for name, kind in CSV_COLUMNS])
    return buffer.getvalue()


def read_csv(text: str) -> list[dict[str, Any]]:
    """Parse :func:`to_csv` output back into typed values (equal to :func:`csv_records`)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    kinds = dict(CSV_COLUMNS)
    if header != [name for name, _ in CSV_COLUMNS]:
        raise ValueError("not a distillbench leaderboard CSV (unexpected header)")
    return [{name: _decode(cell, kinds[name]) for name, cell in zip(header, cells)} for cells in reader]


# -- HTML ---------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    """The page's stylesheet and table sorter, kept as real .css/.js files in ``reports/assets/``."""
    return "\n" + resources.files("distillbench.reports").joinpath("assets", name).read_text(encoding="utf-8")


def _sort_attr(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def to_html(board: Leaderboard, plots: Sequence[Any] = (), merge_line: str | None = None) -> str:
    """One self-contained page: every table (click a header to sort) and the plots as data URIs.

    ``#sort=<table id>:<column key>:<asc|desc>`` in the URL sorts a table on load, e.g.
    ``leaderboard.html#sort=table-1:acc:asc``.
    """
    e = html.escape
    sources = paper_sources(board)
    cols = columns(board, sources, status_limit=None)
    numeric = NUMERIC_COLUMNS
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>distillbench leaderboard</title>", f"<style>{_asset('leaderboard.css')}</style>", "</head>",
        "<body>",
        "<h1>distillbench leaderboard</h1>",
    ]
    parts += [f'<p class="meta">{e(line)}</p>' for line in legend_lines(board, merge_line)]
    if board.stores:
        parts.append(f'<p class="meta">Stores: {e(", ".join(board.stores))}</p>')
    for index, table in enumerate(board.tables, start=1):
        parts.append(f'<section class="board"><h2>{e(table.title)}</h2>')
        parts.append(f'<div class="scroll"><table class="leaderboard sortable" id="table-{index}"><thead><tr>')
        for c in cols:
            kind = "num" if c.key in numeric else "text"
            parts.append(f'<th data-key="{c.key}" data-type="{kind}" title="click to sort">{e(c.header)}</th>')
        parts.append("</tr></thead><tbody>")
        for row in table.rows:
            parts.append(f'<tr class="{e(row.status)}">')
            for c in cols:
                klass = "num" if c.right else ("status" if c.key == "status" else "text")
                parts.append(f'<td class="{klass}" data-v="{e(_sort_attr(c.sort(row)))}">{e(c.text(row))}</td>')
            parts.append("</tr>")
        parts.append("</tbody></table></div></section>")
    if sources:
        parts.append('<p class="meta">Paper numbers: '
                     + "; ".join(f"[{n}] {e(label)}" for label, n in sources.items()) + "</p>")
    if plots:
        parts.append('<section class="plots"><h2>Plots</h2>')
        for plot in plots:
            data = base64.b64encode(plot.png).decode("ascii")
            parts.append(f'<figure id="plot-{e(plot.name)}"><img class="plot" alt="{e(plot.title)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{e(plot.title)}: {e(plot.caption)}'
                         f"</figcaption></figure>")
        parts.append("</section>")
    parts += [f"<script>{_asset('leaderboard.js')}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)
