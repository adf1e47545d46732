"""The layer-by-layer recursion of the fast exact kernels, for one block of image pairs.

Notation: for a pair of images (x, y), ``K(p, q)`` is the covariance of a pre-activation at
position ``p`` of x and position ``q`` of y, ``Θ(p, q)`` the NTK, ``v_x(p) = K_xx(p, p)``.

* Input + first conv: ``K(p, q) = W²/(9C) Σ_taps x[p+t]·y[q+t] + b²`` (zero padding), i.e. the
  dot product of the scaled 3x3xC patches. ``Θ = K``.
* Conv (later layers): ``K'(p, q) = W²/9 Σ_{|d|≤1} K(p+d, q+d) + b²``,
  ``Θ' = K' + W²/9 Σ_d Θ(p+d, q+d)`` (``fast_position_convs``).
* ReLU: the arc-cosine update (``fast_relu``); followed by pooling, ``fast_relu_pool``.
* AvgPool 2x2: the mean over the 2x2 windows at both positions (16 terms); Flatten + Dense:
  ``K = W² mean_p K(p, p) + b²``, ``Θ = K + W² mean_p Θ(p, p)``.
* Dense / fc layers: the same updates on (n1, n2) matrices (no positions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distillbench_builtin.architectures.layout import layout
from distillbench_builtin.kernels.blocking import materialize
from distillbench_builtin.kernels.fast_first_layer import first_layer_fn
from distillbench_builtin.kernels.fast_position_convs import conv4, conv4_parity, parity_diag, position_diag
from distillbench_builtin.kernels.fast_relu import relu_fc_fn, relu_fn
from distillbench_builtin.kernels.fast_relu_pool import relu_pool_fn

_HIGHEST = jax.lax.Precision.HIGHEST


def conv_plan(arch: str, image_shape):
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


def conv_pairs(pa, pb, vars_a, vars_b, plan, w2: float, bsq: float, want_ntk: bool,
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
        nngp, ntk = first_layer_fn(bsq, self_pairs, want_ntk)(pa, pb)
        state = jnp.concatenate([nngp, ntk]) if want_ntk else nngp
        h, w = h // 2, w // 2
    else:
        a, b = pa[:, 0], pb[:, 0]  # (B, T, N)
        k = bsq + jnp.einsum("btn,btm->bnm", a, b, precision=_HIGHEST)
        va, vb = bsq + jnp.sum(a * a, axis=1), bsq + jnp.sum(b * b, axis=1)
        state = relu_fn(self_pairs, want_ntk)(k, k, va, vb)
    found = []
    for i, (pool, ch, cw) in enumerate(plan[1:]):
        assert (ch, cw) == (h, w)
        if pool:
            # Convolved straight into parity layout; the convolution and then [K; Θ] are stored
            # (see blocking.materialize): the ReLU loop then reads plain arrays instead of
            # re-deriving each entry through the convolution.
            conv = w2 / 9 * materialize(conv4_parity(state, h, w), state)  # (B|2B, 4, 4, N, N)
            k = conv[:nb] + bsq
            if self_pairs:
                va = vb = parity_diag(k)
                found.append(va)
            else:
                va, vb = vars_a[i], vars_b[i]
            kt = materialize(jnp.concatenate([k, k + conv[nb:]]) if want_ntk else k, va)
            nngp, ntk = relu_pool_fn(self_pairs, want_ntk)(
                kt[:nb], kt[nb:] if want_ntk else None, va, vb)
            state = jnp.concatenate([nngp, ntk]) if want_ntk else nngp
            h, w = h // 2, w // 2
            continue
        conv = w2 / 9 * conv4(state, h, w)
        k = conv[:nb] + bsq
        t = k + conv[nb:] if want_ntk else k
        if self_pairs:
            va = vb = position_diag(k)
            found.append(va)
        else:
            va, vb = vars_a[i], vars_b[i]
        state = relu_fn(self_pairs, want_ntk)(k, t, va, vb)
    out_nngp = w2 * jnp.mean(position_diag(state[:nb]), axis=1) + bsq
    out_ntk = out_nngp + w2 * jnp.mean(position_diag(state[nb:]), axis=1) if want_ntk else None
    return out_nngp, out_ntk, found


def fc_kernels(a, b, n_hidden: int, w2: float, bsq: float, want_ntk: bool, diag):
    """fc<n_hidden> (NNGP, NTK) of flattened inputs a (n1, d), b (n2, d); ``diag``: (n1, n2)
    mask of identical pairs (c = 1 exactly there), or None."""
    d = a.shape[1]
    k = w2 / d * jnp.matmul(a, b.T, precision=_HIGHEST) + bsq
    va = w2 / d * jnp.sum(a * a, axis=1) + bsq
    vb = w2 / d * jnp.sum(b * b, axis=1) + bsq
    ntk = k
    relu = relu_fc_fn(diag is not None)
    for _ in range(n_hidden):
        f, g = relu(k, va[:, None], vb[None, :], diag) if diag is not None else relu(k, va[:, None], vb[None, :])
        k = w2 * f + bsq
        if want_ntk:
            ntk = k + w2 * g * ntk
        va, vb = w2 * va / 2 + bsq, w2 * vb / 2 + bsq  # E[relu(u)²] = v/2
    return k, (ntk if want_ntk else None)
