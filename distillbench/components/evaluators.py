"""Evaluator contract: how a support set is scored.

An evaluator component's ``build(**params)`` returns an ``Evaluator``. The runner calls
``evaluate`` twice per run with the same context: once on the distilled support set and once on
the class-balanced random real subset of equal size, and reports the metrics of both and the
gain. Metrics are plain floats; ``acc`` (test accuracy in [0, 1]) is expected. Text values say
what really ran and are stored and shown as such: ``eval_kernel`` (the kernel's name) and
``eval_arch`` (its architecture, or ``None``); reports read them instead of re-deriving them.
The numbers reports show beside ``acc`` are the ones its component declares
(``Component(metrics=(Metric(...), ...))``): a returned number nobody declared is stored, not shown.

``EvalContext``
    ``data``: the run's ``DataSplit``; ``loss``: the run's ``Loss`` (for scaled logits);
    ``run_kernel_arch``: the ``arch`` of the run's kernel (or ``None``); ``objective_params``:
    the run objective's resolved parameters; ``make_kernel(name, **params)``: builds any
    registered kernel; ``seed``: the run seed; ``ridge``: the run objective's KRR ridge, the value
    of its parameter declared ``Param(role="ridge")`` (``None``: it declares none), the ridge a KRR
    evaluator scores with unless told otherwise; ``full_data``: the set scored is the whole training
    split (``distillbench evaluate --full-data``, the denominator of recovery), so an evaluator that
    trains full-batch on small sets may take minibatches and should hold out what it validates on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from distillbench.components.datasets import DataSplit
from distillbench.components.losses import Loss
from distillbench.components.objectives import Support
from distillbench.components.spec import Metric

__all__ = ["EvalContext", "Evaluator", "Metric"]


class EvalContext(NamedTuple):
    data: DataSplit
    loss: Loss
    run_kernel_arch: str | None
    objective_params: Mapping[str, Any]
    make_kernel: Callable[..., Any]
    seed: int
    ridge: float | None = None
    full_data: bool = False


class Evaluator(NamedTuple):
    evaluate: Callable[[Support, EvalContext], dict[str, float]]
