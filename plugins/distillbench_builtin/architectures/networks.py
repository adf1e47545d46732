"""The built-in architectures, as infinite-width kernels (stax) and as finite random trunks (flax).

Both views describe the same network so that random-feature kernels of the flax trunk converge
to the neural-tangents NNGP of the stax network: NTK parameterization, weights
``N(0, W_std^2 / fan_in)``, biases ``N(0, b_std^2)``, 3x3 SAME convolutions and 2x2 stride-2
VALID average pooling. The trunk is everything but the Dense readout. ``builtin(name)`` bundles
them, with the fast exact recursions (``kernels/fast_exact.py``), the fast trunk forward
(``architectures/fast_forward.py``) and the trainable networks (``architectures/finite.py``), as
the ``Architecture`` a component builds. ``frepo-conv`` (FRePo's ConvNet) has only the finite views.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from distillbench.compat.neural_tangents import import_neural_tangents
from distillbench.components.architectures import Architecture
from distillbench_builtin.architectures import finite
from distillbench_builtin.architectures.finite import layers
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
        return layers(self.arch, x, self.width, self.w_std, self.b_std, self.dtype)


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
        network=finite.layout_network(name),
    )


def build_fc1() -> Architecture:
    return builtin("fc1")


def build_fc3() -> Architecture:
    return builtin("fc3")


def build_convnet3() -> Architecture:
    return builtin("convnet3")


def build_convnet() -> Architecture:
    return builtin("convnet")


def build_frepo_conv() -> Architecture:
    """FRePo's ConvNet: no infinite-width form (no ``stax``), its trunk = its network without readout."""
    return Architecture(
        trunk=finite.frepo_trunk,
        check_image_shape=finite.frepo_check_image_shape,
        trunk_features=finite.frepo_trunk_features,
        network=finite.frepo_network,
    )
