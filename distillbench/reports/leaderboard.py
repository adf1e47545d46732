"""Leaderboards: runs from one or more result stores, merged, filtered, grouped into ranked tables.

This module reads SQLite only (through :mod:`distillbench.store.database`); it never imports JAX.

* **Merging.** Runs are keyed by ``run_id`` (a hash of the full configuration, seed included).
  A ``run_id`` found in several stores counts once: the copy with the latest ``finished_at``
  wins, and on an exact tie the store named first wins. Runs with distinct run_ids all count.
* **Rows.** One row per method configuration: every component name and parameter except the
  seed (and the table's group-by fields), so two different settings are never averaged. The
  seeds of a row are aggregated: mean and *sample* standard deviation (ddof=1; none for a
  single seed) over the runs that finished ``done``. Runs that ended ``error``, ``diverged`` or
  ``timeout`` are listed in the row with their reasons; a row with no done run still appears.
* **Tables.** One table per value of the group-by fields (default: dataset and images per
  class); rows are ranked within a table by mean accuracy (equal means share a rank).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Any

from distillbench.components.spec import KINDS
from distillbench.params import format_value
from distillbench.errors import shown
from distillbench.records import STATUSES, Metrics, RunConfig, RunRecord
from distillbench.reports.clean import cleaned, unusable
from distillbench.reports.paper import find_reference
from distillbench.reports.stats import compare, confidence_interval

SCHEMA = "distillbench.leaderboard"
SCHEMA_VERSION = 2  # 2: confidence intervals, the comparison with the top row, evaluated_from
#: Fields a leaderboard can be split into tables by (``--group-by``).
GROUP_FIELDS = ("dataset", "ipc", "objective", "kernel", "arch", "loss", "labels", "evaluator", "device", "host")
DEFAULT_GROUP_BY = ("dataset", "ipc")
STD_NOTE = "sample standard deviation over seeds (ddof=1); none with a single seed"
CI_NOTE = ("95% interval of the mean over seeds: Student t with 5 or more seeds, a percentile bootstrap (10,000 "
           "resamples; optimistic at so few seeds) with 2 to 4, none with 1")
TEST_NOTE = ("each row against the top row of its table: a paired t-test over the seeds when both hold the same "
             "seeds, Welch's t-test otherwise; two-sided, tied (≈) when p >= 0.05")
UNITS = {
    "acc_*_pct, random_mean_pct, paper_*_pct": "test accuracy in percent",
    "gain_*_pts, paper_diff_pts": "percentage points",
    "*_s_mean": "seconds, mean over the done seeds",
}
#: Parameters shown in their own columns, so never repeated in ``setting``.
_OWN_COLUMNS = ("kernel.arch", "objective.learn_labels", "evaluator.kernel", "evaluator.arch")


class ReportError(Exception):
    """Nothing to report (missing or empty store, nothing matches the filters): one clear line."""


# -- reading and merging ------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredRun:
    """A run as read from a store, with the store it came from (for its artifact)."""

    record: RunRecord
    store: Path


@dataclass(frozen=True)
class MergeInfo:
    stores: tuple[str, ...]
    runs_read: int
    duplicates: int  # run_ids seen more than once, counted once
    damaged: int = 0  # runs shown without their values of the wrong type (reports/clean.py)
    skipped: int = 0  # runs left out: their identity is unusable
    problem: str = ""  # the first of those problems, for the warning line

    def warning(self) -> str | None:
        """One line about the damaged runs of the stores, or ``None`` when there are none."""
        if not (self.damaged or self.skipped):
            return None
        parts = []
        if self.damaged:
            parts.append(f"{self.damaged} run{'s' * (self.damaged != 1)} shown without values of the wrong type")
        if self.skipped:
            parts.append(f"{self.skipped} run{'s' * (self.skipped != 1)} left out (unusable identity)")
        return f"warning: damaged store rows: {'; '.join(parts)}; first: {self.problem}"

    def line(self) -> str:
        stores = f"{len(self.stores)} store{'s' if len(self.stores) != 1 else ''}"
        dup = f"; {self.duplicates} duplicate run_id{'s' if self.duplicates != 1 else ''} counted once" \
            if self.duplicates else ""
        runs = self.runs_read - self.duplicates
        return f"{runs} run{'s' if runs != 1 else ''} from {stores}{dup}"


def load_runs(paths: Sequence[str | os.PathLike]) -> tuple[list[StoredRun], MergeInfo]:
    """Read every store in ``paths`` (read-only) and merge them by ``run_id``.

    Raises :class:`ReportError` for a missing file, a file that is not a store, or when no store
    holds any run.
    """
    from distillbench.store.database import NotAStoreError, open_existing

    chosen: dict[str, StoredRun] = {}
    total = 0
    damage = _Damage()
    for path in paths:
        try:
            store = open_existing(path)
        except FileNotFoundError:
            raise ReportError(f"no results store at {str(path)!r} (run `distillbench run` first, or pass "
                              f"--store PATH)") from None
        except NotAStoreError as exc:
            raise ReportError(str(exc)) from None
        except (sqlite3.Error, OSError) as exc:  # unreadable file, locked beyond the timeout, ...
            raise ReportError(f"cannot read results store {str(path)!r}: {exc}") from None
        try:
            records = list(store.records())
        except (sqlite3.Error, ValueError) as exc:  # ValueError: a corrupt JSON column
            raise ReportError(f"cannot read results store {str(path)!r}: {exc}") from None
        finally:
            store.close()
        total += len(records)
        for record in _usable(records, path, damage):
            kept = chosen.get(record.run_id)
            if kept is None or record.finished_at > kept.record.finished_at:
                chosen[record.run_id] = StoredRun(record, Path(path))
    if not chosen:
        names = ", ".join(repr(str(p)) for p in paths)
        if damage.skipped:
            raise ReportError(f"no usable run in {names}: {damage.skipped} stored run"
                              f"{'s' * (damage.skipped != 1)}, none reportable; first: {damage.problem}")
        which = f"results store {names} has" if len(paths) == 1 else f"results stores {names} have"
        raise ReportError(f"{which} no runs; run `distillbench run` first")
    runs = sorted(chosen.values(), key=lambda r: (r.record.finished_at, r.record.run_id))
    return runs, MergeInfo(tuple(str(p) for p in paths), total - damage.skipped, total - damage.skipped - len(chosen),
                           damage.damaged, damage.skipped, damage.problem)


@dataclass
class _Damage:
    damaged: int = 0
    skipped: int = 0
    problem: str = ""


def _usable(records: list[RunRecord], path, damage: _Damage) -> list[RunRecord]:
    """The records a report can format (reports/clean.py), counting the damaged and skipped ones."""
    out = []
    for record in records:
        why = unusable(record)
        record, dropped = (record, []) if why else cleaned(record)
        if why or dropped:
            damage.skipped += bool(why)
            damage.damaged += not why
            damage.problem = damage.problem or (f"{str(path)!r}, run {shown(record.run_id, 40)}: "
                                                f"{why or '; '.join(dropped)}")
        if not why:
            out.append(record)
    return out


# -- filters ------------------------------------------------------------------------------------
def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO date or date-time, UTC when it has no zone; with ``end``, a bare date means its last instant."""
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).date()
            return datetime.combine(day, time.max if end else time.min, tzinfo=timezone.utc)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date (2024-05-31) or date-time (2024-05-31T14:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Filters:
    """Which runs a leaderboard includes (the ``report`` options); an empty tuple means any."""

    dataset: tuple[str, ...] = ()
    ipc: tuple[int, ...] = ()
    objective: tuple[str, ...] = ()
    kernel: tuple[str, ...] = ()
    loss: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    since: datetime | None = None  # finished_at >= since
    until: datetime | None = None  # finished_at <= until

    def accepts(self, record) -> bool:
        c = record.config
        checks = [(self.dataset, c.dataset.name), (self.ipc, c.ipc), (self.objective, c.objective.name),
                  (self.kernel, c.kernel.name), (self.loss, c.loss.name), (self.status, record.status)]
        if any(allowed and value not in allowed for allowed, value in checks):
            return False
        if self.since or self.until:
            finished = parse_when(record.finished_at)
            if (self.since and finished < self.since) or (self.until and finished > self.until):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The filters in force: ``{"dataset": ["digits"], "since": "2024-05-31T00:00:00+00:00"}``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                out[f.name] = value.isoformat()
            elif value:
                out[f.name] = list(value)
        return out

    def describe(self) -> str:
        parts = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in self.to_dict().items()]
        return " ".join(parts) if parts else "none"


# -- the leaderboard ----------------------------------------------------------------------------
@dataclass
class Row:
    """One method configuration of a table, aggregated over its seeds."""

    rank: int | None
    dataset: str
    ipc: int
    method: str  # "kip/ntk(fc1)/mse"
    objective: str
    kernel: str
    arch: str | None
    loss: str
    learn_labels: bool | None  # None: the objective has no such parameter (e.g. ls solves labels)
    evaluator: str  # "krr(nngp, fc1)"
    setting: str  # parameters that tell this row apart from others of its table ("objective.lr=0.04")
    status: str  # "done" (every run done), "partial", "failed" (no run done)
    status_text: str  # "3/3 done", "2/3 done; 1 error (seed 2): ..."
    runs: int
    seeds: list[int]  # the done seeds aggregated
    acc_mean_pct: float | None
    acc_std_pct: float | None
    random_mean_pct: float | None
    gain_mean_pts: float | None
    gain_std_pts: float | None
    step_s_mean: float | None
    distill_s_mean: float | None
    compile_s_mean: float | None
    support_size: int | None
    paper_acc_pct: float | None
    paper_std_pct: float | None
    paper_diff_pts: float | None  # ours - paper
    paper_source: str | None
    devices: list[str]
    failures: list[dict[str, Any]]  # {"seed", "status", "message"} per run not done
    run_ids: list[str]
    params: dict[str, Any]  # every parameter, "kind.param" -> value (the full setting, seed excluded)
    acc_by_seed_pct: dict[str, float] = field(default_factory=dict)  # seed (as text) -> accuracy of each done seed
    acc_ci_low_pct: float | None = None  # the 95% interval of the mean accuracy (stats.confidence_interval)
    acc_ci_high_pct: float | None = None
    ci_method: str | None = None  # "t" or "bootstrap"; None with fewer than two seeds
    vs_top_test: str | None = None  # "paired t" or "Welch t" against the table's top row; None: not tested
    vs_top_p: float | None = None  # two-sided p-value of that test
    tied_with_top: bool | None = None  # the difference to the top row is not significant (p >= 0.05)
    evaluated_from: list[str] = field(default_factory=list)  # the runs `distillbench evaluate` re-scored
    #: the privacy evaluator's metrics (PRIVACY_METRICS), mean over the done seeds
    privacy: dict[str, float] = field(default_factory=dict)

    def labels_text(self) -> str:
        return {True: "learned", False: "fixed"}.get(self.learn_labels, "-")  # type: ignore[arg-type]


ROW_FIELDS = tuple(f.name for f in fields(Row))


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

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema ``distillbench.leaderboard`` version 1), in a stable key order."""
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
            "tables": [
                {"key": dict(t.key), "title": t.title, "rows": [asdict(r) for r in t.rows]} for t in self.tables
            ],
        }

    def all_rows(self) -> list[tuple[Table, Row]]:
        return [(t, r) for t in self.tables for r in t.rows]


def method_fields(config: RunConfig, metrics: Metrics | None = None) -> dict[str, Any]:
    """The setting fields used for grouping and paper matching, from a stored config and its metrics.

    The evaluation kernel and arch are the ones the evaluator reported it used (``eval_kernel``,
    ``eval_arch``), never re-derived; :func:`_unreported_evaluation` covers rows without them.
    """
    arch = config.kernel.as_dict().get("arch")
    metrics = metrics or Metrics()
    eval_kernel, eval_arch = _unreported_evaluation(config)
    if "eval_kernel" in metrics:
        eval_kernel = metrics["eval_kernel"]
    if "eval_arch" in metrics:
        eval_arch = metrics["eval_arch"]
    return {
        "dataset": config.dataset.name,
        "ipc": config.ipc,
        "objective": config.objective.name,
        "kernel": config.kernel.name,
        "kernel.arch": arch,
        "loss": config.loss.name,
        "objective.learn_labels": config.objective.as_dict().get("learn_labels"),
        "evaluator": config.evaluator.name,
        "evaluator.kernel": eval_kernel,
        "evaluator.arch": eval_arch,
    }


def _unreported_evaluation(config: RunConfig) -> tuple[Any, Any]:
    """The evaluator's ``kernel``/``arch`` as given, for a row whose evaluator reported none: a run that
    failed before evaluating (no done seed), or one stored before evaluators reported them.

    Display compatibility only (the leaderboard of earlier releases must read the same): krr's
    ``arch=auto`` is shown as the run kernel's arch, else ``fc1``, the rule krr applied then; any
    other evaluator's ``auto`` is shown as ``auto``.
    """
    params = config.evaluator.as_dict()
    eval_arch = params.get("arch")
    if eval_arch == "auto" and config.evaluator.name == "krr":
        eval_arch = config.kernel.as_dict().get("arch") or "fc1"
    return params.get("kernel"), eval_arch


def _evaluated_metrics(records) -> Metrics:
    """The metrics of the first done run (what evaluated a configuration is the same for all its seeds)."""
    for record in records:
        if record.status == "done":
            return record.metrics
    return Metrics()


def flat_params(config: RunConfig) -> dict[str, Any]:
    """``{"kernel.arch": "fc1", ...}``: every component parameter under its command-line key."""
    return {f"{kind}.{key}": value for kind in KINDS for key, value in sorted(config.choice(kind).params)}


def device_of(record) -> str:
    env = record.environment or {}
    device = env.get("device") or env.get("backend") or "unknown device"
    host = env.get("hostname")
    return f"{device} ({host})" if host else str(device)


def _group_value(name: str, record) -> Any:
    f = method_fields(record.config, record.metrics if record.status == "done" else None)
    env = record.environment or {}
    return {
        "dataset": f["dataset"], "ipc": f["ipc"], "objective": f["objective"], "kernel": f["kernel"],
        "arch": f["kernel.arch"], "loss": f["loss"], "evaluator": f["evaluator"],
        "labels": {True: "learned", False: "fixed"}.get(f["objective.learn_labels"], "-"),
        "device": env.get("device") or env.get("backend") or "unknown", "host": env.get("hostname") or "unknown",
    }[name]


def _row_key(record) -> str:
    """Everything but the seed; a re-scored set (``distillbench evaluate``) never shares a row with runs."""
    config = {k: v for k, v in record.config.to_dict().items() if k != "seed"}
    config["evaluated later"] = getattr(record, "parent_run_id", None) is not None
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _title(key: dict[str, Any]) -> str:
    parts = []
    for name, value in key.items():
        if name == "dataset":
            parts.append(str(value))
        elif name == "ipc":
            parts.append(f"{value} image{'s' if value != 1 else ''} per class")
        else:
            parts.append(f"{name} {value}")
    return " · ".join(parts) if parts else "all runs"


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _support_size(runs: list[StoredRun]) -> int | None:
    """ipc x classes: from the dataset's ``num_classes`` parameter, else from a stored artifact."""
    for run in runs:
        config = run.record.config
        classes = config.dataset.as_dict().get("num_classes")
        if isinstance(classes, int):
            return classes * int(config.ipc)
    from distillbench.store.database import artifact_array

    for run in runs:
        labels = artifact_array(run.store, run.record, "support_y")  # None: not copied with the store, unreadable
        if labels is not None:
            return int(labels.shape[0])
    return None


def _status_text(done: int, failed: list[dict[str, Any]], below: Sequence[int] = (), rescored: int = 0) -> str:
    total = done + len(failed)
    parts = [f"{done}/{total} done"]
    if rescored:
        parts.append(f"re-scored from {rescored} stored run{'s' if rescored != 1 else ''} (distillbench evaluate)")
    if below:  # done, yet worse than the random real subset: a number to distrust
        which = ", ".join(map(str, sorted(below)))
        parts.append(f"{len(below)} below random (seed{'s' if len(below) != 1 else ''} {which})")
    groups: dict[tuple[str, str], list[int]] = {}
    for f in failed:
        groups.setdefault((f["status"], f["message"] or "no message"), []).append(f["seed"])
    for (status, message), seeds in groups.items():
        which = ", ".join(map(str, sorted(seeds)))
        parts.append(f"{len(seeds)} {status} (seed{'s' if len(seeds) != 1 else ''} {which}): {message}")
    return "; ".join(parts)


def _aggregate(runs: list[StoredRun], setting: str, with_paper: bool) -> Row:
    runs = sorted(runs, key=lambda r: (r.record.config.seed, r.record.run_id))  # order-independent sums
    config = runs[0].record.config
    mf = method_fields(config, _evaluated_metrics(r.record for r in runs))
    done = [r.record for r in runs if r.record.status == "done"]
    failures = [{"seed": r.record.config.seed, "status": r.record.status, "message": r.record.message}
                for r in runs if r.record.status != "done"]
    by_seed = {r.config.seed: 100.0 * r.metrics.acc for r in done if _finite(r.metrics.acc) is not None}
    accs = list(by_seed.values())
    parents = sorted({r.record.parent_run_id for r in runs if r.record.parent_run_id})
    randoms = [100.0 * r.metrics.random_acc for r in done if _finite(r.metrics.random_acc) is not None]
    gains, below = _gains(done)

    def timing(name: str) -> float | None:
        return _mean([v for v in (_finite(getattr(r.timings, name)) for r in done) if v is not None])

    acc_mean = _mean(accs)
    interval = confidence_interval(accs)
    reference = find_reference(mf, config) if with_paper else None  # the protocol too
    arch = mf["kernel.arch"]
    eval_detail = ", ".join(str(v) for v in (mf["evaluator.kernel"], mf["evaluator.arch"]) if v is not None)
    return Row(
        rank=None,
        dataset=mf["dataset"],
        ipc=mf["ipc"],
        method=_method_text(mf, config),
        objective=mf["objective"],
        kernel=mf["kernel"],
        arch=arch,
        loss=mf["loss"],
        learn_labels=mf["objective.learn_labels"],
        evaluator=f"{mf['evaluator']}({eval_detail})" if eval_detail else mf["evaluator"],
        setting=setting,
        status="done" if not failures else ("partial" if done else "failed"),
        status_text=_status_text(len(done), failures, below, len(parents)),
        runs=len(runs),
        seeds=[r.config.seed for r in done],
        acc_mean_pct=acc_mean,
        acc_std_pct=_std(accs),
        random_mean_pct=_mean(randoms),
        gain_mean_pts=_mean(gains),
        gain_std_pts=_std(gains),
        step_s_mean=timing("step_s"),
        distill_s_mean=timing("distill_s"),
        compile_s_mean=timing("compile_s"),
        support_size=_support_size(runs),
        **_paper_fields(reference, acc_mean),
        devices=sorted({device_of(r.record) for r in runs}),
        failures=failures,
        run_ids=[r.record.run_id for r in runs],
        params=flat_params(config),
        acc_by_seed_pct={str(seed): acc for seed, acc in by_seed.items()},
        acc_ci_low_pct=interval.low if interval else None,
        acc_ci_high_pct=interval.high if interval else None,
        ci_method=interval.method if interval else None,
        evaluated_from=parents,
        privacy=_privacy(done),
    )


def _gains(done: list[RunRecord]) -> tuple[list[float], list[int]]:
    """Per-seed gains over the random subset (points), and the seeds whose distilled set lost to it."""
    gains, below = [], []
    for r in done:
        gain = r.metrics.gain
        if gain is None and r.metrics.acc is not None and r.metrics.random_acc is not None:
            gain = r.metrics.acc - r.metrics.random_acc
        if _finite(gain) is not None:
            gains.append(100.0 * gain)
            if gain < 0:
                below.append(r.config.seed)
    return gains, below


def _paper_fields(reference, acc_mean: float | None) -> dict[str, Any]:
    return {
        "paper_acc_pct": reference.acc if reference else None,
        "paper_std_pct": reference.std if reference else None,
        "paper_diff_pts": acc_mean - reference.acc if reference and acc_mean is not None else None,
        "paper_source": reference.source if reference else None,
    }


#: What the privacy evaluator reports, for the distilled set and the random real subset.
PRIVACY_METRICS = ("nn_dist_rel", "random_nn_dist_rel", "mia_acc", "random_mia_acc")


def _privacy(done) -> dict[str, float]:
    out = {}
    for name in PRIVACY_METRICS:
        values = [v for v in (_finite(r.metrics.get(name)) for r in done) if v is not None]
        if values:
            out[name] = statistics.fmean(values)
    return out


def _method_text(mf: dict[str, Any], config: RunConfig) -> str:
    """``kip/ntk(fc1)/mse``; a set made elsewhere: ``external(<its name>)/mse``."""
    if mf["objective"] == "external":
        return f"external({config.objective.as_dict().get('name', '?')})/{mf['loss']}"
    arch = mf["kernel.arch"]
    return f"{mf['objective']}/{mf['kernel']}{f'({arch})' if arch else ''}/{mf['loss']}"


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


def _settings(configs: list[RunConfig]) -> list[str]:
    """For each row, the parameters that vary among the rows using the same component."""
    flats = [flat_params(c) for c in configs]
    varying: set[tuple[str, str]] = set()  # (key, component name)
    keys = sorted({k for f in flats for k in f} - set(_OWN_COLUMNS))
    for key in keys:
        kind = key.split(".", 1)[0]
        by_component: dict[str, set[str]] = {}
        for c, f in zip(configs, flats):
            by_component.setdefault(c.choice(kind).name, set()).add(json.dumps(f.get(key), sort_keys=True))
        varying.update((key, name) for name, values in by_component.items() if len(values) > 1)
    out = []
    for c, f in zip(configs, flats):
        shown = [k for k in keys if (k, c.choice(k.split(".", 1)[0]).name) in varying]
        out.append(" ".join(f"{k}={format_value(f.get(k))}" for k in shown))
    return out


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


def _available(runs: list[StoredRun], filters: Filters) -> str:
    """What the runs hold for the filtered fields: ``the 20 runs have dataset digits; ipc 1``."""
    values = {
        "dataset": lambda r: r.config.dataset.name, "ipc": lambda r: r.config.ipc,
        "objective": lambda r: r.config.objective.name, "kernel": lambda r: r.config.kernel.name,
        "loss": lambda r: r.config.loss.name, "status": lambda r: r.status,
    }
    parts = []
    for name, get in values.items():
        if getattr(filters, name):
            seen = sorted({get(r.record) for r in runs}, key=_sort_key)
            parts.append(f"{name} {', '.join(map(str, seen))}")
    if filters.since or filters.until:
        finished = sorted(r.record.finished_at for r in runs)
        parts.append(f"finished {finished[0]} to {finished[-1]}" if finished else "no finish times")
    return f"the {len(runs)} run{'s' if len(runs) != 1 else ''} have " + "; ".join(parts)


def build_leaderboard(runs: Iterable[StoredRun], *, group_by: Sequence[str] = DEFAULT_GROUP_BY,
                      filters: Filters | None = None, merge: MergeInfo | None = None,
                      with_paper: bool = True) -> Leaderboard:
    """Group the (already merged) runs into ranked tables; raise ReportError if none pass the filters."""
    filters = filters or Filters()
    unknown = [g for g in group_by if g not in GROUP_FIELDS]
    if unknown:
        raise ValueError(f"unknown group-by field {unknown[0]!r}; choose from {', '.join(GROUP_FIELDS)}")
    runs = list(runs)
    kept = [r for r in runs if filters.accepts(r.record)]
    if not kept:
        raise ReportError(f"no runs match the filters ({filters.describe()}); {_available(runs, filters)}")
    tables: dict[tuple, dict[str, list[StoredRun]]] = {}
    table_keys: dict[tuple, dict[str, Any]] = {}
    for run in kept:
        key = {name: _group_value(name, run.record) for name in group_by}
        tkey = tuple(_sort_key(v) for v in key.values())
        table_keys[tkey] = key
        tables.setdefault(tkey, {}).setdefault(_row_key(run.record), []).append(run)
    out = []
    for tkey in sorted(tables):
        groups = list(tables[tkey].values())
        settings = _settings([g[0].record.config for g in groups])
        rows = [_aggregate(g, s, with_paper) for g, s in zip(groups, settings)]
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
    )


def leaderboard_from_stores(paths: Sequence[str | os.PathLike], **kwargs) -> Leaderboard:
    runs, merge = load_runs(paths)
    return build_leaderboard(runs, merge=merge, **kwargs)
