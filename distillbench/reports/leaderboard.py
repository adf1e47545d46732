"""Leaderboards: runs from one or more result stores, merged, filtered, grouped into ranked tables.

This module reads SQLite only (through :mod:`distillbench.store.database`); it never imports JAX.
It composes one module per concern, and is the entry point the CLI and the tests import:

* **Merging** (:mod:`~distillbench.reports.merge`): runs keyed by ``run_id``; a ``run_id`` found
  in several stores counts once (the latest ``finished_at`` wins).
* **Filters** (:mod:`~distillbench.reports.filters`): which runs a leaderboard includes.
* **Rows** (:mod:`~distillbench.reports.rows`): one row per method configuration, its seeds
  aggregated; the paper's number beside it (:mod:`~distillbench.reports.paper`) and the metrics
  its evaluator declares (:mod:`~distillbench.reports.declared`).
* **Tables** (here): one table per value of the group-by fields (default: dataset and images per
  class); rows are ranked within a table by mean accuracy (equal means share a rank) and tested
  against the top row (:mod:`~distillbench.reports.stats`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillbench.components.spec import Metric
from distillbench.reports.declared import EvaluatorMetrics
from distillbench.reports.filters import Filters, available, parse_when, sort_key
from distillbench.reports.merge import MergeInfo, ReportError, StoredRun, load_runs
from distillbench.reports.recovery import add_robust_gains, full_data_rows
from distillbench.reports.rows import ROW_FIELDS, Row, add_recovery, aggregate, labels_text, method_fields, settings
from distillbench.reports.stats import compare

#: What other modules and the tests import from here (the reports' entry point).
__all__ = ["CI_NOTE", "DEFAULT_GROUP_BY", "GROUP_FIELDS", "ROW_FIELDS", "SCHEMA", "SCHEMA_VERSION", "STD_NOTE",
           "TEST_NOTE", "Filters", "Leaderboard", "MergeInfo", "ReportError", "Row", "StoredRun", "Table",
           "build_leaderboard", "leaderboard_from_stores", "load_runs", "method_fields", "parse_when"]

SCHEMA = "distillbench.leaderboard"
SCHEMA_VERSION = 5  # 2: confidence intervals, the comparison with the top row, evaluated_from; 3: evaluator_metrics;
#: 4: full_data_pct, recovery_pct, random_recovery_pct, gain_by_augment_pts, robust_gain_pts, random_std_pct;
#: 5: peak_rss_mb_mean
#: Fields a leaderboard can be split into tables by (``--group-by``).
GROUP_FIELDS = ("dataset", "ipc", "objective", "kernel", "arch", "loss", "labels", "evaluator", "device", "host")
DEFAULT_GROUP_BY = ("dataset", "ipc")
STD_NOTE = "sample standard deviation over seeds (ddof=1); none with a single seed"
CI_NOTE = ("95% interval of the mean over seeds: Student t with 5 or more seeds, a percentile bootstrap (10,000 "
           "resamples; optimistic at so few seeds) with 2 to 4, none with 1")
TEST_NOTE = ("each row against the top row of its table: a paired t-test over the seeds when both hold the same "
             "seeds, Welch's t-test otherwise; two-sided, tied (≈) when p >= 0.05")
UNITS = {
    "acc_*_pct, random_mean_pct, random_std_pct, paper_*_pct": "test accuracy in percent",
    "gain_*_pts, paper_diff_pts": "percentage points",
    "full_data_pct": "test accuracy in percent of the same evaluation trained on the whole training split",
    "recovery_pct, random_recovery_pct": "accuracy in percent of full_data_pct",
    "gain_by_augment_pts, robust_gain_pts": "percentage points: the gain under each evaluator.augment, and the least",
    "*_s_mean": "seconds, mean over the done seeds",
    "peak_rss_mb_mean": "MiB of resident memory at the run's peak, mean over the done seeds",
}


@dataclass
class Table:
    key: dict[str, Any]
    title: str
    rows: list[Row]


@dataclass
class Leaderboard:
    tables: list[Table]
    stores: list[str]
    group_by: list[str]
    filters: dict[str, Any]
    runs: int  # runs after merging and filtering
    duplicates: int  # run_ids found in more than one store (or twice in the list), counted once
    #: evaluator -> the metrics it declares, for the evaluators of the rows that hold any
    metrics: dict[str, tuple[Metric, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema ``distillbench.leaderboard``, ``SCHEMA_VERSION``), in a stable key order."""
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "stores": list(self.stores),
            "group_by": list(self.group_by),
            "filters": dict(self.filters),
            "runs": self.runs,
            "duplicates": self.duplicates,
            "std": STD_NOTE,
            "ci": CI_NOTE,
            "test": TEST_NOTE,
            "units": dict(UNITS),
            "metrics": {name: [m._asdict() for m in declared] for name, declared in self.metrics.items()},
            "tables": [
                {"key": dict(t.key), "title": t.title, "rows": [r.to_dict() for r in t.rows]} for t in self.tables
            ],
        }

    def all_rows(self) -> list[tuple[Table, Row]]:
        return [(t, r) for t in self.tables for r in t.rows]


def _group_value(name: str, record, declared: EvaluatorMetrics) -> Any:
    f = method_fields(record.config, record.metrics if record.status == "done" else None, declared)
    env = record.environment or {}
    return {
        "dataset": f["dataset"], "ipc": f["ipc"], "objective": f["objective"], "kernel": f["kernel"],
        "arch": f["kernel.arch"], "loss": f["loss"], "evaluator": f["evaluator"],
        "labels": labels_text(f["objective.learn_labels"]),
        "device": env.get("device") or env.get("backend") or "unknown", "host": env.get("hostname") or "unknown",
    }[name]


def _row_key(record) -> str:
    """Everything but the seed; a re-scored set (``distillbench evaluate``) never shares a row with runs."""
    config = {k: v for k, v in record.config.to_dict().items() if k != "seed"}
    config["evaluated later"] = getattr(record, "parent_run_id", None) is not None
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _title(key: dict[str, Any]) -> str:
    parts = []
    for name, value in key.items():
        if name == "dataset":
            parts.append(str(value))
        elif name == "ipc":
            parts.append("the whole training split" if value == 0 else f"{value} image{'s' if value != 1 else ''} per class")
        else:
            parts.append(f"{name} {value}")
    return " · ".join(parts) if parts else "all runs"


def _compare_with_top(rows: list[Row]) -> None:
    """Test each ranked row against the top row of its table (stats.compare); mark the ties."""
    ranked = [r for r in rows if r.rank is not None]
    if not ranked:
        return
    top = ranked[0]
    seeds_of = {id(r): {int(s): v for s, v in r.acc_by_seed_pct.items()} for r in ranked}
    for row in ranked[1:]:
        result = compare(seeds_of[id(top)], seeds_of[id(row)])
        if result is not None:
            row.vs_top_test, row.vs_top_p, row.tied_with_top = result.test, result.p_value, not result.significant


def _rank(rows: list[Row]) -> list[Row]:
    ranked = sorted((r for r in rows if r.acc_mean_pct is not None),
                    key=lambda r: (-r.acc_mean_pct, r.method, r.setting, r.evaluator))
    previous, rank = None, 0
    for position, row in enumerate(ranked, start=1):
        if row.acc_mean_pct != previous:
            rank, previous = position, row.acc_mean_pct
        row.rank = rank
    unranked = sorted((r for r in rows if r.acc_mean_pct is None), key=lambda r: (r.method, r.setting, r.evaluator))
    return ranked + unranked


def build_leaderboard(runs: Iterable[StoredRun], *, group_by: Sequence[str] = DEFAULT_GROUP_BY,
                      filters: Filters | None = None, merge: MergeInfo | None = None, with_paper: bool = True,
                      metrics: EvaluatorMetrics | None = None) -> Leaderboard:
    """Group the (already merged) runs into ranked tables; raise ReportError if none pass the filters.

    ``metrics``: what the evaluators declare (by default the installed plugins').
    """
    filters = filters or Filters()
    metrics = metrics or EvaluatorMetrics.installed()
    unknown = [g for g in group_by if g not in GROUP_FIELDS]
    if unknown:
        raise ValueError(f"unknown group-by field {unknown[0]!r}; choose from {', '.join(GROUP_FIELDS)}")
    runs = list(runs)
    full_data = full_data_rows(r.record for r in runs)  # filtered out or not, a set's recovery divides by it
    kept = [r for r in runs if filters.accepts(r.record)]
    if not kept:
        raise ReportError(f"no runs match the filters ({filters.describe()}); {available(runs, filters)}")
    tables: dict[tuple, dict[str, list[StoredRun]]] = {}
    table_keys: dict[tuple, dict[str, Any]] = {}
    for run in kept:
        key = {name: _group_value(name, run.record, metrics) for name in group_by}
        tkey = tuple(sort_key(v) for v in key.values())
        table_keys[tkey] = key
        tables.setdefault(tkey, {}).setdefault(_row_key(run.record), []).append(run)
    out = []
    for tkey in sorted(tables):
        groups = list(tables[tkey].values())
        texts = settings([g[0].record.config for g in groups], metrics)
        rows = [aggregate(g, s, metrics, with_paper) for g, s in zip(groups, texts)]
        for row, group in zip(rows, groups):
            add_recovery(row, group, full_data)
        add_robust_gains(rows)
        ranked = _rank(rows)
        _compare_with_top(ranked)
        out.append(Table(key=table_keys[tkey], title=_title(table_keys[tkey]), rows=ranked))
    return Leaderboard(
        tables=out,
        stores=list(merge.stores) if merge else [],
        group_by=list(group_by),
        filters=filters.to_dict(),
        runs=len(kept),
        duplicates=merge.duplicates if merge else 0,
        metrics=_shown_metrics(out),
    )


def _shown_metrics(tables: list[Table]) -> dict[str, tuple[Metric, ...]]:
    """Evaluator -> the metrics its rows declare, for the evaluators whose rows hold any."""
    out: dict[str, dict[Metric, None]] = {}
    for row in (r for t in tables for r in t.rows if r.evaluator_metrics):
        out.setdefault(row.evaluator_name, {}).update(dict.fromkeys(row.declared))
    return {name: tuple(out[name]) for name in sorted(out)}


def leaderboard_from_stores(paths: Sequence[str | os.PathLike], metrics: EvaluatorMetrics | None = None,
                            **kwargs) -> Leaderboard:
    metrics = metrics or EvaluatorMetrics.installed()
    runs, merge = load_runs(paths, metrics)
    return build_leaderboard(runs, merge=merge, metrics=metrics, **kwargs)
