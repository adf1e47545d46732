"""distillbench's CPU lowering of convolutions (``distillbench.compat.conv_lowering``): a float32
convolution in any layout compiles to XLA:CPU's canonical one, inside loops too (jax-ml/jax#12868:
a filter gradient in a ``fori_loop`` ran ~10x slower in the layout JAX derives), and computes what
the canonical convolution of the transposed operands computes."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench.compat.conv_layout import is_canonical
from distillbench.runner.pipeline import enable_float64

enable_float64()

CANONICAL = "b01f_01io->b01f"


def _conv(x, w, numbers=("NHWC", "HWIO", "NHWC"), strides=(1, 1), padding="SAME", lhs_dilation=None,
          rhs_dilation=None):
    return jax.lax.conv_general_dilated(x, w, strides, padding, lhs_dilation, rhs_dilation, numbers)


def _dim_labels(fn, *args) -> list[str]:
    return re.findall(r"dim_labels=([\w>-]+)", jax.jit(fn).lower(*args).compile().as_text())


def test_a_filter_gradient_in_a_loop_compiles_to_the_canonical_layout():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 12, 12, 3), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 8), jnp.float32)

    def grads(w):
        return jax.grad(lambda w: jnp.sum(jnp.sin(_conv(x, w))))(w)

    def loop(w):
        return jax.lax.fori_loop(0, 3, lambda i, w: w - 1e-3 * grads(w), w)

    labels = _dim_labels(loop, w)
    assert len(labels) == 2 and set(labels) == {CANONICAL}  # the forward and the filter gradient
    ins = _dim_labels(lambda x: jax.lax.fori_loop(0, 2, lambda i, x: x - jax.grad(
        lambda x: jnp.sum(jnp.sin(_conv(x, w))))(x), x), x)
    assert ins and set(ins) == {CANONICAL}  # the input gradient too


CASES = {
    "NCHW/OIHW": dict(numbers=("NCHW", "OIHW", "NCHW"), x=(2, 3, 9, 7), w=(5, 3, 3, 2)),
    "NHWC/HWIO->NCHW": dict(numbers=("NHWC", "HWIO", "NCHW"), x=(2, 9, 7, 3), w=(3, 2, 3, 5)),
    "strided, dilated, padded": dict(numbers=("NCHW", "HWOI", "NHWC"), x=(2, 3, 11, 10), w=(3, 3, 4, 3),
                                     strides=(2, 1), padding=((1, 2), (0, 1)), lhs_dilation=(1, 2),
                                     rhs_dilation=(2, 1)),
    "1-d": dict(numbers=("NCH", "OIH", "NCH"), x=(2, 3, 13), w=(4, 3, 3), strides=(1,)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_values_and_gradients_equal_the_canonical_convolution_of_the_transposed_operands(case):
    c = dict(CASES[case])
    numbers = c.pop("numbers")
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), c.pop("x")), np.float32)
    w = np.asarray(jax.random.normal(jax.random.PRNGKey(1), c.pop("w")), np.float32)
    spec = jax.lax.conv_dimension_numbers(x.shape, w.shape, numbers)
    assert not is_canonical(spec, 1, 1)
    nd = x.ndim - 2
    x_c = np.transpose(x, (spec.lhs_spec[0], *spec.lhs_spec[2:], spec.lhs_spec[1]))
    w_c = np.transpose(w, (*spec.rhs_spec[2:], spec.rhs_spec[1], spec.rhs_spec[0]))
    layout = ("N" + "HWD"[:nd] + "C", "HWD"[:nd] + "IO", "N" + "HWD"[:nd] + "C")

    def ours(x, w):
        return jnp.sum(jnp.sin(_conv(x, w, numbers, **c)))

    def canonical(x_c, w_c):
        return jnp.sum(jnp.sin(_conv(x_c, w_c, layout, **c)))

    out = jax.jit(lambda x, w: _conv(x, w, numbers, **c))(x, w)
    ref = jax.jit(lambda x, w: _conv(x, w, layout, **c))(x_c, w_c)
    order = (spec.out_spec[0], *spec.out_spec[2:], spec.out_spec[1])
    np.testing.assert_allclose(np.transpose(np.asarray(out), order), np.asarray(ref), rtol=1e-6, atol=1e-6)
    gx, gw = jax.jit(jax.grad(ours, (0, 1)))(x, w)
    gx_c, gw_c = jax.jit(jax.grad(canonical, (0, 1)))(x_c, w_c)
    np.testing.assert_allclose(np.transpose(np.asarray(gx), (spec.lhs_spec[0], *spec.lhs_spec[2:], spec.lhs_spec[1])),
                               np.asarray(gx_c), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.transpose(np.asarray(gw), (*spec.rhs_spec[2:], spec.rhs_spec[1], spec.rhs_spec[0])),
                               np.asarray(gw_c), rtol=1e-5, atol=1e-5)


def test_grouped_convolutions_keep_xla_s_layout():
    assert is_canonical(jax.lax.ConvDimensionNumbers((0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3)), 2, 1)
    assert is_canonical(jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)), 1, 1)
