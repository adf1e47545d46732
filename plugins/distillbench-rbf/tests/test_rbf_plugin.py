"""Tests of distillbench-rbf: the conformance suite, the kernel's maths, and a run through the CLI.

Run after ``pip install ./plugins/distillbench-rbf`` with ``pytest plugins/distillbench-rbf``.
Only public distillbench modules are used.
"""

import importlib.metadata
import os
import subprocess
import sys

import distillbench_rbf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench.testing import (
    ConformanceError,
    check_installed,
    check_kernel,
    check_plugin,
)

RBF = distillbench_rbf.COMPONENTS[0]


def _installed() -> bool:
    try:
        importlib.metadata.distribution("distillbench-rbf")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_install = pytest.mark.skipif(not _installed(), reason="pip install ./plugins/distillbench-rbf first")


def test_conformance_of_every_component():
    check_plugin(distillbench_rbf)


@pytest.mark.parametrize("params", [{"length_scale": 0.3}, {"features": 64}, {"features": 64, "length_scale": 2.0}],
                         ids=str)
def test_conformance_of_both_forms(params):
    kernel = check_kernel(RBF, params)
    assert kernel.random == (params.get("features", 0) > 0)
    assert (kernel.feature_fn is not None) == kernel.random


def test_exact_kernel_matches_the_formula():
    kernel = check_kernel(RBF, {"length_scale": 0.7})
    x = np.random.default_rng(0).standard_normal((4, 3, 3, 2))
    flat = x.reshape(4, -1)
    d = flat.shape[1]
    expected = np.exp(-((flat[:, None] - flat[None]) ** 2).sum(-1) / (2 * 0.7**2 * d))
    got = np.asarray(kernel.kernel_fn(jnp.asarray(x), jnp.asarray(x), jax.random.PRNGKey(0)))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.diag(got), 1.0)


def test_random_features_approximate_the_exact_kernel():
    from distillbench_rbf.kernel import build_rbf

    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 4, 4, 1)))
    exact = np.asarray(build_rbf(1.0, 0).kernel_fn(x, x, None))
    approx = build_rbf(1.0, 20000).kernel_fn(x, x, jax.random.PRNGKey(3))
    assert np.max(np.abs(np.asarray(approx) - exact)) < 0.05


def test_conformance_catches_a_broken_variant():
    """The suite is not vacuous: a feature map that disagrees with its kernel_fn is caught."""
    from distillbench.components.kernels import Kernel

    good = check_kernel(RBF, {"features": 32})
    broken = Kernel(kernel_fn=good.kernel_fn, feature_fn=lambda x, key: 2 * good.feature_fn(x, key), random=True)
    with pytest.raises(ConformanceError, match=r"^kernel contract: feature_fn\(x1, key\) @ feature_fn\(x2, key\)\.T"):
        check_kernel(broken)


@needs_install
def test_installed_with_its_entry_point():
    assert check_installed("distillbench-rbf") == ["kernel:rbf"]


@needs_install
@pytest.mark.parametrize("features", ["0", "128"])
def test_runs_through_the_cli(tmp_path, features):
    args = ["kernel=rbf", f"kernel.features={features}", "kernel.length_scale=1.5", "dataset=synthetic",
            "dataset.n_train=60", "dataset.n_test=30", "dataset.num_classes=3", "dataset.height=4",
            "dataset.width=4", "objective.steps=3"]
    result = subprocess.run([sys.executable, "-m", "distillbench.cli", "run", "--store", str(tmp_path / "r.sqlite"),
                             *args], capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="200"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kip/rbf/mse" in result.stdout and "done" in result.stdout
    assert "warning" not in result.stderr
