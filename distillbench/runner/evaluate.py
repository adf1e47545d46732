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

Nothing is distilled here: the timings hold ``eval_s`` (both sets), ``data_s``, ``wall_s`` and
peak memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from distillbench.params import format_value
from distillbench.registry import Registry
from distillbench.records import Artifact, ComponentChoice, Metrics, RunConfig, RunRecord, RunResult, Timings
from distillbench.runner.external import EXTERNAL, NO_KERNEL
from distillbench.runner.pipeline import DataCache, Loaded, eval_context, running, score_sets
from distillbench.runner.plan import builder_params
from distillbench.runner.reporter import Reporter


@dataclass(frozen=True)
class Source:
    """A distilled set to score: the config it was made under and its arrays."""

    run_id: str | None  # the stored run; None for an external file
    config: RunConfig
    artifact: Artifact  # holds the support set and its baseline
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

    result = guarded(job.run_config(), registry, datasets, lambda loaded: _scored(job, registry, loaded))
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
