"""float64 convolutions on XLA:CPU, routed into shifted slices and matrix products.

Jitted float64 ``lax.conv_general_dilated`` crashed the process (SIGSEGV) in XLA:CPU's own
convolution code with jaxlib 0.8 to 0.10 on CPUs with AVX-512 (shared/SPEC.md section 8, issue 27).
The crash is not in distillbench's code, and any float64 convolution can reach it: neural-tangents'
kernels, a plugin architecture's stax layers, a plugin kernel, the transposes JAX derives for
gradients. So the fix sits where every one of them passes: the primitive's lowering.

:mod:`distillbench.compat.conv_lowering` registers a CPU lowering rule for ``conv_general_dilated``
that rewrites a float64 convolution (:func:`conv_by_slices`), whatever its dimension numbers,
strides, padding, dilations and feature or batch groups, into one strided slice of the padded input
per kernel offset and a dot product with that offset's filter slice, summed (the same arithmetic as
a direct convolution, no im2col copy of the whole input). Other dtypes keep XLA's own convolution
(in its canonical layout). The rule is installed for every jaxlib, so the
compiled programs are the same on every supported stack and a regression shows on any CPU: the
structural tests (tests/test_float64_conv.py) read the compiled module for a float64 convolution.

It must run before a float64 convolution is first traced and compiled (a compiled program stays
cached); :func:`distillbench.runner.pipeline.enable_float64` calls it, so every run, ``evaluate``,
``explain`` and the conformance suite have it before they build a kernel.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

#: channels x output features up to which a kernel offset's product is written element-wise
ELEMENTWISE_MAX = 16


def is_float64(dtype) -> bool:
    import numpy as np

    return np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128))


def conv_by_slices(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count, precision=None, preferred_element_type=None,
                   **_unused: Any):
    """``lax.conv_general_dilated`` (already-resolved parameters, as its lowering receives them) as
    slices and dot products: one per kernel offset, or one per output position where there are
    fewer of those (a filter gradient's "kernel" is the whole image)."""
    from jax import lax

    lhs_spec, rhs_spec, out_spec = dimension_numbers
    nd = len(lhs_spec) - 2
    x = lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))        # (N, *S, C)
    w = lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))        # (*K, I, O)
    config = [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)] + [(0, 0, 0)]
    # materialized once: fused into each offset's slice, an expensive producer (the arcsine of
    # neural-tangents' ReLU maps) would be computed once per offset (3-5x slower)
    x = lax.optimization_barrier(lax.pad(x, lax.convert_element_type(0, x.dtype), config))
    kernel = w.shape[:nd]
    out_sizes = _out_sizes(x.shape[1:1 + nd], kernel, window_strides, rhs_dilation)
    groups = (feature_group_count, batch_group_count, precision, preferred_element_type)
    if 0 in out_sizes or 0 in kernel:  # an empty convolution (or an empty window): zeros
        total = _zeros_like_output(x, w, out_sizes, batch_group_count, preferred_element_type)
    elif math.prod(kernel) <= math.prod(out_sizes):
        total = _by_offsets(x, w, out_sizes, window_strides, rhs_dilation, groups)
    else:
        total = _by_positions(x, w, out_sizes, window_strides, rhs_dilation, groups)
    return lax.transpose(total, _inverse((out_spec[0], *out_spec[2:], out_spec[1])))


def _by_offsets(x, w, out_sizes, strides, rhs_dilation, groups):
    """Sum over kernel offsets of (strided input slice) . (that offset's filter): (N, *out, O)."""
    from jax import lax

    total = None
    for offset in itertools.product(*map(range, w.shape[:len(out_sizes)])):
        start = [0] + [k * d for k, d in zip(offset, rhs_dilation)] + [0]
        stop = [x.shape[0]] + [s + (n - 1) * st + 1 for s, n, st in zip(start[1:-1], out_sizes, strides)]
        piece = lax.slice(x, start, stop + [x.shape[-1]], (1, *strides, 1))
        term = _grouped_dot(piece, w[offset], len(out_sizes), *groups)
        total = term if total is None else total + term
    return total


def _by_positions(x, w, out_sizes, strides, rhs_dilation, groups):
    """Per output position, (its dilated input window) . (the whole filter), stacked: (N, *out, O)."""
    import jax.numpy as jnp
    from jax import lax

    kernel = w.shape[:len(out_sizes)]
    columns = []
    for position in itertools.product(*map(range, out_sizes)):
        start = [0] + [p * st for p, st in zip(position, strides)] + [0]
        stop = [x.shape[0]] + [s + (k - 1) * d + 1 for s, k, d in zip(start[1:-1], kernel, rhs_dilation)]
        window = lax.slice(x, start, stop + [x.shape[-1]], (1, *rhs_dilation, 1))   # (N, *K, C)
        columns.append(_grouped_dot(window, w, 0, *groups))                         # (N, O)
    out = jnp.stack(columns, axis=1)
    return out.reshape(out.shape[0], *out_sizes, out.shape[-1])


def _out_sizes(in_sizes, kernel, strides, rhs_dilation) -> list[int]:
    return [max(0, (n - (k - 1) * d - 1) // s + 1) if k else 0
            for n, k, s, d in zip(in_sizes, kernel, strides, rhs_dilation)]


def _grouped_dot(piece, w, free: int, groups: int, batch_groups: int, precision, preferred):
    """``piece`` (N, *F, *W, C) times filter ``w`` (*W, I, O), contracting the window ``W`` and the
    channels: (N, *F, O), ``free`` = len(F). XLA's feature groups split C and O group-major; its
    batch groups split N and O group-major."""
    from jax import lax

    n, c, o = piece.shape[0], piece.shape[-1], w.shape[-1]
    window = w.ndim - 2
    lhs_window = tuple(range(1 + free, 1 + free + window))
    if groups == 1 and batch_groups == 1 and not window and c * o <= ELEMENTWISE_MAX:
        return _elementwise_dot(piece, w, preferred)
    if groups == 1 and batch_groups == 1:
        dims = ((lhs_window + (piece.ndim - 1,), tuple(range(window + 1))), ((), ()))
        return lax.dot_general(piece, w, dims, precision=precision, preferred_element_type=preferred)
    if groups > 1:
        p = piece.reshape(*piece.shape[:-1], groups, c // groups)
        f = w.reshape(*w.shape[:-2], c // groups, groups, o // groups)
        dims = ((lhs_window + (p.ndim - 1,), tuple(range(window + 1))), ((p.ndim - 2,), (window + 1,)))
        out = lax.dot_general(p, f, dims, precision=precision, preferred_element_type=preferred)
        return _groups_to_features(out, free, n)                           # from (G, N, *F, Og)
    p = piece.reshape(batch_groups, n // batch_groups, *piece.shape[1:])
    f = w.reshape(*w.shape[:-1], batch_groups, o // batch_groups)
    dims = ((tuple(d + 1 for d in lhs_window) + (p.ndim - 1,), tuple(range(window + 1))), ((0,), (window + 1,)))
    out = lax.dot_general(p, f, dims, precision=precision, preferred_element_type=preferred)
    return _groups_to_features(out, free, n // batch_groups)              # from (B, N/B, *F, Ob)


def _elementwise_dot(piece, w, preferred):
    """(N, *F, C) . (C, O) as broadcast products summed over C: for a few channels (neural-tangents
    convolves covariance maps of one channel) XLA fuses every offset's term into one loop, where
    C*O-sized dot products would each write their own output."""
    c = piece.shape[-1]
    terms = [piece[..., i:i + 1] * w[i] for i in range(c)]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total if preferred is None else total.astype(preferred)


def _groups_to_features(out, free: int, n: int):
    """(G, N, *F, Og) -> (N, *F, G * Og): group-major output features, as XLA orders them."""
    from jax import lax

    moved = lax.transpose(out, (1, *range(2, 2 + free), 0, free + 2))
    return moved.reshape(n, *out.shape[2:2 + free], out.shape[0] * out.shape[-1])


def _zeros_like_output(x, w, out_sizes, batch_groups: int, preferred):
    import jax.numpy as jnp

    return jnp.zeros((x.shape[0] // batch_groups, *out_sizes, w.shape[-1]), preferred or x.dtype)


def _inverse(perm) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)

