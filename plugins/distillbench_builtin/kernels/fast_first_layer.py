"""The pooled first layer: 3x3 patches of the images -> ReLU + 2x2 pool of their covariance.

The first layer dominates the cost (``(HW)²`` entries per image pair against ``(HW/4)²`` for the
next). Patches are reordered by the parity of their row and column, so that each pooled output
is the sum of 16 contiguous slabs; the patch products, the ReLU update and the pooling then run
as one fused loop per block of pairs without ever storing the ``(HW)²`` covariance.

Gradients with respect to the images: a custom VJP (``_first_layer_vjp``) recomputes the entries
slab pair by slab pair from the patches and maps their cotangent back through transposed patch
products (matmuls), then the patches' slices back to the images (pads and adds: no float64
convolution anywhere, SPEC §8).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from distillbench_builtin.kernels.blocking import materialize
from distillbench_builtin.kernels.fast_relu import inv_sqrt, relu_parts, safe_ratio
from distillbench_builtin.kernels import fast_relu_pool
from distillbench_builtin.kernels.fast_relu_pool import relu_pool_primal, unstack_axes

_PI = math.pi
_HIGHEST = jax.lax.Precision.HIGHEST


def scaled_patches(x, w_std: float, parity: bool):
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


@functools.lru_cache(maxsize=None)
def first_layer_fn(bsq: float, self_pairs: bool, want_ntk: bool):
    """Pooled first layer (K, Θ) from patches in parity layout (B, 4, T, N) -> (B, N, N).

    The patch products are written as broadcast multiply-adds so that XLA fuses them with the
    ReLU and the pooling: the (HW)² first-layer covariance is never stored.
    """

    def core(pa, pb):
        va = bsq + jnp.sum(pa * pa, axis=2)
        vb = bsq + jnp.sum(pb * pb, axis=2)
        # The threshold read from its module at trace time: one setting for both modules' loops.
        if va.shape[-1] < fast_relu_pool.UNROLL_MIN_POSITIONS:  # small images: compact code
            k = jnp.asarray(bsq, pa.dtype)
            for t in range(pa.shape[2]):
                k = k + pa[:, :, None, t, :, None] * pb[:, None, :, t, None, :]
            return relu_pool_primal(k, None, va, vb, self_pairs, want_ntk)
        # Rows and columns as plain slices + reshapes (cheap to trace; jnp indexing is not).
        rows = unstack_axes(pa[..., None], (1, 2))  # [i][t] -> (B, N, 1)
        cols = unstack_axes(pb[:, :, :, None, :], (1, 2))  # [j][t] -> (B, 1, N)
        q_rows = unstack_axes(inv_sqrt(va)[..., None], (1,))
        s_rows = unstack_axes(jnp.sqrt(va)[..., None], (1,))
        q_cols = unstack_axes(inv_sqrt(vb)[:, :, None, :], (1,))
        s_cols = unstack_axes(jnp.sqrt(vb)[:, :, None, :], (1,))
        eye = jnp.eye(va.shape[-1], dtype=bool) if self_pairs else None
        f, gk, s = [], [], []
        for i in range(4):
            for j in range(4):
                # Per slab pair, so that nothing of (B, 4, 4, N, N) size is ever stored.
                k = jnp.asarray(bsq, pa.dtype)
                for t in range(pa.shape[2]):
                    k = k + rows[i][t] * cols[j][t]
                g, sq = relu_parts(k, q_rows[i], q_cols[j], s_rows[i], s_cols[j],
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
    roots_a, roots_b = ((inv_sqrt(v), jnp.sqrt(v)) for v in (va, vb))  # 1/sqrt(v), sqrt(v)

    def slab_pair(carry, ij):
        dpa, dpb, ra, rb = carry
        i, j = ij // 4, ij % 4
        # The slab's slices are stored before the (B, N, N) loops read them: fused into those
        # loops, the dynamic slices ran ~5x slower (jaxlib 0.10).
        xa, xb = materialize(_take(pa, i), pa), materialize(_take(pb, j), pb)  # (B, T, N)
        k = (bsq + jnp.einsum("btn,btm->bnm", xa, xb, precision=_HIGHEST)
             if n < fast_relu_pool.UNROLL_MIN_POSITIONS else _patch_product(bsq, xa, xb))
        q1, s1 = (materialize(_take(u, i), u)[:, :, None] for u in roots_a)
        q2, s2 = (materialize(_take(u, j), u)[:, None, :] for u in roots_b)
        g, s = relu_parts(k, q1, q2, s1, s2, None if eye is None else eye & (i == j))
        if b is None:
            kbar = a * g
            r = a * s * (1 / (4 * _PI))
        else:
            k_s = k * safe_ratio(jnp.ones((), s.dtype), s)
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
    dpa = dpa + 2 * safe_ratio(ra, va)[:, :, None] * pa
    dpb = dpb + 2 * safe_ratio(rb, vb)[:, :, None] * pb
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
