"""The types of one run, from the planner to the leaderboard, in one module (JAX-free).

* :class:`RunConfig` (one :class:`ComponentChoice` per kind): what to run, frozen; its ``run_id``
  hashes everything in it.
* :class:`RunResult`: what one run produced, before it is stored (the runner's and the launchers'
  hand-off; picklable, so a worker process can ship it back).
* :class:`RunRecord`: one stored run, decoded by the store's reader.
* :class:`Metrics` and :class:`Timings`: named fields for the values the core knows, plus an
  ``extra`` mapping for what components add (privacy metrics, ``loss_param_*``, ``nn_*``).
  ``to_dict``/``from_dict`` round-trip exactly the JSON a store column holds, and both read like
  a mapping (``metrics["acc"]``, ``metrics.get("eval_arch")``) so code written against the stored
  JSON keeps working.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from distillbench.components.spec import KINDS

#: The store's schema version (``meta.schema_version``); ``distillbench.store`` migrates older stores.
SCHEMA_VERSION = 3
#: A stored run's status: ``done``, or why it did not finish.
STATUSES = ("done", "error", "diverged", "timeout", "interrupted")


@dataclass(frozen=True)
class ComponentChoice:
    """A component name and its complete, resolved parameters."""

    kind: str
    name: str
    params: tuple[tuple[str, Any], ...]
    #: parameters declared ``identity=False``: recorded, but not part of the run_id
    not_identity: tuple[str, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class RunConfig:
    """One fully resolved cell of a sweep. Its ``run_id`` is a hash of everything in it."""

    dataset: ComponentChoice
    kernel: ComponentChoice
    loss: ComponentChoice
    objective: ComponentChoice
    evaluator: ComponentChoice
    ipc: int
    seed: int
    #: the parameters that tell this cell apart from the others of its sweep (display only)
    tag: str = field(default="", compare=False)

    def choice(self, kind: str) -> ComponentChoice:
        return getattr(self, kind)

    def to_dict(self) -> dict[str, Any]:
        """The stored ``config`` JSON: ``{kind: {"name", "params"}, "ipc", "seed"}``."""
        out: dict[str, Any] = {kind: {"name": self.choice(kind).name, "params": self.choice(kind).as_dict()}
                               for kind in KINDS}
        out["ipc"] = self.ipc
        out["seed"] = self.seed
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Decode a stored ``config`` (the inverse of :meth:`to_dict`; ``not_identity`` is not stored)."""
        choices = {kind: ComponentChoice(kind, data[kind]["name"], tuple(sorted(data[kind]["params"].items())))
                   for kind in KINDS}
        return cls(**choices, ipc=int(data["ipc"]), seed=int(data["seed"]))

    @property
    def run_id(self) -> str:
        identity = self.to_dict()
        for kind in KINDS:
            for key in self.choice(kind).not_identity:
                identity[kind]["params"].pop(key, None)
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def label(self) -> str:
        arch = dict(self.kernel.params).get("arch")
        kernel = f"{self.kernel.name}({arch})" if arch else self.kernel.name
        text = f"{self.dataset.name} {self.objective.name}/{kernel}/{self.loss.name} ipc={self.ipc} seed={self.seed}"
        return f"{text} {self.tag}" if self.tag else text

    def flat(self) -> dict[str, Any]:
        """``{"kernel.arch": "fc1", ...}``: every parameter under its command-line key."""
        return {f"{kind}.{key}": value for kind in KINDS for key, value in self.choice(kind).params}


class _Named(Mapping):
    """Named fields (``None``: absent) plus ``extra``; reads like the JSON object it is stored as.

    A known key stored with an explicit ``null`` (``steps_per_s`` of a one-step run) is kept in
    ``extra`` so that ``from_dict(d).to_dict() == d`` holds for every stored column.
    """

    extra: Mapping[str, Any]

    @classmethod
    def known(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "extra")  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None):
        data = dict(data or {})
        names = set(cls.known())
        named = {k: v for k, v in data.items() if k in names and v is not None}
        return cls(**named, extra={k: v for k, v in data.items() if k not in named})

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.known() if getattr(self, name) is not None}
        out.update(self.extra)
        return out

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        value = getattr(self, key, None) if key in self.known() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class Metrics(_Named):
    """What a run measured. Accuracies are fractions in [0, 1]; ``gain`` = ``acc - random_acc``."""

    acc: float | None = None
    random_acc: float | None = None
    gain: float | None = None
    mse: float | None = None
    random_mse: float | None = None
    #: what the evaluator reports it used (krr: kernel, arch and ridge; nn: arch): never re-derived
    eval_kernel: str | None = None
    eval_arch: str | None = None
    eval_reg: float | None = None
    random_eval_reg: float | None = None
    steps_run: int | None = None
    stopped_early_at: int | None = None
    loss_first: float | None = None
    loss_final: float | None = None
    #: component-specific values (privacy metrics, ``loss_param_*``, ``nn_*``, ``*_std``)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Timings(_Named):
    """Where a run's time and memory went (seconds; ``*_mb``: MiB)."""

    compile_s: float | None = None
    first_step_s: float | None = None
    step_s: float | None = None
    steps_per_s: float | None = None
    distill_s: float | None = None
    eval_s: float | None = None
    data_s: float | None = None
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    device_peak_mb: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """What one run produced, before it is stored: ``arrays`` go to the artifact, the rest to the row."""

    config: RunConfig
    status: str = "done"
    message: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    timings: Timings = field(default_factory=Timings)
    arrays: Mapping[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    traceback: str | None = None  # the full traceback of a failure
    plain: str | None = None  # the failure in one plain line (no exception class names), for stderr
    cached: bool = False  # taken from the store, not run now

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown run status {self.status!r}; expected one of {', '.join(STATUSES)}")


@dataclass(frozen=True)
class RunRecord:
    """One stored run, decoded by the store's reader."""

    run_id: str
    finished_at: str  # ISO 8601, UTC, seconds
    status: str
    message: str | None
    config: RunConfig
    metrics: Metrics
    timings: Timings
    environment: Mapping[str, Any]
    artifact: str | None  # relative to the store's folder
    data_fingerprint: str | None = None  # hash of the data the run loaded (None: stored before schema 2)
    traceback: str | None = None  # the full traceback of a failed run
    #: set on a row ``distillbench evaluate`` stored: the run_id of the distillation it scored
    parent_run_id: str | None = None

    def result(self) -> RunResult:
        """This record as a cached :class:`RunResult` (a sweep skipping a done cell)."""
        return RunResult(self.config, self.status, self.message, self.metrics, self.timings,
                         data_fingerprint=self.data_fingerprint, traceback=self.traceback, cached=True)
