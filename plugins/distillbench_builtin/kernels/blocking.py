"""Blocking and devices: how the kernels bound their memory and spread work over local devices.

Shared by the exact kernels (``fast_exact``, ``exact``) and random features: padding arrays into
blocks, mapping a function over blocks (``lax.map`` + ``jax.checkpoint``, ``shard_map`` across
several devices), the fast exact kernels' working memory per image pair (which sizes their
blocks) and residuals per pair (which decide whether reverse mode recomputes the blocks), and
``materialize`` (storing an intermediate once instead of letting XLA re-derive it in every
consumer).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from distillbench_builtin.architectures.layout import layout


def materialize(x, ref, *, tangent: bool = False):
    """``x``, computed into memory here (``ref``: any array of the inputs, to make a runtime 0).

    XLA's CPU fusion counts only transcendental ops and divisions as expensive: it would
    otherwise fuse a whole ReLU update (a polynomial) into every consumer, e.g. into each of the
    9 reads of the convolution that follows, multiplying the work and the compile time
    (``optimization_barrier`` is removed before fusion on CPU). Dividing element-wise by an
    array of ones that XLA cannot constant-fold makes the result "expensive", so it is stored
    once and read by the consumers. The ones are ``1 + 0·x`` with a runtime 0, full-shaped:
    XLA rewrites a division by a broadcast scalar into a multiplication by its reciprocal (a
    cheap op, fused again; jaxlib 0.10), but not this. Exact for finite x (x / 1 = x; an
    infinite x would give NaN).

    Derivatives divide by the scalar ``1 + 0`` (linear, and reverse mode keeps no array of ones:
    the cotangent is stored on jaxlib 0.5, fused on 0.10). ``tangent=True`` does the same to
    ``x`` itself, for tangents computed inside a custom JVP rule (a map linear in them).
    """
    r = jax.lax.stop_gradient(ref.reshape(-1)[0])  # the 0 carries no derivative: none computed
    zero = (0 * jnp.where(jnp.isfinite(r), r, 0)).astype(x.dtype)
    if tangent:
        return x / (1 + zero)
    return _divide_by_ones(x, zero)


@jax.custom_jvp
def _divide_by_ones(x, zero):
    return x / (1 + zero * x)


@_divide_by_ones.defjvp
def _divide_by_ones_jvp(primals, tangents):
    x, zero = primals
    return x / (1 + zero * x), tangents[0] / (1 + zero)


def pad_to_blocks(x, b: int, nb: int | None = None):
    """(n, ...) -> (nb, b, ...), nb = ceil(n/b) unless given, padding with copies of x[0] (a valid
    input: no NaN paths)."""
    n = x.shape[0]
    nb = -(-n // b) if nb is None else nb
    if nb * b > n:
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (nb * b - n, *x.shape[1:]))])
    return x.reshape((nb, b, *x.shape[1:]))


def map_blocks(fn, xs, consts, block: int, devices=None, remat: bool = False,
               keep_residuals: bool = False):
    """``fn(xs_block, consts)`` over the leading axis of the pytree ``xs``, ``block`` rows at a time.

    One block on one device: a plain call (checkpointed if ``remat``). Otherwise ``lax.map`` over
    blocks with ``jax.checkpoint`` (bounded memory under ``jax.grad`` too: each block's forward is
    recomputed in the backward pass), unless ``keep_residuals``: then nothing is checkpointed and
    the backward pass reuses every block's residuals (the caller checked that they fit; see
    ``residual_bytes``). With several devices the blocks are split across them (``shard_map`` over
    a 1-D mesh, ``consts`` replicated, each device maps over its own share). Returns ``fn``'s
    outputs for the n rows (pytree, leading axis n).
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    n_dev = 1 if devices is None else len(devices)
    if n <= block and n_dev == 1:
        # ``remat``: recompute in the backward pass rather than keep this block's residuals
        # alive while later blocks (of another pass) run.
        return (jax.checkpoint(fn) if remat and not keep_residuals else fn)(xs, consts)
    nb = -(-n // block)
    nb = -(-nb // n_dev) * n_dev  # a whole number of blocks per device
    block = -(-n // nb)  # as balanced as possible: least padding
    total = nb * block
    padded = jax.tree.map(lambda a: pad_to_blocks(a, block, nb), xs)
    body = fn if keep_residuals else jax.checkpoint(fn, prevent_cse=False)

    def run(blocks, consts):
        if jax.tree.leaves(blocks)[0].shape[0] == 1:
            out = body(jax.tree.map(lambda a: a[0], blocks), consts)
            return jax.tree.map(lambda o: o[None], out)
        return jax.lax.map(lambda b: body(b, consts), blocks)

    if n_dev == 1:
        out = run(padded, consts)
    else:
        from jax.sharding import Mesh, PartitionSpec

        from distillbench.compat.jax import shard_map

        mesh = Mesh(np.asarray(devices), ("blocks",))
        replicated = jax.tree.map(lambda _: PartitionSpec(), consts)
        out = shard_map(run, mesh=mesh, in_specs=(PartitionSpec("blocks"), replicated),
                        out_specs=PartitionSpec("blocks"))(padded, consts)
    return jax.tree.map(lambda o: o.reshape(total, *o.shape[2:])[:n], out)


#: Working memory per image pair of the budget, in units of (first-layer covariance entries,
#: (HW)² per pair) x (bytes of the dtype), values and reverse-mode gradients included. Measured
#: with XLA's memory analysis of the compiled kernels (worst seen: 4.7 with a pooled first layer,
#: as convnet3; 10.2 without, as convnet, whose second conv runs at full resolution), with a
#: margin; tests/test_fast_kernels.py checks that compiled kernels stay within the budget.
PAIR_BYTES_PER_ENTRY = {True: 6, False: 13}

#: Residuals that reverse mode keeps per image pair of the conv kernels' pairwise pass and per
#: image of their self pass, in elements: ``a·(HW)² + 20·HWC`` with ``a`` by pass and by whether
#: the first conv block pools. Measured with ``jax.ad_checkpoint``'s saved residuals (NTK, which
#: keeps more than the NNGP) at 8x8, 12x12, 16x16, 28x28 and 32x32 with 1 and 3 channels, rounded
#: up (largest measured/model: 0.93); tests/test_devices.py checks compiled memory against it.
RESIDUAL_PER_ENTRY = {("pairs", True): 0.16, ("images", True): 0.3,
                      ("pairs", False): 7.5, ("images", False): 15.5}
RESIDUAL_PER_INPUT = 20

#: Working memory of the fc kernels per (n1 x n2) matrix entry, per byte of the dtype.
FC_BYTES_PER_ENTRY = 16

#: Default memory budget of the exact kernels (MiB of working memory per block).
DEFAULT_BUDGET_MB = 256


def pair_bytes(arch: str, image_shape, itemsize: int) -> int:
    """Working memory of one image pair (conv archs) or one matrix entry (fc archs)."""
    _, n_plain, n_pool = layout(arch)
    if not n_pool:
        return FC_BYTES_PER_ENTRY * itemsize
    entries = int(math.prod(image_shape[:2])) ** 2
    pooled_first = n_plain == 0  # the first conv block pools when no plain conv precedes it
    return entries * itemsize * PAIR_BYTES_PER_ENTRY[pooled_first]


def residual_bytes(arch: str, image_shape, itemsize: int, what: str) -> float:
    """Residuals kept for reverse mode per image pair (``what="pairs"``) or per self-pass image
    (``"images"``) of a conv arch, when its blocks are not recomputed in the backward pass."""
    _, n_plain, _ = layout(arch)
    hw = int(math.prod(image_shape[:2]))
    elements = RESIDUAL_PER_ENTRY[what, n_plain == 0] * hw**2 + RESIDUAL_PER_INPUT * hw * image_shape[2]
    return elements * itemsize


def pairs_per_block(arch: str, image_shape, itemsize: int, budget_mb: float) -> int:
    """How many image pairs (fc: matrix entries) the blocks may hold within ``budget_mb``.

    Raises ``ValueError`` when the minimum does not fit: the budget cannot be honoured.
    """
    per_pair = pair_bytes(arch, image_shape, itemsize)
    pairs = int(budget_mb * 2**20 // per_pair)
    minimum = 2 if layout(arch)[2] else 1  # conv: a self-pass block and a pair block
    if pairs < minimum:
        need = minimum * per_pair / 2**20
        raise ValueError(
            f"memory_budget_mb={budget_mb:g} is below the minimum for {arch} at "
            f"{'x'.join(map(str, image_shape))} ({need:.1f} MiB: {minimum} image pair(s) with "
            f"gradients); raise it")
    return pairs


def replicated(fn, *args):
    """``fn(*args)``, run on every local device as is when there are several.

    With x64 on, XLA's SPMD partitioner (jax 0.5.3) fails its own verifier on gathers and
    scatters outside ``shard_map`` ("SameElementType ... s64 broadcast"); inside a
    ``shard_map`` with replicated operands the op is left alone.
    """
    devices = local_devices()
    if devices is None:
        return fn(*args)
    from jax.sharding import Mesh, PartitionSpec

    from distillbench.compat.jax import shard_map

    specs = tuple(PartitionSpec() for _ in args)
    return shard_map(fn, mesh=Mesh(np.asarray(devices), ("blocks",)), in_specs=specs,
                     out_specs=PartitionSpec())(*args)


def local_devices():
    devs = jax.local_devices()
    return devs if len(devs) > 1 else None
