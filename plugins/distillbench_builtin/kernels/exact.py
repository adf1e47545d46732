"""Exact infinite-width kernels (NTK, NNGP) of the built-in architectures via neural-tangents.

The kernel is computed in blocks of image pairs: a conv kernel with pooling holds an (H*W)^2
covariance per pair, so a whole (n1, n2) matrix at once would not fit in memory. Blocks run under
``lax.map`` (jittable, one compiled block) and ``jax.checkpoint`` (the backward pass of
``jax.grad`` recomputes a block instead of storing every block's intermediates).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from distillbench.components.kernels import Kernel
from distillbench_builtin.kernels.architectures import check_image_shape, pixel_pairs, stax_network

#: Covariance entries per block when ``block_size`` is automatic (~32 MiB per float64 tensor).
AUTO_BLOCK_ENTRIES = 2**22


def _block_shape(n1: int, n2: int, arch: str, image_shape, block_size: int | None) -> tuple[int, int]:
    """Rows and columns per block (each at most n1 / n2, so small inputs form one block)."""
    if block_size is not None:
        return min(n1, block_size), min(n2, block_size)
    pairs = max(1, AUTO_BLOCK_ENTRIES // pixel_pairs(arch, image_shape))
    side = max(1, math.isqrt(pairs))
    if n2 <= side:
        return min(n1, max(1, pairs // n2)), n2
    if n1 <= side:
        return n1, min(n2, max(1, pairs // n1))
    return min(n1, side), min(n2, side)


def balanced(n: int, b: int) -> int:
    """The smallest block size giving as few blocks of at most ``b`` as possible (least padding)."""
    return -(-n // -(-n // b))


def pad_to_blocks(x, b: int):
    """(n, ...) -> (ceil(n/b), b, ...), padding with copies of x[0] (a valid image: no NaN paths)."""
    n = x.shape[0]
    nb = -(-n // b)
    pad = nb * b - n
    if pad:
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))])
    return x.reshape((nb, b, *x.shape[1:]))


def blocked(fn, x1, x2, b1: int, b2: int):
    """``fn(x1, x2)`` for a pairwise ``fn``, evaluated on (b1, b2) blocks with bounded memory."""
    n1, n2 = x1.shape[0], x2.shape[0]
    if n1 <= b1 and n2 <= b2:
        return fn(x1, x2)
    b1, b2 = balanced(n1, b1), balanced(n2, b2)
    block = jax.checkpoint(fn, prevent_cse=False)
    if n1 <= b1:
        cols = jax.lax.map(lambda b: block(x1, b), pad_to_blocks(x2, b2))  # (nb2, n1, b2)
        return jnp.moveaxis(cols, 0, 1).reshape(n1, -1)[:, :n2]
    if n2 <= b2:
        rows = jax.lax.map(lambda a: block(a, x2), pad_to_blocks(x1, b1))  # (nb1, b1, n2)
        return rows.reshape(-1, n2)[:n1]
    x2b = pad_to_blocks(x2, b2)
    grid = jax.lax.map(lambda a: jax.lax.map(lambda b: block(a, b), x2b), pad_to_blocks(x1, b1))
    nb1, nb2 = grid.shape[:2]
    return jnp.transpose(grid, (0, 2, 1, 3)).reshape(nb1 * b1, nb2 * b2)[:n1, :n2]


def _build(get: str, arch: str, w_std: float, b_std: float, block_size: int | None) -> Kernel:
    _, _, stax_kernel_fn = stax_network(arch, w_std=w_std, b_std=b_std)

    def pair_fn(a, b):
        return stax_kernel_fn(a, b, get)

    @jax.jit
    def kernel_fn(x1, x2, key=None):
        del key  # deterministic kernel
        dtype = jnp.result_type(x1, x2)
        x1, x2 = jnp.asarray(x1, dtype), jnp.asarray(x2, dtype)
        check_image_shape(arch, x1.shape)
        check_image_shape(arch, x2.shape)
        if x1.shape[1:] != x2.shape[1:]:
            raise ValueError(f"image shapes differ: {x1.shape[1:]} vs {x2.shape[1:]}")
        b1, b2 = _block_shape(x1.shape[0], x2.shape[0], arch, x1.shape[1:], block_size)
        return blocked(pair_fn, x1, x2, b1, b2).astype(dtype)

    return Kernel(kernel_fn=kernel_fn, feature_fn=None, random=False, arch=arch)


def build_ntk(
    arch: str = "fc1", w_std: float = 2**0.5, b_std: float = 0.1, block_size: int | None = None
) -> Kernel:
    """Exact infinite-width NTK of ``arch`` (KIP's default kernel)."""
    return _build("ntk", arch, w_std, b_std, block_size)


def build_nngp(
    arch: str = "fc1", w_std: float = 2**0.5, b_std: float = 0.1, block_size: int | None = None
) -> Kernel:
    """Exact infinite-width NNGP of ``arch`` (RFAD's evaluation kernel)."""
    return _build("nngp", arch, w_std, b_std, block_size)
