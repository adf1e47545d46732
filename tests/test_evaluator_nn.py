"""The `nn` evaluator trains real finite networks (centering, label scaling) on a support set."""

import numpy as np
import pytest

from distillbench.components.evaluators import EvalContext
from distillbench.components.objectives import Support
from distillbench.krr import centered_one_hot
from distillbench.sampling import balanced_subset
from distillbench_builtin.datasets.synthetic import build_synthetic
from distillbench_builtin.evaluators.nn import build_nn


@pytest.fixture(scope="module")
def problem():
    data = build_synthetic(200, 150, 4, 8, 8, 1, 1.0, 0)
    idx = balanced_subset(data.y_train, 5, 4, 0)
    support = Support(data.x_train[idx], np.asarray(centered_one_hot(data.y_train[idx], 4)), {})
    ctx = EvalContext(data, None, None, {}, None, 0)
    return support, ctx


def test_trains_networks_that_beat_chance_and_report_mean_std(problem):
    support, ctx = problem
    metrics = build_nn(arch="convnet3", width=16, steps=200, lr=1e-2, seeds=3).evaluate(support, ctx)
    assert set(metrics) == {"acc", "acc_std", "mse", "nn_seeds"}
    assert metrics["acc"] > 0.6 and metrics["nn_seeds"] == 3.0  # chance is 0.25
    assert 0 < metrics["acc_std"] < 0.3


def test_untrained_centered_network_predicts_zero(problem):
    support, ctx = problem
    zero = build_nn(arch="fc1", width=16, steps=1, lr=1e-12, seeds=2).evaluate(support, ctx)
    # with centering, f(x) - f0(x) stays ~0 when the weights barely move: mse ~ mean of y^2
    expected = np.mean(np.asarray(centered_one_hot(ctx.data.y_test, 4)) ** 2)
    assert zero["mse"] == pytest.approx(expected, rel=1e-3)


def test_same_seed_same_numbers(problem):
    support, ctx = problem
    evaluator = build_nn(arch="fc1", width=16, steps=20, seeds=2)
    assert evaluator.evaluate(support, ctx) == evaluator.evaluate(support, ctx)
