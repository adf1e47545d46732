"""What components declare, as every report renders it: evaluators' metrics, parameters' meanings.

Reports never name an evaluator's metric: they show what its component declares, read from the
registry without building anything (no JAX). A stored run whose evaluator is not installed any
more (its plugin removed) still shows its numbers: every number it scored both sets with (stored
as ``name`` and ``random_<name>``) beyond the core's named metrics, labelled by its name.

Nor do reports name a parameter: the architecture a kernel ran is the value of its parameter
declared ``Param(component="architecture")``, whether an objective learns labels that of its
``Param(role="learns_labels")``. A component that is not installed declares nothing: its
columns read ``-``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from distillbench.components.spec import Metric
from distillbench.params import AUTO, LEARNS_LABELS, Param
from distillbench.records import ComponentChoice, Metrics, RunConfig

#: How a table cell, a column header and the console line show a value of each format.
_CELL = {"percent": lambda v: f"{100 * v:.1f}", "ratio": lambda v: f"{v:.2f}×"}
_UNIT = {"percent": " %", "ratio": " ×"}
_LINE = {"percent": lambda v: f"{100 * v:.2f}%", "ratio": lambda v: f"{v:.2f}×"}


def random_name(name: str) -> str:
    """The key the runner stores a metric of the random real subset under."""
    return f"random_{name}"


@dataclass(frozen=True)
class EvaluatorMetrics:
    """Evaluator name -> the metrics it declares (the installed evaluators); with the ``registry``
    they come from, what the components' parameters mean (:meth:`reference`, :meth:`role`)."""

    declared: Mapping[str, tuple[Metric, ...]]
    registry: Any = None

    @classmethod
    def from_registry(cls, registry) -> EvaluatorMetrics:
        return cls({entry.component.name: entry.component.metrics for entry in registry.entries("evaluator")},
                   registry)

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

    def params(self, choice: ComponentChoice) -> tuple[Param, ...]:
        """What ``choice``'s component declares; nothing when it is not installed (or registered twice)."""
        if self.registry is None or choice.name not in self.registry.names(choice.kind):
            return ()
        return self.registry.get(choice.kind, choice.name).params

    def reference(self, choice: ComponentChoice, kind: str) -> Any:
        """The value of ``choice``'s parameter naming a component of ``kind`` (``Param(component=kind)``)."""
        return next((choice.as_dict().get(p.name) for p in self.params(choice) if p.component == kind), None)

    def role(self, choice: ComponentChoice, role: str) -> Any:
        """The value of ``choice``'s parameter declared ``Param(role=role)``, or ``None``."""
        return next((choice.as_dict().get(p.name) for p in self.params(choice) if p.role == role), None)

    def labelled(self, config: RunConfig) -> dict[tuple[str, str], type]:
        """``(kind, param) -> type`` of the parameters reports show in their own columns: the kernel's
        architecture, the evaluator's kernel and architecture (text), the objective's ``learns_labels``
        (bool), as their components declare them."""
        wanted = {"kernel": ("architecture",), "evaluator": ("kernel", "architecture")}
        out: dict[tuple[str, str], type] = {(kind, p.name): str for kind, refs in wanted.items()
                                            for p in self.params(config.choice(kind)) if p.component in refs}
        out.update({("objective", p.name): bool for p in self.params(config.objective) if p.role == LEARNS_LABELS})
        return out

    def resolved_reference(self, config: RunConfig, kind: str) -> Any:
        """The evaluator's reference to a ``kind`` component in ``config``, ``auto`` resolved as the
        planner resolves it (:func:`distillbench.runner.plan.auto_reference`)."""
        from distillbench.runner.plan import auto_reference

        for param in (p for p in self.params(config.evaluator) if p.component == kind):
            value = config.evaluator.as_dict().get(param.name)
            return auto_reference(config, param, self.registry) if value == AUTO and param.auto else value
        return None

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
