"""What a store's artifacts folder holds that its rows do not name, and the reverse.

The store never deletes a file it cannot prove it made (``database``), so a file no row names (an
artifact left by a release before the ``pending_artifacts`` table, a file someone put there)
stays. ``distillbench store check`` lists them, with the rows whose artifact is missing or whose
path points outside the store, for the user to decide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from distillbench.store.database import open_existing
from distillbench.store.paths import UnsafePathError, artifact_folder_name, locate_artifact


@dataclass
class Inventory:
    """``unnamed``: files in ``<store>.artifacts/`` no row names; ``missing``/``unsafe``: run_ids whose
    artifact is not there, or whose stored path is outside the store's folders."""

    rows: int = 0
    artifacts: int = 0
    unnamed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.unnamed or self.missing or self.unsafe)


def inventory(path: str | os.PathLike) -> Inventory:
    """Read the store at ``path`` (read-only) and its artifacts folder; nothing is changed."""
    path = Path(path)
    store = open_existing(path)
    try:
        rows = store._conn.execute("SELECT run_id, artifact FROM runs").fetchall()
    finally:
        store.close()
    found = Inventory(rows=len(rows))
    named = set()
    for run_id, stored in rows:
        if stored is None:
            continue
        try:
            file = locate_artifact(path, stored)
        except UnsafePathError:
            found.unsafe.append(run_id)
            continue
        named.add(file.name)
        if file.is_file():
            found.artifacts += 1
        else:
            found.missing.append(run_id)
    folder = path.parent / artifact_folder_name(path)
    if folder.is_dir():
        found.unnamed = sorted(str(folder / p.name) for p in folder.iterdir() if p.name not in named)
    return found
