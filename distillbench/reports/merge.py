"""Runs from one or more result stores, read (SQLite only, never JAX) and merged by ``run_id``.

A ``run_id`` found in several stores counts once: the copy with the latest ``finished_at`` wins,
and on an exact tie the store named first wins. Runs with distinct run_ids all count. A run with
values of the wrong type is shown without them, one whose identity is unusable is left out
(reports/clean.py); either is counted for one warning line.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distillbench.errors import shown
from distillbench.records import RunRecord
from distillbench.reports.clean import cleaned, unusable
from distillbench.reports.declared import EvaluatorMetrics


class ReportError(Exception):
    """Nothing to report (missing or empty store, nothing matches the filters): one clear line."""


@dataclass(frozen=True)
class StoredRun:
    """A run as read from a store, with the store it came from (for its artifact)."""

    record: RunRecord
    store: Path


@dataclass(frozen=True)
class MergeInfo:
    stores: tuple[str, ...]
    runs_read: int
    duplicates: int  # run_ids seen more than once, counted once
    damaged: int = 0  # runs shown without their values of the wrong type (reports/clean.py)
    skipped: int = 0  # runs left out: their identity is unusable
    problem: str = ""  # the first of those problems, for the warning line

    def warning(self) -> str | None:
        """One line about the damaged runs of the stores, or ``None`` when there are none."""
        if not (self.damaged or self.skipped):
            return None
        parts = []
        if self.damaged:
            parts.append(f"{self.damaged} run{'s' * (self.damaged != 1)} shown without values of the wrong type")
        if self.skipped:
            parts.append(f"{self.skipped} run{'s' * (self.skipped != 1)} left out (unusable identity)")
        return f"warning: damaged store rows: {'; '.join(parts)}; first: {self.problem}"

    def line(self) -> str:
        stores = f"{len(self.stores)} store{'s' if len(self.stores) != 1 else ''}"
        dup = f"; {self.duplicates} duplicate run_id{'s' if self.duplicates != 1 else ''} counted once" \
            if self.duplicates else ""
        runs = self.runs_read - self.duplicates
        return f"{runs} run{'s' if runs != 1 else ''} from {stores}{dup}"


def load_runs(paths: Sequence[str | os.PathLike],
              metrics: EvaluatorMetrics | None = None) -> tuple[list[StoredRun], MergeInfo]:
    """Read every store in ``paths`` (read-only) and merge them by ``run_id``.

    ``metrics``: what the evaluators declare (a declared metric that is not a number is damage);
    by default the installed plugins'.

    Raises :class:`ReportError` for a missing file, a file that is not a store, or when no store
    holds any run.
    """
    from distillbench.store.database import NotAStoreError, open_existing

    metrics = metrics or EvaluatorMetrics.installed()
    chosen: dict[str, StoredRun] = {}
    total = 0
    damage = _Damage()
    for path in paths:
        try:
            store = open_existing(path)
        except FileNotFoundError:
            raise ReportError(f"no results store at {str(path)!r} (run `distillbench run` first, or pass "
                              f"--store PATH)") from None
        except NotAStoreError as exc:
            raise ReportError(str(exc)) from None
        except (sqlite3.Error, OSError) as exc:  # unreadable file, locked beyond the timeout, ...
            raise ReportError(f"cannot read results store {str(path)!r}: {exc}") from None
        try:
            records = list(store.records())
        except (sqlite3.Error, ValueError) as exc:  # ValueError: a corrupt JSON column
            raise ReportError(f"cannot read results store {str(path)!r}: {exc}") from None
        finally:
            store.close()
        total += len(records)
        for record in _usable(records, path, damage, metrics):
            kept = chosen.get(record.run_id)
            if kept is None or record.finished_at > kept.record.finished_at:
                chosen[record.run_id] = StoredRun(record, Path(path))
    if not chosen:
        names = ", ".join(repr(str(p)) for p in paths)
        if damage.skipped:
            raise ReportError(f"no usable run in {names}: {damage.skipped} stored run"
                              f"{'s' * (damage.skipped != 1)}, none reportable; first: {damage.problem}")
        which = f"results store {names} has" if len(paths) == 1 else f"results stores {names} have"
        raise ReportError(f"{which} no runs; run `distillbench run` first")
    runs = sorted(chosen.values(), key=lambda r: (r.record.finished_at, r.record.run_id))
    return runs, MergeInfo(tuple(str(p) for p in paths), total - damage.skipped, total - damage.skipped - len(chosen),
                           damage.damaged, damage.skipped, damage.problem)


@dataclass
class _Damage:
    damaged: int = 0
    skipped: int = 0
    problem: str = ""


def _usable(records: list[RunRecord], path, damage: _Damage, metrics: EvaluatorMetrics) -> list[RunRecord]:
    """The records a report can format (reports/clean.py), counting the damaged and skipped ones."""
    out = []
    for record in records:
        why = unusable(record, metrics.labelled(record.config))
        numbers = () if why else metrics.names(record.config.evaluator.name, record.metrics)
        record, dropped = (record, []) if why else cleaned(record, numbers)
        if why or dropped:
            damage.skipped += bool(why)
            damage.damaged += not why
            damage.problem = damage.problem or (f"{str(path)!r}, run {shown(record.run_id, 40)}: "
                                                f"{why or '; '.join(dropped)}")
        if not why:
            out.append(record)
    return out
