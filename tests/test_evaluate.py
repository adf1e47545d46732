"""``distillbench evaluate``: re-score stored sets without distilling, and score sets made elsewhere."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.store.database import SCHEMA_VERSION, ResultStore, open_existing, read_artifact

from helpers import TINY, stored_records

# One pytest-xdist worker runs this module: its tests share the distilled store of a module fixture.
pytestmark = pytest.mark.xdist_group("evaluate")


def _cli(*args):
    result = CliRunner().invoke(main, list(args))
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result, lines


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished 2-seed sweep in its own store (copied per test by ``store``)."""
    folder = tmp_path_factory.mktemp("swept")
    path = folder / "r.sqlite"
    result, _ = _cli("run", *TINY, "seed=0,1", "--store", str(path), "-q")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def store(swept, tmp_path):
    import shutil

    path = tmp_path / "r.sqlite"
    with sqlite3.connect(swept) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    shutil.copytree(swept.parent / "r.sqlite.artifacts", tmp_path / "r.sqlite.artifacts")
    return path


def _records(path):
    return stored_records(path)


@pytest.mark.slow
def test_rescoring_stores_linked_rows_without_distilling(store):
    runs = {r.run_id: r for r in _records(store)}
    result, _ = _cli("evaluate", "evaluator=krr", "evaluator.kernel=ntk", "--store", str(store), "-q")
    assert result.exit_code == 0, result.output
    records = _records(store)
    evals = [r for r in records if r.parent_run_id is not None]
    assert len(evals) == 2 and {r.parent_run_id for r in evals} == set(runs)
    for r in evals:
        parent = runs[r.parent_run_id]
        assert r.status == "done" and r.artifact is None and r.config.seed == parent.config.seed
        assert r.config.evaluator.as_dict()["kernel"] == "ntk" and r.metrics["eval_kernel"] == "ntk"
        assert "eval_s" in r.timings and "compile_s" not in r.timings and "step_s" not in r.timings
    # the runs themselves are untouched
    assert {r.run_id: r for r in records if r.parent_run_id is None} == runs

    again, _ = _cli("evaluate", "evaluator=krr", "evaluator.kernel=ntk", "--store", str(store), "-q")
    assert again.exit_code == 0 and len(_records(store)) == 4  # done evaluations are kept, not redone

    report, _ = _cli("report", "--store", str(store), "--format", "json")
    rows = [row for table in json.loads(report.output)["tables"] for row in table["rows"]]
    rescored = [row for row in rows if row["evaluated_from"]]
    assert len(rows) == 2 and len(rescored) == 1
    assert sorted(rescored[0]["evaluated_from"]) == sorted(runs) and rescored[0]["evaluator"].startswith("krr(ntk")
    assert "re-scored from 2 stored runs" in rescored[0]["status_text"]


def test_the_same_evaluator_gives_the_numbers_of_the_run(store):
    runs = {r.run_id: r for r in _records(store)}
    result, _ = _cli("evaluate", "evaluator=krr", "--store", str(store), "-q")
    assert result.exit_code == 0, result.output
    for r in _records(store):
        if r.parent_run_id:
            parent = runs[r.parent_run_id]
            for key in ("acc", "random_acc", "gain", "mse", "random_mse"):
                assert r.metrics[key] == parent.metrics[key], key


@pytest.mark.slow
def test_an_external_set_scores_as_it_does_inside_run(store, tmp_path):
    (run,) = [r for r in _records(store) if r.config.seed == 1]
    reader = open_existing(store)
    baseline = reader.load_artifact(run).baseline
    reader.close()
    file = tmp_path / "subset.npz"
    np.savez(file, x=baseline.x, y=np.argmax(baseline.y, axis=1))
    dataset = [f"{k}={v}" for k, v in (a.split("=") for a in TINY) if k.startswith("dataset.")]
    result, _ = _cli("evaluate", "--support", str(file), "--dataset", "synthetic", "--name", "by hand",
                     *dataset, "seed=1", "evaluator=krr", "--store", str(store), "-q")
    assert result.exit_code == 0, result.output
    (ext,) = [r for r in _records(store) if r.config.objective.name == "external"]
    assert ext.metrics["acc"] == run.metrics["random_acc"] and ext.metrics["random_acc"] == run.metrics["random_acc"]
    assert ext.metrics["gain"] == 0.0 and ext.parent_run_id is None and ext.artifact is not None
    import hashlib

    provenance = ext.config.objective.as_dict()
    assert provenance == {"name": "by hand", "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
                          "file": "subset.npz"}
    report, _ = _cli("report", "--store", str(store), "--format", "md")
    assert "external(by hand)/mse" in report.output


@pytest.mark.parametrize("case, message", [
    ("shape", "x has shape (3, 5, 4, 1), but the dataset's images have shape (4, 4, 1)"),
    ("raw", "do not match the dataset's preprocessed images"),
    ("classes", "labels range 0..5, but the dataset has 3 classes"),
    ("unbalanced", "images per class are [2, 1, 0]"),
    ("onehot", "y has 4 columns, but the dataset has 3 classes"),
    ("nan", "x holds NaN or infinite values"),
    ("keys", "an external set needs arrays 'x' (images) and 'y' (labels)"),
])
def test_an_external_set_that_does_not_fit_its_dataset_is_refused(store, tmp_path, case, message):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4, 4, 1)), np.arange(3)
    arrays = {"shape": dict(x=rng.normal(size=(3, 5, 4, 1)), y=y), "raw": dict(x=x * 60 + 128, y=y),
              "classes": dict(x=x, y=np.array([0, 1, 5])), "unbalanced": dict(x=x, y=np.array([0, 0, 1])),
              "onehot": dict(x=x, y=np.eye(4)[:3]), "nan": dict(x=np.where(x > 1, np.nan, x), y=y),
              "keys": dict(images=x, labels=y)}[case]
    file = tmp_path / "set.npz"
    np.savez(file, **arrays)
    before = store.read_bytes()
    dataset = [a for a in TINY if a.startswith("dataset.")]
    result, lines = _cli("evaluate", "--support", str(file), "--dataset", "synthetic", "--name", "n", *dataset,
                         "evaluator=krr", "--store", str(store))
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert store.read_bytes() == before and len(_records(store)) == 2


@pytest.mark.parametrize("args, message", [
    (["objective=kip"], "evaluate does not take objective="),
    ([], "evaluate needs an evaluator"),
    (["evaluator=krr", "--support", "x.npz"], "--support needs --name"),
    (["evaluator=krr", "--name", "a"], "--name is for an external set"),
    (["evaluator=krr", "--dataset", "nope"], "no done runs with a stored support set match the filters"),
    (["evaluator=nonesuch"], "unknown evaluator"),
])
def test_bad_evaluate_input_is_one_line_and_writes_nothing(store, args, message):
    before = store.read_bytes()
    result, lines = _cli("evaluate", *args, "--store", str(store))
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert store.read_bytes() == before


def test_a_schema_2_store_gains_the_parent_column_and_keeps_its_rows(store):
    with sqlite3.connect(store) as conn:  # make it look like a store written before evaluations existed
        conn.execute("ALTER TABLE runs DROP COLUMN parent_run_id")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    old = _records(store)  # read-only: the missing column reads as none
    assert len(old) == 2 and all(r.parent_run_id is None for r in old)
    with ResultStore(store) as s:
        assert [r.run_id for r in s.records()] == [r.run_id for r in old]
    with sqlite3.connect(store) as conn:
        assert "parent_run_id" in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()


# -- sets with real-valued label rows (issue 35, issue 27 item 2.1) --------------------------------

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
HAS_MNIST = (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def _own_support_rescored(tmp_path, run_args, dataset, evaluator=("evaluator=krr",), extra=None):
    """Run ``run_args``, export the run's own support set from its artifact as ``x``, ``y`` (plus
    ``extra`` arrays), score it with ``evaluate --support`` and the run's evaluator: (run, external row)."""
    path = tmp_path / "own.sqlite"
    result, _ = _cli("run", *run_args, *evaluator, "--store", str(path), "-q")
    assert result.exit_code == 0, result.output
    (run,) = _records(path)
    reader = open_existing(path)
    artifact = reader.load_artifact(run)
    reader.close()
    file = tmp_path / "own.npz"
    np.savez(file, x=artifact.support.x, y=artifact.support.y, **(extra(artifact) if extra else {}))
    dataset_args = [a for a in run_args if a.startswith("dataset.")]
    result, _ = _cli("evaluate", "--support", str(file), "--dataset", dataset, "--name", "own", *dataset_args,
                     f"seed={run.config.seed}", *evaluator, "--store", str(path), "-q")
    assert result.exit_code == 0, result.output
    (ext,) = [r for r in _records(path) if r.config.objective.name == "external"]
    return run, ext, artifact


def _same_numbers(run, ext):
    for key in ("acc", "random_acc", "gain", "mse", "random_mse"):
        assert ext.metrics[key] == run.metrics[key], (key, ext.metrics[key], run.metrics[key])


def test_a_label_solve_runs_own_support_rescores_to_its_accuracy_bit_for_bit(tmp_path):
    run, ext, artifact = _own_support_rescored(tmp_path, ["objective=ls", "ipc=10"], "digits")
    solved = artifact.support.y
    assert not np.allclose(solved, solved.round())  # real-valued solved rows, not one-hot
    assert run.metrics["acc"] > run.metrics["random_acc"]  # digits: 96.10% vs 91.92%
    _same_numbers(run, ext)


def test_a_learned_labels_kip_runs_own_support_rescores_to_its_accuracy_bit_for_bit(tmp_path):
    run, ext, _ = _own_support_rescored(
        tmp_path, ["objective=kip", "objective.learn_labels=true", "objective.steps=10", "ipc=10"], "digits")
    _same_numbers(run, ext)


def test_the_stored_set_keeps_its_rows_and_stated_classes(tmp_path):
    run, ext, artifact = _own_support_rescored(
        tmp_path, [*TINY, "objective.learn_labels=true", "ipc=2"], "synthetic",
        extra=lambda a: {"classes": np.repeat(np.arange(3), 2)})
    _same_numbers(run, ext)
    stored = read_artifact(tmp_path / "own.sqlite", ext)
    assert np.array_equal(stored.support.y, artifact.support.y) and stored.support.y.dtype == artifact.support.y.dtype
    assert np.array_equal(stored.support.x, artifact.support.x)
    assert np.array_equal(stored.support.classes, np.repeat(np.arange(3), 2))
    assert np.array_equal(stored.baseline.x, artifact.baseline.x)  # the run seed's real random subset


@pytest.mark.slow
def test_the_nn_evaluator_trains_on_the_rows_as_given(tmp_path):
    nn = ("evaluator=nn", "evaluator.arch=fc1", "evaluator.width=16", "evaluator.steps=5", "evaluator.seeds=1")
    run, ext, _ = _own_support_rescored(tmp_path, [*TINY, "objective.learn_labels=true"], "synthetic", evaluator=nn)
    for key in ("acc", "random_acc", "mse", "random_mse"):
        assert ext.metrics[key] == run.metrics[key], key


@pytest.mark.skipif(not HAS_MNIST, reason="shared MNIST test files absent")
@pytest.mark.parametrize("args", [["objective=ls", "ipc=10"], ["objective=ls", "ipc=50"],
                                  ["objective=kip", "objective.learn_labels=true", "objective.steps=5", "ipc=10"]])
@pytest.mark.slow
def test_mnist_t10k_sets_rescore_to_their_runs_accuracy(tmp_path, args):
    run, ext, _ = _own_support_rescored(
        tmp_path, ["dataset=mnist-t10k", f"dataset.data_dir={SHARED_DATA}", *args], "mnist-t10k")
    _same_numbers(run, ext)


def test_rescoring_a_stored_learned_labels_run_uses_its_stored_rows(tmp_path):
    path = tmp_path / "ll.sqlite"
    result, _ = _cli("run", *TINY, "objective.learn_labels=true", "ipc=2", "--store", str(path), "-q")
    assert result.exit_code == 0, result.output
    (run,) = _records(path)
    y = read_artifact(path, run).support.y
    assert not np.array_equal(y, np.eye(3, dtype=y.dtype)[np.argmax(y, axis=1)] - np.float32(1 / 3))  # learned
    result, _ = _cli("evaluate", "evaluator=krr", "--store", str(path), "-q")
    assert result.exit_code == 0, result.output
    (again,) = [r for r in _records(path) if r.parent_run_id == run.run_id]
    _same_numbers(run, again)


def test_label_rows_alone_need_whole_classes_and_stated_classes_must_balance(store, tmp_path):
    dataset = [a for a in TINY if a.startswith("dataset.")]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 4, 1))
    rows = rng.normal(size=(6, 3))
    rows[:, 0] += 5  # every row's argmax is class 0: accepted, the rows alone state no classes
    cases = [(dict(x=x, y=rows), 0, None),
             (dict(x=x[:5], y=rows[:5]), 2, "5 label rows are not a multiple of the dataset's 3 classes"),
             (dict(x=x, y=rows, classes=np.array([0, 0, 0, 1, 1, 2])), 2, "images per class are [3, 2, 1]"),
             (dict(x=x, y=np.repeat(np.arange(3), 2), classes=np.arange(6) % 3), 2, "classes disagrees")]
    for arrays, code, message in cases:
        file = tmp_path / "rows.npz"
        np.savez(file, **arrays)
        result, lines = _cli("evaluate", "--support", str(file), "--dataset", "synthetic", "--name", "rows",
                             *dataset, "evaluator=krr", "--store", str(store), "-q")
        assert result.exit_code == code, result.output
        if message:
            assert len(lines) == 1 and message in lines[0], result.output
