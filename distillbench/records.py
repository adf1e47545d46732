"""The types of one run, from the planner to the leaderboard, and their one codec (JAX-free).

* :class:`RunConfig` (one :class:`ComponentChoice` per kind): what to run, frozen; its ``run_id``
  hashes everything in it.
* :class:`RunResult`: what one run produced (the runner's, the launchers' and ``evaluate``'s
  hand-off to the store; picklable, so a worker process can ship it back), with its typed
  :class:`Artifact` (support set, random baseline, loss history, learned loss parameters).
* :class:`RunRecord`: one stored run, decoded by the store's reader.
* :class:`Metrics` and :class:`Timings`: named fields for the values the core knows, plus an
  ``extra`` mapping for what components add (privacy metrics, ``loss_param_*``, ``nn_*``).
  ``to_dict``/``from_dict`` round-trip exactly the JSON a store column holds, and both read like
  a mapping (``metrics["acc"]``, ``metrics.get("eval_arch")``) so code written against the stored
  JSON keeps working.

The codec: :func:`encode_result`/:func:`decode_result` (a result's JSON fields: the store's
columns and a launcher's cell file alike), :func:`to_json` (the one JSON writer) and
:meth:`Artifact.to_arrays`/:meth:`Artifact.from_arrays` (the ``.npz`` members, the only place
their names are spelled).
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

#: The objective name of a row that scored the whole training split (``distillbench evaluate
#: --full-data``): the full-data accuracy a set's recovery divides by.
FULL_DATA = "full-data"


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
    #: the run kernel's architecture, its parameter declared as naming one (display only; the
    #: planner sets it: ``runner.plan.with_arch``, the core names no parameter)
    arch: str | None = field(default=None, compare=False)

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
        kernel = f"{self.kernel.name}({self.arch})" if self.arch else self.kernel.name
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
    #: nn: the labels it regressed, as the method made them: ``learned`` or ``one-hot``
    eval_targets: str | None = None
    eval_reg: float | None = None
    random_eval_reg: float | None = None
    #: nn: the learning rate it trained with (``lr=auto``: the one it chose; the random set chooses its own)
    eval_lr: float | None = None
    random_eval_lr: float | None = None
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
class LabeledSet:
    """Images and the label rows they are scored with; ``classes``: each image's class, when a set
    made elsewhere stated it (a label row's argmax need not be its image's class)."""

    x: Any
    y: Any
    classes: Any = None


#: The ``.npz`` member names of an :class:`Artifact`, as every release has written them.
_SUPPORT_X, _SUPPORT_Y, _SUPPORT_CLASSES = "support_x", "support_y", "support_classes"
_BASELINE_X, _BASELINE_Y = "baseline_x", "baseline_y"
_LOSS_HISTORY, _LOSS_PARAM = "loss_history", "loss_param_"


@dataclass(frozen=True, eq=False)
class Artifact:
    """The arrays of one run, stored as one ``.npz``: the distilled set, the random real subset it
    was scored against (so a re-score uses the same one), the loss at the loop's sync points
    (``(points, 2)``: step, loss) and the learned scalar loss parameters."""

    support: LabeledSet | None = None
    baseline: LabeledSet | None = None
    loss_history: Any = None
    loss_params: Mapping[str, Any] = field(default_factory=dict)

    def to_arrays(self) -> dict[str, Any]:
        """The ``.npz`` members, in the order every release wrote them."""
        out: dict[str, Any] = {}
        if self.support is not None:
            out.update({_SUPPORT_X: self.support.x, _SUPPORT_Y: self.support.y})
        if self.baseline is not None:
            out.update({_BASELINE_X: self.baseline.x, _BASELINE_Y: self.baseline.y})
        if self.loss_history is not None:
            out[_LOSS_HISTORY] = self.loss_history
        out.update({f"{_LOSS_PARAM}{name}": value for name, value in self.loss_params.items()})
        if self.support is not None and self.support.classes is not None:
            out[_SUPPORT_CLASSES] = self.support.classes
        return out

    @staticmethod
    def support_size(arrays: Mapping[str, Any]) -> int | None:
        """The images in the set of stored ``arrays`` (an ``NpzFile`` reads only the labels), or None."""
        return int(arrays[_SUPPORT_Y].shape[0]) if _SUPPORT_Y in arrays else None

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> Artifact:
        """Decode the members of a stored ``.npz`` (a set or baseline missing either array is absent)."""
        def pair(x: str, y: str, classes: Any = None) -> LabeledSet | None:
            return LabeledSet(arrays[x], arrays[y], classes) if x in arrays and y in arrays else None

        params = {name[len(_LOSS_PARAM):]: value for name, value in arrays.items() if name.startswith(_LOSS_PARAM)}
        return cls(pair(_SUPPORT_X, _SUPPORT_Y, arrays.get(_SUPPORT_CLASSES)), pair(_BASELINE_X, _BASELINE_Y),
                   arrays.get(_LOSS_HISTORY), params)


@dataclass(frozen=True)
class RunResult:
    """What one run (or one ``evaluate`` scoring) produced: everything its stored row and artifact hold.

    ``run_id`` defaults to ``config.run_id``; it is given for an evaluation (whose id hashes the
    run it scored) and for a config decoded from JSON (which lost its ``identity=False`` marks).
    ``dataclasses.replace`` keeps it: replacing the config keeps the row it is stored as.
    """

    config: RunConfig
    status: str = "done"
    message: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    timings: Timings = field(default_factory=Timings)
    artifact: Artifact | None = None
    data_fingerprint: str | None = None
    traceback: str | None = None  # the full traceback of a failure
    plain: str | None = None  # the failure in one plain line (no exception class names), for stderr
    cached: bool = False  # taken from the store, not run now
    environment: Mapping[str, Any] = field(default_factory=dict)  # where it ran (versions, device)
    #: set on a result ``distillbench evaluate`` made: the run_id of the distillation it scored
    parent_run_id: str | None = None
    run_id: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown run status {self.status!r}; expected one of {', '.join(STATUSES)}")
        if not self.run_id:
            object.__setattr__(self, "run_id", self.config.run_id)


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

    def result(self, config: RunConfig | None = None) -> RunResult:
        """This record as a cached :class:`RunResult` (a sweep or ``evaluate`` skipping a done cell),
        under ``config`` when given (the planned config, with its display tag); no artifact."""
        return RunResult(config or self.config, self.status, self.message, self.metrics, self.timings,
                         data_fingerprint=self.data_fingerprint, traceback=self.traceback, cached=True,
                         environment=self.environment, parent_run_id=self.parent_run_id, run_id=self.run_id)


# -- the codec: a result's JSON fields (store columns, cell files) -----------------------------
#: The text fields of an encoded result and the one flag of a cell file; ``None`` is allowed.
_TEXTS = ("message", "plain", "data_fingerprint", "traceback", "parent_run_id")
_OBJECTS = ("config", "metrics", "timings", "environment")


def encode_result(result: RunResult) -> dict[str, Any]:
    """A result's JSON fields (the artifact apart): the store writes them as its columns, a worker
    as its cell file; :func:`decode_result` reads both back."""
    return {"run_id": result.run_id, "status": result.status, "message": result.message, "plain": result.plain,
            "config": result.config.to_dict(), "metrics": result.metrics.to_dict(),
            "timings": result.timings.to_dict(), "environment": dict(result.environment),
            "data_fingerprint": result.data_fingerprint, "traceback": result.traceback,
            "parent_run_id": result.parent_run_id}


def decode_result(data: Any, config: RunConfig | None = None) -> RunResult:
    """The :class:`RunResult` of :func:`encode_result`'s fields, every type checked (``config``: the
    planned config to use, when the caller has it). ``ValueError`` names the first field that is
    not what an encoder writes. ``plain`` and ``parent_run_id`` may be missing (older writers)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"holds a JSON {type(data).__name__}, not a result")
    for key in ("run_id", "status", *_OBJECTS, *_TEXTS):
        if key not in data and key not in ("plain", "parent_run_id"):
            raise ValueError(f"no {key!r} field")
        value = data.get(key)
        if key in _OBJECTS:
            if not isinstance(value, dict):
                raise ValueError(f"{key} is {type(value).__name__}, not a JSON object")
        elif not isinstance(value, str if key in ("run_id", "status") else (str, type(None))):
            raise ValueError(f"its {key!r} is a {type(value).__name__}")
    if data["status"] not in STATUSES:
        raise ValueError(f"unknown status {data['status'][:40]!r}")
    _check_numbers(data["metrics"], Metrics, ("eval_kernel", "eval_arch", "eval_targets"))
    _check_numbers(data["timings"], Timings, ())
    try:
        stored = RunConfig.from_dict(data["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"its config is malformed ({type(exc).__name__}: {str(exc)[:80]})") from None
    return RunResult(config or stored, data["status"], data["message"], Metrics.from_dict(data["metrics"]),
                     Timings.from_dict(data["timings"]), None, data["data_fingerprint"], data["traceback"],
                     data.get("plain"), environment=data["environment"], parent_run_id=data.get("parent_run_id"),
                     run_id=data["run_id"])


def _check_numbers(values: Mapping[str, Any], kind: type[_Named], texts: tuple[str, ...]) -> None:
    """The named fields of ``kind`` hold numbers (``texts``: strings) or null, as an encoder writes them."""
    for key in kind.known():
        value = values.get(key)
        want = str if key in texts else (int, float)
        if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
            raise ValueError(f"{key} is {type(value).__name__} {str(value)[:40]!r}, not a "
                             f"{'string' if key in texts else 'number'}")


def to_json(value: Any) -> str:
    """The one JSON writer of stored values (keys sorted; numpy scalars and arrays as Python values)."""
    return json.dumps(value, sort_keys=True, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # np.generic, np.ndarray
        return value.tolist()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")
