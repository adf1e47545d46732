"""The privacy evaluator: nearest-training-image distances and a membership-inference attack."""

import numpy as np
import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.store.database import open_existing
from distillbench_builtin.evaluators.privacy import _min_sq_dist, attack_accuracy

from helpers import tiny


def test_attack_accuracy_known_answers():
    same = np.ones(50)
    assert attack_accuracy(same, same) == 0.5  # nothing tells members apart
    assert attack_accuracy(np.zeros(40), np.ones(40)) == 1.0  # members always fit better
    assert attack_accuracy(np.array([0.1, 0.3, 0.5, 0.7]), np.array([0.2, 0.4, 0.6, 0.8])) == pytest.approx(0.625)


def test_nearest_distances_find_copies_and_skip_self():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 4, 4, 1))
    assert np.allclose(_min_sq_dist(train[:5], train), 0.0)
    off = _min_sq_dist(train[:5] + 0.5, train)
    assert np.all(off > 0) and np.all(off <= 16 * 0.25 + 1e-9)
    brute = [min(np.sum((train[i] - train[j]) ** 2) for j in range(300) if j != i) for i in range(5)]
    assert np.allclose(_min_sq_dist(train[:5], train, exclude_self=True), brute)


def test_privacy_next_to_accuracy_against_the_random_subset(tmp_path):
    store = tmp_path / "r.sqlite"
    result = CliRunner().invoke(main, ["run", *tiny("objective.steps=20"), "--store", str(store), "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["evaluate", "evaluator=privacy", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "privacy: nearest train " in result.output and "(random 0.00×), MIA " in result.output  # as declared
    reader = open_existing(store)
    run, scored = sorted(reader.records(), key=lambda r: r.parent_run_id is not None)
    reader.close()
    m = scored.metrics
    assert m["acc"] == run.metrics["acc"] and m["random_acc"] == run.metrics["random_acc"]  # the krr model
    assert m["random_nn_dist"] == pytest.approx(0.0, abs=1e-6)  # real training images: copies (up to rounding)
    assert m["nn_dist_min"] > 0.0 and m["nn_dist_rel"] > 0.0  # distilled images moved off the training set
    assert 0.5 <= m["mia_acc"] <= 1.0 and 0.5 <= m["random_mia_acc"] <= 1.0
    board = CliRunner().invoke(main, ["report", "--store", str(store), "--format", "md"])
    assert "privacy: nearest train × · MIA %" in board.output and "(random 0.00×)" in board.output
