"""Recovery (the share of full-data accuracy a set reaches) and the augmentation-robust gain: the
whole training split is scored once per (dataset, evaluator), stored, reused, and divided by."""

import dataclasses
import json
import sqlite3

import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.records import FULL_DATA
from distillbench.reports.leaderboard import leaderboard_from_stores
from distillbench.reports.recovery import full_data_for, full_data_rows

from helpers import TINY, stored_records

pytestmark = pytest.mark.xdist_group("recovery")
NN = ["evaluator=nn", "evaluator.width=8", "evaluator.steps=5", "evaluator.seeds=1"]


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def _records(path):
    return stored_records(path)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two KIP sets (fc1 kernel), re-scored by `nn` (arch auto) with the whole split beside them."""
    path = tmp_path_factory.mktemp("recovery") / "r.sqlite"
    assert _cli("run", *TINY, "kernel.arch=fc1", "seed=0,1", "--store", path, "-q").exit_code == 0
    result = _cli("evaluate", "--store", path, "--full-data", *NN, "-q")
    assert result.exit_code == 0, result.output
    return path


def test_the_whole_split_is_one_stored_row_per_dataset_and_evaluator(scored):
    full = [r for r in _records(scored) if r.config.objective.name == FULL_DATA]
    assert len(full) == 1
    row = full[0]
    assert row.status == "done" and row.config.ipc == 0 and row.config.kernel.name == "none"
    assert row.metrics["full_data_images"] == 60.0 and row.metrics.random_acc is None
    # the sets' evaluator left arch auto; the whole split trains what it stood for (the kernel's fc1)
    assert row.config.evaluator.as_dict()["arch"] == "fc1" and row.metrics["eval_arch"] == "fc1"
    assert row.artifact is None  # the training split itself is never copied into the store


def test_a_second_request_reuses_the_stored_full_data_row(scored):
    with sqlite3.connect(scored) as conn:
        before = conn.execute("SELECT run_id, finished_at FROM runs WHERE objective = ?", (FULL_DATA,)).fetchall()
    result = _cli("evaluate", "--store", scored, "--full-data", *NN)
    assert result.exit_code == 0, result.output
    assert "[1/3] cached synthetic full-data/" in result.output
    with sqlite3.connect(scored) as conn:
        after = conn.execute("SELECT run_id, finished_at FROM runs WHERE objective = ?", (FULL_DATA,)).fetchall()
    assert after == before


def test_the_leaderboard_divides_each_sets_accuracy_by_it(scored):
    board = leaderboard_from_stores([scored])
    full = [r for _, r in board.all_rows() if r.objective == FULL_DATA][0]
    nn_row = [r for _, r in board.all_rows() if r.evaluator.startswith("nn") and r.objective == "kip"][0]
    krr_row = [r for _, r in board.all_rows() if r.evaluator.startswith("krr")][0]
    assert nn_row.full_data_pct == full.acc_mean_pct
    assert nn_row.recovery_pct == pytest.approx(100 * nn_row.acc_mean_pct / full.acc_mean_pct)
    assert nn_row.random_recovery_pct == pytest.approx(100 * nn_row.random_mean_pct / full.acc_mean_pct)
    assert krr_row.recovery_pct is None  # no whole-split row for the KRR evaluation
    document = json.loads(_cli("report", "--store", scored, "--format", "json").output)
    assert any(row["recovery_pct"] is not None for table in document["tables"] for row in table["rows"])
    assert "recovery" in _cli("report", "--store", scored, "--format", "md").output


def test_another_evaluation_or_other_data_finds_no_full_data_row(scored):
    records = _records(scored)
    full = full_data_rows(records)
    sets = [r for r in records if r.parent_run_id is not None]
    assert all(full_data_for(r, full) is full[0] for r in sets)
    wider = dataclasses.replace(sets[0].config, evaluator=dataclasses.replace(
        sets[0].config.evaluator, params=tuple((k, 16 if k == "width" else v) for k, v in sets[0].config.evaluator.params)))
    assert full_data_for(dataclasses.replace(sets[0], config=wider), full) is None
    assert full_data_for(dataclasses.replace(sets[0], data_fingerprint="other"), full) is None
    assert full_data_for(full[0], full) is None  # the whole split has no recovery of its own


def test_the_robust_gain_is_the_least_gain_over_the_augmentations(scored, tmp_path):
    import shutil

    path = tmp_path / "r.sqlite"
    with sqlite3.connect(scored) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    shutil.copytree(scored.parent / "r.sqlite.artifacts", tmp_path / "r.sqlite.artifacts")
    result = _cli("evaluate", "--store", path, *NN, "evaluator.augment=none,flip", "-q")
    assert result.exit_code == 0, result.output
    rows = [r for _, r in leaderboard_from_stores([path]).all_rows() if r.evaluator.startswith("nn")
            and r.objective == "kip" and "evaluator.augment" in r.params]
    by_augment = {r.params["evaluator.augment"]: r for r in rows}
    assert set(by_augment) == {"none", "flip"}
    gains = {name: r.gain_mean_pts for name, r in by_augment.items()}
    for row in rows:
        assert row.gain_by_augment_pts == dict(sorted(gains.items()))
        assert row.robust_gain_pts == min(gains.values())
    assert "robust gain" in _cli("report", "--store", path, "--format", "md").output
