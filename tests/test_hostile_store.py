"""The hostile store suite: store placement, copies, paths from stored data, damaged rows, stray
cell files, failed re-runs over done rows, WAL copies, open failures and schema versions (issue 27,
items 3, 4, 5, 7, 14, 18, 19).

One table row per case: an id, a ``setup(world)`` that damages or arranges the world, an action
(a command line run in-process through click's ``CliRunner``, ``{store}`` and ``{world}``
formatted in, or a function of the world calling the store directly) and the expected outcome: a
fragment of the one stderr line of an exit-2 refusal, or a function that checks the documented
behaviour. Every world starts as a copy of one store holding a done run (``s/results.sqlite``
and its artifacts folder) beside a ``victim/`` folder. After every case, nothing outside ``s/``
changed: no file read from a stored path was deleted, no file was written outside the store.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.runner.cell import ingest
from distillbench.store.database import NotAStoreError, ResultStore, open_existing
from distillbench.store.paths import UnsafePathError

from helpers import TINY

STORE = "s/results.sqlite"
ARTS = "s/results.sqlite.artifacts"
CELLS = "s/results.sqlite.cells"
RUN = ("run", "-q", "--store", "{store}", *TINY)
REPORT = ("report", "--store", "{store}", "--format", "json")
TOKEN = "0123456789ab"
CONFIG = {k: {"name": k[:3], "params": {}} for k in ("dataset", "kernel", "loss", "objective", "evaluator")}
CONFIG.update(ipc=1, seed=0)
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


class Case(NamedTuple):
    id: str
    setup: Callable[[Path], None] | None
    act: tuple[str, ...] | Callable[[Path], Any]
    expect: str | Callable[[Any, Path], None]


# -- the world and its helpers --------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template")
    result = CliRunner().invoke(main, [a.format(store=root / STORE) for a in RUN], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return root


def store_of(world: Path) -> Path:
    return world / STORE


def sql(world: Path, statement: str, *args) -> list:
    conn = sqlite3.connect(store_of(world), isolation_level=None)
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def done_row(world: Path) -> tuple[str, str]:
    """The run_id and artifact of the done run every world starts with."""
    return sql(world, "SELECT run_id, artifact FROM runs ORDER BY rowid")[0]


def artifact_files(world: Path, folder: str = ARTS) -> dict[str, bytes]:
    path = world / folder
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())} if path.is_dir() else {}


def set_artifact(value: str, status: str = "error") -> Callable[[Path], None]:
    """A row whose artifact column was edited to ``value`` (the cell retried unless ``done``)."""
    def setup(world: Path) -> None:
        sql(world, "UPDATE runs SET artifact = ?, status = ?", value.format(world=world), status)
    return setup


def set_column(column: str, value: Any) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        sql(world, f"UPDATE runs SET {column} = ?", value)
    return setup


def set_version(value: Any) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        sql(world, "UPDATE meta SET value = ? WHERE key = 'schema_version'", value)
    return setup


def cell_record(world: Path, name: str | None = None, make_npz: bool = True, **fields) -> Path:
    """A cell file as a worker writes it (a copy of the done run), with ``fields`` replaced."""
    run_id, stored = done_row(world)
    (config,) = sql(world, "SELECT config FROM runs")[0]
    cells = world / CELLS
    cells.mkdir(exist_ok=True)
    record = {"run_id": run_id, "status": "done", "message": None, "plain": None, "config": json.loads(config),
              "metrics": {"acc": 0.5}, "timings": {}, "environment": {}, "artifact": None,
              "data_fingerprint": None, "traceback": None}
    if make_npz:
        record["artifact"] = f"{run_id}.{TOKEN}.npz"
        np.savez(cells / record["artifact"], support_x=np.ones((3, 4, 4, 1)), support_y=np.ones((3, 2)))
    record.update(fields)
    path = cells / (name or f"{run_id}.{TOKEN}.json")
    path.write_text(json.dumps(record))
    return path


def with_cell(name: str | None = None, **fields) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        sql(world, "UPDATE runs SET status = 'error'")  # the cell is not done: its file is stored
        cell_record(world, name, **{k: (v.format(world=world) if isinstance(v, str) else v)
                                    for k, v in fields.items()})
    return setup


def do_ingest(world: Path, replace_done=()) -> tuple[list[str], list]:
    lines: list[str] = []
    with ResultStore(store_of(world)) as store:
        outcomes = ingest(store, world / CELLS, notice=lines.append, replace_done=replace_done)
    return lines, outcomes


def caught(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # the case's expectation looks at it
        return exc


def cli(*argv: str) -> Callable[[Path], Any]:
    def act(world: Path):
        return invoke(world, argv)
    return act


def invoke(world: Path, argv) -> Any:
    places = {"store": str(store_of(world)), "world": str(world)}
    return CliRunner().invoke(main, [a.format(**places) for a in argv], env={"COLUMNS": "200"})


# -- expectations ---------------------------------------------------------------------------------
def one_line(result, fragment: str) -> None:
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output


def ingest_warns(fragment: str, stored: int = 0) -> Callable[[Any, Path], None]:
    """One warning line naming the bad cell file, nothing stored from it, the file renamed aside."""
    def expect(out, world: Path) -> None:
        lines, outcomes = out
        assert len(lines) == 1 and lines[0].startswith("warning: skipped cell file ") and fragment in lines[0], lines
        assert len(outcomes) == stored
        assert any(p.name.endswith(".rejected") for p in (world / CELLS).iterdir())
    return expect


def all_artifacts_kept(out, world: Path) -> None:
    assert out.exit_code == 0, out.output
    run_id, stored = done_row(world)
    assert (world / "s" / stored).is_file() or (world / ARTS / stored.rsplit("/", 1)[-1]).is_file()


def done_kept(out, world: Path) -> None:
    """A failure after a success: the done row and its artifact are as they were."""
    rows = sql(world, "SELECT status, artifact FROM runs")
    assert [r[0] for r in rows] == ["done"], rows
    assert (world / "s" / rows[0][1]).is_file()


def refused(kind: type, fragment: str) -> Callable[[Any, Path], None]:
    def expect(out, world: Path) -> None:
        assert isinstance(out, kind) and fragment in str(out), repr(out)
    return expect


def exit_ok(fragment: str = "") -> Callable[[Any, Path], None]:
    def expect(out, world: Path) -> None:
        assert out.exit_code == 0 and fragment in out.output and "Traceback" not in out.output, out.output
    return expect


# -- store placement and copies (item 3) ----------------------------------------------------------
def copy_by_hand(world: Path, name: str = "copy.sqlite", folder: bool = True) -> Path:
    """What a user does: cp the store file (and its folder, under the new name)."""
    target = world / "s" / name
    shutil.copy2(store_of(world), target)
    if folder:
        shutil.copytree(world / ARTS, world / "s" / (name + ".artifacts"))
    return target


def run_on(store: Path, *extra: str):
    return CliRunner().invoke(main, ["run", "-q", "--store", str(store), *TINY, *extra], env={"COLUMNS": "200"})


def copy_then_run(world: Path):
    before = {**artifact_files(world), **artifact_files(world, "s/copy.sqlite.artifacts")}
    copy = copy_by_hand(world)
    result = run_on(copy, "seed=0,1")
    return result, before, copy


def every_set_kept(out, world: Path) -> None:
    result, _, copy = out
    assert result.exit_code == 0, result.output
    original = artifact_files(world)
    copied = artifact_files(world, "s/copy.sqlite.artifacts")
    assert len(original) == 1 and len(copied) == 2, (original.keys(), copied.keys())  # the copy's + its new run
    with ResultStore(copy) as store:
        for record in store.records():
            assert store.artifact_path(record).is_file() and store.artifact_path(record).parent.name == \
                "copy.sqlite.artifacts"
            store.load_artifact(record)


def rename_file_only(world: Path):
    os.replace(store_of(world), world / "s" / "renamed.sqlite")
    before = artifact_files(world)
    return run_on(world / "s" / "renamed.sqlite"), before


def old_folder_untouched(out, world: Path) -> None:
    result, before = out
    assert result.exit_code == 0, result.output
    assert artifact_files(world) == before  # not its folder any more: never read, never deleted


def symlinked_folder(world: Path) -> None:
    elsewhere = world / "s" / "elsewhere"
    shutil.move(world / ARTS, elsewhere)
    (elsewhere / "notes.npz").write_bytes(b"someone's file")
    (elsewhere / "draft.npzx.tmp").write_bytes(b"someone's temp file")
    (elsewhere / f"{'f' * 16}-{TOKEN}.npz").write_bytes(b"another store's artifact")
    os.symlink(elsewhere, world / ARTS)


def unrelated_files_kept(out, world: Path) -> None:
    assert out.exit_code == 0, out.output
    names = {p.name for p in (world / "s" / "elsewhere").iterdir()}
    assert {"notes.npz", "draft.npzx.tmp", f"{'f' * 16}-{TOKEN}.npz"} <= names and len(names) == 5, names


def hand_placed(world: Path) -> None:
    (world / ARTS / f"{'d' * 16}-{TOKEN}.npz").write_bytes(b"an orphan an older release left")
    (world / ARTS / "x.npzq1.tmp").write_bytes(b"not the store's")


def hand_placed_kept(out, world: Path) -> None:
    assert out.exit_code == 0, out.output
    assert {f"{'d' * 16}-{TOKEN}.npz", "x.npzq1.tmp"} <= set(artifact_files(world))


def killed_save(world: Path) -> None:
    """What a save killed after its artifact was written leaves: a pending name, its file, its temp."""
    sql(world, "INSERT INTO pending_artifacts (name) VALUES (?)", f"{'a' * 16}-{TOKEN}.npz")
    (world / ARTS / f"{'a' * 16}-{TOKEN}.npz").write_bytes(b"orphan")
    (world / ARTS / f"{'a' * 16}-{TOKEN}.npzk9.tmp").write_bytes(b"half")


def open_store(world: Path):
    ResultStore(store_of(world)).close()
    return artifact_files(world)


def only_own_leftovers_removed(out, world: Path) -> None:
    (_, artifact) = done_row(world)
    assert set(out) == {artifact.rsplit("/", 1)[-1]}, out
    assert sql(world, "SELECT COUNT(*) FROM pending_artifacts") == [(0,)]


def pending(name: str) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        sql(world, "INSERT INTO pending_artifacts (name) VALUES (?)", name.format(world=world))
    return setup


def pending_referenced(world: Path) -> None:
    _, artifact = done_row(world)
    sql(world, "INSERT INTO pending_artifacts (name) VALUES (?)", artifact.rsplit("/", 1)[-1])


def all_kept(out, world: Path) -> None:
    _, artifact = done_row(world)
    assert artifact.rsplit("/", 1)[-1] in out


def store_copy_then_run(world: Path):
    copied = invoke(world, ("store", "copy", "{store}", "{world}/t/copy.sqlite"))
    ran = run_on(world / "t" / "copy.sqlite", "seed=0,1")
    return copied, ran


def copy_command_worked(out, world: Path) -> None:
    copied, ran = out
    assert copied.exit_code == 0 and "1 runs, 1 artifacts" in copied.output, copied.output
    assert ran.exit_code == 0, ran.output
    assert len(artifact_files(world)) == 1 and len(artifact_files(world, "t/copy.sqlite.artifacts")) == 2
    rows = sqlite3.connect(world / "t" / "copy.sqlite").execute("SELECT artifact FROM runs").fetchall()
    assert all(a.startswith("copy.sqlite.artifacts/") for (a,) in rows), rows


def existing(path: str) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        target = world / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir() if path.endswith(".artifacts") else target.write_text("mine")
    return setup


def move_with_stranger(world: Path):
    (world / ARTS / "mine.txt").write_text("a file the store did not make")
    return invoke(world, ("store", "move", "{store}", "{world}/t/moved.sqlite"))


def moved(out, world: Path) -> None:
    assert out.exit_code == 0 and "note: kept 1 files" in out.output, out.output
    assert not store_of(world).exists() and (world / ARTS / "mine.txt").is_file()
    assert len(artifact_files(world)) == 1  # only the stranger
    with open_existing(world / "t" / "moved.sqlite") as store:
        (record,) = store.records()
        assert store.load_artifact(record).support.x.shape == (3, 4, 4, 1)


def legacy_row(world: Path) -> None:
    """A row of a release before 0.1, whose artifact sits in the shared ``artifacts/`` folder."""
    _, artifact = done_row(world)
    (world / "s" / "artifacts").mkdir()
    shutil.copy2(world / "s" / artifact, world / "s" / "artifacts" / "r1.npz")
    sql(world, "UPDATE runs SET artifact = 'artifacts/r1.npz'")


def legacy_copied(out, world: Path) -> None:
    assert out.exit_code == 0 and "1 artifacts" in out.output, out.output
    with open_existing(world / "t" / "c.sqlite") as store:
        (record,) = store.records()
        assert record.artifact == "c.sqlite.artifacts/r1.npz" and store.load_artifact(record)
    assert (world / "s" / "artifacts" / "r1.npz").is_file()


def check_lists(*fragments: str, code: int = 1) -> Callable[[Any, Path], None]:
    def expect(out, world: Path) -> None:
        assert out.exit_code == code, out.output
        for fragment in fragments:
            assert fragment in out.output, (fragment, out.output)
    return expect


def copy_with_open_writer(world: Path):
    """A second run's rows still in the WAL of an open connection: the backup copies them."""
    conn = sqlite3.connect(store_of(world), isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO runs SELECT 'second', finished_at, status, message, dataset, objective, kernel, loss,"
                 " evaluator, ipc, seed, acc, random_acc, config, metrics, timings, environment, NULL,"
                 " data_fingerprint, traceback, parent_run_id FROM runs")
    try:
        return invoke(world, ("store", "copy", "{store}", "{world}/t/c.sqlite"))
    finally:
        conn.close()


# -- a later failure never replaces a success (item 4) --------------------------------------------
def force_timeout(world: Path):
    before = artifact_files(world)
    return invoke(world, (*RUN, "--force", "timeout=0.001")), before


def failure_reported_done_kept(out, world: Path) -> None:
    result, before = out
    assert result.exit_code == 1 and "timeout: " in result.stderr, result.output
    done_kept(None, world)
    assert artifact_files(world) == before  # byte for byte


def save_twice(first: str, second: str, arrays: bool = True):
    """Two saves of one cell; ``arrays``: whether the second has a set to store too."""
    def act(world: Path):
        from dataclasses import replace

        result = stored_result("r")
        with ResultStore(world / "s" / "two.sqlite") as store:
            store.save(_status(result, first))
            store.save(_status(result if arrays else replace(result, artifact=None), second))
            return store.get("r").status, artifact_files(world, "s/two.sqlite.artifacts")
    return act


def stored_result(run_id: str):
    """A done result of the stored ``CONFIG`` with a small support set, under ``run_id``."""
    from distillbench.records import Artifact, LabeledSet, RunConfig, RunResult

    return RunResult(RunConfig.from_dict(CONFIG), artifact=Artifact(LabeledSet(np.ones(2), np.ones(2))), run_id=run_id)


def _status(result, status: str):
    from dataclasses import replace

    return replace(result, status=status, message=None if status == "done" else f"{status} here")


def status_is(status: str, files: int = 1) -> Callable[[Any, Path], None]:
    def expect(out, world: Path) -> None:
        assert out[0] == status and len(out[1]) == files, out
    return expect


def two_writers(world: Path):
    """Two drivers on one cell: the first stores done, the second (its own connection) a timeout."""
    result = stored_result("r")
    with ResultStore(world / "s" / "two.sqlite") as a, ResultStore(world / "s" / "two.sqlite") as b:
        a.save(result)
        b.save(_status(result, "timeout"))
    with open_existing(world / "s" / "two.sqlite") as store:
        record = store.get("r")
        return record.status, store.load_artifact(record).support.x.tolist()


# -- paths from stored data (item 5) --------------------------------------------------------------
def victim_read_refused(out, world: Path) -> None:
    assert isinstance(out, UnsafePathError), repr(out)


def load_first(world: Path):
    with open_existing(store_of(world)) as store:
        (record,) = store.records()
        return caught(lambda: store.load_artifact(record))


def symlink_in_folder(world: Path) -> None:
    _, artifact = done_row(world)
    name = artifact.rsplit("/", 1)[-1]
    (world / ARTS / name).unlink()
    os.symlink(world / "victim" / "VICTIM.npz", world / ARTS / name)


def symlinked_artifact_survives(out, world: Path) -> None:
    assert out.exit_code == 0, out.output
    assert any(p.is_symlink() for p in (world / ARTS).iterdir())  # a link is never deleted (nor followed)


def outside_run_id(world: Path):
    with ResultStore(store_of(world)) as store:
        return caught(lambda: store.save(stored_result("../../OUTSIDE")))


# -- WAL copies (item 7) --------------------------------------------------------------------------
def copy_main_file_while_open(world: Path):
    """A driver killed with its connection open: only the main file (and the folder) is copied."""
    store = ResultStore(store_of(world))
    store.save(stored_result("second"))
    target = world / "t"
    target.mkdir()
    shutil.copy2(store_of(world), target / "results.sqlite")  # no -wal: a "killed" driver's copy
    shutil.copytree(world / ARTS, target / "results.sqlite.artifacts")
    store.close()
    return invoke(world, ("report", "--store", "{world}/t/results.sqlite", "--format", "json"))


def report_has_rows(n: int) -> Callable[[Any, Path], None]:
    def expect(out, world: Path) -> None:
        assert out.exit_code == 0, out.output
        assert f'"runs": {n},' in out.output, out.output[:400]
    return expect


# -- open failures (item 18) ----------------------------------------------------------------------
def describe(exc: BaseException, writing: bool = True) -> Callable[[Path], str]:
    """What the line says for an SQLite or OS error (a lock held for 30 s, a full disk: too slow or
    too intrusive to cause in a test run as root, where no folder is read-only)."""
    def act(world: Path) -> str:
        from distillbench.store import failures

        return failures.describe(exc, store_of(world), writing)
    return act


def says(fragment: str) -> Callable[[Any, Path], None]:
    def expect(out, world: Path) -> None:
        assert fragment in str(out), (fragment, str(out))
    return expect


def full_disk_open(world: Path):
    """A new store on a full disk (RLIMIT_FSIZE: writes past 1 kB fail as on a full disk)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        return caught(lambda: ResultStore(world / "s" / "new.sqlite"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def parent_is_a_file(world: Path) -> None:
    (world / "s" / "file").write_text("x")


# -- damaged rows ---------------------------------------------------------------------------------
def damaged_cell_reruns(out, world: Path) -> None:
    assert out.exit_code == 0, out.output
    with open_existing(store_of(world)) as store:
        (record,) = store.records()  # the damaged row was replaced by the new run's
        assert record.status == "done" and store.load_artifact(record)


VICTIM = "{world}/victim/VICTIM"
UP = "results.sqlite.artifacts/../../victim/VICTIM"

CASES: list[Case] = [
    # -- store placement: copies, renames, symlinked and shared folders (item 3) ----------------
    Case("copied by hand with its folder, run on the copy", None, copy_then_run, every_set_kept),
    Case("store renamed without its folder", None, rename_file_only, old_folder_untouched),
    Case("copy without its folder, beside the original", lambda w: copy_by_hand(w, folder=False),
         lambda w: (run_on(w / "s" / "copy.sqlite"), artifact_files(w)), old_folder_untouched),
    Case("symlinked artifacts folder with other files", symlinked_folder, cli(*RUN, "seed=0,1"),
         unrelated_files_kept),
    Case("hand-placed files in the artifacts folder", hand_placed, cli(*RUN, "seed=0,1"), hand_placed_kept),
    Case("a killed save's leftovers", killed_save, open_store, only_own_leftovers_removed),
    Case("pending name with a traversal", pending("../../victim/VICTIM.npz"), open_store, all_kept),
    Case("pending absolute name", pending("{world}/victim/VICTIM.npz"), open_store, all_kept),
    Case("pending name a row still names", pending_referenced, open_store, all_kept),
    Case("store copy, then run on the copy", None, store_copy_then_run, copy_command_worked),
    Case("store copy onto an existing file", existing("t/c.sqlite"), ("store", "copy", "{store}", "{world}/t/c.sqlite"),
         "already exists"),
    Case("store copy onto an existing folder", existing("t/c.sqlite.artifacts"),
         ("store", "copy", "{store}", "{world}/t/c.sqlite"), "c.sqlite.artifacts' already exists"),
    Case("store copy onto a stale wal", existing("t/c.sqlite-wal"), ("store", "copy", "{store}", "{world}/t/c.sqlite"),
         "c.sqlite-wal' already exists"),
    Case("store copy onto itself", None, ("store", "copy", "{store}", "{world}/s/../s/results.sqlite"),
         "is the source store itself"),
    Case("store copy of no store", None, ("store", "copy", "{world}/nothing.sqlite", "{world}/t/c.sqlite"),
         "no results store at"),
    Case("store copy of a text file", lambda w: (w / "s" / "t.txt").write_text("a,b\n"),
         ("store", "copy", "{world}/s/t.txt", "{world}/s/c.sqlite"), "is not a distillbench results store"),
    Case("store copy of a folder", None, ("store", "copy", "{world}/s", "{world}/t/c.sqlite"), "is a directory"),
    Case("store copy of a newer store", set_version("9"), ("store", "copy", "{store}", "{world}/s/c.sqlite"),
         "newer distillbench"),
    Case("store copy with a traversal row", set_artifact(UP + ".npz", "done"),
         ("store", "copy", "{store}", "{world}/s/c.sqlite"), check_lists("1 runs, 0 artifacts", "warning: 1", code=0)),
    Case("store copy with rows in an open WAL", None, copy_with_open_writer,
         lambda out, w: check_lists("2 runs, 1 artifacts", code=0)(out, w)),
    Case("store move with a stranger in the folder", None, move_with_stranger, moved),
    Case("store move onto an existing file", existing("t/m.sqlite"), ("store", "move", "{store}", "{world}/t/m.sqlite"),
         "already exists"),
    Case("store copy of a legacy artifacts/ row", legacy_row, ("store", "copy", "{store}", "{world}/t/c.sqlite"),
         legacy_copied),
    Case("store inside another store's artifacts folder", None, cli(*RUN[:3], "{world}/" + ARTS + "/in.sqlite", *TINY),
         lambda out, w: out.exit_code == 0 and done_kept(None, w) is None),
    Case("store inside the cells folder", lambda w: (w / CELLS).mkdir(),
         cli(*RUN[:3], "{world}/" + CELLS + "/in.sqlite", *TINY),
         lambda out, w: out.exit_code == 0 and not [p for p in (w / CELLS).iterdir() if p.suffix == ".rejected"]),
    Case("store check of a clean store", None, ("store", "check", "{store}"), check_lists("0 unnamed", code=0)),
    Case("store check lists hand-placed files", hand_placed, ("store", "check", "{store}"),
         check_lists("unnamed file", "x.npzq1.tmp", "2 unnamed")),
    Case("store check with a traversal row", set_artifact(UP + ".npz", "done"), ("store", "check", "{store}"),
         check_lists("refused artifact path", "1 refused")),
    Case("store check with a missing artifact", lambda w: shutil.rmtree(w / ARTS), ("store", "check", "{store}"),
         check_lists("missing artifact", "1 missing")),
    Case("store check of no store", None, ("store", "check", "{world}/none.sqlite"), "no results store"),
    Case("store with an unknown subcommand", None, ("store", "copi"), "No such command"),
    # -- a later failure never replaces an earlier success (item 4) ----------------------------
    Case("run --force timeout=0.001 on a done cell", None, force_timeout, failure_reported_done_kept),
    Case("done, then error", None, save_twice("done", "error"), status_is("done")),
    Case("done, then interrupted", None, save_twice("done", "interrupted"), status_is("done")),
    Case("done, then diverged without arrays", None, save_twice("done", "diverged", arrays=False), status_is("done")),
    Case("done, then done (--force)", None, save_twice("done", "done"), status_is("done")),
    Case("error, then done", None, save_twice("error", "done"), status_is("done")),
    Case("error, then timeout", None, save_twice("error", "timeout"), status_is("timeout")),
    Case("two drivers, the second times out", None, two_writers, lambda out, w: out == ("done", [1.0, 1.0])),
    Case("a failed cell file with --force", with_cell(status="error", message="boom"),
         lambda w: (sql(w, "UPDATE runs SET status = 'done'"), do_ingest(w, replace_done={done_row(w)[0]})),
         lambda out, w: done_kept(out, w)),
    # -- paths from stored data (item 5) -------------------------------------------------------
    Case("row artifact ../../VICTIM.txt, retried", set_artifact(UP + ".txt"), cli(*RUN), exit_ok()),
    Case("row artifact ../../VICTIM.npz, retried", set_artifact(UP + ".npz"), cli(*RUN), exit_ok()),
    Case("row artifact ../../VICTIM.npz, --force", set_artifact(UP + ".npz", "done"), cli(*RUN, "--force"),
         exit_ok()),
    Case("row artifact absolute, retried", set_artifact(VICTIM + ".npz"), cli(*RUN), exit_ok()),
    Case("row artifact absolute, read", set_artifact(VICTIM + ".npz", "done"), load_first, victim_read_refused),
    Case("row artifact traversal, read", set_artifact(UP + ".npz", "done"), load_first, victim_read_refused),
    Case("row artifact nested folder", set_artifact("results.sqlite.artifacts/sub/x.npz", "done"), load_first,
         victim_read_refused),
    Case("row artifact backslashes", set_artifact("results.sqlite.artifacts\\..\\..\\victim\\VICTIM.npz", "done"),
         load_first, victim_read_refused),
    Case("row artifact legacy traversal", set_artifact("artifacts/../victim/VICTIM.npz", "done"), load_first,
         victim_read_refused),
    Case("row artifact a dot-file name", set_artifact("results.sqlite.artifacts/..npz", "done"), load_first,
         victim_read_refused),
    Case("row artifact a symlink out", symlink_in_folder, load_first, victim_read_refused),
    Case("row artifact a symlink out, --force", symlink_in_folder, cli(*RUN, "--force"), symlinked_artifact_survives),
    Case("row artifact traversal, explain", set_artifact(UP + ".npz", "done"),
         lambda w: invoke(w, ("explain", done_row(w)[0], "--store", "{store}")), lambda out, w: one_line(
             out, "is not inside the store's artifacts folder")),
    Case("row artifact traversal, evaluate", set_artifact(UP + ".npz", "done"),
         cli("evaluate", "--store", "{store}", "evaluator=krr"), lambda out, w: one_line(out, "cannot read its support set")),
    Case("row artifact traversal, report", set_artifact(UP + ".npz", "done"), cli(*REPORT), exit_ok('"runs": 1,')),
    Case("save with run_id ../../OUTSIDE", None, outside_run_id, refused(ValueError, "is not a run id")),
    Case("cell artifact ../../VICTIM.npz", with_cell(artifact="../../victim/VICTIM.npz"), do_ingest,
         ingest_warns("is not the one a worker writes")),
    Case("cell artifact absolute", with_cell(artifact="{world}/victim/VICTIM.npz"), do_ingest,
         ingest_warns("is not the one a worker writes")),
    Case("cell run_id ../../OUTSIDE", with_cell(name=f"x.{TOKEN}.json", run_id="../../OUTSIDE"), do_ingest,
         ingest_warns("its run_id '../../OUTSIDE'")),
    Case("cell file named ..<token>.json", with_cell(name=f"..{TOKEN}.json"), do_ingest,
         lambda out, w: out == ([], []) and (w / CELLS / f"..{TOKEN}.json").is_file()),
    Case("cell artifact a symlink out", lambda w: (with_cell()(w), (w / CELLS / f"{done_row(w)[0]}.{TOKEN}.npz").unlink(),
                                                   os.symlink(w / "victim" / "VICTIM.npz",
                                                              w / CELLS / f"{done_row(w)[0]}.{TOKEN}.npz")),
         do_ingest, ingest_warns("outside")),
    Case("cell record a symlink out", lambda w: (sql(w, "UPDATE runs SET status = 'error'"), (w / CELLS).mkdir(),
                                                 os.symlink(w / "victim" / "VICTIM.json",
                                                            w / CELLS / f"{done_row(w)[0]}.{TOKEN}.json")),
         do_ingest, ingest_warns("not a cell record")),
    # -- stray and damaged cell files (item 14) ------------------------------------------------
    Case("cell notes.json", lambda w: ((w / CELLS).mkdir(), (w / CELLS / "notes.json").write_text('{"a": 1}')),
         do_ingest, ingest_warns("notes.json: not a cell record")),
    Case("cell record whose npz is missing", lambda w: (with_cell()(w), (w / CELLS / f"{done_row(w)[0]}.{TOKEN}.npz")
                                                        .unlink()), do_ingest, ingest_warns("is missing")),
    Case("cell record truncated", lambda w: (with_cell()(w), (w / CELLS / f"{done_row(w)[0]}.{TOKEN}.json")
                                             .write_text('{"run_id": ')), do_ingest, ingest_warns("unreadable")),
    Case("cell record a JSON list", lambda w: (with_cell()(w), (w / CELLS / f"{done_row(w)[0]}.{TOKEN}.json")
                                               .write_text("[1, 2]")), do_ingest, ingest_warns("JSON list")),
    Case("cell record unknown status", with_cell(status="finished"), do_ingest, ingest_warns("unknown status")),
    Case("cell record status a number", with_cell(status=3), do_ingest, ingest_warns("'status' is a int")),
    Case("cell record metrics a string", with_cell(metrics="abc"), do_ingest, ingest_warns("metrics is str, not a JSON object")),
    Case("cell record config without kinds", with_cell(config={"ipc": 1}), do_ingest,
         ingest_warns("its config is malformed")),
    Case("cell record without a traceback field", with_cell(traceback=None) , lambda w: (
        (w / CELLS / f"{done_row(w)[0]}.{TOKEN}.json").write_text(json.dumps(
            {k: v for k, v in json.loads((w / CELLS / f"{done_row(w)[0]}.{TOKEN}.json").read_text()).items()
             if k != "traceback"})), do_ingest(w))[1], ingest_warns("no 'traceback' field")),
    Case("cell record seed past 64 bits", lambda w: with_cell(config={**CONFIG, "seed": 2**70})(w), do_ingest,
         ingest_warns("the store refused it")),
    Case("cell artifact not a zip", lambda w: (with_cell()(w), (w / CELLS / f"{done_row(w)[0]}.{TOKEN}.npz")
                                               .write_bytes(b"not a zip")), do_ingest, ingest_warns("unreadable")),
    Case("cell record is a folder", lambda w: (w / CELLS).mkdir() or (w / CELLS / f"{'b' * 16}.{TOKEN}.json").mkdir(),
         do_ingest, ingest_warns("not a cell record")),
    Case("cell record a dangling link", lambda w: (w / CELLS).mkdir() or os.symlink(
        w / "nowhere.json", w / CELLS / f"{'b' * 16}.{TOKEN}.json"), do_ingest, ingest_warns("not a cell record")),
    Case("cell file with a newline in its name", lambda w: (w / CELLS).mkdir() or (w / CELLS / "a\nb.json")
         .write_text("{}"), do_ingest, ingest_warns("a\\nb.json")),
    Case("a good record beside a stray one", lambda w: (with_cell()(w), (w / CELLS / "zz.json").write_text("{}")),
         do_ingest, ingest_warns("zz.json", stored=1)),
    # -- WAL copies (item 7) -------------------------------------------------------------------
    Case("main file copied while its driver runs", None, copy_main_file_while_open, report_has_rows(2)),
    Case("main file copied after a run", None,
         lambda w: (shutil.copy2(store_of(w), w / "s" / "c.sqlite"),
                    invoke(w, ("report", "--store", "{world}/s/c.sqlite", "--format", "json")))[1], report_has_rows(1)),
    # -- open failures say what failed (item 18) -----------------------------------------------
    Case("locked", None, describe(sqlite3.OperationalError("database is locked")), says("locked by another process")),
    Case("disk full", None, describe(sqlite3.OperationalError("database or disk is full")), says("the disk is full")),
    Case("disk i/o", None, describe(sqlite3.OperationalError("disk I/O error")), says("the disk may be full")),
    Case("no space", None, describe(OSError(28, "No space left on device")), says("the disk is full")),
    Case("permission error naming a 'full' folder", None, describe(PermissionError(13, "denied", "/data/full/x")),
         lambda out, w: "disk is full" not in out),
    Case("a file that is not SQLite, written over", lambda w: store_of(w).write_bytes(b"x" * 4096), cli(*RUN),
         "is not a distillbench results store"),
    Case("a new store on a full disk", None, full_disk_open, says("disk")),
    Case("store under a file", parent_is_a_file, cli(*RUN[:3], "{world}/s/file/r.sqlite", *TINY),
         lambda out, w: one_line(out, "cannot open results store")),
    Case("store is a folder", None, cli(*RUN[:3], "{world}/s", *TINY), lambda out, w: one_line(out, "")),
    # -- schema versions (item 19) -------------------------------------------------------------
    *[Case(f"schema_version {v!r}, run", set_version(v), cli(*RUN), "malformed store schema version")
      for v in ("4.0", "3.0", "", "abc", "-1", "0", "³", " 3", "3 ", "0x3", "1e1")],
    Case("schema_version a blob", set_version(b"3"), cli(*RUN), "malformed store schema version"),
    Case("schema_version '4.0', report", set_version("4.0"), cli(*REPORT), "malformed store schema version"),
    Case("schema_version '4.0', store copy", set_version("4.0"), ("store", "copy", "{store}", "{world}/s/c.sqlite"),
         "malformed store schema version"),
    Case("schema_version 4, run", set_version(4), cli(*RUN), "newer distillbench"),
    Case("schema_version 99999999999, run", set_version("99999999999"), cli(*RUN), "malformed store schema version"),
    Case("no meta table", lambda w: sql(w, "DROP TABLE meta"), cli(*REPORT), "is not a distillbench results store"),
    # -- damaged rows: wrong JSON types in columns ---------------------------------------------
    Case("metrics a JSON string, report", set_column("metrics", '"abc"'), cli(*REPORT), "metrics is str"),
    Case("environment 42, report", set_column("environment", "42"), cli(*REPORT), "environment is int"),
    Case("config not JSON, report", set_column("config", "{not json"), cli(*REPORT), "its stored row is malformed"),
    Case("acc a string, report", set_column("metrics", '{"acc": "abc"}'), cli(*REPORT), "acc is str"),
    Case("step_s a list, report", set_column("timings", '{"step_s": [1]}'), cli(*REPORT), "step_s is list"),
    Case("eval_kernel a number, report", set_column("metrics", '{"eval_kernel": 3}'), cli(*REPORT),
         "eval_kernel is int"),
    Case("config not JSON, run", set_column("config", "{not json"), cli(*RUN), damaged_cell_reruns),
    Case("metrics null JSON, run", set_column("metrics", "null"), cli(*RUN), damaged_cell_reruns),
]


def _world(template: Path, tmp_path: Path) -> Path:
    world = tmp_path / "world"
    shutil.copytree(template, world, symlinks=True)
    victim = world / "victim"
    victim.mkdir()
    (victim / "VICTIM.txt").write_text("not the store's")
    np.savez(victim / "VICTIM.npz", support_x=np.zeros((3, 4, 4, 1)))
    (victim / "VICTIM.json").write_text('{"run_id": "x"}')
    return world


def _outside(world: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of the world outside the store folder ``s/``: size, mtime and content."""
    out = {}
    for path in sorted(world.rglob("*")):
        rel = path.relative_to(world)
        if rel.parts[0] in ("s", "t") or path.is_dir():
            continue
        out[str(rel)] = (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
    return out


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 70
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.id for case in CASES])
@pytest.mark.slow
def test_hostile_store_case(template, tmp_path, index):
    case = CASES[index]
    world = _world(template, tmp_path)
    if case.setup is not None:
        case.setup(world)
    before = _outside(world)
    out = invoke(world, case.act) if isinstance(case.act, tuple) else case.act(world)
    if isinstance(case.expect, str):
        one_line(out, case.expect)
    else:
        assert case.expect(out, world) in (None, True)
    assert _outside(world) == before  # nothing outside the store's folder read-deleted, written or changed


@pytest.mark.skipif(ROOT_USER, reason="root writes into a read-only folder")
def test_a_store_in_a_read_only_folder_is_read_and_refused_for_writing(template, tmp_path):
    """An archived store: ``report`` reads it (no -wal or -shm can be made there), ``run`` says why not."""
    world = _world(template, tmp_path)
    os.chmod(world / "s", 0o555)
    try:
        shown = invoke(world, REPORT)
        assert shown.exit_code == 0 and '"runs": 1,' in shown.output, shown.output
        ran = invoke(world, (*RUN, "seed=1"))
        one_line(ran, "is read-only")
    finally:
        os.chmod(world / "s", 0o755)


class _InlineLauncher:
    """A launcher whose 'workers' are this process: the cells-folder path of a launched sweep, no Ray."""

    name = "inline"
    in_process = False
    memory_fraction = None

    def run(self, tasks, finished, tick, folder) -> None:
        from distillbench.runner.cell import run_cell

        for task in tasks:
            run_cell(task)
            finished(task, None)


@pytest.mark.slow
def test_a_launched_sweep_resumes_past_stray_and_broken_cell_files(template, tmp_path):
    """Item 14: a stray ``notes.json`` and a record whose npz is gone no longer stop every launched
    run (KeyError, FileNotFoundError): each is one warning line, and the sweep stores every cell."""
    from distillbench.registry import load_registry
    from distillbench.runner.plan import plan
    from distillbench.runner.reporter import Reporter
    from distillbench.runner.sweep import run_sweep

    world = _world(template, tmp_path)
    (world / CELLS).mkdir()
    (world / CELLS / "notes.json").write_text('{"todo": "rerun seed 1"}')
    with_cell()(world)
    (world / CELLS / f"{done_row(world)[0]}.{TOKEN}.npz").unlink()
    before = _outside(world)
    registry = load_registry()
    with ResultStore(store_of(world)) as store:
        lines: list[str] = []

        class Notices(Reporter):
            def notice(self, line: str) -> None:
                lines.append(line)

        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            outcomes = run_sweep(plan([*TINY, "seed=0,1"], registry), registry, store, Notices(),
                                 launcher=_InlineLauncher())
        assert [o.status for o in outcomes] == ["done", "done"], outcomes
        assert sorted(r.status for r in store.records()) == ["done", "done"]
    warned = (err.getvalue().splitlines() + lines)
    assert sum("skipped cell file" in line for line in warned) == 2, warned
    assert _outside(world) == before
