"""``run --store`` hygiene: one store, a real path, and never someone else's database."""

import sqlite3

import pytest
from click.testing import CliRunner

from distillbench.cli import main

from helpers import TINY


def _invoke(*args):
    result = CliRunner().invoke(main, ["run", *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result, lines


def _foreign_sqlite(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
        conn.execute("INSERT INTO accounts (owner) VALUES ('alice')")
    conn.close()


@pytest.mark.parametrize("content", ["sqlite", "text"])
def test_run_refuses_a_file_that_is_not_a_distillbench_store_and_leaves_it_alone(tmp_path, content):
    path = tmp_path / "other.sqlite"
    if content == "sqlite":
        _foreign_sqlite(path)
    else:
        path.write_text("name,score\nalice,3\n")
    before = path.read_bytes()
    result, lines = _invoke(*TINY, "--store", str(path))
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and "is not a distillbench results store" in lines[0]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]  # no -wal, -shm or artifacts


def test_run_refuses_an_empty_store_path(tmp_path):
    result, lines = _invoke(*TINY, "--store", "")
    assert result.exit_code == 2 and lines == ["Error: --store is empty: give the results file, e.g. --store results.sqlite"]


def test_run_refuses_a_repeated_store(tmp_path):
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    result, lines = _invoke(*TINY, "--store", str(a), "--store", str(b))
    assert result.exit_code == 2 and len(lines) == 1 and "--store is given 2 times" in lines[0], result.output
    assert "distillbench report" in lines[0]
    assert not a.exists() and not b.exists()
    result, lines = _invoke(*TINY, "--dry-run", "--store", str(a), "--store", str(a))
    assert result.exit_code == 2 and "--store is given 2 times" in lines[0]


def test_an_existing_distillbench_store_and_an_empty_file_are_accepted(tmp_path):
    from distillbench.cli.common import refuse_foreign_store
    from distillbench.store.database import ResultStore

    with ResultStore(tmp_path / "real.sqlite"):
        pass
    refuse_foreign_store(tmp_path / "real.sqlite")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    refuse_foreign_store(tmp_path / "empty.sqlite")
    refuse_foreign_store(tmp_path / "new.sqlite")
    assert not (tmp_path / "new.sqlite").exists()
