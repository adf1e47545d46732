"""ReLU followed by 2x2 average pooling, on covariances in parity layout, with a custom VJP.

A (h, w) grid is split by the parity (a, b) of row and column into 4 slabs of (h/2)·(w/2)
positions; a position-position tensor becomes (B, 4, 4, N, N) (slab pairs x positions). The
2x2 average pool at both positions is then the mean of the 16 slab pairs, all contiguous, and
the ReLU + pool runs as one vectorised loop over the (B, N, N) output. Reverse mode has its own
rule (``relu_pool_fn``): through the JVP it would linearize and then transpose the whole
(B, 4, 4, N, N) tangent map.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from distillbench_builtin.kernels.blocking import materialize
from distillbench_builtin.kernels.fast_relu import inv_sqrt, relu_parts, safe_ratio

_PI = math.pi

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
    return relu_parts(k, inv_sqrt(v1), inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2), diag)


def relu_pool_primal(k, t, va, vb, self_pairs: bool, want_ntk: bool):
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
        slabs = unstack_axes(x, (x.ndim - 4, x.ndim - 3))
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


def unstack_axes(x, axes):
    """Nested lists of ``x`` sliced at every index of ``axes`` (those axes dropped)."""
    if not axes:
        return x
    axis, rest = axes[0], tuple(a - 1 for a in axes[1:])
    return [unstack_axes(jax.lax.index_in_dim(x, i, axis, keepdims=False), rest)
            for i in range(x.shape[axis])]


@functools.lru_cache(maxsize=None)
def relu_pool_fn(self_pairs: bool, want_ntk: bool):
    """ReLU + 2x2 pool of (K, Θ) in parity layout (B, 4, 4, N, N), variances (B, 4, N).

    Θ is None for the NNGP alone. A custom VJP (``_relu_pool_vjp``): reverse mode through the
    JVP rule would linearize and then transpose the (B, 4, 4, N, N) tangent map.
    """

    def core(k, t, va, vb):
        return relu_pool_primal(k, t, va, vb, self_pairs, want_ntk)

    fn = jax.custom_vjp(core)
    fn.defvjp(lambda k, t, va, vb: (core(k, t, va, vb), (k, t, va, vb)),
              functools.partial(_relu_pool_vjp, self_pairs))
    return fn


def _relu_pool_vjp(self_pairs, res, ct):
    """Cotangents of (K, Θ, v_a, v_b) from those of the pooled ReLU's outputs (nngp, ntk).

    Per entry, with G and s = sqrt(v_a v_b − K²) as in ``fast_first_layer._first_layer_vjp``::

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
        t_s = t * safe_ratio(jnp.ones((), s.dtype), s)
        kbar, tbar = a * g + b * t_s * (1 / (2 * _PI)), b * g
        r = a * s - b * k * t_s
    r = r * (1 / (4 * _PI))
    return (kbar, tbar, safe_ratio(jnp.sum(r, axis=(2, 4)), va),
            safe_ratio(jnp.sum(r, axis=(1, 3)), vb))
