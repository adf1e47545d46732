"""The declaration of a component: static metadata, plus a lazily imported builder.

Plugins return ``Component`` values from the ``distillbench_components`` hook. Nothing here
imports JAX: ``build`` may be a ``"package.module:function"`` string that is imported only when
a run actually needs the component, so ``distillbench list`` and ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from distillbench.params import Param

#: The kinds a run chooses one of each, in the order a run uses them (a run's configuration).
KINDS = ("dataset", "kernel", "loss", "objective", "evaluator")
#: Kinds that serve the run kinds rather than being chosen per run: architectures (named by a
#: component's parameter declared ``Param(component="architecture")``) and launchers (how a sweep's cells are executed).
SUPPORT_KINDS = ("architecture", "launcher")
#: Every kind a plugin may declare.
ALL_KINDS = KINDS + SUPPORT_KINDS
#: How a report shows a metric's value: ``percent`` (a fraction, shown x100), ``ratio`` (two
#: decimals and ``×``), ``number`` (three significant digits).
METRIC_FORMATS = ("percent", "ratio", "number")


class Metric(NamedTuple):
    """A number an evaluator reports beside the accuracy, as every report shows it.

    Declared on the evaluator's ``Component(metrics=...)``, so reports read it without building the
    evaluator (no JAX). ``name`` is the key of the evaluator's returned dict (stored as is, and as
    ``random_<name>`` for the random real subset); ``label`` heads its column (``MIA``); ``format``
    is one of ``METRIC_FORMATS``; ``higher_is_better``: ``None`` when neither is.
    """

    name: str
    label: str
    format: str = "number"
    higher_is_better: bool | None = None


@dataclass(frozen=True)
class Component:
    """A named, parameterized building block of a run.

    Attributes:
      kind: one of ``ALL_KINDS``.
      name: unique within its kind, as written on the command line (``rf-nngp``).
      summary: one line for ``distillbench list``.
      build: ``"module:function"`` (imported lazily) or a callable. It is called with every
        declared parameter as a keyword argument and returns the kind's runtime object (see the
        contract module of each kind: ``DataSplit``, ``Kernel``, ``Loss``, an objective
        function, an ``Evaluator``).
      params: declared parameters; only these may be set by users.
      defaults: for objectives, the component names preferred when the user names none,
        e.g. ``{"kernel": "rf-nngp", "loss": "platt"}`` for RFAD.
      default: this component is the one of its kind a run uses when it names none (and its
        objective prefers none). Exactly one installed component of a kind may claim it: when none
        or several do, a run that names none of that kind is refused with one line naming them.
      check: optional JAX-free ``check(choices) -> reason | None``, called with the names of the
        other components of a run (``{"kernel": ..., "loss": ...}``) before any compute;
        a string refuses the combination with that reason.
      validate: optional JAX-free ``validate(params) -> problem | None``, called with this
        component's resolved parameters before any compute (e.g. "is the data file there?");
        a string is bad input: one line, exit code 2.
      check_data: objectives only, optional: JAX-free ``check_data(params, info) -> problem | None``,
        called with this component's resolved parameters and the run's ``DatasetInfo`` (from the
        dataset's ``describe``) before any compute (e.g. "does a d x d matrix fit for these
        images?"); one that also takes a keyword ``ipc`` gets the run's images per class (e.g.
        "are there that many support rows?"); a string is bad input: one line, exit code 2.
      describe: datasets only, optional: JAX-free ``describe(params) -> DatasetInfo``, what the
        split will hold (class counts, image shape), read cheaply from metadata or file headers.
        The planner checks ``ipc`` and empty classes against it before any compute; an exception
        it raises is bad input, its message one line naming the problem (and the file).
      marker: optional matplotlib marker (``"o"``, ``"s"``, ``"^"``...) the report's plots draw this
        component's rows with (objectives); rows of components without one get markers from a
        fixed cycle.
      metrics: evaluators only: the :class:`Metric` values it reports beside ``acc`` that reports
        show (console line, leaderboard column, CSV and JSON). Adding one here is all a new metric
        needs.
      learning: kernels: its networks learn during distillation (it builds a ``Kernel`` with
        ``learning``, e.g. FRePo's ``frepo-pool``); objectives: it evolves such networks, one
        ``Learning.update`` a step. The planner refuses a learning kernel with an objective that is
        not, with the reason, before any compute. Architectures: it exists only as finite networks
        to train (no infinite-width form, ``Architecture.stax`` is ``None``; e.g. ``frepo-conv``).
        A reference set to ``auto`` (``evaluator.arch=auto``) never resolves to such an architecture,
        nor to the architecture of a learning kernel: it takes its declared fallback.
      requires_learning: objectives only: it works on the networks of a learning kernel (RCIG
        linearises them: ``Learning.network``), so the planner refuses any other kernel, with the
        learning kernels installed, before any compute.
    """

    kind: str
    name: str
    summary: str
    build: str | Callable[..., Any]
    params: tuple[Param, ...] = ()
    defaults: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[Mapping[str, str]], str | None] | None = None
    validate: Callable[[Mapping[str, Any]], str | None] | None = None
    check_data: Callable[[Mapping[str, Any], Any], str | None] | None = None
    describe: Callable[[Mapping[str, Any]], Any] | None = None
    default: bool = False
    marker: str | None = None
    metrics: tuple[Metric, ...] = ()
    learning: bool = False
    requires_learning: bool = False

    def __post_init__(self):
        if self.kind not in ALL_KINDS:
            raise TypeError(f"component {self.name!r}: kind must be one of {', '.join(ALL_KINDS)}")
        if self.describe is not None and (self.kind != "dataset" or not callable(self.describe)):
            raise TypeError(f"component {self.name!r}: describe must be a callable, and only datasets have one")
        if not self.name or any(c.isspace() or c in "=,." for c in self.name):
            raise TypeError(f"component name {self.name!r} must be non-empty, without '=,.' or spaces")
        names = [p.name for p in self.params]
        if len(names) != len(set(names)):
            raise TypeError(f"component {self.name!r} declares a parameter twice")
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        problem = _metrics_problem(self.kind, self.metrics)
        if problem:
            raise TypeError(f"component {self.name!r}: {problem}")
        object.__setattr__(self, "defaults", dict(self.defaults))

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def default_params(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve_builder(self) -> Callable[..., Any]:
        """Import and return the builder (the first heavy import happens here)."""
        if callable(self.build):
            return self.build
        module_name, _, attr = self.build.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def instantiate(self, params: Mapping[str, Any]) -> Any:
        """Build the runtime object with the given (already validated) parameters."""
        return self.resolve_builder()(**dict(params))


def _metrics_problem(kind: str, metrics: tuple[Metric, ...]) -> str | None:
    """What is wrong with a component's ``metrics`` declaration, or ``None``."""
    if metrics and kind != "evaluator":
        return "only evaluators declare metrics"
    for metric in metrics:
        if not isinstance(metric, Metric):
            return f"metrics must be distillbench.Metric values, not {type(metric).__name__}"
        if not metric.name or not metric.label:
            return f"metric {metric.name!r} needs a name and a label"
        if metric.format not in METRIC_FORMATS:
            return f"metric {metric.name!r}: format must be one of {', '.join(METRIC_FORMATS)}"
    names = [m.name for m in metrics]
    if len(names) != len(set(names)):
        return "declares a metric twice"
    return None
