"""The rows of a leaderboard: one method configuration, its seeds aggregated.

A row is every component name and parameter except the seed, so two different settings are never
averaged. Its seeds are aggregated: mean and *sample* standard deviation (ddof=1; none for a
single seed) over the runs that finished ``done``. Runs that ended ``error``, ``diverged`` or
``timeout`` are listed in the row with their reasons; a row with no done run still appears.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from distillbench.components.spec import KINDS, Metric
from distillbench.params import LEARNS_LABELS, format_value
from distillbench.records import Metrics, RunConfig, RunRecord
from distillbench.reports.declared import EvaluatorMetrics, random_name
from distillbench.reports.merge import StoredRun
from distillbench.reports.paper import find_reference
from distillbench.reports.stats import confidence_interval


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
    learn_labels: bool | None  # its Param(role="learns_labels"); None: none declared (ls solves labels)
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
    #: the metrics its evaluator declares (``name`` and ``random_<name>``), mean over the done seeds
    evaluator_metrics: dict[str, float] = field(default_factory=dict)
    #: the same evaluation's accuracy on the whole training split (``evaluate --full-data``; reports.recovery)
    full_data_pct: float | None = None
    recovery_pct: float | None = None  # acc_mean_pct / full_data_pct, in percent
    random_recovery_pct: float | None = None  # random_mean_pct / full_data_pct, in percent
    #: the same sets' mean gain under each augmentation their evaluator was run with (``evaluator.augment``),
    #: when more than one was; ``robust_gain_pts`` is the least of them (reports.recovery.add_robust_gains)
    gain_by_augment_pts: dict[str, float] = field(default_factory=dict)
    robust_gain_pts: float | None = None
    random_std_pct: float | None = None  # sample std over the done seeds of the random subset's accuracy
    #: peak resident memory of a run (MiB; the run's own where its system could reset the mark:
    #: ``runner.memory``), mean over the done seeds that hold it
    peak_rss_mb_mean: float | None = None
    #: the evaluator's component name and the metrics it declares (not written: the ``evaluator``
    #: text says the name, with what ran; the leaderboard's ``metrics`` the declarations)
    evaluator_name: str = field(default="", metadata={"written": False})
    declared: tuple[Metric, ...] = field(default=(), metadata={"written": False})

    def labels_text(self) -> str:
        return labels_text(self.learn_labels)

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON and CSV hold it (``ROW_FIELDS``, in order)."""
        return {name: value for name, value in asdict(self).items() if name in ROW_FIELDS}


#: The fields of a row that JSON and CSV hold, in order.
ROW_FIELDS = tuple(f.name for f in fields(Row) if f.metadata.get("written", True))


def labels_text(learn_labels: bool | None) -> str:
    """``learned``, ``fixed``, or ``-`` for an objective without the parameter."""
    return {True: "learned", False: "fixed"}.get(learn_labels, "-")  # type: ignore[arg-type]


def method_fields(config: RunConfig, metrics: Metrics | None = None,
                  declared: EvaluatorMetrics | None = None) -> dict[str, Any]:
    """The setting fields used for grouping and paper matching, from a stored config and its metrics.

    The fields are what the components declare (``declared``; by default the installed plugins'):
    ``kernel.arch`` is the kernel's architecture reference, ``objective.learn_labels`` its
    ``learns_labels`` parameter, whatever their names; ``None`` when not installed. The evaluation
    kernel and arch are the ones the evaluator reported it used (``eval_kernel``, ``eval_arch``),
    else its references as the planner resolves them (a run that failed before evaluating).
    """
    declared = declared or EvaluatorMetrics.installed()
    metrics = metrics or Metrics()
    eval_kernel = metrics["eval_kernel"] if "eval_kernel" in metrics else declared.reference(config.evaluator, "kernel")
    eval_arch = metrics["eval_arch"] if "eval_arch" in metrics else declared.resolved_reference(config, "architecture")
    return {
        "dataset": config.dataset.name,
        "ipc": config.ipc,
        "objective": config.objective.name,
        "kernel": config.kernel.name,
        "kernel.arch": declared.reference(config.kernel, "architecture"),
        "loss": config.loss.name,
        "objective.learn_labels": declared.role(config.objective, LEARNS_LABELS),
        "evaluator": config.evaluator.name,
        "evaluator.kernel": eval_kernel,
        "evaluator.arch": eval_arch,
    }


def _evaluated_metrics(records) -> Metrics:
    """The metrics of the first done run (what evaluated a configuration is the same for all its seeds)."""
    for record in records:
        if record.status == "done":
            return record.metrics
    return Metrics()


def device_of(record) -> str:
    env = record.environment or {}
    device = env.get("device") or env.get("backend") or "unknown device"
    host = env.get("hostname")
    return f"{device} ({host})" if host else str(device)


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
    from distillbench.store.database import support_size

    for run in runs:
        size = support_size(run.store, run.record)  # None: not copied with the store, unreadable
        if size is not None:
            return size
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


def aggregate(runs: list[StoredRun], setting: str, metrics: EvaluatorMetrics, with_paper: bool) -> Row:
    """One row: the runs of one configuration (every seed), aggregated; ``metrics``: what evaluators declare."""
    runs = sorted(runs, key=lambda r: (r.record.config.seed, r.record.run_id))  # order-independent sums
    config = runs[0].record.config
    mf = method_fields(config, _evaluated_metrics(r.record for r in runs), metrics)
    done = [r.record for r in runs if r.record.status == "done"]
    failures = [{"seed": r.record.config.seed, "status": r.record.status, "message": r.record.message}
                for r in runs if r.record.status != "done"]
    by_seed = {r.config.seed: 100.0 * r.metrics.acc for r in done if _finite(r.metrics.acc) is not None}
    accs = list(by_seed.values())
    parents = sorted({r.record.parent_run_id for r in runs if r.record.parent_run_id})
    randoms = [100.0 * r.metrics.random_acc for r in done if _finite(r.metrics.random_acc) is not None]
    gains, below = _gains(done)
    declared = metrics.of(mf["evaluator"], [r.metrics for r in done])
    acc_mean = _mean(accs)
    interval = confidence_interval(accs)
    reference = find_reference(mf, config) if with_paper else None  # the protocol too
    eval_detail = ", ".join(str(v) for v in (mf["evaluator.kernel"], mf["evaluator.arch"]) if v is not None)
    return Row(
        rank=None,
        dataset=mf["dataset"],
        ipc=mf["ipc"],
        method=_method_text(mf, config),
        objective=mf["objective"],
        kernel=mf["kernel"],
        arch=mf["kernel.arch"],
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
        step_s_mean=_timing(done, "step_s"),
        distill_s_mean=_timing(done, "distill_s"),
        compile_s_mean=_timing(done, "compile_s"),
        support_size=_support_size(runs),
        **_paper_fields(reference, acc_mean),
        devices=sorted({device_of(r.record) for r in runs}),
        failures=failures,
        run_ids=[r.record.run_id for r in runs],
        params=config.flat(),
        acc_by_seed_pct={str(seed): acc for seed, acc in by_seed.items()},
        acc_ci_low_pct=interval.low if interval else None,
        acc_ci_high_pct=interval.high if interval else None,
        ci_method=interval.method if interval else None,
        evaluated_from=parents,
        evaluator_metrics=_evaluator_metrics(done, declared),
        random_std_pct=_std(randoms),
        peak_rss_mb_mean=_timing(done, "peak_rss_mb"),
        evaluator_name=mf["evaluator"],
        declared=declared,
    )


def add_recovery(row: Row, runs: list[StoredRun], full_data: list[RunRecord]) -> None:
    """Fill the row's full-data accuracy and recoveries from the first full-data row its runs match."""
    from distillbench.reports.recovery import full_data_for

    for run in runs:
        match = full_data_for(run.record, full_data) if run.record.status == "done" else None
        if match is None:
            continue
        full = 100.0 * match.metrics.acc
        row.full_data_pct = full
        if full > 0:
            row.recovery_pct = None if row.acc_mean_pct is None else 100.0 * row.acc_mean_pct / full
            row.random_recovery_pct = None if row.random_mean_pct is None else 100.0 * row.random_mean_pct / full
        return


def _timing(done: list[RunRecord], name: str) -> float | None:
    """The mean of one timing over the done seeds that hold it."""
    return _mean([v for v in (_finite(getattr(r.timings, name)) for r in done) if v is not None])


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


def _evaluator_metrics(done: list[RunRecord], declared: Sequence[Metric]) -> dict[str, float]:
    """The mean over the done seeds of each declared metric and its random-subset twin (when stored)."""
    out = {}
    for name in (key for m in declared for key in (m.name, random_name(m.name))):
        values = [v for v in (_finite(r.metrics.get(name)) for r in done) if v is not None]
        if values:
            out[name] = statistics.fmean(values)
    return out


def _paper_fields(reference, acc_mean: float | None) -> dict[str, Any]:
    return {
        "paper_acc_pct": reference.acc if reference else None,
        "paper_std_pct": reference.std if reference else None,
        "paper_diff_pts": acc_mean - reference.acc if reference and acc_mean is not None else None,
        "paper_source": reference.source if reference else None,
    }


def _method_text(mf: dict[str, Any], config: RunConfig) -> str:
    """``kip/ntk(fc1)/mse``; a set made elsewhere: ``external(<its name>)/mse``."""
    if mf["objective"] == "external":
        return f"external({config.objective.as_dict().get('name', '?')})/{mf['loss']}"
    arch = mf["kernel.arch"]
    return f"{mf['objective']}/{mf['kernel']}{f'({arch})' if arch else ''}/{mf['loss']}"


def _with_later_defaults(config: RunConfig, declared: EvaluatorMetrics) -> dict[str, Any]:
    flat = config.flat()
    for kind in KINDS:
        choice = config.choice(kind)
        for param in declared.params(choice):
            if param.identity == "set":
                flat.setdefault(f"{kind}.{param.name}", param.default)
    return flat


def settings(configs: list[RunConfig], declared: EvaluatorMetrics) -> list[str]:
    """For each row, the parameters that vary among the rows using the same component. A parameter a
    stored config lacks because it was added later (declared ``identity="set"``: its default is what
    the run did) counts as its default."""
    flats = [_with_later_defaults(c, declared) for c in configs]
    varying: set[tuple[str, str]] = set()  # (key, component name)
    owns = [{f"{kind}.{key}" for kind, key in declared.labelled(c)} for c in configs]  # in their own columns
    keys = sorted({k for f, own in zip(flats, owns) for k in f.keys() - own})
    for key in keys:
        kind = key.split(".", 1)[0]
        by_component: dict[str, set[str]] = {}
        for c, f in zip(configs, flats):
            by_component.setdefault(c.choice(kind).name, set()).add(json.dumps(f.get(key), sort_keys=True))
        varying.update((key, name) for name, values in by_component.items() if len(values) > 1)
    out = []
    for c, f, own in zip(configs, flats, owns):
        shown = [k for k in keys if k not in own and (k, c.choice(k.split(".", 1)[0]).name) in varying]
        out.append(" ".join(f"{k}={format_value(f.get(k))}" for k in shown))
    return out
