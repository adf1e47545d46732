"""Built-in kernels: exact values against closed forms, blocking, and random-feature convergence."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench_builtin.kernels import COMPONENTS
from distillbench.errors import ConfigError
from distillbench.runner.plan import plan
from helpers import build_kernel, builtins
from distillbench_builtin.architectures.layout import check_image_shape, pixel_pairs
from distillbench_builtin.kernels.exact import AUTO_BLOCK_ENTRIES, _block_shape, balanced

W2 = 2.0  # w_std^2 default
B2 = 0.01  # b_std^2 default

_BY_NAME = {c.name: c for c in COMPONENTS}


build = build_kernel


def images(seed, n, shape=(8, 8, 1), dtype=jnp.float64):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, *shape), dtype)


# -- declarations ------------------------------------------------------------------------------


def test_declarations_are_light_and_complete():
    code = (
        "import sys, distillbench_builtin.kernels as k;"
        "assert not any(m in sys.modules for m in ('jax', 'flax', 'neural_tangents')), 'heavy import';"
        "print(sorted(c.name for c in k.COMPONENTS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['finite-ntk', 'frepo-pool', 'nngp', 'ntk', 'rcig-pool', 'rf-nngp']"
    for comp in COMPONENTS:
        assert comp.kind == "kernel"
        names = {p.name for p in comp.params}
        # the infinite-width kernels and their random features: NTK parameterisation; the trained
        # networks of frepo-pool and rcig-pool have their architecture's own initialisation
        assert {"arch", "w_std", "b_std"} <= names or (comp.name in ("frepo-pool", "rcig-pool") and "arch" in names)
        # any registered architecture: a reference the planner checks against the run's registry
        assert comp.param("arch").choices is None and comp.param("arch").component == "architecture"
        with pytest.raises(ConfigError, match=r"^kernel.arch=convnet5: unknown architecture 'convnet5' "
                                              r"\(did you mean 'convnet'\?\)$") as raised:
            plan([f"kernel={comp.name}", "kernel.arch=convnet5"], builtins())
        assert raised.value.key == "kernel.arch"
    assert {p.name for p in _BY_NAME["rf-nngp"].params} >= {"num_networks", "width", "batch_size"}
    assert build("rf-nngp").random and build("ntk").random is False
    assert build("nngp", arch="convnet3").arch == "convnet3"


# -- exact kernels against an independent numpy closed form ------------------------------------


def _arccos_kernels(x1, x2, depth):
    """ReLU NNGP and NTK of fc<depth> (NTK parameterization), float64 numpy."""
    a = x1.reshape(len(x1), -1)
    b = x2.reshape(len(x2), -1)
    d = a.shape[1]
    k12 = W2 * a @ b.T / d + B2
    k11 = W2 * np.sum(a * a, 1) / d + B2
    k22 = W2 * np.sum(b * b, 1) / d + B2
    ntk = k12.copy()
    for _ in range(depth):
        norm = np.sqrt(np.outer(k11, k22))
        cos = np.clip(k12 / norm, -1.0, 1.0)
        theta = np.arccos(cos)
        e_relu = norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
        e_step = (np.pi - theta) / (2 * np.pi)
        k12 = W2 * e_relu + B2
        ntk = k12 + W2 * e_step * ntk
        k11 = W2 * k11 / 2 + B2  # E[relu(u)^2] = K/2
        k22 = W2 * k22 / 2 + B2
    return k12, ntk


@pytest.mark.parametrize("arch,depth", [("fc1", 1), ("fc3", 3)])
def test_exact_fc_matches_arccos_closed_form(arch, depth):
    x1 = np.asarray(images(0, 6, (4, 4, 2)))
    x2 = np.array(images(1, 5, (4, 4, 2)))
    x2[0] = x1[0]  # includes an identical pair (theta = 0)
    nngp_ref, ntk_ref = _arccos_kernels(x1, x2, depth)
    nngp = np.asarray(build("nngp", arch=arch).kernel_fn(x1, x2, None))
    ntk = np.asarray(build("ntk", arch=arch).kernel_fn(x1, x2, None))
    assert nngp.dtype == np.float64
    # Identical inputs (theta = 0) go through a square root of a round-off-sized number inside
    # neural-tangents: ~1e-8 there, ~1e-10 everywhere else.
    same = np.zeros(nngp.shape, bool)
    same[0, 0] = True
    for got, ref in ((nngp, nngp_ref), (ntk, ntk_ref)):
        np.testing.assert_allclose(got[~same], ref[~same], rtol=1e-10, atol=0)
        np.testing.assert_allclose(got[same], ref[same], rtol=1e-7, atol=0)


def test_exact_dtype_follows_input():
    x = images(0, 3, (4, 4, 2), jnp.float32)
    assert build("nngp").kernel_fn(x, x, None).dtype == jnp.float32
    assert build("ntk").kernel_fn(x.astype(jnp.float64), x.astype(jnp.float64), None).dtype == jnp.float64


# -- blocking ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ntk", "nngp"])
@pytest.mark.slow
def test_blocked_exact_equals_unblocked_with_gradient(name):
    # The neural-tangents implementation's blocking (the fast one's: tests/test_fast_kernels.py).
    nt = dict(implementation="neural-tangents")
    x1, x2 = images(0, 5), images(1, 7)
    w = jax.random.normal(jax.random.PRNGKey(2), (5, 7), jnp.float64)
    full = build(name, arch="convnet3", **nt)  # auto: 35 pairs form a single block
    assert "scan" not in str(jax.make_jaxpr(full.kernel_fn)(x1, x2, None))
    ref = full.kernel_fn(x1, x2, None)
    ref_grad = jax.jit(jax.grad(lambda b: jnp.sum(w * full.kernel_fn(x1, b, None))))(x2)
    assert np.all(np.isfinite(ref_grad)) and np.abs(ref_grad).max() > 0
    # 3: a 2x3 grid of blocks; 6: one row block, two column blocks.
    for block_size in (3, 6):
        k = build(name, arch="convnet3", block_size=block_size, **nt)
        assert "scan" in str(jax.make_jaxpr(k.kernel_fn)(x1, x2, None))
        np.testing.assert_allclose(k.kernel_fn(x1, x2, None), ref, rtol=1e-12, atol=0)
        grad = jax.jit(jax.grad(lambda b: jnp.sum(w * k.kernel_fn(x1, b, None))))(x2)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)
    # Row blocks only (n2 fits): swapped arguments give the transpose.
    k = build(name, arch="convnet3", block_size=6, **nt)
    np.testing.assert_allclose(k.kernel_fn(x2, x1, None), ref.T, rtol=1e-12, atol=0)


def test_auto_block_shape_bounds_memory():
    for shape in [(8, 8, 1), (28, 28, 1), (32, 32, 3)]:
        for n1, n2 in [(10, 10), (5000, 100), (100, 5000), (10000, 10000)]:
            b1, b2 = _block_shape(n1, n2, pixel_pairs("convnet3", shape), None)
            assert 1 <= b1 <= n1 and 1 <= b2 <= n2
            assert b1 * b2 * pixel_pairs("convnet3", shape) <= max(AUTO_BLOCK_ENTRIES, pixel_pairs("convnet3", shape))
    assert _block_shape(100, 10, pixel_pairs("convnet3", (8, 8, 1)), None) == (100, 10)  # direct path for digits
    assert _block_shape(300, 50, pixel_pairs("fc1", (8, 8, 1)), 64) == (64, 50)
    assert [balanced(1437, 1280), balanced(10, 5), balanced(11, 5)] == [719, 5, 4]


@pytest.mark.slow
def test_all_archs_accept_8x8_and_reject_too_small():
    x = images(0, 3)
    for arch in ("fc1", "fc3", "convnet3", "convnet"):
        k = np.asarray(build("nngp", arch=arch).kernel_fn(x, x, None))
        assert np.all(np.isfinite(k)) and np.allclose(k, k.T)
        assert np.linalg.eigvalsh(k).min() > 0
        f = build("rf-nngp", arch=arch, width=8, num_networks=2).feature_fn(x, jax.random.PRNGKey(0))
        assert f.shape[0] == 3 and np.all(np.isfinite(f))
    small = images(0, 2, (4, 4, 1))
    for arch in ("convnet3", "convnet"):
        with pytest.raises(ValueError, match="too small"):
            build("ntk", arch=arch).kernel_fn(small, small, None)
        with pytest.raises(ValueError, match="too small"):
            build("rf-nngp", arch=arch, width=4).feature_fn(small, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="too small"):
        check_image_shape("convnet3", (1, 7, 8, 1))


# -- random features -----------------------------------------------------------------------------


def _rel_err(k, ref):
    return float(np.linalg.norm(np.asarray(k) - ref) / np.linalg.norm(ref))


@pytest.mark.slow
def test_rf_nngp_converges_to_exact_fc1():
    x = images(0, 10, (4, 4, 2))
    exact = np.asarray(build("nngp").kernel_fn(x, x, None))
    keys = [jax.random.PRNGKey(s) for s in range(8)]
    errs = []
    for width in (64, 256, 1024, 4096):
        rf = build("rf-nngp", arch="fc1", width=width, num_networks=1)
        errs.append(np.mean([_rel_err(rf.kernel_fn(x, x, k), exact) for k in keys]))
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    assert all(1.4 < r < 2.9 for r in ratios), (errs, ratios)
    assert errs[-1] < 0.06, errs


@pytest.mark.slow
def test_rf_nngp_close_to_exact_convnet3():
    x1, x2 = images(0, 6), images(1, 4)
    exact = np.asarray(build("nngp", arch="convnet3").kernel_fn(x1, x2, None))
    rf = build("rf-nngp", arch="convnet3", width=256, num_networks=8)  # the paper's setting
    errs = [_rel_err(rf.kernel_fn(x1, x2, jax.random.PRNGKey(s)), exact) for s in range(3)]
    assert np.mean(errs) < 0.08, errs


@pytest.mark.slow
def test_rf_nngp_features_keys_chunks_dtypes():
    x1 = images(0, 7, dtype=jnp.float32)
    x2 = images(1, 4, dtype=jnp.float32)
    key, other = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    rf = build("rf-nngp", arch="convnet3", width=16, num_networks=3, b_std=0.3)
    f1, f2 = rf.feature_fn(x1, key), rf.feature_fn(x2, key)
    assert f1.dtype == jnp.float32 and f1.shape == (7, 3 * 16 + 1)
    np.testing.assert_array_equal(f1[:, -1], np.float32(0.3))
    k = rf.kernel_fn(x1, x2, key)
    assert k.dtype == jnp.float32
    np.testing.assert_allclose(k, f1 @ f2.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rf.kernel_fn(x1, x2, key), k)
    assert _rel_err(rf.kernel_fn(x1, x2, other), np.asarray(k)) > 1e-3
    # Chunked (3 chunks with padding) equals unchunked, values and gradients.
    chunked = build("rf-nngp", arch="convnet3", width=16, num_networks=3, b_std=0.3, batch_size=3)
    assert "scan" in str(jax.make_jaxpr(chunked.feature_fn)(x1, key))
    np.testing.assert_allclose(chunked.feature_fn(x1, key), f1, rtol=1e-5, atol=1e-6)
    w = jax.random.normal(jax.random.PRNGKey(3), f1.shape, jnp.float32)
    g_ref = jax.jit(jax.grad(lambda x: jnp.sum(w * rf.feature_fn(x, key))))(x1)
    g = jax.jit(jax.grad(lambda x: jnp.sum(w * chunked.feature_fn(x, key))))(x1)
    assert np.abs(g_ref).max() > 0
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)
    # float64 in -> float64 out.
    f64 = rf.feature_fn(x1.astype(jnp.float64), key)
    assert f64.dtype == jnp.float64
    np.testing.assert_allclose(f64, f1, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch,shape", [("convnet3", (9, 8, 1)), ("convnet", (8, 8, 3)), ("fc3", (4, 4, 2))])
@pytest.mark.slow
def test_fast_trunk_forward_equals_flax_trunk_with_input_gradients(arch, shape):
    # The rf-nngp forward pass is written by hand (fused first conv with its own backward,
    # strided-slice pooling, conv rows cropped to what a VALID pool reads; fast_forward.py):
    # it must be the flax Trunk's function, values and gradients, odd sizes included.
    from distillbench_builtin.architectures.fast_forward import trunk_forward
    from distillbench_builtin.architectures.networks import Trunk

    x = jax.random.normal(jax.random.PRNGKey(0), (3, *shape), jnp.float64)
    trunk = Trunk(arch=arch, width=5, w_std=2**0.5, b_std=0.3, dtype=jnp.float64)
    params = trunk.init(jax.random.PRNGKey(1), x[:1])
    ref = trunk.apply(params, x).reshape(3, -1)
    np.testing.assert_allclose(trunk_forward(arch, params, x), ref, rtol=1e-12, atol=1e-12)
    w = jax.random.normal(jax.random.PRNGKey(2), ref.shape, jnp.float64)
    grads = [jax.grad(lambda x, p, f=f: jnp.sum(w * f(p, x).reshape(3, -1)), argnums=(0, 1))(x, params)
             for f in (trunk.apply, lambda p, x: trunk_forward(arch, p, x))]
    assert np.abs(grads[0][0]).max() > 0
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
