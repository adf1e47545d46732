"""The `nn` evaluator trains real finite networks (centering, label scaling) on a support set."""

import numpy as np
import pytest

from distillbench.components.evaluators import EvalContext
from distillbench.components.objectives import Support
from distillbench.krr import centered_one_hot
from distillbench.sampling import balanced_subset
from distillbench_builtin.datasets.synthetic import build_synthetic
from distillbench_builtin.evaluators.nn import build_nn

from helpers import architecture


@pytest.fixture(scope="module")
def problem():
    data = build_synthetic(200, 150, 4, 8, 8, 1, 1.0, 0)
    idx = balanced_subset(data.y_train, 5, 4, 0)
    support = Support(data.x_train[idx], np.asarray(centered_one_hot(data.y_train[idx], 4)), {})
    ctx = EvalContext(data, None, None, {}, None, 0)
    return support, ctx


@pytest.mark.slow
def test_trains_networks_that_beat_chance_and_report_mean_std(problem):
    support, ctx = problem
    metrics = build_nn(arch=architecture("convnet3"), width=16, steps=200, lr=1e-2, seeds=3).evaluate(support, ctx)
    assert set(metrics) == {"acc", "acc_std", "mse", "nn_seeds", "eval_arch"} and metrics["eval_arch"] == "convnet3"
    assert metrics["acc"] > 0.6 and metrics["nn_seeds"] == 3.0  # chance is 0.25
    assert 0 < metrics["acc_std"] < 0.3


def test_untrained_centered_network_predicts_zero(problem):
    support, ctx = problem
    zero = build_nn(arch=architecture("fc1"), width=16, steps=1, lr=1e-12, seeds=2).evaluate(support, ctx)
    # with centering, f(x) - f0(x) stays ~0 when the weights barely move: mse ~ mean of y^2
    expected = np.mean(np.asarray(centered_one_hot(ctx.data.y_test, 4)) ** 2)
    assert zero["mse"] == pytest.approx(expected, rel=1e-3)


def test_same_seed_same_numbers(problem):
    support, ctx = problem
    evaluator = build_nn(arch=architecture("fc1"), width=16, steps=20, seeds=2)
    assert evaluator.evaluate(support, ctx) == evaluator.evaluate(support, ctx)


def _reference_mse(output, output_0, y, label_scale):
    """Transcription of the RFAD reference (training.py, ``loss_mode == 'mse'``, full batch):
    ``y_batch = label_scale * y_train``; ``torch.mean((output - output_0 - y_batch)**2) / label_scale**2``."""
    y_batch = label_scale * y
    return np.mean((output - output_0 - y_batch) ** 2) / label_scale**2


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("label_scale", [1.0, 2.0, 8.0])
def test_loss_is_the_reference_mean_over_all_entries(num_classes, label_scale):
    import jax
    import jax.numpy as jnp

    from distillbench_builtin.evaluators.nn import reference_loss

    rng = np.random.default_rng(num_classes)
    n = 37
    out, out0 = rng.normal(size=(2, n, num_classes))
    y = np.asarray(centered_one_hot(rng.integers(0, num_classes, n), num_classes), np.float64)
    centered = jnp.asarray(out - out0, jnp.float64)
    ours = float(reference_loss(centered, jnp.asarray(y), label_scale))
    assert ours == pytest.approx(_reference_mse(out, out0, y, label_scale), rel=1e-12, abs=1e-12)
    # gradient w.r.t. the outputs: d/df of mean((f - a y)^2)/a^2 = 2 (f - a y) / (n C a^2)
    grad = np.asarray(jax.grad(reference_loss)(centered, jnp.asarray(y), label_scale))
    expected = 2 * (out - out0 - label_scale * y) / (n * num_classes * label_scale**2)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)


def test_early_stopping_keeps_the_best_network_from_training_validation(problem):
    support, ctx = problem
    # lr 1e38 overflows at once: no later network validates strictly better than the untrained one,
    # which (centered) predicts 0 everywhere, and training stops `patience` steps after step 0
    metrics = build_nn(arch=architecture("fc1"), width=16, steps=10_000, lr=1e38, seeds=2, val_every=1, patience=3,
                       val_per_class=20).evaluate(support, ctx)
    assert metrics["nn_best_step"] == 0.0
    expected = np.mean(np.asarray(centered_one_hot(ctx.data.y_test, 4)) ** 2)
    assert metrics["mse"] == pytest.approx(expected, rel=1e-6)
    # a sane rate improves on the untrained network and keeps a later step
    good = build_nn(arch=architecture("fc1"), width=16, steps=300, lr=1e-1, seeds=2, val_every=20, patience=500,
                    val_per_class=20).evaluate(support, ctx)
    assert good["nn_best_step"] > 0 and good["nn_val_acc"] > 0.5 and good["acc"] > 0.5


def test_validation_comes_from_the_training_split_per_class():
    from distillbench_builtin.evaluators.nn import validation_indices, validation_per_class

    assert validation_per_class(10, None) == 500 and validation_per_class(100, None) == 100
    assert validation_per_class(10, 7) == 7
    labels = np.repeat(np.arange(4), [30, 12, 25, 40])
    idx = validation_indices(labels, 4, 20, seed=0)
    assert np.all(np.bincount(labels[idx]) == 12)  # capped by the smallest class
    assert len(set(idx.tolist())) == len(idx)


@pytest.mark.parametrize("augment", ["flip", "dsa"])
def test_augmentation_changes_training_and_keeps_it_deterministic(problem, augment):
    """Each step sees a fresh augmentation of the support, seeded by the run: the networks differ
    from the unaugmented ones, and the same seed gives the same numbers."""
    support, ctx = problem
    plain = build_nn(arch=architecture("convnet3"), width=8, steps=30, lr=1e-2, seeds=1).evaluate(support, ctx)
    runs = [build_nn(arch=architecture("convnet3"), width=8, steps=30, lr=1e-2, seeds=1, augment=augment)
            .evaluate(support, ctx) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0]["mse"] != plain["mse"]
