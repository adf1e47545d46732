"""Fast exact NNGP and NTK of the built-in architectures, written directly in JAX.

The same infinite-width kernels that neural-tangents computes for the stax networks of
``architectures.networks.stax_network`` (NTK parameterization, ``W_std``/``b_std`` on every layer, 3x3 SAME
convolutions, 2x2 stride-2 VALID average pooling, Flatten and a Dense readout), computed with
the recursions below, organised so that XLA on CPU emits few, vectorised loops:

Notation: for a pair of images (x, y), ``K(p, q)`` is the covariance of a pre-activation at
position ``p`` of x and position ``q`` of y, ``Θ(p, q)`` the NTK, ``v_x(p) = K_xx(p, p)``.

* Input + first conv: ``K(p, q) = W²/(9C) Σ_taps x[p+t]·y[q+t] + b²`` (zero padding), i.e. the
  dot product of the scaled 3x3xC patches. ``Θ = K``.
* Conv (later layers): ``K'(p, q) = W²/9 Σ_{|d|≤1} K(p+d, q+d) + b²`` (zero padded, the same
  offset ``d`` on both sides), ``Θ' = K' + W²/9 Σ_d Θ(p+d, q+d)``.
* ReLU, with ``c = K/sqrt(v_x(p) v_y(q))`` (the cosine of the angle ``θ``)::

      G = (π − θ)/(2π) = 1/4 + asin(c)/(2π)           (E[relu'(u) relu'(u')])
      K ← sqrt(v_x v_y)·sqrt(1 − c²)/(2π) + G·K       (E[relu(u) relu(u')], arc-cosine kernel)
      Θ ← G·Θ

  ``asin`` is a polynomial (coefficients fitted once, see ``_ASIN``) so the whole update is
  multiply-add, ``sqrt`` and select, which XLA vectorises (``jnp.arctan2`` is a scalar libm call
  on CPU, ~20 ns per entry). The derivatives are given analytically (``jax.custom_jvp``):
  ``∂K'/∂K = G``, ``∂K'/∂v_x = s/(4π v_x)`` and ``∂G/∂K = 1/(2π s)``, ``∂G/∂v_x = −K/(4π v_x s)``
  with ``s = sqrt(v_x v_y − K²)``; where ``s = 0`` (identical directions) ``∂G`` is 0, as in
  neural-tangents.
* AvgPool 2x2: the mean over the 2x2 windows at both positions (16 terms); Flatten + Dense:
  ``K = W² mean_p K(p, p) + b²``, ``Θ = K + W² mean_p Θ(p, p)``.
* Dense / fc layers: the same updates on (n1, n2) matrices (no positions).

Gradients with respect to the images: the pooled first layer (the ``(HW)²`` part) has a custom
VJP (``_first_layer_vjp``) that recomputes its entries slab pair by slab pair from the patches and
maps their cotangent back through transposed patch products (matmuls), then the patches' slices
back to the images (pads and adds: no float64 convolution anywhere, SPEC §8). The later layers'
ReLU + pooling has a custom VJP too (``_relu_pool_vjp``), and the offset sum of the convolutions
is self-adjoint (``_conv4``); the unpooled ReLUs are differentiated through ``custom_jvp`` rules.

The variances ``v`` of every image at every ReLU are the diagonal of the image's own
position-position covariance, which pooling mixes, so each image's self-covariance is propagated
first ("self" pass); image pairs then read their variances from it. The self pass is the
diagonal of ``K(x, x)``, which is therefore never recomputed.

Speed (CPU): the first layer dominates (``(HW)²`` entries per pair against ``(HW/4)²`` for the
next). For pooled first layers, patches are reordered by the parity of their row and column, so
that each pooled output is the sum of 16 contiguous slabs; the patch products, the ReLU update and
the pooling then run as one fused loop per block of pairs without ever storing the ``(HW)²``
covariance. ``K(x, x)`` computes only the pairs ``i < j``. Pairs are processed in blocks under
``lax.map`` (+ ``jax.checkpoint``) whose size comes from a memory budget, and the blocks are
split across all local devices when there are several.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distillbench import devices
from distillbench_builtin.architectures.layout import check_image_shape, layout
from distillbench_builtin.kernels.blocking import (
    DEFAULT_BUDGET_MB,
    local_devices,
    map_blocks,
    materialize,
    pairs_per_block,
    replicated,
    residual_bytes,
)

_PI = math.pi
_HIGHEST = jax.lax.Precision.HIGHEST

# asin(x) = x·(1 + z·Q(z)), z = x², on 0 <= x <= 1/2, coefficients of (1, Q) in increasing powers.
# Least-squares Chebyshev fits of (asin(x)/x − 1)/z in float64 (numpy), degree 4 for float32
# (max error 6e-8 ~ float32 rounding) and 10 for float64 (max error 3e-15);
# tests/test_fast_kernels.py re-checks both against numpy's arcsin. |x| > 1/2 uses
# asin(x) = π/2 − 2·asin(sqrt((1 − x)/2)).
_ASIN = {
    4: (1.0, 0.16666672758679127, 0.07498809405636127, 0.045010680081498534,
        0.026494313308391616, 0.0382065115949783),
    8: (1.0, 0.16666666666624297, 0.07500000012068775, 0.04464284696541512, 0.0303823369017449,
        0.02236389129333241, 0.017456421503609754, 0.013163569388143115, 0.01534951251933611,
        -0.0006171764684551326, 0.021717621345261083, 0.006137103043882408),
}


def asin(c):
    """arcsin on [-1, 1] with multiply-add, one sqrt and selects (vectorisable), in c's dtype."""
    # Written so that the sqrt's value is used exactly once: XLA's CPU fusion then keeps the
    # whole ReLU update in one loop instead of storing the sqrt in a temporary array.
    coef = _ASIN[8 if c.dtype == jnp.float64 else 4]
    ac = jnp.abs(c)
    big = ac > 0.5
    z = jnp.where(big, (1 - ac) * 0.5, ac * ac)  # x² without the sqrt
    r = coef[-1]
    for a in coef[-2::-1]:
        r = r * z + a
    y = jnp.where(big, jnp.sqrt(z), ac) * r  # asin(x)
    one = jnp.ones((), c.dtype)
    scale = jnp.where(big, -2 * one, one) * jnp.where(c < 0, -one, one)
    offset = jnp.where(big, _PI / 2 * one, 0 * one) * jnp.where(c < 0, -one, one)
    return offset + scale * y


def _cosine(k, q1, q2, diag=None):
    """cos θ = k·q1·q2 (q = 1/sqrt(v)), clipped to [-1, 1]; snapped to ±1 within rounding of it
    (then sqrt(1 − c²) is exactly 0, as for identical directions), and to 1 where ``diag``."""
    eps = float(jnp.finfo(k.dtype).eps)
    c = jnp.clip(k * q1 * q2, -1, 1)
    c = jnp.where(jnp.abs(c) >= 1 - 4 * eps, jnp.sign(c), c)
    if diag is not None:
        c = jnp.where(diag, jnp.ones((), c.dtype), c)
    return c


def _inv_sqrt(v):
    ok = v > 0
    return jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, v, 1)), 0)


def _relu_parts(k, q1, q2, sv1, sv2, diag):
    """(G, s) of the ReLU update: q = 1/sqrt(v), sv = sqrt(v) (broadcastable to k)."""
    c = _cosine(k, q1, q2, diag)
    g = (_PI / 2 + asin(c)) * (1 / (2 * _PI))
    s = sv1 * sv2 * jnp.sqrt(jnp.maximum(1 - c * c, 0))
    return g, s


def _safe_ratio(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def _relu_tangents(k, t, v1, v2, dk, dt, dv1, dv2, diag, want_ntk: bool):
    """Tangents of K' = s/(2π) + G·K and Θ' = G·Θ (analytic; finite where s = 0).

    ``t``/``dt``: the NTK Θ before the ReLU and its tangent (unused unless ``want_ntk``).
    """
    g, s = _relu_parts(k, _inv_sqrt(v1), _inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2), diag)
    u = _safe_ratio(dv1, v1) + _safe_ratio(dv2, v2)
    dkp = g * dk + s * u * (1 / (4 * _PI))
    if not want_ntk:
        return dkp, None
    dg = (dk - 0.5 * k * u) * _safe_ratio(jnp.ones((), s.dtype), s) * (1 / (2 * _PI))
    return dkp, g * dt + t * dg


# -- ReLU followed by 2x2 pooling, on covariances in parity layout -----------------------------
#
# A (h, w) grid is split by the parity (a, b) of row and column into 4 slabs of (h/2)·(w/2)
# positions; a position-position tensor becomes (B, 4, 4, N, N) (slab pairs x positions). The
# 2x2 average pool at both positions is then the mean of the 16 slab pairs, all contiguous, and
# the ReLU + pool runs as one vectorised loop over the (B, N, N) output.


#: Slab sizes (positions per parity slab) from which the ReLU + pool loops are unrolled over the
#: 16 slab pairs (fast loops, long compiles); smaller layers use one reduction (compiled once).
UNROLL_MIN_POSITIONS = 64


def _slab_relu_parts(k, va, vb, self_pairs: bool):
    """(G, s) of the ReLU update of every entry of (B, 4, 4, N, N) slab pairs, variances (B, 4, N)."""
    n = va.shape[-1]
    diag = None
    if self_pairs:
        diag = jnp.eye(4, dtype=bool)[:, :, None, None] & jnp.eye(n, dtype=bool)
    v1, v2 = va[:, :, None, :, None], vb[:, None, :, None, :]
    return _relu_parts(k, _inv_sqrt(v1), _inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2), diag)


def _relu_pool_primal(k, t, va, vb, self_pairs: bool, want_ntk: bool):
    """Mean over the 16 slab pairs of the ReLU update of (K, Θ), each (B, 4, 4, N, N).

    ``t``: the NTK Θ, or None when Θ = K (first layer). va, vb: (B, 4, N).
    Returns (nngp, ntk or None), (B, N, N) each. From ``UNROLL_MIN_POSITIONS`` on, the mean is
    written as 16 slices of the element-wise update, which XLA fuses into one vectorised loop
    over the (B, N, N) output (a reduction over the slab axes is a slower loop).
    """
    n = va.shape[-1]
    g, s = _slab_relu_parts(k, va, vb, self_pairs)

    def slab_sum(x):  # (..., B, 4, 4, N, N) -> (..., B, N, N)
        if n < UNROLL_MIN_POSITIONS:
            return jnp.mean(x, axis=(x.ndim - 4, x.ndim - 3))
        slabs = _split(x, (x.ndim - 4, x.ndim - 3))
        return sum(slabs[i][j] for i in range(4) for j in range(4)) * (1 / 16)

    if not want_ntk:
        return materialize(slab_sum(s * (1 / (2 * _PI)) + g * k), va), None
    if t is None:  # Θ = K: ntk = Σ G·K, nngp = Σ G·K + Σ s/(2π)
        both = materialize(jnp.stack([slab_sum(g * k), slab_sum(s)]), va)
        return both[0] + both[1] * (1 / (2 * _PI)), both[0]
    # G multiplies both K and Θ: as one product with [K; Θ] stacked, so that G is used once
    # (XLA would otherwise store its sqrt to share it, and run several times slower).
    gkt = slab_sum(g[None] * jnp.stack([k, t]))
    out = materialize(jnp.concatenate([gkt, slab_sum(s)[None]]), va)
    return out[0] + out[2] * (1 / (2 * _PI)), out[1]


def _split(x, axes):
    """Nested lists of ``x`` sliced at every index of ``axes`` (those axes dropped)."""
    if not axes:
        return x
    axis, rest = axes[0], tuple(a - 1 for a in axes[1:])
    return [_split(jax.lax.index_in_dim(x, i, axis, keepdims=False), rest)
            for i in range(x.shape[axis])]


@functools.lru_cache(maxsize=None)
def _first_layer_fn(bsq: float, self_pairs: bool, want_ntk: bool):
    """Pooled first layer (K, Θ) from patches in parity layout (B, 4, T, N) -> (B, N, N).

    The patch products are written as broadcast multiply-adds so that XLA fuses them with the
    ReLU and the pooling: the (HW)² first-layer covariance is never stored.
    """

    def core(pa, pb):
        va = bsq + jnp.sum(pa * pa, axis=2)
        vb = bsq + jnp.sum(pb * pb, axis=2)
        if va.shape[-1] < UNROLL_MIN_POSITIONS:  # small images: compact code
            k = jnp.asarray(bsq, pa.dtype)
            for t in range(pa.shape[2]):
                k = k + pa[:, :, None, t, :, None] * pb[:, None, :, t, None, :]
            return _relu_pool_primal(k, None, va, vb, self_pairs, want_ntk)
        # Rows and columns as plain slices + reshapes (cheap to trace; jnp indexing is not).
        rows = _split(pa[..., None], (1, 2))  # [i][t] -> (B, N, 1)
        cols = _split(pb[:, :, :, None, :], (1, 2))  # [j][t] -> (B, 1, N)
        q_rows = _split(_inv_sqrt(va)[..., None], (1,))
        s_rows = _split(jnp.sqrt(va)[..., None], (1,))
        q_cols = _split(_inv_sqrt(vb)[:, :, None, :], (1,))
        s_cols = _split(jnp.sqrt(vb)[:, :, None, :], (1,))
        eye = jnp.eye(va.shape[-1], dtype=bool) if self_pairs else None
        f, gk, s = [], [], []
        for i in range(4):
            for j in range(4):
                # Per slab pair, so that nothing of (B, 4, 4, N, N) size is ever stored.
                k = jnp.asarray(bsq, pa.dtype)
                for t in range(pa.shape[2]):
                    k = k + rows[i][t] * cols[j][t]
                g, sq = _relu_parts(k, q_rows[i], q_cols[j], s_rows[i], s_cols[j],
                                    eye if i == j else None)
                if want_ntk:
                    gk.append(g * k)
                    s.append(sq)
                else:
                    f.append(sq * (1 / (2 * _PI)) + g * k)
        if not want_ntk:
            return materialize(sum(f) * (1 / 16), va), None
        both = materialize(jnp.stack([sum(gk), sum(s)], axis=1) * (1 / 16), va)
        return both[:, 0] + both[:, 1] * (1 / (2 * _PI)), both[:, 0]

    # A custom VJP rather than a JVP: reverse mode would otherwise transpose the tangent map,
    # materializing the whole (B, 4, 4, N, N) covariance, its tangent and their coefficients;
    # ``_first_layer_vjp`` recomputes the entries slab pair by slab pair and maps the cotangent
    # back with transposed patch products.
    first_layer = jax.custom_vjp(core)
    first_layer.defvjp(lambda pa, pb: (core(pa, pb), (pa, pb)),
                       functools.partial(_first_layer_vjp, bsq, self_pairs, want_ntk))
    return first_layer


def _patch_product(bsq, a, b):
    """b² + a·b over the taps as broadcast multiply-adds, (B, T, N) x (B, T, M) -> (B, N, M):
    XLA fuses them into the loop that consumes the product (never stored)."""
    k = jnp.asarray(bsq, a.dtype)
    for t in range(a.shape[1]):
        k = k + a[:, t, :, None] * b[:, t, None, :]
    return k


def _take(x, i):
    return jax.lax.dynamic_index_in_dim(x, i, 1, keepdims=False)


def _add_at(x, i, y):
    """x with y added to its slab i (axis 1)."""
    return jax.lax.dynamic_update_index_in_dim(x, _take(x, i) + y, i, 1)


def _first_layer_vjp(bsq, self_pairs, want_ntk, res, ct):
    """Cotangents of the patches (pa, pb) from those of the pooled first layer's (K, Θ).

    Per entry of the (B, 4, 4, N, N) first-layer covariance k = b² + pa·pb (v = b² + |p|²), with
    s = sqrt(v_a v_b − k²) and the pooled outputs K = mean(s/(2π) + G·k), Θ = mean(G·k)::

        ∂K/∂k = G,   ∂Θ/∂k = G + k/(2π s),   ∂K/∂v_a = s/(4π v_a),   ∂Θ/∂v_a = −k²/(4π v_a s)

    (∂G = 0 where s = 0, as in the JVP of the later layers). The cotangent k̄ of k goes back to
    the patches as the transposed patch products p̄a = Σ k̄·pb and p̄b = Σ k̄ᵀ·pa (matmuls over the
    second image's positions), v̄ as 2·v̄·p. The entries are recomputed here (their inputs, the
    patches, are the only residuals): nothing of (B, 4, 4, N, N) size is kept from the forward.
    A loop over the 16 slab pairs keeps each step's (B, N, N) arrays cache-sized (unrolled, XLA
    would compute all 16 before the products). Only the cotangents that are used get computed:
    for K(targets, support), XLA drops p̄a of the targets.
    """
    pa, pb = res
    ck, ct_ = ct  # ct_: None for the NNGP alone
    n = pa.shape[-1]
    va = bsq + jnp.sum(pa * pa, axis=2)  # (B, 4, N)
    vb = bsq + jnp.sum(pb * pb, axis=2)
    a = ck * (1 / 16)  # the pooling's mean over the 16 slab pairs
    b = None if ct_ is None else ct_ * (1 / 16)
    eye = jnp.eye(n, dtype=bool) if self_pairs else None
    roots_a, roots_b = ((_inv_sqrt(v), jnp.sqrt(v)) for v in (va, vb))  # 1/sqrt(v), sqrt(v)

    def slab_pair(carry, ij):
        dpa, dpb, ra, rb = carry
        i, j = ij // 4, ij % 4
        # The slab's slices are stored before the (B, N, N) loops read them: fused into those
        # loops, the dynamic slices ran ~5x slower (jaxlib 0.10).
        xa, xb = materialize(_take(pa, i), pa), materialize(_take(pb, j), pb)  # (B, T, N)
        k = (bsq + jnp.einsum("btn,btm->bnm", xa, xb, precision=_HIGHEST)
             if n < UNROLL_MIN_POSITIONS else _patch_product(bsq, xa, xb))
        q1, s1 = (materialize(_take(u, i), u)[:, :, None] for u in roots_a)
        q2, s2 = (materialize(_take(u, j), u)[:, None, :] for u in roots_b)
        g, s = _relu_parts(k, q1, q2, s1, s2, None if eye is None else eye & (i == j))
        if b is None:
            kbar = a * g
            r = a * s * (1 / (4 * _PI))
        else:
            k_s = k * _safe_ratio(jnp.ones((), s.dtype), s)
            kbar = (a + b) * g + b * k_s * (1 / (2 * _PI))
            r = (a * s - b * k * k_s) * (1 / (4 * _PI))
        # kbar and r are not materialized together: XLA fuses r into the reductions and stores
        # kbar alone for the matmuls (measured 0.73x the time of the fused first layer + VJP).
        rows, cols = _row_and_column_sums(r, as_products=b is None)
        ra, rb = _add_at(ra, i, rows), _add_at(rb, j, cols)
        dpa = _add_at(dpa, i, jnp.einsum("bnm,btm->btn", kbar, xb, precision=_HIGHEST))
        dpb = _add_at(dpb, j, jnp.einsum("bnm,btn->btm", kbar, xa, precision=_HIGHEST))
        return (dpa, dpb, ra, rb), None

    zeros = jnp.zeros_like(pa), jnp.zeros_like(pb), jnp.zeros_like(va), jnp.zeros_like(vb)
    (dpa, dpb, ra, rb), _ = jax.lax.scan(slab_pair, zeros, jnp.arange(16))
    dpa = dpa + 2 * _safe_ratio(ra, va)[:, :, None] * pa
    dpb = dpb + 2 * _safe_ratio(rb, vb)[:, :, None] * pb
    return dpa, dpb


def _row_and_column_sums(r, as_products: bool):
    """(Σ_m r[:, n, m], Σ_n r[:, n, m]) of (B, N, N); ``as_products``: as matrix-vector products.

    For the NNGP's variance term: jaxlib 0.10 hands a plain sum to YNNPACK together with the
    loop that computes r, ~4x slower (value + support gradient 0.6-0.9x the time with the
    products; 1.0 on jaxlib 0.5). For the NTK plain sums are faster on both (0.87-0.93x).
    """
    if not as_products:
        return jnp.sum(r, axis=2), jnp.sum(r, axis=1)
    ones = jnp.ones(r.shape[-1], r.dtype)
    return (jnp.einsum("bnm,m->bn", r, ones, precision=_HIGHEST),
            jnp.einsum("bnm,n->bm", r, ones, precision=_HIGHEST))


def _with_jvp(core, tangents):
    """``core`` with its derivative given by ``tangents(primals, tangent_inputs)`` (analytic)."""
    fn = jax.custom_jvp(core)
    fn.defjvp(lambda primals, dots: (core(*primals), tangents(primals, dots)))
    return fn


@functools.lru_cache(maxsize=None)
def _relu_pool_fn(self_pairs: bool, want_ntk: bool):
    """ReLU + 2x2 pool of (K, Θ) in parity layout (B, 4, 4, N, N), variances (B, 4, N).

    Θ is None for the NNGP alone. A custom VJP (``_relu_pool_vjp``): reverse mode through the
    JVP rule would linearize and then transpose the (B, 4, 4, N, N) tangent map.
    """

    def core(k, t, va, vb):
        return _relu_pool_primal(k, t, va, vb, self_pairs, want_ntk)

    fn = jax.custom_vjp(core)
    fn.defvjp(lambda k, t, va, vb: (core(k, t, va, vb), (k, t, va, vb)),
              functools.partial(_relu_pool_vjp, self_pairs))
    return fn


def _relu_pool_vjp(self_pairs, res, ct):
    """Cotangents of (K, Θ, v_a, v_b) from those of the pooled ReLU's outputs (nngp, ntk).

    Per entry, with G and s = sqrt(v_a v_b − K²) as in ``_first_layer_vjp``::

        ∂K'/∂K = G,  ∂K'/∂v_a = s/(4π v_a),  ∂Θ'/∂Θ = G,  ∂Θ'/∂K = Θ/(2π s),  ∂Θ'/∂v_a = −ΘK/(4π v_a s)

    (∂G = 0 where s = 0), each divided by 16 for the mean over the slab pairs.
    """
    k, t, va, vb = res
    a, b = ct
    g, s = _slab_relu_parts(k, va, vb, self_pairs)
    a = a[:, None, None] * (1 / 16)
    if b is None:
        kbar, tbar, r = a * g, None, a * s
    else:
        b = b[:, None, None] * (1 / 16)
        t_s = t * _safe_ratio(jnp.ones((), s.dtype), s)
        kbar, tbar = a * g + b * t_s * (1 / (2 * _PI)), b * g
        r = a * s - b * k * t_s
    r = r * (1 / (4 * _PI))
    return (kbar, tbar, _safe_ratio(jnp.sum(r, axis=(2, 4)), va),
            _safe_ratio(jnp.sum(r, axis=(1, 3)), vb))


@functools.lru_cache(maxsize=None)
def _relu_fn(self_pairs: bool, want_ntk: bool):
    """ReLU of (K, Θ) without pooling, (B, N, N) each, variances (B, N).

    Returns K' (B, N, N) for the NNGP, or [K'; Θ'] stacked as (2B, N, N) for the NTK (one array:
    see ``_relu_pool_primal``; the convolution that follows takes both at once).
    """

    def diag_mask(n):
        return jnp.eye(n, dtype=bool) if self_pairs else None

    def core(k, t, va, vb):
        v1, v2 = va[:, :, None], vb[:, None, :]
        g, s = _relu_parts(k, _inv_sqrt(v1), _inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2),
                           diag_mask(k.shape[-1]))
        kp = s * (1 / (2 * _PI)) + g * k
        return materialize(jnp.concatenate([kp, g * t]) if want_ntk else kp, va)

    def tangents(primals, dots):
        (k, t, va, vb), (dk, dt, dva, dvb) = primals, dots
        dkp, dtp = _relu_tangents(k, t, va[:, :, None], vb[:, None, :], dk, dt, dva[:, :, None],
                                  dvb[:, None, :], diag_mask(k.shape[-1]), want_ntk)
        return materialize(jnp.concatenate([dkp, dtp]) if want_ntk else dkp, va, tangent=True)

    return _with_jvp(core, tangents)


@functools.lru_cache(maxsize=None)
def _relu_fc_fn(with_diag: bool):
    """ReLU update of (n1, n2) matrices (fc archs): (K, G) from K, variances (n1, 1), (1, n2) and,
    if ``with_diag``, a boolean mask of identical pairs."""

    def core(k, v1, v2, diag=None):
        g, s = _relu_parts(k, _inv_sqrt(v1), _inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2), diag)
        return s * (1 / (2 * _PI)) + g * k, g

    @jax.custom_jvp
    def relu(k, v1, v2, *diag):
        return core(k, v1, v2, *diag)

    @relu.defjvp
    def relu_jvp(primals, tangents):
        k, v1, v2, *diag = primals
        dk, dv1, dv2 = tangents[:3]
        # dG through the NTK formula: Θ' = G·Θ with Θ = 1, dΘ = 0 gives dΘ' = dG.
        dkp, dg = _relu_tangents(k, jnp.ones_like(k), v1, v2, dk, jnp.zeros_like(k), dv1, dv2,
                                 diag[0] if diag else None, True)
        return core(k, v1, v2, *diag), (dkp, dg)

    return relu


# -- linear maps on (B, N, N) position-position tensors, N = h·w -----------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _conv4(x, h, w):
    """Σ over the 3x3 offsets d of x(p + d, q + d), zero padded: (B, hw, hw) -> (B, hw, hw).

    Self-adjoint (the same symmetric offsets on both positions, zero padding on both), so its
    VJP is the same sum applied to the cotangent (autodiff would transpose each slice into a pad
    of the whole array: ~2x slower).
    """
    return _conv4_sum(x, h, w)


_conv4.defvjp(lambda x, h, w: (_conv4_sum(x, h, w), None),
              lambda h, w, _, ct: (_conv4_sum(ct, h, w),))


def _conv4_sum(x, h, w):
    """``_conv4``'s sum: two separable passes, each a sum of 3 slices whose last axis is the
    whole flattened second position (contiguous, so XLA vectorises them); column wrap-around is
    masked."""
    b, n = x.shape[0], h * w
    x = x.reshape(b, h, w, n)
    xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (w, w)))
    y = sum(xp[:, 1 + d:1 + d + h, :, w + d * w:w + d * w + n] for d in (-1, 0, 1))
    yp = jnp.pad(y, ((0, 0), (0, 0), (1, 1), (1, 1)))
    col = np.arange(n) % w
    out = 0
    for d in (-1, 0, 1):
        mask = jnp.asarray(((col + d >= 0) & (col + d < w)).astype(np.float32), x.dtype)
        out = out + yp[:, :, 1 + d:1 + d + w, 1 + d:1 + d + n] * mask
    return out.reshape(b, n, n)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _conv4_parity(x, h, w):
    """``_conv4(x)`` in parity layout, in one loop: (B, hw, hw) -> (B, 4, 4, N, N), slab pairs by
    the row/column parity of both positions, N = (h//2)(w//2) (an odd last row/column is dropped,
    as VALID pooling does).

    Each slab pair of the output is the sum of 9 stride-2 slices of the zero-padded input (the
    offsets d on both positions), so neither the convolved (B, hw, hw) array nor its transpose
    into parity layout is stored (convnet3 28x28 float64, against ``_conv4`` then a transpose,
    ``benchmarks/ab_fast_exact.py``: NTK values 0.81x the time, value + support gradient 0.83x;
    NNGP 0.94x and 0.84x). VJP: the transpose of the layout change, then the (self-adjoint)
    offset sum. Callers store the result (``materialize``): fused into its consumer, the 16-way
    concatenation of slabs ran 2.5x slower than the old path.
    """
    return _conv4_parity_sum(x, h, w)


_conv4_parity.defvjp(lambda x, h, w: (_conv4_parity_sum(x, h, w), None),
                     lambda h, w, _, ct: (_conv4_sum(_from_parity(ct, h, w), h, w),))


def _conv4_parity_sum(x, h, w):
    b, h2, w2 = x.shape[0], h // 2, w // 2
    xp = jnp.pad(x.reshape(b, h, w, h, w), ((0, 0), (1, 1), (1, 1), (1, 1), (1, 1)))

    def strided(r1, c1, r2, c2):  # xp[:, r1::2, c1::2, r2::2, c2::2], h2 x w2 x h2 x w2 of them
        return jax.lax.slice(xp, (0, r1, c1, r2, c2),
                             (b, r1 + 2 * h2 - 1, c1 + 2 * w2 - 1, r2 + 2 * h2 - 1, c2 + 2 * w2 - 1),
                             (1, 2, 2, 2, 2))

    slabs = [sum(strided(1 + ar + dy, 1 + ac + dx, 1 + br + dy, 1 + bc + dx)
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1))
             for ar in (0, 1) for ac in (0, 1) for br in (0, 1) for bc in (0, 1)]
    out = jnp.stack(slabs, axis=1)  # (B, 16, h2, w2, h2, w2), slab pairs (a, b) row-major
    return out.reshape(b, 4, 4, h2 * w2, h2 * w2)


def _from_parity(x, h, w):
    """The transpose of the parity layout: (B, 4, 4, N, N) -> (B, hw, hw), zeros at a dropped odd
    last row/column."""
    b, h2, w2 = x.shape[0], h // 2, w // 2
    x = x.reshape(b, 2, 2, 2, 2, h2, w2, h2, w2).transpose(0, 5, 1, 6, 2, 7, 3, 8, 4)
    x = x.reshape(b, 2 * h2, 2 * w2, 2 * h2, 2 * w2)
    x = jnp.pad(x, ((0, 0), (0, h - 2 * h2), (0, w - 2 * w2), (0, h - 2 * h2), (0, w - 2 * w2)))
    return x.reshape(b, h * w, h * w)


def _parity_diag(x):
    """The position-position diagonal of (B, 4, 4, N, N) in parity layout: (B, 4, N)."""
    d = jnp.diagonal(x, axis1=3, axis2=4)  # (B, 4, 4, N)
    return jnp.moveaxis(jnp.diagonal(d, axis1=1, axis2=2), -1, 1)


def _diag(x):
    return jnp.diagonal(x, axis1=1, axis2=2)


# -- per-architecture plans ---------------------------------------------------------------------


def _conv_plan(arch: str, image_shape):
    """[(pool, h, w)] per conv block (h, w = the block's conv output size)."""
    _, n_plain, n_pool = layout(arch)
    h, w = image_shape[0], image_shape[1]
    plan = []
    for i in range(n_plain + n_pool):
        pool = i >= n_plain
        plan.append((pool, h, w))
        if pool:
            h, w = h // 2, w // 2
    return plan


def _patches(x, w_std: float, parity: bool):
    """Scaled 3x3 SAME patches: (n, 4, T, N/4) in parity layout if ``parity``, else (n, 1, T, N).

    ``k = b² + patches_x · patches_y`` is the first conv layer's covariance (T = 9·C taps).
    """
    n, h, w, c = x.shape
    # Shifted slices of the zero-padded images, not ``conv_general_dilated_patches``: no float64
    # convolution forward or backward (SPEC §8), and the gradient is pads and adds. Materialized
    # (see ``blocking.materialize``): the huge fused first-layer loop then reads plain arrays instead of
    # re-deriving every tap from the image (slow to compile).
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    p = jnp.concatenate([xp[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=3)
    p = materialize(p * (w_std / math.sqrt(9 * c)), x)  # (n, h, w, 9c)
    if not parity:
        return jnp.moveaxis(p, 3, 1).reshape(n, 1, 9 * c, h * w)
    h2, w2 = h // 2, w // 2
    p = p[:, : 2 * h2, : 2 * w2].reshape(n, h2, 2, w2, 2, 9 * c)
    return p.transpose(0, 2, 4, 5, 1, 3).reshape(n, 4, 9 * c, h2 * w2)


def _conv_pairs(pa, pb, vars_a, vars_b, plan, w2: float, bsq: float, want_ntk: bool,
                self_pairs: bool):
    """Kernel of B image pairs (patches pa, pb) through the conv blocks of ``plan`` + readout.

    ``vars_a/vars_b``: per conv block after the first, the pre-ReLU variances of each side,
    (B, 4, N) in parity layout for pooled blocks, else (B, hw) (ignored when ``self_pairs``: then
    read from the diagonal and returned).
    Returns (nngp (B,), ntk (B,) or None, [variances per later block]).

    State between blocks: K (B, N, N), or for the NTK [K; Θ] stacked as (2B, N, N).
    """
    nb = pa.shape[0]
    pool0, h, w = plan[0]
    if pool0:
        nngp, ntk = _first_layer_fn(bsq, self_pairs, want_ntk)(pa, pb)
        state = jnp.concatenate([nngp, ntk]) if want_ntk else nngp
        h, w = h // 2, w // 2
    else:
        a, b = pa[:, 0], pb[:, 0]  # (B, T, N)
        k = bsq + jnp.einsum("btn,btm->bnm", a, b, precision=_HIGHEST)
        va, vb = bsq + jnp.sum(a * a, axis=1), bsq + jnp.sum(b * b, axis=1)
        state = _relu_fn(self_pairs, want_ntk)(k, k, va, vb)
    found = []
    for i, (pool, ch, cw) in enumerate(plan[1:]):
        assert (ch, cw) == (h, w)
        if pool:
            # Convolved straight into parity layout; the convolution and then [K; Θ] are stored
            # (see blocking.materialize): the ReLU loop then reads plain arrays instead of
            # re-deriving each entry through the convolution.
            conv = w2 / 9 * materialize(_conv4_parity(state, h, w), state)  # (B|2B, 4, 4, N, N)
            k = conv[:nb] + bsq
            if self_pairs:
                va = vb = _parity_diag(k)
                found.append(va)
            else:
                va, vb = vars_a[i], vars_b[i]
            kt = materialize(jnp.concatenate([k, k + conv[nb:]]) if want_ntk else k, va)
            nngp, ntk = _relu_pool_fn(self_pairs, want_ntk)(
                kt[:nb], kt[nb:] if want_ntk else None, va, vb)
            state = jnp.concatenate([nngp, ntk]) if want_ntk else nngp
            h, w = h // 2, w // 2
            continue
        conv = w2 / 9 * _conv4(state, h, w)
        k = conv[:nb] + bsq
        t = k + conv[nb:] if want_ntk else k
        if self_pairs:
            va = vb = _diag(k)
            found.append(va)
        else:
            va, vb = vars_a[i], vars_b[i]
        state = _relu_fn(self_pairs, want_ntk)(k, t, va, vb)
    out_nngp = w2 * jnp.mean(_diag(state[:nb]), axis=1) + bsq
    out_ntk = out_nngp + w2 * jnp.mean(_diag(state[nb:]), axis=1) if want_ntk else None
    return out_nngp, out_ntk, found


def _fc_kernels(a, b, n_hidden: int, w2: float, bsq: float, want_ntk: bool, diag):
    """fc<n_hidden> (NNGP, NTK) of flattened inputs a (n1, d), b (n2, d); ``diag``: (n1, n2)
    mask of identical pairs (c = 1 exactly there), or None."""
    d = a.shape[1]
    k = w2 / d * jnp.matmul(a, b.T, precision=_HIGHEST) + bsq
    va = w2 / d * jnp.sum(a * a, axis=1) + bsq
    vb = w2 / d * jnp.sum(b * b, axis=1) + bsq
    ntk = k
    relu = _relu_fc_fn(diag is not None)
    for _ in range(n_hidden):
        f, g = relu(k, va[:, None], vb[None, :], diag) if diag is not None else relu(k, va[:, None], vb[None, :])
        k = w2 * f + bsq
        if want_ntk:
            ntk = k + w2 * g * ntk
        va, vb = w2 * va / 2 + bsq, w2 * vb / 2 + bsq  # E[relu(u)²] = v/2
    return k, (ntk if want_ntk else None)


class _Spec(NamedTuple):
    """What one fast kernel computes: ``get`` of ``arch`` with these hyperparameters and blocks."""

    arch: str
    get: str  # nngp, ntk or both
    w_std: float
    block_size: int | None
    budget: float  # MiB per block
    residual_mb: float  # MiB of residuals reverse mode may keep across blocks

    @property
    def want_ntk(self) -> bool:
        return self.get != "nngp"

    @property
    def w2(self) -> float:
        return float(self.w_std) ** 2

    def pick(self, nngp, ntk, axis=0):
        """``get`` of the pair; ``both``: NNGP and NTK stacked on ``axis``, one computation."""
        if self.get == "both":
            return jnp.stack([nngp, ntk], axis=axis)
        return ntk if self.want_ntk else nngp

    def last_to_front(self, x):
        """Blocks stack ``both`` last (the block axis leads); callers want it first."""
        return jnp.moveaxis(x, -1, 0) if self.get == "both" else x


def _prepare(arch: str, x1, x2):
    dtype = jnp.result_type(x1, x2)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    x1, x2 = jnp.asarray(x1, dtype), jnp.asarray(x2, dtype)
    check_image_shape(arch, x1.shape)
    check_image_shape(arch, x2.shape)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"image shapes differ: {x1.shape[1:]} vs {x2.shape[1:]}")
    return x1, x2


def _block_limits(spec: _Spec, n1: int, n2: int, image_shape, itemsize: int) -> tuple[int, int]:
    """(pairs per block of the pairwise pass, images per block of the self pass).

    The budget is split between the two passes: XLA may keep a block of each alive at once
    (e.g. when it schedules a recomputation of the self pass early in the backward pass).
    """
    per = pairs_per_block(spec.arch, image_shape, itemsize, spec.budget)
    images = max(1, per // 2)
    pairs = max(1, per - images)
    if spec.block_size is not None:
        return min(pairs, min(n1, spec.block_size) * min(n2, spec.block_size)), min(images, spec.block_size)
    return pairs, images


def _keeps_residuals(spec: _Spec, n_pairs: int, n_images: int, image_shape, itemsize: int) -> bool:
    """Whether reverse mode keeps the residuals of every block of a conv kernel's two passes
    (``n_pairs`` pairs, ``n_images`` self-pass images): when they fit in ``spec.residual_mb``.

    Kept, the backward pass skips recomputing each block's forward (0.8-0.9x the time of value +
    support gradient, convnet3 NTK, 28x28x1, 10x20 block; benchmarks/README.md).
    """
    need = (n_pairs * residual_bytes(spec.arch, image_shape, itemsize, "pairs")
            + n_images * residual_bytes(spec.arch, image_shape, itemsize, "images"))
    return need <= spec.residual_mb * 2**20


def _fc(spec: _Spec, bsq: float, x1, x2, same: bool):
    a, b = x1.reshape(x1.shape[0], -1), x2.reshape(x2.shape[0], -1)
    n1, n2 = a.shape[0], b.shape[0]
    entries, _ = _block_limits(spec, n1, n2, x1.shape[1:], x1.dtype.itemsize)
    rows = max(1, entries // n2) if spec.block_size is None else min(spec.block_size, max(1, entries // n2))
    n_dense = layout(spec.arch)[0]

    def fn(block, b):
        idx, a_rows = block
        diag = (idx[:, None] == jnp.arange(n2)[None, :]) if same else None
        k, ntk = _fc_kernels(a_rows, b, n_dense, spec.w2, bsq, spec.want_ntk, diag)
        return spec.pick(k, ntk, axis=-1)

    idx = jnp.arange(n1, dtype=jnp.int32)
    return spec.last_to_front(map_blocks(fn, (idx, a), b, rows, local_devices()))


def _self_pass(spec: _Spec, bsq: float, x, plan, block: int, n_pairs: int, keep: bool):
    """(nngp_ii, ntk_ii, [variances per later conv block]) of every image, blocked.

    ``n_pairs``: pairs of the pass that follows; when both fit in one block each but not
    together, the self pass is recomputed in the backward pass instead of kept (unless ``keep``:
    the residuals of all blocks fit, see ``_keeps_residuals``).
    """

    def fn(xb, _):
        p = _patches(xb, spec.w_std, plan[0][0])
        return _conv_pairs(p, p, None, None, plan, spec.w2, bsq, spec.want_ntk, True)

    remat = x.shape[0] + min(n_pairs, block) > block
    return map_blocks(fn, x, (), block, local_devices(), remat, keep_residuals=keep)


def _cross_pass(spec: _Spec, bsq: float, x1, x2, vars1, vars2, idx1, idx2, plan, block: int,
                keep: bool):
    """Kernel values of the pairs (idx1[k], idx2[k]), blocked; patches made per block; ``keep``:
    the blocks' residuals are kept for reverse mode instead of recomputed."""

    def fn(ij, consts):
        (i, j), (x1, x2, vars1, vars2) = ij, consts
        pa = _patches(jnp.take(x1, i, axis=0), spec.w_std, plan[0][0])
        pb = _patches(jnp.take(x2, j, axis=0), spec.w_std, plan[0][0])
        va = [jnp.take(v, i, axis=0) for v in vars1]
        vb = [jnp.take(v, j, axis=0) for v in vars2]
        nngp, ntk, _ = _conv_pairs(pa, pb, va, vb, plan, spec.w2, bsq, spec.want_ntk, False)
        return spec.pick(nngp, ntk, axis=-1)

    idx = (jnp.asarray(idx1, jnp.int32), jnp.asarray(idx2, jnp.int32))
    return map_blocks(fn, idx, (x1, x2, vars1, vars2), block, local_devices(), keep_residuals=keep)


def _conv_cross(spec: _Spec, bsq: float, x1, x2):
    n1, n2 = x1.shape[0], x2.shape[0]
    plan = _conv_plan(spec.arch, x1.shape[1:])
    pairs, images = _block_limits(spec, n1, n2, x1.shape[1:], x1.dtype.itemsize)
    keep = _keeps_residuals(spec, n1 * n2, n1 + n2, x1.shape[1:], x1.dtype.itemsize)
    # One self pass over both sets (one compiled pass instead of two).
    found = _self_pass(spec, bsq, jnp.concatenate([x1, x2]), plan, images, n1 * n2, keep)[2]
    vars1, vars2 = [v[:n1] for v in found], [v[n1:] for v in found]
    i, j = np.meshgrid(np.arange(n1), np.arange(n2), indexing="ij")
    vals = _cross_pass(spec, bsq, x1, x2, vars1, vars2, i.ravel(), j.ravel(), plan, pairs, keep)
    return spec.last_to_front(vals.reshape(n1, n2, *vals.shape[1:]))


def _conv_sym(spec: _Spec, bsq: float, x):
    n = x.shape[0]
    plan = _conv_plan(spec.arch, x.shape[1:])
    n_pairs = n * (n - 1) // 2
    pairs, images = _block_limits(spec, n, n, x.shape[1:], x.dtype.itemsize)
    keep = _keeps_residuals(spec, n_pairs, n, x.shape[1:], x.dtype.itemsize)
    nngp_ii, ntk_ii, vars_ = _self_pass(spec, bsq, x, plan, images, n_pairs, keep)
    diag = spec.pick(nngp_ii, ntk_ii)  # (n,) or (2, n)
    i, j = np.triu_indices(n, 1)
    if len(i) == 0:
        return diag[..., :, None] * jnp.eye(n, dtype=x.dtype)
    vals = _cross_pass(spec, bsq, x, x, vars_, vars_, i, j, plan, pairs, keep)  # (P,) or (P, 2)
    vals = jnp.concatenate([jnp.moveaxis(vals, 0, -1), diag], axis=-1)  # (..., P + n)
    # The matrix as one gather from [pairs i < j; diagonal].
    where = np.empty((n, n), np.int32)
    where[i, j] = where[j, i] = np.arange(len(i))
    where[np.arange(n), np.arange(n)] = len(i) + np.arange(n)
    return replicated(lambda v: jnp.take(v, jnp.asarray(where), axis=-1), vals)


def build_fast_kernel_fn(arch: str, get: str, w_std: float, b_std: float,
                         block_size: int | None = None, memory_budget_mb: float | None = None,
                         residual_memory_mb: float | None = None):
    """``kernel_fn(x1, x2, key=None)`` computing ``get`` (``nngp``, ``ntk`` or ``both``) of ``arch``.

    ``K(x, x)`` (the same object passed twice) computes the pairs i < j only and mirrors them.
    Work is split into blocks of image pairs (fc: of matrix rows): ``block_size`` caps the
    images per block side (pairs per block = its square), otherwise the blocks hold as many
    pairs as ``memory_budget_mb`` allows (values and gradients; inputs and the output matrix
    are not counted). Conv archs keep every block's residuals for reverse mode when they fit in
    ``residual_memory_mb`` (default: from the device, ``distillbench.devices``), and otherwise
    recompute each block's forward in the backward pass. Blocks are spread over all local
    devices when there are several.
    """
    if get not in ("nngp", "ntk", "both"):
        raise ValueError(f"unknown kernel {get!r}")
    budget = DEFAULT_BUDGET_MB if memory_budget_mb is None else float(memory_budget_mb)
    if residual_memory_mb is None:
        residual_memory_mb = devices.residual_memory_mb(devices.current())
    spec = _Spec(arch, get, w_std, block_size, budget, float(residual_memory_mb))
    bsq = float(b_std) ** 2
    n_dense = layout(arch)[0]

    @jax.jit
    def cross(x1, x2):
        x1, x2 = _prepare(arch, x1, x2)
        return _fc(spec, bsq, x1, x2, False) if n_dense else _conv_cross(spec, bsq, x1, x2)

    @jax.jit
    def sym(x):
        x, _ = _prepare(arch, x, x)
        return _fc(spec, bsq, x, x, True) if n_dense else _conv_sym(spec, bsq, x)

    def kernel_fn(x1, x2, key=None):
        del key  # deterministic kernel
        if x2 is x1:
            return sym(x1)
        return cross(x1, x2)

    return kernel_fn
