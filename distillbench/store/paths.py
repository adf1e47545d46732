"""Where a store's files may be: every path read from a row is checked here before it is used.

A row's ``artifact`` column is data, not a path to follow: a damaged or hand-edited store could
name ``../../anything``. It is read as ``<folder>/<name>``, where ``<folder>`` is the artifacts
folder of whatever file name the store had when the row was written (``results.sqlite.artifacts``;
``artifacts`` for the shared folder of versions before 0.1) and ``<name>`` a plain ``.npz`` file
name. The file is then looked up in *this* store's own artifacts folder (so a copied or renamed
store, moved with its folder, finds its sets) or, for the legacy form, in ``artifacts/`` beside
it, and refused when it resolves anywhere else (a symlink out of the folder included).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: run_ids the store accepts: what records.RunConfig.run_id makes (16 hex digits), and short
#: names of the same alphabet (tests, older callers); never a path separator or a dot.
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: an artifact's file name as the store writes it: ``<run_id>-<token>.npz`` (older: ``<run_id>.npz``)
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}(?:-[0-9a-f]{12})?\.npz")
#: the shared artifacts folder of stores written before 0.1
LEGACY_FOLDER = "artifacts"
ARTIFACTS_SUFFIX = ".artifacts"


class UnsafePathError(ValueError):
    """A path read from stored data that does not stay inside the store's own folders."""


def artifact_folder_name(store_path: str | os.PathLike) -> str:
    """``results.sqlite`` -> ``results.sqlite.artifacts``: the folder only this store writes to."""
    return Path(store_path).name + ARTIFACTS_SUFFIX


def check_run_id(run_id: object) -> str:
    """``run_id`` when it is a name the store can use in a file name; ``ValueError`` otherwise."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id {str(run_id)[:80]!r} is not a run id (letters, digits, '-' and '_', like the "
                         f"16 hex digits distillbench makes)")
    return run_id


def owned_name(run_id: str, name: str) -> bool:
    """Whether ``name`` is a file name this store gives ``run_id``'s artifacts (``<run_id>-<token>.npz``)."""
    return re.fullmatch(re.escape(run_id) + r"-[0-9a-f]{12}\.npz", name) is not None


def split_artifact(stored: object) -> tuple[str, str]:
    """``"x.sqlite.artifacts/n.npz"`` -> ``("x.sqlite.artifacts", "n.npz")``; ``UnsafePathError`` for
    anything else (an absolute path, ``..``, a nested folder, a name the store never writes)."""
    if not isinstance(stored, str):
        raise UnsafePathError(f"artifact {stored!r} is not a file name")
    parts = stored.split("/")
    folder, name = parts if len(parts) == 2 else ("", "")
    good_folder = folder == LEGACY_FOLDER or (folder.endswith(ARTIFACTS_SUFFIX) and "\\" not in folder
                                              and folder not in (ARTIFACTS_SUFFIX, ".." + ARTIFACTS_SUFFIX))
    if not good_folder or not ARTIFACT_NAME.fullmatch(name):
        raise UnsafePathError(f"artifact path {stored[:120]!r} is not inside the store's artifacts folder")
    return folder, name


def locate_artifact(store_path: str | os.PathLike, stored: object) -> Path:
    """The file a row's ``artifact`` names, inside this store's own folders; ``UnsafePathError`` when
    it would be anywhere else. The file need not exist (a store copied without its folder)."""
    store_path = Path(store_path)
    folder, name = split_artifact(stored)
    home = store_path.parent / (LEGACY_FOLDER if folder == LEGACY_FOLDER else artifact_folder_name(store_path))
    return inside(home, home / name, f"artifact {stored!r}")


def inside(folder: Path, path: Path, what: str) -> Path:
    """``path`` when it resolves inside ``folder`` (symlinks followed); ``UnsafePathError`` otherwise."""
    try:
        real_folder, real = folder.resolve(), path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise UnsafePathError(f"{what}: cannot resolve {str(path)!r} ({exc})") from None
    if real.parent != real_folder:
        raise UnsafePathError(f"{what} resolves to {str(real)!r}, outside {str(folder)!r}; refused")
    return path


def regular_file(path: Path) -> bool:
    """A regular file that is not a symlink: the only kind of file the store deletes."""
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False
