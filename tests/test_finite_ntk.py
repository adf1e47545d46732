"""The frozen finite-width NTK kernel (``finite-ntk``): the empirical NTK of random networks, equal to
neural-tangents' own empirical NTK of the same network, tending to the exact NTK as the width grows,
and usable by ``objective=kip`` and the KRR evaluator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.registry import load_registry

from helpers import tiny

REGISTRY = load_registry(entry_points=False)


def _images(n=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 8, 8, 1)))


def _finite(**params):
    return REGISTRY.instantiate("kernel", "finite-ntk", params)


def _error(k, ref):
    return float(np.linalg.norm(np.asarray(k) - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("arch", ["fc1", "convnet3"])
def test_it_tends_to_the_exact_ntk_as_the_width_grows(arch):
    """As check_architecture does for the random-feature NNGP: the mean error of 4 draws at width 8
    is above the error at width 256, which is below 0.15 (4 networks per draw; measured: fc1 0.31 ->
    0.05, convnet3 0.47 -> 0.09)."""
    jax.config.update("jax_enable_x64", True)
    x = _images()
    exact = np.asarray(REGISTRY.instantiate("kernel", "ntk", {"arch": arch}).kernel_fn(x, x, None))
    narrow = np.mean([_error(_finite(arch=arch, width=8, num_networks=4).kernel_fn(x, x, jax.random.PRNGKey(s)),
                             exact) for s in range(4)])
    wide = _error(_finite(arch=arch, width=256, num_networks=4).kernel_fn(x, x, jax.random.PRNGKey(9)), exact)
    assert wide < narrow and wide < 0.15


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_it_is_neural_tangents_empirical_ntk_of_the_same_network(parameterization):
    """neural-tangents' ``empirical_ntk_fn`` of the same flax network (its parameters divided by their
    initial std for ``ntk``, so that the gradients are the NTK-parameterized ones)."""
    from distillbench.compat.neural_tangents import import_neural_tangents
    from distillbench.empirical_ntk import _Scalar, init_scale

    nt = import_neural_tangents()
    jax.config.update("jax_enable_x64", True)
    x1, x2 = _images(4, 1), _images(3, 2)
    kernel = _finite(arch="convnet3", width=8, parameterization=parameterization)
    key = jax.random.PRNGKey(4)
    ours = np.asarray(kernel.kernel_fn(x1, x2, key))
    from distillbench_builtin.architectures.networks import build_convnet3

    module = _Scalar(build_convnet3().trunk, 8, 2**0.5, 0.1, jnp.float64)
    params = jax.tree.map(lambda p: p.astype(jnp.float64),
                          module.init(jax.random.split(key, 1)[0], jnp.zeros((1, 8, 8, 1), jnp.float32)))
    scales = jax.tree_util.tree_map_with_path(
        lambda path, leaf: init_scale(path, leaf, 2**0.5, 0.1) if parameterization == "ntk" else 1.0, params)
    omega = jax.tree.map(lambda p, s: p / s if s else p, params, scales)

    def f(w, x, **kwargs):
        return module.apply(jax.tree.map(lambda wi, s: wi * s if s else wi, w, scales), x)[:, None]

    reference = np.asarray(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0)(x1, x2, omega))[:, :, 0, 0]
    np.testing.assert_allclose(ours, reference, rtol=1e-8, atol=1e-10)


def test_ntk_parameterization_needs_an_infinite_width_form():
    with pytest.raises(ValueError, match="kernel.parameterization=standard"):
        _finite(arch="frepo-conv")


def test_kip_distils_with_it_and_the_krr_evaluator_scores_with_it(tmp_path):
    store = tmp_path / "r.sqlite"
    result = CliRunner().invoke(main, ["run", "-q", "--store", str(store), *tiny(
        "kernel=finite-ntk", "kernel.width=16", "evaluator=krr", "evaluator.kernel=finite-ntk")])
    assert result.exit_code == 0, result.output
    assert "kip/finite-ntk(fc1)" in result.output and "done" in result.output
