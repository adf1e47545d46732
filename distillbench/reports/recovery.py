"""Recovery and robustness: the share of full-data accuracy a set reaches under the same evaluation,
and the gain it keeps with and without augmentation.

A set's full-data score is a stored row of objective ``full-data`` (``distillbench evaluate
--full-data``): the same dataset (configuration and, where both are stored, data fingerprint) and
the same evaluator, every parameter equal, except that a reference the set's row left ``auto`` is
stored resolved there, and matches when it names what the set's evaluation recorded it ran
(``eval_<param>``, e.g. ``eval_arch``).

The augmentation-robust gain of a row is the least of the mean gains over the random subset that
the same sets (every parameter equal but ``evaluator.augment``) reached under each augmentation
they were scored with: what the set is worth whichever of these protocols a reader trusts, with no
weight to choose (DD-Ranking weighs the two; a minimum needs no weight and cannot be raised by the
protocol that favours the set). Reads stored rows only; never imports JAX.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from distillbench.params import AUTO
from distillbench.records import FULL_DATA, RunRecord


def full_data_rows(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The done whole-training-split rows among ``records``, newest first."""
    rows = [r for r in records if r.status == "done" and r.config.objective.name == FULL_DATA and r.metrics.acc is not None]
    return sorted(rows, key=lambda r: r.finished_at or "", reverse=True)


def full_data_for(record: RunRecord, candidates: list[RunRecord]) -> RunRecord | None:
    """The full-data row (of ``candidates``) scored as ``record``'s set was, or ``None``."""
    if record.config.objective.name == FULL_DATA:
        return None
    mine, evaluator = record.config, record.config.evaluator
    for other in candidates:
        theirs = other.config
        if theirs.dataset != mine.dataset or theirs.evaluator.name != evaluator.name:
            continue
        if record.data_fingerprint and other.data_fingerprint and record.data_fingerprint != other.data_fingerprint:
            continue
        if _same_evaluation(record, evaluator.as_dict(), theirs.evaluator.as_dict()):
            return other
    return None


def _same_evaluation(record: RunRecord, mine: dict, theirs: dict) -> bool:
    for name in set(mine) | set(theirs):
        value, resolved = mine.get(name), theirs.get(name)
        if value == resolved:
            continue
        if value == AUTO and resolved is not None and record.metrics.get(f"eval_{name}") == resolved:
            continue
        return False
    return True


AUGMENT = "evaluator.augment"


def add_robust_gains(rows: list) -> None:
    """Set ``gain_by_augment_pts`` and ``robust_gain_pts`` on the rows (of one table) whose sets were
    scored under more than one ``evaluator.augment``."""
    siblings: dict[str, list] = {}
    for row in rows:
        if AUGMENT in row.params and row.gain_mean_pts is not None:
            rest = {k: v for k, v in row.params.items() if k != AUGMENT}
            siblings.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(row)
    for group in siblings.values():
        gains = {str(r.params[AUGMENT]): r.gain_mean_pts for r in group}
        if len(gains) < 2:
            continue
        for row in group:
            row.gain_by_augment_pts = dict(sorted(gains.items()))
            row.robust_gain_pts = min(gains.values())
