"""A convolution written in XLA:CPU's canonical layout with explicit transposes
(:mod:`distillbench.compat.conv_lowering` says why)."""

from __future__ import annotations

from typing import Any


def is_canonical(dimension_numbers, feature_group_count: int, batch_group_count: int) -> bool:
    """True for the layouts left alone: input ``(N, *S, C)``, filter ``(*K, I, O)``, output
    ``(N, *S, O)``, and grouped convolutions (their gradients' layouts are XLA's to choose)."""
    if feature_group_count != 1 or batch_group_count != 1:
        return True
    lhs_spec, rhs_spec, out_spec = (tuple(s) for s in dimension_numbers)
    n = len(lhs_spec) - 2
    spatial = tuple(range(1, n + 1))
    return (lhs_spec == (0, n + 1, *spatial) and out_spec == (0, n + 1, *spatial)
            and rhs_spec == (n + 1, n, *range(n)))


def canonical_conv(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count, precision=None, preferred_element_type=None,
                   **_unused: Any):
    """``lax.conv_general_dilated`` (already-resolved parameters, as its lowering receives them) on
    operands transposed into the canonical layout, its output transposed back."""
    from jax import lax

    lhs_spec, rhs_spec, out_spec = dimension_numbers
    n = len(lhs_spec) - 2
    x = lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))        # (N, *S, C)
    w = lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))        # (*K, I, O)
    spatial = tuple(range(1, n + 1))
    numbers = lax.ConvDimensionNumbers((0, n + 1, *spatial), (n + 1, n, *range(n)), (0, n + 1, *spatial))
    out = lax.conv_general_dilated(x, w, tuple(window_strides), tuple(map(tuple, padding)), tuple(lhs_dilation),
                                   tuple(rhs_dilation), numbers, feature_group_count, batch_group_count,
                                   precision=precision, preferred_element_type=preferred_element_type)
    order = (out_spec[0], *out_spec[2:], out_spec[1])                         # out's axes in (N, *S, O) order
    return lax.transpose(out, tuple(order.index(a) for a in range(n + 2)))
