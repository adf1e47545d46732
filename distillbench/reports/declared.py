"""The metrics evaluators declare (``Component(metrics=...)``), as every report renders them.

Reports never name an evaluator's metric: they show what its component declares, read from the
registry without building anything (no JAX). A stored run whose evaluator is not installed any
more (its plugin removed) still shows its numbers: every number it scored both sets with (stored
as ``name`` and ``random_<name>``) beyond the core's named metrics, labelled by its name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from distillbench.components.spec import Metric
from distillbench.records import Metrics

#: How a table cell, a column header and the console line show a value of each format.
_CELL = {"percent": lambda v: f"{100 * v:.1f}", "ratio": lambda v: f"{v:.2f}×"}
_UNIT = {"percent": " %", "ratio": " ×"}
_LINE = {"percent": lambda v: f"{100 * v:.2f}%", "ratio": lambda v: f"{v:.2f}×"}


def random_name(name: str) -> str:
    """The key the runner stores a metric of the random real subset under."""
    return f"random_{name}"


@dataclass(frozen=True)
class EvaluatorMetrics:
    """Evaluator name -> the metrics it declares (the installed evaluators)."""

    declared: Mapping[str, tuple[Metric, ...]]

    @classmethod
    def from_registry(cls, registry) -> EvaluatorMetrics:
        return cls({entry.component.name: entry.component.metrics for entry in registry.entries("evaluator")})

    @classmethod
    def installed(cls) -> EvaluatorMetrics:
        """The declarations of the installed plugins (plugin discovery, no JAX)."""
        from distillbench.registry import load_registry

        return cls.from_registry(load_registry())

    def of(self, evaluator: str, stored: Iterable[Mapping[str, Any]] = ()) -> tuple[Metric, ...]:
        """What ``evaluator`` declares; for one not installed, what its ``stored`` metrics hold."""
        if evaluator in self.declared:
            return self.declared[evaluator]
        return undeclared(stored)

    def names(self, evaluator: str, stored: Mapping[str, Any]) -> set[str]:
        """The stored keys of ``evaluator``'s metrics (the random subset's too): numbers, if present."""
        return {key for m in self.of(evaluator, [stored]) for key in (m.name, random_name(m.name))}


def undeclared(stored: Iterable[Mapping[str, Any]]) -> tuple[Metric, ...]:
    """The metrics of runs whose evaluator is not installed: the numbers stored for both sets."""
    core = set(Metrics.known())
    names: set[str] = set()
    for metrics in stored:
        names.update(k for k, v in metrics.items() if k not in core and _number(v)
                     and _number(metrics.get(random_name(k))))
    return tuple(Metric(name, name) for name in sorted(names))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def header(metric: Metric) -> str:
    """``MIA %``: the label and the unit its table cells leave out."""
    return metric.label + _UNIT.get(metric.format, "")


def cell(metric: Metric, value: Any) -> str:
    """A table cell: ``55.2`` (percent), ``1.23×`` (ratio), ``0.0421`` (number); ``-``: none (or not a number)."""
    if not _number(value):
        return "-"
    return _CELL.get(metric.format, _significant)(value)


def line_value(metric: Metric, value: Any) -> str:
    """A value in a sentence (the console): ``55.20%``, ``1.23×``, ``0.0421``; ``-``: none (or not a number)."""
    if not _number(value):
        return "-"
    return _LINE.get(metric.format, _significant)(value)


def _significant(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def with_random(metric: Metric, values: Mapping[str, Any], text=cell) -> str:
    """``1.23× (random 0.00×)``: the distilled set's value and the random subset's."""
    return (f"{text(metric, values.get(metric.name))} "
            f"(random {text(metric, values.get(random_name(metric.name)))})")
