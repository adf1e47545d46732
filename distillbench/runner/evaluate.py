"""Score distilled sets again without distilling them: ``distillbench evaluate``.

A *source* is a distilled set: a stored run (its artifact holds ``support_x``/``support_y``, the
learned loss parameters and the random baseline ``baseline_x``/``baseline_y`` the run used) or a
set made elsewhere (an ``.npz`` with ``x`` and ``y``, checked against the dataset it claims to
distill by :func:`check_external`). Each (source, evaluator) pair is scored through the same code
as ``run`` (:func:`distillbench.runner.pipeline.score_sets`), against the *same* random baseline,
and stored as one row:

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
from pathlib import Path
from typing import Any

import numpy as np

from distillbench.params import format_value
from distillbench.registry import Registry
from distillbench.records import ComponentChoice, Metrics, RunConfig, RunRecord, RunResult, Timings
from distillbench.runner.execute import plain_failure
from distillbench.runner.pipeline import DataCache, enable_float64, eval_context, involved_in, running, score_sets
from distillbench.runner.reporter import Reporter

EXTERNAL = "external"  # the objective name of a set made elsewhere
NO_KERNEL = "none"  # the kernel name of a set made elsewhere
#: Relative tolerance of the preprocessing check: a set whose pixel std or mean is off by more than
#: this many train-set stds was not preprocessed like the dataset (raw 0-255 pixels, another scaling).
_SCALE_FACTOR = 10.0
_MEAN_STDS = 5.0


class ExternalSetError(ValueError):
    """An external set does not fit the dataset it claims to distill (bad input: one line, exit 2)."""


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


def external_config(dataset: ComponentChoice, loss: ComponentChoice, ipc: int, seed: int, name: str,
                    sha256: str, file_name: str) -> RunConfig:
    """The stored config of a set made elsewhere: its provenance is the ``external`` objective's parameters."""
    provenance = tuple(sorted({"name": name, "sha256": sha256, "file": file_name}.items()))
    return RunConfig(dataset=dataset, kernel=ComponentChoice("kernel", NO_KERNEL, ()), loss=loss,
                     objective=ComponentChoice("objective", EXTERNAL, provenance),
                     evaluator=ComponentChoice("evaluator", "", ()), ipc=int(ipc), seed=int(seed))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_external(path: Path) -> dict[str, np.ndarray]:
    """``x`` and ``y`` of an ``.npz``; raises :class:`ExternalSetError` with one line otherwise."""
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            if "x" not in names or "y" not in names:
                raise ExternalSetError(f"{path}: an external set needs arrays 'x' (images) and 'y' (labels); "
                                       f"the file holds {', '.join(names) or 'nothing'}")
            return {"x": np.asarray(f["x"]), "y": np.asarray(f["y"])}
    except ExternalSetError:
        raise
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExternalSetError(f"{path}: not a readable .npz file ({text}); save the set with "
                               f"numpy.savez(path, x=images, y=labels)") from None


def check_external(x: np.ndarray, y: np.ndarray, data, where: str, preprocessing: str) -> tuple[np.ndarray, int]:
    """Check a set made elsewhere against the dataset it claims to distill: ``(labels, ipc)``.

    Shape: the dataset's image shape. Classes: integer labels in ``[0, C)`` (or one-hot/centered
    rows of width ``C``), the same count per class. Preprocessing: finite values whose overall
    std and mean are those of the preprocessed training images within a wide margin (a factor of
    10 in the std, 5 stds in the mean): raw 0-255 pixels, or the dataset without its
    standardization, fail. Raises :class:`ExternalSetError` with one line saying what is wrong.
    """
    shape, classes = tuple(data.x_train.shape[1:]), int(data.num_classes)
    if x.ndim < 2 or tuple(x.shape[1:]) != shape:
        raise ExternalSetError(f"{where}: x has shape {tuple(x.shape)}, but the dataset's images have shape {shape} "
                               f"(expected (n, {', '.join(map(str, shape))}))")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ExternalSetError(f"{where}: x has dtype {x.dtype}; expected real numbers (float32 or float64)")
    if y.ndim == 2:
        if y.shape[1] != classes:
            raise ExternalSetError(f"{where}: y has {y.shape[1]} columns, but the dataset has {classes} classes "
                                   f"(give integer labels or one-hot rows of width {classes})")
        y = np.argmax(y, axis=1)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ExternalSetError(f"{where}: y has shape {tuple(y.shape)}; expected {x.shape[0]} integer labels "
                               f"(one per image in x)")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ExternalSetError(f"{where}: y must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ExternalSetError(f"{where}: labels range {y.min()}..{y.max()}, but the dataset has {classes} classes "
                               f"(labels 0..{classes - 1})")
    counts = np.bincount(y, minlength=classes)
    if y.size == 0 or counts.min() != counts.max():
        raise ExternalSetError(f"{where}: images per class are {counts.tolist()}; a distilled set holds the same "
                               f"number of images of every class")
    xf = x.astype(np.float64)
    if not np.all(np.isfinite(xf)):
        raise ExternalSetError(f"{where}: x holds NaN or infinite values")
    train = np.asarray(data.x_train, dtype=np.float64)
    t_mean, t_std = float(train.mean()), float(train.std()) or 1.0
    s_mean, s_std = float(xf.mean()), float(xf.std())
    if (s_std > _SCALE_FACTOR * t_std or (xf.shape[0] > 1 and s_std < t_std / _SCALE_FACTOR)
            or abs(s_mean - t_mean) > _MEAN_STDS * t_std):
        raise ExternalSetError(
            f"{where}: pixel values (mean {s_mean:.3g}, std {s_std:.3g}) do not match the dataset's preprocessed "
            f"images (mean {t_mean:.3g}, std {t_std:.3g}; {preprocessing}); save the set after the same "
            f"preprocessing, or choose the matching dataset.* parameters")
    return y, int(counts[0])


def external_arrays(x: np.ndarray, labels: np.ndarray, data, ipc: int, seed: int) -> dict[str, np.ndarray]:
    """The arrays ``run`` would store for this set: centered one-hot labels, and the run seed's baseline."""
    from distillbench.krr import centered_one_hot
    from distillbench.sampling import balanced_subset

    classes = int(data.num_classes)
    idx = balanced_subset(data.y_train, ipc, classes, seed)
    return {
        "support_x": np.asarray(x, dtype=np.asarray(data.x_train).dtype),
        "support_y": np.asarray(centered_one_hot(labels, classes)),
        "baseline_x": data.x_train[idx],
        "baseline_y": np.asarray(centered_one_hot(data.y_train[idx], classes)),
    }


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
        evaluator = registry.instantiate("evaluator", job.evaluator.name, job.evaluator.as_dict())
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
