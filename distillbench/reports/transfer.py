"""Transfer tables (``report --transfer``): how a set distilled with one kernel scores under others.

Per table of the leaderboard (by default one per dataset and images per class), a matrix:
rows are what the set was distilled with (``objective/kernel(arch)/loss``, plus the row's
``setting`` when it has one), columns what it was evaluated with (the evaluator and the kernel and
arch it reported it used, e.g. ``krr(nngp, convnet3)``, ``nn(fc1)``, plus the ``evaluator.*`` part of
the setting, such as the networks' normalization: an evaluation's parameters name a column, never
a row). A cell is the mean ± sample
std of the test accuracy over seeds, and ``n`` the seeds. The same set scored by the same evaluator
both inside ``run`` and by ``distillbench evaluate`` gives the same numbers; the cell keeps the row
with more seeds (the run's on a tie). The last row, :data:`RANDOM`, is the class-balanced random
real subset of the same size under each column's evaluation (the same subsets for every method of a
seed), taken from the column's row with the most seeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from distillbench.reports.leaderboard import Leaderboard, Row


@dataclass
class Cell:
    mean_pct: float | None
    std_pct: float | None
    seeds: int


@dataclass
class TransferTable:
    key: dict[str, Any]
    title: str
    distilled: list[str]  # row labels
    evaluated: list[str]  # column labels
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": dict(self.key), "title": self.title, "distilled_with": list(self.distilled),
                "evaluated_with": list(self.evaluated),
                "cells": [{"distilled_with": d, "evaluated_with": e, "acc_mean_pct": c.mean_pct,
                           "acc_std_pct": c.std_pct, "seeds": c.seeds}
                          for (d, e), c in self.cells.items()]}


def distilled_label(row: Row) -> str:
    return _labelled(row.method, _setting_parts(row.setting)[0])


def evaluated_label(row: Row) -> str:
    return _labelled(row.evaluator, _setting_parts(row.setting)[1])


def _labelled(name: str, setting: str) -> str:
    return f"{name} {setting}" if setting else name


def _setting_parts(setting: str) -> tuple[str, str]:
    """A row's setting text (``key=value`` pairs) split into what the set was distilled with and
    what it was evaluated with (the ``evaluator.*`` pairs)."""
    pairs = re.split(r"\s(?=[\w.-]+=)", setting) if setting else []
    evaluated = [p for p in pairs if p.startswith("evaluator.")]
    return " ".join(p for p in pairs if p not in evaluated), " ".join(evaluated)


def build_transfer(board: Leaderboard) -> list[TransferTable]:
    out = []
    for table in board.tables:
        chosen: dict[tuple[str, str], Row] = {}
        for row in table.rows:
            if row.acc_mean_pct is None:
                continue
            key = (distilled_label(row), evaluated_label(row))
            kept = chosen.get(key)
            if kept is None or (len(row.seeds), not row.evaluated_from) > (len(kept.seeds), not kept.evaluated_from):
                chosen[key] = row
        distilled = sorted({d for d, _ in chosen})
        evaluated = sorted({e for _, e in chosen})
        cells = {key: Cell(r.acc_mean_pct, r.acc_std_pct, len(r.seeds)) for key, r in sorted(chosen.items())}
        randoms = _random_cells(chosen, evaluated)
        if randoms:
            distilled.append(RANDOM)
            cells.update(randoms)
        out.append(TransferTable(dict(table.key), table.title, distilled, evaluated, cells))
    return out


#: The row label of the random real subsets.
RANDOM = "random real subset (same evaluation)"


def _random_cells(chosen: dict[tuple[str, str], Row], evaluated: list[str]) -> dict[tuple[str, str], Cell]:
    """Per column, the random subsets' accuracy of the column's row with the most seeds holding one."""
    out = {}
    for column in evaluated:
        rows = [r for (_, e), r in chosen.items() if e == column and r.random_mean_pct is not None]
        if rows:
            best = max(rows, key=lambda r: len(r.seeds))
            out[(RANDOM, column)] = Cell(best.random_mean_pct, best.random_std_pct, len(best.seeds))
    return out


def cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    std = "n/a" if cell.std_pct is None else f"{cell.std_pct:.2f}"
    return f"{cell.mean_pct:.2f} ± {std} (n={cell.seeds})"


NOTE = ("Transfer: rows = distilled with (objective/kernel(arch)/loss), columns = evaluated with (evaluator(kernel, "
        "arch) as stored); test accuracy %, mean ± sample std over seeds (ddof=1), n = seeds; the last row: the "
        "class-balanced random real subsets of the same size under the same evaluation. Score more columns "
        "with `distillbench evaluate`.")


def to_markdown(tables: list[TransferTable]) -> str:
    from distillbench.reports.formats import md_text  # names are user text: escaped, never interpreted

    out = ["# distillbench transfer", "", NOTE, ""]
    for t in tables:
        out += [f"## {md_text(t.title)}", ""]
        out.append("| distilled with \\ evaluated with | " + " | ".join(md_text(e) for e in t.evaluated) + " |")
        out.append("|---|" + "---:|" * len(t.evaluated))
        for d in t.distilled:
            out.append(f"| {md_text(d)} | "
                       + " | ".join(cell_text(t.cells.get((d, e))) for e in t.evaluated) + " |")
        out.append("")
    return "\n".join(out)


def print_rich(tables: list[TransferTable], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(NOTE, highlight=False, markup=False)
    for t in tables:
        rt = Table(title=escape(t.title), title_justify="left", title_style="bold")
        rt.add_column("distilled with \\ evaluated with")
        for e in t.evaluated:
            rt.add_column(escape(e), justify="right")
        for d in t.distilled:
            rt.add_row(escape(d), *(cell_text(t.cells.get((d, e))) for e in t.evaluated))
        console.print(rt)


def to_json(tables: list[TransferTable]) -> str:
    import json

    doc = {"schema": "distillbench.transfer", "version": 2, "note": NOTE, "tables": [t.to_dict() for t in tables]}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_csv(tables: list[TransferTable]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "distilled_with", "evaluated_with", "acc_mean_pct", "acc_std_pct", "seeds"])
    for t in tables:
        for (d, e), c in t.cells.items():
            writer.writerow([t.title, d, e, "" if c.mean_pct is None else repr(c.mean_pct),
                             "" if c.std_pct is None else repr(c.std_pct), c.seeds])
    return buffer.getvalue()
