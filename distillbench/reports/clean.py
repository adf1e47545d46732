"""Stored records as a report can format them: a value of the wrong type is left out, never a crash.

A store's columns are JSON that any writer may fill (an older release, a hand-edited or damaged
copy), so valid JSON of the wrong type reaches the report: ``metrics.acc = "abc"``,
``environment = 42``. A report shows every run it can. A measured value that is not a number the
report can compute with (finite, at most ``LARGEST`` in size) or a text field that is not text is
left out of that run (its cell reads ``-``); a run whose identity (run_id, finish time, status,
component names, ipc, seed, the labelled parameters) is unusable is skipped. Either way the report
prints one warning line saying how many runs were touched, with the first problem.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import fields, replace
from datetime import datetime
from typing import Any

from distillbench.components.spec import KINDS
from distillbench.errors import shown
from distillbench.records import FULL_DATA, STATUSES, Metrics, RunRecord, Timings

#: Largest magnitude a stored measurement may have (accuracies are fractions, times are seconds):
#: beyond it the means and intervals overflow, so such a value is treated as damaged.
LARGEST = 1e12
#: Environment fields a report reads; each must be text.
_ENV_TEXT = ("device", "backend", "hostname")


def is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and abs(value) <= LARGEST)


def unusable(record: RunRecord, labelled: Mapping[tuple[str, str], type] | None = None) -> str | None:
    """Why ``record`` cannot be reported at all (its identity is damaged), or ``None``.

    ``labelled``: the parameters shown in their own columns, ``(kind, param) -> type``
    (``EvaluatorMetrics.labelled``): each must be of that type, or absent.
    """
    if not isinstance(record.run_id, str) or not record.run_id:
        return f"run_id {shown(record.run_id)} is not text"
    if not isinstance(record.finished_at, str) or not _is_iso(record.finished_at):
        return f"finished_at {shown(record.finished_at)} is not an ISO date-time"
    whole_split = record.config.objective.name == FULL_DATA  # its ipc is 0: every training image
    if not isinstance(record.config.ipc, int) or record.config.ipc < (0 if whole_split else 1):
        return f"ipc {shown(record.config.ipc)} is not a positive integer"
    if record.status not in STATUSES:
        return f"status {shown(record.status)} is not one of {', '.join(STATUSES)}"
    config = record.config
    for kind in KINDS:
        name = config.choice(kind).name
        if not isinstance(name, str) or not name:
            return f"its {kind} name {shown(name)} is not text"
    for (kind, key), kind_type in (labelled or {}).items():
        value = config.choice(kind).as_dict().get(key)
        if value is not None and not isinstance(value, kind_type):
            return f"{kind}.{key} = {shown(value)} is not {'true/false' if kind_type is bool else 'text'}"
    if record.parent_run_id is not None and not isinstance(record.parent_run_id, str):
        return f"parent_run_id {shown(record.parent_run_id)} is not text"
    return None


def _is_iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def cleaned(record: RunRecord, numbers: Collection[str] = ()) -> tuple[RunRecord, list[str]]:
    """``record`` without its values of the wrong type, and what was left out (``metrics.acc is 'abc'``).

    ``numbers``: the metrics beyond the named ones that must be numbers (what its evaluator declares).
    """
    dropped: list[str] = []
    metrics = _named(record.metrics, Metrics, "metrics", dropped, numbers)
    timings = _named(record.timings, Timings, "timings", dropped)
    environment = record.environment
    if not isinstance(environment, Mapping):
        dropped.append(f"environment is {shown(environment)}, not an object")
        environment = {}
    bad_env = [k for k in _ENV_TEXT if k in environment and not isinstance(environment[k], (str, type(None)))]
    if bad_env:
        dropped += [f"environment.{k} is {shown(environment[k])}, not text" for k in bad_env]
        environment = {k: v for k, v in environment.items() if k not in bad_env}
    message, artifact = record.message, record.artifact
    if message is not None and not isinstance(message, str):
        dropped.append(f"message is {shown(message)}, not text")
        message = str(message)
    if artifact is not None and not isinstance(artifact, str):
        dropped.append(f"artifact is {shown(artifact)}, not a file name")
        artifact = None
    if not dropped:
        return record, []
    return replace(record, metrics=metrics, timings=timings, environment=environment, message=message,
                   artifact=artifact), dropped


def _named(values, cls, column: str, dropped: list[str], numbers: Collection[str] = ()):
    """A ``Metrics``/``Timings`` without the fields (and ``numbers``) whose value is not of their type."""
    data = values.to_dict() if hasattr(values, "to_dict") else {}
    kinds = {f.name: str(f.type) for f in fields(cls) if f.name != "extra"}
    kept = {}
    for key, value in data.items():
        wanted = kinds.get(key, "float | None" if key in numbers else None)
        if value is None or wanted is None or _fits(value, wanted, cls is Timings):
            kept[key] = value
        else:
            what = "text" if "str" in wanted else "a duration (>= 0)" if cls is Timings else "a number"
            dropped.append(f"{column}.{key} is {shown(value)}, not {what}")
    return values if len(kept) == len(data) else cls.from_dict(kept)


def _fits(value: Any, declared: str, duration: bool) -> bool:
    if "str" in declared:
        return isinstance(value, str)
    return is_number(value) and not (duration and value < 0)

