"""The built-in architectures, as infinite-width kernels (stax) and as finite random trunks (flax).

Both views describe the same network so that random-feature kernels of the flax trunk converge
to the neural-tangents NNGP of the stax network: NTK parameterization, weights
``N(0, W_std^2 / fan_in)``, biases ``N(0, b_std^2)``, 3x3 SAME convolutions and 2x2 stride-2
VALID average pooling. The trunk is everything but the Dense readout. ``builtin(name)`` bundles
them, with the fast exact recursions (``kernels/fast_exact.py``) and the fast trunk forward
(``architectures/fast_forward.py``), as the ``Architecture`` a component builds.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers

from distillbench.compat.neural_tangents import import_neural_tangents
from distillbench.components.architectures import Architecture
from distillbench_builtin.architectures.layout import check_image_shape, layout, pixel_pairs, trunk_features


def stax_network(arch: str, w_std: float = 2**0.5, b_std: float = 0.1, width: int = 1):
    """The neural-tangents ``(init_fn, apply_fn, kernel_fn)`` of ``arch`` with a Dense readout.

    ``width`` only matters for ``init_fn``/``apply_fn``; the kernel is the infinite-width limit.
    """
    stax = import_neural_tangents().stax
    n_dense, n_plain_conv, n_pool_conv = layout(arch)
    layers = []
    if n_dense:
        layers.append(stax.Flatten())
        for _ in range(n_dense):
            layers += [stax.Dense(width, W_std=w_std, b_std=b_std), stax.Relu()]
    else:
        for _ in range(n_plain_conv):
            layers += [stax.Conv(width, (3, 3), padding="SAME", W_std=w_std, b_std=b_std), stax.Relu()]
        for _ in range(n_pool_conv):
            layers += [
                stax.Conv(width, (3, 3), padding="SAME", W_std=w_std, b_std=b_std),
                stax.Relu(),
                stax.AvgPool((2, 2), strides=(2, 2), padding="VALID"),
            ]
        layers.append(stax.Flatten())
    layers.append(stax.Dense(1, W_std=w_std, b_std=b_std))
    return stax.serial(*layers)


def _weight_init(w_std: float):
    # Untruncated normal with variance w_std^2 / fan_in: the standard-parameterization twin of
    # the NTK parameterization, identical in distribution at initialisation.
    return initializers.variance_scaling(w_std**2, "fan_in", "normal")


def _bias_init(b_std: float):
    return initializers.normal(stddev=b_std) if b_std > 0 else initializers.zeros


class Trunk(nn.Module):
    """The random trunk of ``arch`` (no readout): NHWC images -> (n, F) features.

    Parameters and computation use ``dtype`` (pass the input dtype: under x64, flax would
    otherwise create float32/float64 parameters regardless of the images).
    """

    arch: str
    width: int = 256
    w_std: float = 2**0.5
    b_std: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        check_image_shape(self.arch, x.shape)
        n_dense, n_plain_conv, n_pool_conv = layout(self.arch)
        x = x.astype(self.dtype)
        common = dict(
            kernel_init=_weight_init(self.w_std),
            bias_init=_bias_init(self.b_std),
            dtype=self.dtype,
            param_dtype=self.dtype,
        )
        if n_dense:
            x = x.reshape((x.shape[0], -1))
            for _ in range(n_dense):
                x = nn.relu(nn.Dense(self.width, **common)(x))
            return x
        for _ in range(n_plain_conv):
            x = nn.relu(nn.Conv(self.width, (3, 3), padding="SAME", **common)(x))
        for _ in range(n_pool_conv):
            x = nn.relu(nn.Conv(self.width, (3, 3), padding="SAME", **common)(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        return x.reshape((x.shape[0], -1))


def builtin(name: str) -> Architecture:
    """The ``Architecture`` of the built-in ``name`` (its fast implementations included)."""
    from distillbench_builtin.architectures.fast_forward import trunk_forward
    from distillbench_builtin.kernels.fast_exact import build_fast_kernel_fn

    layout(name)  # unknown names fail here

    def trunk(width, w_std=2**0.5, b_std=0.1, dtype=jnp.float32):
        return Trunk(arch=name, width=width, w_std=w_std, b_std=b_std, dtype=dtype)

    return Architecture(
        stax=functools.partial(stax_network, name),
        trunk=trunk,
        check_image_shape=functools.partial(check_image_shape, name),
        trunk_features=functools.partial(trunk_features, name),
        pixel_pairs=functools.partial(pixel_pairs, name),
        fast_exact=functools.partial(build_fast_kernel_fn, name),
        trunk_apply=functools.partial(trunk_forward, name),
    )


def build_fc1() -> Architecture:
    return builtin("fc1")


def build_fc3() -> Architecture:
    return builtin("fc3")


def build_convnet3() -> Architecture:
    return builtin("convnet3")


def build_convnet() -> Architecture:
    return builtin("convnet")
