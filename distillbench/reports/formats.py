"""Leaderboard writers: rich (terminal), Markdown, CSV and JSON (the HTML page: html_page.py).

CSV and JSON carry every value at full precision (floats as ``repr``), so reading them back with
:func:`read_csv` / ``json.loads`` gives exactly the leaderboard's values.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from distillbench.reports.columns import NUMERIC_COLUMNS, columns, legend_lines, paper_sources
from distillbench.reports.leaderboard import Leaderboard
from distillbench.reports.rows import ROW_FIELDS

FORMATS = ("rich", "md", "csv", "json", "html")  # cli.report keeps a copy (its --help imports nothing); a test compares


# -- Markdown -----------------------------------------------------------------------------------
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
    ("evaluator_metrics", "json"), ("full_data_pct", "float?"), ("recovery_pct", "float?"),
    ("random_recovery_pct", "float?"), ("gain_by_augment_pts", "json"), ("robust_gain_pts", "float?"),
    ("random_std_pct", "float?"), ("peak_rss_mb_mean", "float?"),
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
