"""Exact infinite-width kernels (NTK, NNGP) of the built-in architectures.

Two implementations compute the same kernel (``implementation`` parameter):

* ``fast`` (what ``auto`` picks for an architecture that has one, as every built-in does): the
  architecture's ``fast_exact``; for the built-ins ``fast_exact.py``, the recursions written
  directly in JAX, organised for vectorised CPU loops, ~10-100x the throughput of
  neural-tangents for the conv nets.
* ``neural-tangents``: the architecture's stax ``kernel_fn`` (the reference; the tests compare
  the two; what ``auto`` picks for an architecture without a fast implementation).
  An optional dependency (``distillbench[neural-tangents]``); asking for it without it installed
  is bad input, refused before any compute.

Both bound their memory: ``block_size`` caps the images per block side, else the blocks follow
``memory_budget_mb`` (``None``/``auto``: from the device, ``distillbench.devices``). Both run
float32 products at ``highest`` precision, so float32 kernels agree with float64 references on a
GPU too (whose default for float32 is TF32).

With neural-tangents, the kernel is computed in blocks of image pairs: a conv kernel with pooling holds an (H*W)^2
covariance per pair, so a whole (n1, n2) matrix at once would not fit in memory. Blocks run under
``lax.map`` (jittable, one compiled block) and ``jax.checkpoint`` (the backward pass of
``jax.grad`` recomputes a block instead of storing every block's intermediates).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from distillbench import devices
from distillbench.components.kernels import Kernel
from distillbench.components.architectures import Architecture
from distillbench_builtin.architectures import no_stax_form
from distillbench_builtin.kernels.blocking import DEFAULT_BUDGET_MB, pad_to_blocks

IMPLEMENTATIONS = ("auto", "fast", "neural-tangents")

#: neural-tangents holds about this many float64 (H*W)^2 covariance tensors per image pair at
#: once (nngp, ntk, cov1, cov2, conv and ReLU intermediates), so a block of E covariance entries
#: needs about E * 64 bytes.
NT_BYTES_PER_ENTRY = 64

#: Covariance entries per block for neural-tangents at the default memory budget (2^22).
AUTO_BLOCK_ENTRIES = DEFAULT_BUDGET_MB * 2**20 // NT_BYTES_PER_ENTRY


def _block_shape(n1: int, n2: int, pixel_pairs: int, block_size: int | None,
                 max_entries: int = AUTO_BLOCK_ENTRIES) -> tuple[int, int]:
    """Rows and columns per block (each at most n1 / n2, so small inputs form one block);
    ``pixel_pairs``: covariance entries per image pair (the architecture's cost hint)."""
    if block_size is not None:
        return min(n1, block_size), min(n2, block_size)
    pairs = max(1, max_entries // pixel_pairs)
    side = max(1, math.isqrt(pairs))
    if n2 <= side:
        return min(n1, max(1, pairs // n2)), n2
    if n1 <= side:
        return n1, min(n2, max(1, pairs // n1))
    return min(n1, side), min(n2, side)


def balanced(n: int, b: int) -> int:
    """The smallest block size giving as few blocks of at most ``b`` as possible (least padding)."""
    return -(-n // -(-n // b))


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


def resolve_implementation(arch: Architecture, implementation: str = "auto") -> str:
    """``fast`` or ``neural-tangents``: ``auto`` is ``fast`` when the architecture has one."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r} (choose from: {', '.join(IMPLEMENTATIONS)})")
    has_fast = arch.fast_exact is not None
    if implementation == "auto":
        return "fast" if has_fast else "neural-tangents"
    if implementation == "fast" and not has_fast:
        raise ValueError(f"architecture {arch.name!r} has no fast exact implementation; "
                         "use implementation=auto or neural-tangents")
    return implementation


def _highest(fn):
    """``fn`` with float32 matmuls and convolutions at ``highest`` precision (not TF32)."""

    def wrapped(x1, x2, key=None):
        with jax.default_matmul_precision("highest"):
            return fn(x1, x2, key)

    wrapped.__doc__ = fn.__doc__
    return wrapped


def _build(get: str, net: Architecture, w_std: float, b_std: float, block_size: int | None,
           implementation: str, memory_budget_mb: float | None) -> Kernel:
    budget = devices.memory_budget_mb(devices.current(), memory_budget_mb)
    if resolve_implementation(net, implementation) == "fast":
        kernel_fn = net.fast_exact(get, w_std, b_std, block_size, budget)
    elif net.stax is None:  # a built-in one was refused at plan time (kernels' validate)
        raise ValueError(no_stax_form(net.name))
    else:
        kernel_fn = _stax_kernel_fn(net, get, w_std, b_std, block_size, budget)
    return Kernel(kernel_fn=_highest(kernel_fn), feature_fn=None, random=False, arch=net.name)


def _stax_kernel_fn(net: Architecture, get: str, w_std: float, b_std: float, block_size: int | None,
                    budget: float):
    """The stax network's ``kernel_fn`` blocked over image pairs within ``budget`` MiB."""
    _, _, stax_kernel_fn = net.stax(w_std, b_std)
    max_entries = max(1, int(budget * 2**20 // NT_BYTES_PER_ENTRY))

    def pair_fn(a, b):
        return stax_kernel_fn(a, b, get)

    @jax.jit
    def kernel_fn(x1, x2, key=None):
        del key  # deterministic kernel
        dtype = jnp.result_type(x1, x2)
        x1, x2 = jnp.asarray(x1, dtype), jnp.asarray(x2, dtype)
        net.check_image_shape(x1.shape)
        net.check_image_shape(x2.shape)
        if x1.shape[1:] != x2.shape[1:]:
            raise ValueError(f"image shapes differ: {x1.shape[1:]} vs {x2.shape[1:]}")
        pairs = net.pixel_pairs(tuple(x1.shape[1:]))
        b1, b2 = _block_shape(x1.shape[0], x2.shape[0], pairs, block_size, max_entries)
        return blocked(pair_fn, x1, x2, b1, b2).astype(dtype)

    return kernel_fn


def build_ntk(
    arch: Architecture, w_std: float = 2**0.5, b_std: float = 0.1, block_size: int | None = None,
    implementation: str = "auto", memory_budget_mb: float | None = None,
) -> Kernel:
    """Exact infinite-width NTK of ``arch`` (KIP's default kernel)."""
    return _build("ntk", arch, w_std, b_std, block_size, implementation, memory_budget_mb)


def build_nngp(
    arch: Architecture, w_std: float = 2**0.5, b_std: float = 0.1, block_size: int | None = None,
    implementation: str = "auto", memory_budget_mb: float | None = None,
) -> Kernel:
    """Exact infinite-width NNGP of ``arch`` (RFAD's evaluation kernel)."""
    return _build("nngp", arch, w_std, b_std, block_size, implementation, memory_budget_mb)
