"""The fast exact kernels (kernels/fast_exact.py and its fast_* modules) against neural-tangents.

Agreement bars (issue #6): 1e-5 relative in float64 and 1e-4 in float32, for values of K(x1, x2)
and K(x, x) and for gradients with respect to the support images, NNGP and NTK. Compilation
dominates the run time here, so each architecture is compiled once for both kernels (the fast
kernels' internal ``get="both"``, neural-tangents' ``("nngp", "ntk")``) and the references are
shared between tests. Speed is measured in benchmarks/bench_kernels.py, not here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench import devices
from distillbench_builtin.architectures.networks import stax_network
from distillbench_builtin.kernels import (COMPONENTS, blocking, fast_exact, fast_first_layer, fast_position_convs,
                                          fast_relu, fast_relu_pool)
from distillbench_builtin.kernels.exact import resolve_implementation

from helpers import architecture, build_kernel

_BY_NAME = {c.name: c for c in COMPONENTS}
N1, N2 = 3, 2  # targets x1, support x2


build = build_kernel  # as a run builds it: the registry hands the kernel its architecture


def images(seed, n, shape, dtype=jnp.float64):
    """The same images in every dtype (drawn in float64, then rounded)."""
    return jax.random.normal(jax.random.PRNGKey(seed), (n, *shape), jnp.float64).astype(dtype)


def rel(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _probe(kernel, x1, x2):
    """K(x1, x2) and K(x2, x2) for NNGP and NTK, (2, ...) each, and the gradient with respect to
    the support x2 of a scalar through both (a KIP-like loss)."""
    w = jnp.cos(jnp.arange(N1 * N2, dtype=x2.dtype)).reshape(N1, N2)

    def loss(s):
        k_ts, k_ss = kernel(x1, s), kernel(s, s)
        return jnp.sum(w * (k_ts[0] + k_ts[1])) + jnp.sum(k_ss[0] * k_ss[1])

    return jax.jit(lambda s: (kernel(x1, s), kernel(s, s), jax.grad(loss)(s)))(x2)


@functools.lru_cache(maxsize=None)
def reference(arch, shape):
    """neural-tangents in float64."""
    _, _, nt = stax_network(arch)

    def kernel(a, b):
        out = nt(a, None if b is a else b, ("nngp", "ntk"))
        return jnp.stack([out.nngp, out.ntk])

    return _probe(kernel, images(0, N1, shape), images(1, N2, shape))


def fast(arch, shape, dtype, **params):
    kf = fast_exact.build_fast_kernel_fn(arch, "both", 2**0.5, 0.1, **params)
    return _probe(kf, images(0, N1, shape, dtype), images(1, N2, shape, dtype))


def check(arch, shape, dtype, tol):
    got, ref = fast(arch, shape, dtype), reference(arch, shape)
    assert got[0].dtype == dtype and got[0].shape == (2, N1, N2) and got[1].shape == (2, N2, N2)
    for what, g, r in zip(("K(x1, x2)", "K(x2, x2)", "gradient"), got, ref):
        assert rel(g, r) < tol, (arch, dtype, what, rel(g, r))
    return got


# 8x8x3 covers colour images (27 patch taps), 8x8x1 grayscale.
SHAPES = {"fc1": (8, 8, 1), "fc3": (8, 8, 1), "convnet3": (8, 8, 1), "convnet": (8, 8, 3)}


@pytest.mark.parametrize("arch", list(SHAPES))
@pytest.mark.slow
def test_matches_neural_tangents_float64(arch):
    check(arch, SHAPES[arch], jnp.float64, 1e-5)


@pytest.mark.parametrize("arch", ["fc1", "convnet3"])
@pytest.mark.slow
def test_matches_neural_tangents_float32(arch):
    # Against the float64 reference on the same images (rounded to float32: ~1e-8 apart).
    check(arch, SHAPES[arch], jnp.float32, 1e-4)


@pytest.mark.slow
def test_unrolled_loops_match_neural_tangents(monkeypatch):
    # From 16x16 images on (28x28, 32x32...), the ReLU + pool loops are unrolled over the 16
    # parity slab pairs (fast loops, long compiles); force that code path on small images.
    monkeypatch.setattr(fast_relu_pool, "UNROLL_MIN_POSITIONS", 1)
    check("convnet3", SHAPES["convnet3"], jnp.float64, 1e-5)


def test_asin_polynomial_is_accurate():
    x = np.linspace(-1, 1, 200001)
    for dtype, tol in ((jnp.float64, 1e-14), (jnp.float32, 3e-7)):
        got = np.asarray(jax.jit(fast_relu.asin)(jnp.asarray(x, dtype)), np.float64)
        ref = np.arcsin(np.asarray(jnp.asarray(x, dtype), np.float64))
        assert np.max(np.abs(got - ref)) < tol, dtype


@pytest.mark.slow
def test_blocking_odd_sizes_identical_images_and_symmetry():
    # 8x10 pools to 4x5, 2x2 (VALID pooling drops the odd column), 1x1; the repeated image
    # makes an identical pair (cos θ = 1) inside K(x1, x2); block_size=2 makes 4-pair blocks.
    shape = (8, 10, 1)
    x1 = images(0, 3, shape)
    x2 = jnp.concatenate([x1[:1], images(1, 1, shape)])
    _, _, nt = stax_network("convnet3")
    whole = build("nngp", arch="convnet3").kernel_fn
    blocked = build("nngp", arch="convnet3", block_size=2).kernel_fn
    assert "scan" not in str(jax.make_jaxpr(whole)(x1, x2, None))
    assert "scan" in str(jax.make_jaxpr(blocked)(x1, x2, None))

    def run(kernel):
        grad = jax.grad(lambda b: jnp.sum(jnp.sin(kernel(x1, b, None))))
        return jax.jit(lambda b: (kernel(x1, b, None), kernel(b, b, None), grad(b)))(x2)

    a, b = run(whole), run(blocked)
    assert rel(a[0], jax.jit(lambda u, v: nt(u, v, "nngp"))(x1, x2)) < 1e-5
    assert np.all(np.isfinite(a[2])) and np.abs(a[2]).max() > 0
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15)
    # K(x, x) computes pairs i < j and mirrors them; the general path computes all pairs.
    np.testing.assert_array_equal(a[1], np.asarray(a[1]).T)
    np.testing.assert_allclose(a[1], whole(x2, x2 + 0.0, None), rtol=1e-13)


@pytest.mark.slow
def test_switch_off_and_auto():
    assert resolve_implementation(architecture("convnet3")) == "fast"
    assert resolve_implementation(architecture("fc1"), "auto") == "fast"
    assert resolve_implementation(architecture("convnet"), "neural-tangents") == "neural-tangents"
    with pytest.raises(ValueError, match="unknown implementation"):
        resolve_implementation(architecture("fc1"), "cuda")
    assert _BY_NAME["ntk"].param("implementation").choices == ("auto", "fast", "neural-tangents")
    assert _BY_NAME["nngp"].param("implementation").default == "auto"
    x1, x2 = images(0, 3, (4, 4, 2)), images(1, 2, (4, 4, 2))
    ref = build("ntk", arch="fc1", implementation="neural-tangents")
    fast_k = build("ntk", arch="fc1")
    # neural-tangents' ReLU uses arctan2; the fast kernels never do (a polynomial asin instead).
    assert "atan2" in str(jax.make_jaxpr(ref.kernel_fn)(x1, x2, None))
    assert "atan2" not in str(jax.make_jaxpr(fast_k.kernel_fn)(x1, x2, None))
    assert rel(fast_k.kernel_fn(x1, x2, None), ref.kernel_fn(x1, x2, None)) < 1e-12


@pytest.mark.parametrize("arch,shape", [("convnet3", (8, 8, 1)), ("fc3", (8, 8, 1))])
@pytest.mark.slow
def test_compiled_memory_stays_within_budget(arch, shape, monkeypatch):
    """XLA's own accounting of the compiled kernels' temporaries, values and gradients, with every
    block recomputed in the backward pass (a device too small to keep the blocks' residuals; the
    kept case: tests/test_devices.py)."""
    monkeypatch.setitem(devices._CACHE, "info", devices.DeviceInfo("cpu", "cpu", 1, 2**20))
    x1, x2 = images(0, 40, shape, jnp.float32), images(1, 24, shape, jnp.float32)
    budget = 1.0 if arch == "fc3" else 8 * blocking.pair_bytes(arch, shape, 4) / 2**20
    k = build("ntk", arch=arch, memory_budget_mb=max(budget, 1.0)).kernel_fn
    # The kernel matrix and its cotangent are outputs, not working memory: allowed on top.
    extra = 2 * 40 * 40 * 4 / 2**20
    # pair_bytes was calibrated on jaxlib 0.5; newer XLA keeps more buffers live at once (1.28 MB
    # against a 1 MB budget on jaxlib 0.10.2 here), so newer releases get 1.5x room.
    slack = 1.0 if jax.__version_info__ < (0, 6) else 1.5
    for fn, args in ((jax.grad(lambda a, b: jnp.sum(k(a, b, None) ** 2)), (x1, x2)),
                     (jax.grad(lambda a: jnp.sum(k(a, a, None) ** 2)), (x1,))):
        temp = jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes / 2**20
        assert temp <= slack * max(budget, 1.0) + extra, (arch, temp, budget)
    with pytest.raises(ValueError, match="memory_budget_mb"):
        build("nngp", arch="convnet3", memory_budget_mb=1.0).kernel_fn(
            images(0, 2, (28, 28, 1), jnp.float32), images(1, 2, (28, 28, 1), jnp.float32), None)


def _conv4_parity_reference(x, h, w):
    """numpy, entry by entry: Σ over the 3x3 offsets of x(p + d, q + d) (zero outside), then the
    slab pairs by row/column parity of p and q, the odd last row/column dropped."""
    b = x.shape[0]
    x = x.reshape(b, h, w, h, w)
    xp = np.zeros((b, h + 2, w + 2, h + 2, w + 2))
    xp[:, 1:-1, 1:-1, 1:-1, 1:-1] = x
    conv = sum(xp[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    h2, w2 = h // 2, w // 2
    out = np.zeros((b, 4, 4, h2 * w2, h2 * w2))
    for a in range(4):
        for c in range(4):
            rows = conv[:, a // 2::2, a % 2::2][:, :h2, :w2]
            out[:, a, c] = rows[:, :, :, c // 2::2, c % 2::2][:, :, :, :h2, :w2].reshape(b, h2 * w2, h2 * w2)
    return out


@pytest.mark.parametrize("h,w", [(4, 4), (7, 7), (6, 5)])
@pytest.mark.slow
def test_conv_into_parity_layout(h, w):
    """The later layers' convolution straight into parity layout (``fast_position_convs.conv4_parity``), and its VJP
    (the adjoint: <conv(x), c> = <x, vjp(c)>), against an entry-by-entry numpy reference."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, h * w, h * w), jnp.float64))
    got = fast_position_convs.conv4_parity(jnp.asarray(x), h, w)
    ref = _conv4_parity_reference(x, h, w)
    assert got.shape == ref.shape and rel(got, ref) < 1e-14
    c = np.asarray(jax.random.normal(jax.random.PRNGKey(1), ref.shape, jnp.float64))
    _, vjp = jax.vjp(lambda x: fast_position_convs.conv4_parity(x, h, w), jnp.asarray(x))
    (x_bar,) = vjp(jnp.asarray(c))
    for _ in range(3):  # <conv(e), c> = <e, vjp(c)> for random directions e
        e = np.random.default_rng(_).normal(size=x.shape)
        assert abs(np.sum(_conv4_parity_reference(e, h, w) * c) - np.sum(e * np.asarray(x_bar))) < 1e-9
    diag = fast_position_convs.parity_diag(got)  # (B, 4, N): entry (a, I) of slab pair (a, a), position (I, I)
    assert np.allclose(diag, np.stack([np.diagonal(ref[:, a, a], axis1=1, axis2=2) for a in range(4)], 1))


@pytest.mark.parametrize("want_ntk,unroll", [(True, False), (False, True), (True, True)])
@pytest.mark.slow
def test_first_layer_vjp_matches_autodiff(monkeypatch, want_ntk, unroll):
    """The pooled first layer's custom VJP (transposed patch products) against plain autodiff of
    the same recursion written with one einsum, on random patches (no identical pairs: autodiff
    of sqrt is not finite there; the agreement tests with neural-tangents cover them)."""
    if unroll:  # the per-slab-pair broadcast products instead of the small-image einsum
        monkeypatch.setattr(fast_relu_pool, "UNROLL_MIN_POSITIONS", 1)
    bsq, shape = 0.01, (2, 4, 5, 6)  # (B, 4 parity slabs, T taps, N positions)
    pa = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float64)
    pb = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float64)

    def plain(pa, pb):
        k = bsq + jnp.einsum("bitn,bjtm->bijnm", pa, pb)
        va, vb = bsq + jnp.sum(pa * pa, axis=2), bsq + jnp.sum(pb * pb, axis=2)
        return fast_relu_pool.relu_pool_primal(k, None, va, vb, False, want_ntk)

    fast_fn = fast_first_layer.first_layer_fn.__wrapped__(bsq, False, want_ntk)
    weights = [jnp.cos(jnp.arange(2 * 6 * 6.0)).reshape(2, 6, 6), jnp.sin(jnp.arange(2 * 6 * 6.0)).reshape(2, 6, 6)]

    def loss(fn, a, b):
        return sum(jnp.sum(w * o) for w, o in zip(weights, fn(a, b)) if o is not None)

    for argnums in ((0, 1), (1,)):
        got = jax.grad(lambda a, b: loss(fast_fn, a, b), argnums)(pa, pb)
        ref = jax.grad(lambda a, b: loss(plain, a, b), argnums)(pa, pb)
        for g, r in zip(got, ref):
            assert rel(g, r) < 1e-12, (argnums, rel(g, r))



def _polynomial_read_nine_times(x, barrier):
    """A cheap polynomial of x, read by 9 shifted slices: what XLA would fuse 9 times over."""
    p = x
    for _ in range(6):
        p = p * x + 0.3
    p = barrier(p, x)
    return jnp.sum(sum(p[i:i + x.shape[0] - 9] for i in range(9)) ** 2)


def test_materialize_stores_its_array_once_and_is_the_identity():
    """``blocking.materialize`` must survive the installed XLA's simplifier: on jaxlib 0.10 a
    division by a broadcast 1 became a multiplication and the fast kernels re-derived their
    patches in every loop (NNGP value + gradient 4x slower). Checked on the compiled module: a
    fusion whose output is the whole polynomial exists (with the identity, none does)."""
    x = jnp.linspace(-1.0, 1.0, 1000, dtype=jnp.float32)

    def stored(barrier, fn):
        text = jax.jit(fn(functools.partial(_polynomial_read_nine_times, barrier=barrier)))
        text = text.lower(x).compile().as_text()
        entry = text[text.index("ENTRY"):]
        return any("f32[1000]" in line.split("=")[1] and "fusion(" in line for line in entry.splitlines()
                   if "=" in line)

    def identity(p, ref):
        return p

    for fn in (lambda f: f, jax.grad):  # the value alone, and in the forward pass of its gradient
        assert stored(blocking.materialize, fn)
    assert not stored(identity, lambda f: f)
    f_m = functools.partial(_polynomial_read_nine_times, barrier=blocking.materialize)
    f_i = functools.partial(_polynomial_read_nine_times, barrier=identity)
    np.testing.assert_array_equal(f_m(x), f_i(x))
    np.testing.assert_allclose(jax.grad(f_m)(x), jax.grad(f_i)(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jvp(f_m, (x,), (x,))[1], jax.jvp(f_i, (x,), (x,))[1], rtol=1e-6)
