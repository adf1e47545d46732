"""Score distilled sets again without distilling them: ``distillbench evaluate``.

A *source* is a distilled set: a stored run (its artifact holds ``support_x``/``support_y``, the
learned loss parameters and the random baseline ``baseline_x``/``baseline_y`` the run used) or a
set made elsewhere (an ``.npz`` with ``x`` and ``y``, read and checked against the dataset it
claims to distill by :mod:`distillbench.runner.external`). Each (source, evaluator) pair is scored
through the same code as ``run`` (:func:`distillbench.runner.pipeline.score_sets`), against the
*same* random baseline, and stored as one row:

* a stored run's evaluation has the run's config with the new evaluator, no artifact, and
  ``parent_run_id`` = the run it scored (its run_id hashes the parent and the evaluator, so it
  never collides with a ``run`` of the same config);
* an external set's evaluation has objective ``external`` (parameters: the name the user gave it,
  the file's sha256 and name), kernel ``none``, and an artifact holding the set and its baseline,
  so it can itself be re-scored later.

Nothing is distilled here: the timings hold ``eval_s`` (both sets), ``data_s`` and ``wall_s``.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from distillbench.params import format_value
from distillbench.registry import Registry
from distillbench.records import ComponentChoice, Metrics, RunConfig, RunRecord, RunResult, Timings
from distillbench.runner.execute import plain_failure
from distillbench.runner.external import EXTERNAL, NO_KERNEL
from distillbench.runner.pipeline import DataCache, enable_float64, eval_context, involved_in, running, score_sets
from distillbench.runner.plan import builder_params
from distillbench.runner.reporter import Reporter

@dataclass(frozen=True)
class Source:
    """A distilled set to score: the config it was made under and its arrays."""

    run_id: str | None  # the stored run; None for an external file
    config: RunConfig
    arrays: dict[str, np.ndarray]
    data_fingerprint: str | None = None


@dataclass(frozen=True)
class Job:
    """One (source, evaluator) pair: the row it stores."""

    source: Source
    evaluator: ComponentChoice
    #: the evaluator parameters to show in labels (those the user set); display only
    shown: tuple[str, ...] = field(default=(), compare=False)

    @property
    def config(self) -> RunConfig:
        """The row's config: the source's, with this evaluator."""
        return replace(self.source.config, evaluator=self.evaluator, tag="")

    @property
    def parent_run_id(self) -> str | None:
        return self.source.run_id

    @property
    def run_id(self) -> str:
        evaluator = {"name": self.evaluator.name,
                     "params": {k: v for k, v in self.evaluator.params if k not in self.evaluator.not_identity}}
        if self.source.run_id is not None:
            identity: dict[str, Any] = {"evaluates": self.source.run_id, "evaluator": evaluator}
        else:
            identity = {**self.config.to_dict(), "evaluator": evaluator}
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def run_config(self) -> RunConfig:
        """The row's config as a ``RunConfig`` (labels, the data cache), tagged with the evaluator."""
        config = self.config
        params = " ".join(f"{k}={format_value(v)}" for k, v in self.evaluator.params if k in self.shown)
        return replace(config, tag=f"-> {self.evaluator.name}{f' {params}' if params else ''}")


def is_source(record: RunRecord) -> bool:
    """A stored row that holds a distilled set: done, not itself an evaluation of another row, an artifact."""
    return record.status == "done" and record.parent_run_id is None and record.artifact is not None


def evaluate_jobs(jobs: list[Job], registry: Registry, store, reporter: Reporter | None = None,
                  force: bool = False, datasets: DataCache | None = None) -> list[RunResult]:
    """Score every job and store its row as it ends; done rows are kept unless ``force``."""
    from distillbench.runner.environment import collect_environment

    reporter = reporter or Reporter()
    datasets = datasets or DataCache()
    results: list[RunResult] = []
    environment = None
    total = len(jobs)
    for index, job in enumerate(jobs, start=1):
        config = job.run_config()
        record = None if force else store.get(job.run_id)
        if record is not None and record.status == "done":
            reporter.run_cached(index, total, config.label(), record)
            results.append(replace(record.result(), config=config))
            continue
        environment = environment or collect_environment()
        result = score_job(job, registry, datasets)
        stored = replace(result, config=job.config, arrays=result.arrays if job.source.run_id is None else {})
        try:
            store.save(stored, environment, run_id=job.run_id, parent_run_id=job.parent_run_id)
        except Exception as exc:  # a full disk, a locked store: this evaluation fails, the rest go on
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            result = replace(result, status="error", message=f"not saved: {text}", plain=f"not saved: {text}")
        reporter.run_finished(index, total, config.label(), result)
        results.append(result)
    reporter.sweep_finished(results)
    return results


def score_job(job: Job, registry: Registry, datasets: DataCache) -> RunResult:
    """Score one job (never raises: a failure is the result's ``error``, as in ``run``)."""
    config = job.run_config()
    start = time.perf_counter()
    timings: dict[str, Any] = {}
    fingerprint = None
    try:
        enable_float64()
        with running(("dataset", config.dataset.name)):
            data, fingerprint, timings["data_s"] = datasets.load(config, lambda: _load(registry, config))
        source = job.source
        if source.data_fingerprint is not None and source.data_fingerprint != fingerprint:
            raise ValueError(f"the data changed since the set was made (fingerprint {source.data_fingerprint[:12]} ->"
                             f" {fingerprint[:12]}); its scores would not be comparable")
        metrics, timings["eval_s"] = _score(job, registry, data)
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:
        message = registry.describe_failure(exc, involved_in(exc))
        timings["wall_s"] = time.perf_counter() - start
        return RunResult(config, "error", message, timings=Timings.from_dict(timings), data_fingerprint=fingerprint,
                         traceback=traceback.format_exc(), plain=plain_failure(message, exc))
    timings["wall_s"] = time.perf_counter() - start
    return RunResult(config, metrics=Metrics.from_dict(metrics), timings=Timings.from_dict(timings),
                     arrays=dict(job.source.arrays), data_fingerprint=fingerprint)


def _load(registry: Registry, config: RunConfig):
    from distillbench.components.datasets import check_datasplit

    return check_datasplit(registry.instantiate("dataset", config.dataset.name, config.dataset.as_dict()),
                           config.dataset.name)


def _score(job: Job, registry: Registry, data) -> tuple[dict[str, Any], float]:
    """Build the loss, the run's kernel (for its arch) and the evaluator, then score both sets."""
    from distillbench.components.objectives import Support

    config = job.config
    with running(("loss", config.loss.name)):
        loss = registry.instantiate("loss", config.loss.name, config.loss.as_dict())
    kernel_arch = None
    if config.kernel.name != NO_KERNEL:
        with running(("kernel", config.kernel.name)):
            kernel_arch = registry.instantiate("kernel", config.kernel.name, config.kernel.as_dict()).arch
    with running(("evaluator", job.evaluator.name)):
        params = builder_params(job.evaluator, config, registry)  # its "auto" arch: the run kernel's
        evaluator = registry.instantiate("evaluator", job.evaluator.name, params)
        arrays = job.source.arrays
        support = Support(arrays["support_x"], arrays["support_y"], _loss_params(loss.init(), arrays))
        baseline = Support(arrays["baseline_x"], arrays["baseline_y"], loss.init())
        objective = config.objective.as_dict() if config.objective.name != EXTERNAL else {}
        ctx = eval_context(registry, data, loss, kernel_arch, objective, config.seed)
    with running(("evaluator", job.evaluator.name), ("loss", config.loss.name)):
        return score_sets(evaluator, support, baseline, ctx)


def _loss_params(initial, arrays: dict[str, np.ndarray]):
    """The learned loss parameters the run stored (``loss_param_<name>``), over the loss's initial ones."""
    if not isinstance(initial, dict):
        return initial
    return {k: arrays.get(f"loss_param_{k}", v) for k, v in initial.items()}
