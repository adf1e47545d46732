"""Objective contract: how a distilled support set is produced.

An objective component's ``build(**params)`` returns a function ``make(problem) -> Distiller``.
The runner owns the loop (so that timing, progress, divergence and timeouts are the same for
every objective): it calls ``init`` once, jits ``step`` once, and calls it ``num_steps`` times.

``Problem``
    What the run hands the objective: the data (host arrays), images per class, the kernel and
    loss components chosen for this run, and the run seed.

``Distiller.init(key) -> state``
    Any pytree of arrays. Objectives that start from real images must draw them with
    ``distillbench.sampling.balanced_subset(labels, ipc, num_classes, seed)`` so that the
    random-subset baseline the evaluator scores is the very set they started from.
``Distiller.step(state, train, key) -> (state, loss)``
    Pure and jittable: the runner compiles it once. ``train`` is a ``TrainData`` of device
    arrays (passed as an argument, never closed over). ``loss`` is a scalar; a NaN/inf marks
    the run diverged. ``key`` is fresh every step (random kernels sample from it).
``Distiller.support(state) -> Support``
    The distilled set: images ``(m, H, W, C)``, labels ``(m, C)`` and the loss parameters.
``Distiller.stopped(state) -> bool array`` (optional)
    Early stopping (e.g. model selection out of patience): the runner checks it at fixed step
    indices (``runner.execute.check_interval``), never at wall-clock points, and then ends the
    loop before ``num_steps``; the same seed stops at the same step.
``Distiller.settings`` (optional)
    What the objective resolved for this problem, ``{name: number | text | bool | None}`` (e.g.
    the built-in KIP and RFAD report ``val_per_class``, chosen from the class count when the user
    gives none). The run records each as the metric ``objective_<name>``, as evaluators report
    ``eval_kernel``: the planner and the reports read them instead of re-deriving the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from distillbench.components.datasets import DataSplit
from distillbench.components.kernels import Kernel
from distillbench.components.losses import Loss


class Problem(NamedTuple):
    data: DataSplit
    ipc: int
    kernel: Kernel
    loss: Loss
    seed: int


class TrainData(NamedTuple):
    """The training split on device. ``y`` is mean-centered one-hot (float32)."""

    x: Any
    y: Any
    labels: Any


class Support(NamedTuple):
    x: Any
    y: Any
    loss_params: Any = ()


class Distiller(NamedTuple):
    init: Callable[[Any], Any]
    step: Callable[[Any, TrainData, Any], tuple[Any, Any]]
    support: Callable[[Any], Support]
    num_steps: int
    stopped: Callable[[Any], Any] | None = None
    settings: Mapping[str, Any] | None = None
