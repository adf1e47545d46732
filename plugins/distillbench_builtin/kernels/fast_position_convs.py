"""Linear maps on (B, N, N) position-position covariances, N = h·w: the 3x3 convolution of a
later layer (the same offset on both positions) and the parity layout of ``fast_relu_pool``.

``K'(p, q) = W²/9 Σ_{|d|≤1} K(p+d, q+d) + b²`` (zero padded): the offset sum is self-adjoint, so
its VJP is the same sum applied to the cotangent.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def conv4(x, h, w):
    """Σ over the 3x3 offsets d of x(p + d, q + d), zero padded: (B, hw, hw) -> (B, hw, hw).

    Self-adjoint (the same symmetric offsets on both positions, zero padding on both), so its
    VJP is the same sum applied to the cotangent (autodiff would transpose each slice into a pad
    of the whole array: ~2x slower).
    """
    return _conv4_sum(x, h, w)


conv4.defvjp(lambda x, h, w: (_conv4_sum(x, h, w), None),
              lambda h, w, _, ct: (_conv4_sum(ct, h, w),))


def _conv4_sum(x, h, w):
    """``conv4``'s sum: two separable passes, each a sum of 3 slices whose last axis is the
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
def conv4_parity(x, h, w):
    """``conv4(x)`` in parity layout, in one loop: (B, hw, hw) -> (B, 4, 4, N, N), slab pairs by
    the row/column parity of both positions, N = (h//2)(w//2) (an odd last row/column is dropped,
    as VALID pooling does).

    Each slab pair of the output is the sum of 9 stride-2 slices of the zero-padded input (the
    offsets d on both positions), so neither the convolved (B, hw, hw) array nor its transpose
    into parity layout is stored (convnet3 28x28 float64, against ``conv4`` then a transpose,
    ``benchmarks/ab_fast_exact.py``: NTK values 0.81x the time, value + support gradient 0.83x;
    NNGP 0.94x and 0.84x). VJP: the transpose of the layout change, then the (self-adjoint)
    offset sum. Callers store the result (``materialize``): fused into its consumer, the 16-way
    concatenation of slabs ran 2.5x slower than the old path.
    """
    return _conv4_parity_sum(x, h, w)


conv4_parity.defvjp(lambda x, h, w: (_conv4_parity_sum(x, h, w), None),
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


def parity_diag(x):
    """The position-position diagonal of (B, 4, 4, N, N) in parity layout: (B, 4, N)."""
    d = jnp.diagonal(x, axis1=3, axis2=4)  # (B, 4, 4, N)
    return jnp.moveaxis(jnp.diagonal(d, axis1=1, axis2=2), -1, 1)


def position_diag(x):
    return jnp.diagonal(x, axis1=1, axis2=2)
