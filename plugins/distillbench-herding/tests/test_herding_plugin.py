"""Tests of distillbench-herding: the conformance suite, herding's maths, and a run through the CLI.

Run after ``pip install ./plugins/distillbench-herding`` with ``pytest plugins/distillbench-herding``.
Only public distillbench modules are used.
"""

import importlib.metadata
import os
import subprocess
import sys

import distillbench_herding
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench.components.kernels import Kernel
from distillbench.components.objectives import Problem
from distillbench.sampling import balanced_subset
from distillbench.testing import (
    check_installed,
    check_objective,
    check_plugin,
    tiny_datasplit,
    train_data,
)

HERDING = distillbench_herding.COMPONENTS[0]


def _installed() -> bool:
    try:
        importlib.metadata.distribution("distillbench-herding")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_install = pytest.mark.skipif(not _installed(), reason="pip install ./plugins/distillbench-herding first")


def _linear_kernel() -> Kernel:
    def kernel_fn(x1, x2, key):
        return x1.reshape(len(x1), -1) @ x2.reshape(len(x2), -1).T

    return Kernel(kernel_fn=kernel_fn)


def test_conformance_with_its_preferred_kernel_and_loss():
    check_plugin(distillbench_herding)


@pytest.mark.parametrize("kernel, loss, params", [
    ("rf-nngp", "platt", {"num_networks": 2, "width": 16}),  # feature-map form, random, learned loss params
    ("ntk", "mse", {}),
])
def test_conformance_with_other_kernels_and_losses(kernel, loss, params):
    check_objective(HERDING, {"dtype": "float32"}, kernel=kernel, kernel_params=params, loss=loss)


def _reference_herding(x, k):
    """Plain numpy kernel herding with a linear kernel."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    gram = flat @ flat.T
    mean = gram.mean(axis=1)
    total, picks = np.zeros(len(x)), []
    for t in range(k):
        score = mean - total / (t + 1)
        score[picks] = -np.inf
        i = int(np.argmax(score))
        picks.append(i)
        total += gram[:, i]
    return picks


def test_picks_match_a_reference_implementation():
    from distillbench_herding.herding import build_herding

    data = tiny_datasplit(num_classes=3, per_class=10)
    ipc, seed, pool = 3, 0, 8
    make = build_herding(pool=pool, reg=1e-6, dtype="float64")
    problem = Problem(data, ipc, _linear_kernel(), _mse(), seed)
    distiller = make(problem)
    state = distiller.init(jax.random.PRNGKey(0))
    state, value = jax.jit(distiller.step)(state, train_data(data), jax.random.PRNGKey(1))
    support = distiller.support(state)
    assert np.isfinite(float(value)) and support.x.shape == (ipc * data.num_classes, *data.image_shape)

    candidates = balanced_subset(data.y_train, pool, data.num_classes, seed).reshape(data.num_classes, pool)
    for c in range(data.num_classes):
        pool_images = data.x_train[candidates[c]]
        expected = pool_images[_reference_herding(pool_images, ipc)]
        np.testing.assert_array_equal(np.asarray(support.x[c * ipc:(c + 1) * ipc]), expected)
        labels = np.asarray(support.y[c * ipc:(c + 1) * ipc]).argmax(axis=1)
        assert (labels == c).all()


def test_ipc_larger_than_a_class_is_a_clear_error():
    from distillbench_herding.herding import build_herding

    data = tiny_datasplit(num_classes=3, per_class=4)
    with pytest.raises(ValueError, match="fewer than ipc=5"):
        build_herding()(Problem(data, 5, _linear_kernel(), _mse(), 0))


def _mse():
    from distillbench.components.losses import Loss

    return Loss(init=dict, apply=lambda p, pred, y: 0.5 * jnp.mean((pred - y) ** 2), logits=lambda p, pred: pred)


@needs_install
def test_installed_with_its_entry_point():
    assert check_installed("distillbench-herding") == ["objective:herding"]


@needs_install
def test_runs_through_the_cli(tmp_path):
    args = ["objective=herding", "objective.pool=10", "ipc=2", "dataset=synthetic", "dataset.n_train=60",
            "dataset.n_test=30", "dataset.num_classes=3", "dataset.height=4", "dataset.width=4"]
    result = subprocess.run([sys.executable, "-m", "distillbench.cli", "run", "--store", str(tmp_path / "r.sqlite"),
                             *args], capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="200"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "herding/nngp(fc1)/mse" in result.stdout and "done" in result.stdout
    assert "warning" not in result.stderr
