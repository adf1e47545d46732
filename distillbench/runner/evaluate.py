"""Score distilled sets again without distilling them: ``distillbench evaluate``.

A *source* is a distilled set: a stored run (its :class:`~distillbench.records.Artifact` holds the
support set, the learned loss parameters and the random baseline the run used) or a set made
elsewhere (an ``.npz`` with ``x`` and ``y``, read and checked against the dataset it claims to
distill by :mod:`distillbench.runner.external`). Each (source, evaluator) pair is a job that runs
the way a cell of ``run`` does: through :func:`distillbench.runner.execute.guarded` (data,
timing, failures), scored by :func:`distillbench.runner.pipeline.score_sets` against the *same*
random baseline, stored and reported by the sweep's :class:`~distillbench.runner.sweep.Sweep`:

* a stored run's evaluation has the run's config with the new evaluator, no artifact, and
  ``parent_run_id`` = the run it scored (its run_id hashes the parent and the evaluator, so it
  never collides with a ``run`` of the same config);
* an external set's evaluation has objective ``external`` (parameters: the name the user gave it,
  the file's sha256 and name), kernel ``none``, and an artifact holding the set and its baseline,
  so it can itself be re-scored later.

* the whole training split (``--full-data``: the denominator of *recovery*, the share of full-data
  accuracy a set reaches) is a job of its own, one per (dataset, evaluator) of the jobs: objective
  ``full-data``, kernel ``none``, ``ipc`` 0, seed 0, the evaluator's ``auto`` references resolved as
  the sets' were, labels centred one-hot, scored once (no random baseline) with
  ``EvalContext.full_data`` set; stored like any row, so the second request reuses it.

Nothing is distilled here: the timings hold ``eval_s`` (both sets), ``data_s``, ``wall_s`` and
peak memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from distillbench.params import format_value
from distillbench.registry import Registry
from distillbench.records import (FULL_DATA, Artifact, ComponentChoice, Metrics, RunConfig, RunRecord, RunResult,
                                  Timings)
from distillbench.runner.external import EXTERNAL, NO_KERNEL
from distillbench.runner.pipeline import DataCache, Loaded, eval_context, running, score_sets
from distillbench.runner.plan import builder_params
from distillbench.runner.reporter import Reporter


@dataclass(frozen=True)
class Source:
    """A distilled set to score: the config it was made under and its arrays."""

    run_id: str | None  # the stored run; None for an external file or the whole training split
    config: RunConfig
    artifact: Artifact | None  # holds the support set and its baseline (None: the whole training split)
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


def full_data_job(job: Job, registry: Registry) -> Job:
    """The whole-training-split job beside ``job``: same dataset, loss and evaluator (its ``auto``
    references resolved in ``job``'s config, so the same network trains), nothing else."""
    config = job.config
    params = builder_params(job.evaluator, config, registry)
    evaluator = replace(job.evaluator, params=tuple(sorted(params.items())))
    none = ComponentChoice("kernel", NO_KERNEL, ())
    source_config = RunConfig(dataset=config.dataset, kernel=none, loss=config.loss,
                              objective=ComponentChoice("objective", FULL_DATA, ()), evaluator=evaluator,
                              ipc=0, seed=0)
    return Job(Source(None, source_config, None), evaluator, job.shown)


def with_full_data(jobs: list[Job], registry: Registry) -> list[Job]:
    """``jobs`` after one whole-split job per distinct (dataset, evaluator) among them."""
    extra = {full.run_id: full for full in (full_data_job(job, registry) for job in jobs)}
    return list(extra.values()) + jobs


def is_source(record: RunRecord) -> bool:
    """A stored row that holds a distilled set: done, not itself an evaluation of another row, an artifact."""
    return record.status == "done" and record.parent_run_id is None and record.artifact is not None


def evaluate_jobs(jobs: list[Job], registry: Registry, store, reporter: Reporter | None = None,
                  force: bool = False, datasets: DataCache | None = None) -> list[RunResult]:
    """Score every job and store its row as it ends; done rows are kept unless ``force``."""
    from distillbench.runner.sweep import Sweep

    sweep = Sweep(store, registry, reporter or Reporter(), len(jobs), datasets=datasets or DataCache())
    for index, job in enumerate(jobs, start=1):
        record = None if force else store.get(job.run_id)
        if record is not None and record.status == "done":
            sweep.reuse(index, record, job.run_config())
        else:
            sweep.finish(index, score_job(job, registry, sweep.datasets))
    sweep.reporter.sweep_finished(sweep.results)
    return sweep.results


def score_job(job: Job, registry: Registry, datasets: DataCache) -> RunResult:
    """Score one job (never raises: a failure is the result's ``error``, as in ``run``)."""
    from distillbench.runner.execute import guarded

    scored = _scored_full if job.config.objective.name == FULL_DATA else _scored
    result = guarded(job.run_config(), registry, datasets, lambda loaded: scored(job, registry, loaded))
    return replace(result, run_id=job.run_id, parent_run_id=job.parent_run_id)


def _scored(job: Job, registry: Registry, loaded: Loaded) -> RunResult:
    """The job's scores on its loaded data; an external set keeps its artifact (it can be re-scored)."""
    source = job.source
    if source.data_fingerprint is not None and source.data_fingerprint != loaded.fingerprint:
        raise ValueError(f"the data changed since the set was made (fingerprint {source.data_fingerprint[:12]} ->"
                         f" {loaded.fingerprint[:12]}); its scores would not be comparable")
    metrics, eval_s = _score(job, registry, loaded.data)
    return RunResult(job.run_config(), metrics=Metrics.from_dict(metrics),
                     timings=Timings.from_dict({"data_s": loaded.data_s, "eval_s": eval_s}),
                     artifact=source.artifact if source.run_id is None else None,
                     data_fingerprint=loaded.fingerprint)


def _scored_full(job: Job, registry: Registry, loaded: Loaded) -> RunResult:
    """The whole training split scored once (centred one-hot labels, ``full_data`` context)."""
    import time

    from distillbench.components.objectives import Support
    from distillbench.krr import centered_one_hot

    config, data = job.config, loaded.data
    with running(("loss", config.loss.name)):
        loss = registry.instantiate("loss", config.loss.name, config.loss.as_dict())
    with running(("evaluator", job.evaluator.name)):
        evaluator = registry.instantiate("evaluator", job.evaluator.name, job.evaluator.as_dict())
        ctx = eval_context(registry, data, loss, None, None, config.seed)._replace(full_data=True)
        support = Support(data.x_train, np.asarray(centered_one_hot(data.y_train, data.num_classes)), loss.init())
    with running(("evaluator", job.evaluator.name), ("loss", config.loss.name)):
        start = time.perf_counter()
        scores = evaluator.evaluate(support, ctx)
        eval_s = time.perf_counter() - start
    metrics = {k: v if v is None or isinstance(v, str) else float(v) for k, v in scores.items()}
    metrics["full_data_images"] = float(len(data.x_train))
    return RunResult(job.run_config(), metrics=Metrics.from_dict(metrics),
                     timings=Timings.from_dict({"data_s": loaded.data_s, "eval_s": eval_s}),
                     data_fingerprint=loaded.fingerprint)


def _score(job: Job, registry: Registry, data) -> tuple[dict[str, Any], float]:
    """Build the loss, the run's kernel (for its arch) and the evaluator, then score both sets."""
    from distillbench.components.objectives import Support

    config, artifact = job.config, job.source.artifact
    with running(("loss", config.loss.name)):
        loss = registry.instantiate("loss", config.loss.name, config.loss.as_dict())
    kernel_arch = None
    if config.kernel.name != NO_KERNEL:
        with running(("kernel", config.kernel.name)):
            kernel_arch = registry.instantiate("kernel", config.kernel.name, config.kernel.as_dict()).arch
    with running(("evaluator", job.evaluator.name)):
        params = builder_params(job.evaluator, config, registry)  # its "auto" arch: the run kernel's
        evaluator = registry.instantiate("evaluator", job.evaluator.name, params)
        support = Support(artifact.support.x, artifact.support.y, _loss_params(loss.init(), artifact))
        objective = config.objective if config.objective.name != EXTERNAL else None
        ctx = eval_context(registry, data, loss, kernel_arch, objective, config.seed)
    with running(("evaluator", job.evaluator.name), ("loss", config.loss.name)):
        return score_sets(evaluator, support, artifact.baseline, ctx)


def _loss_params(initial, artifact: Artifact):
    """The learned loss parameters the run stored, over the loss's initial ones."""
    if not isinstance(initial, dict):
        return initial
    return {k: artifact.loss_params.get(k, v) for k, v in initial.items()}
