"""Fast exact NNGP and NTK of the built-in architectures, written directly in JAX: the blocked
passes over image pairs and the entry point, ``build_fast_kernel_fn``.

The same infinite-width kernels that neural-tangents computes for the stax networks of
``architectures.networks.stax_network`` (NTK parameterization, ``W_std``/``b_std`` on every layer,
3x3 SAME convolutions, 2x2 stride-2 VALID average pooling, Flatten and a Dense readout), computed
with the recursions of ``fast_layers``, organised so that XLA on CPU emits few, vectorised loops.
The modules, one concern each: ``fast_relu`` (the ReLU update and its derivatives),
``fast_relu_pool`` (ReLU + pooling in parity layout), ``fast_first_layer`` (the pooled first
layer from image patches, and its VJP), ``fast_position_convs`` (the later layers'
convolutions), ``fast_layers`` (the recursion through an architecture for a block of pairs).

The variances ``v`` of every image at every ReLU are the diagonal of the image's own
position-position covariance, which pooling mixes, so each image's self-covariance is propagated
first ("self" pass); image pairs then read their variances from it. The self pass is the
diagonal of ``K(x, x)``, which is therefore never recomputed. ``K(x, x)`` computes only the pairs
``i < j``. Pairs are processed in blocks under ``lax.map`` (+ ``jax.checkpoint``) whose size comes
from a memory budget, and the blocks are split across all local devices when there are several.
"""

from __future__ import annotations

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
    pairs_per_block,
    replicated,
    residual_bytes,
)
from distillbench_builtin.kernels.fast_first_layer import scaled_patches
from distillbench_builtin.kernels.fast_layers import conv_pairs, conv_plan, fc_kernels


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
        k, ntk = fc_kernels(a_rows, b, n_dense, spec.w2, bsq, spec.want_ntk, diag)
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
        p = scaled_patches(xb, spec.w_std, plan[0][0])
        return conv_pairs(p, p, None, None, plan, spec.w2, bsq, spec.want_ntk, True)

    remat = x.shape[0] + min(n_pairs, block) > block
    return map_blocks(fn, x, (), block, local_devices(), remat, keep_residuals=keep)


def _cross_pass(spec: _Spec, bsq: float, x1, x2, vars1, vars2, idx1, idx2, plan, block: int,
                keep: bool):
    """Kernel values of the pairs (idx1[k], idx2[k]), blocked; patches made per block; ``keep``:
    the blocks' residuals are kept for reverse mode instead of recomputed."""

    def fn(ij, consts):
        (i, j), (x1, x2, vars1, vars2) = ij, consts
        pa = scaled_patches(jnp.take(x1, i, axis=0), spec.w_std, plan[0][0])
        pb = scaled_patches(jnp.take(x2, j, axis=0), spec.w_std, plan[0][0])
        va = [jnp.take(v, i, axis=0) for v in vars1]
        vb = [jnp.take(v, j, axis=0) for v in vars2]
        nngp, ntk, _ = conv_pairs(pa, pb, va, vb, plan, spec.w2, bsq, spec.want_ntk, False)
        return spec.pick(nngp, ntk, axis=-1)

    idx = (jnp.asarray(idx1, jnp.int32), jnp.asarray(idx2, jnp.int32))
    return map_blocks(fn, idx, (x1, x2, vars1, vars2), block, local_devices(), keep_residuals=keep)


def _conv_cross(spec: _Spec, bsq: float, x1, x2):
    n1, n2 = x1.shape[0], x2.shape[0]
    plan = conv_plan(spec.arch, x1.shape[1:])
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
    plan = conv_plan(spec.arch, x.shape[1:])
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
