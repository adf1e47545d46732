"""The leaderboard as one self-contained HTML page: no network, inline CSS, a small inline table
sorter, and the plots embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from distillbench.reports.columns import NUMERIC_COLUMNS, columns, legend_lines, paper_sources
from distillbench.reports.leaderboard import Leaderboard


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
