"""The built-in architectures, as infinite-width kernels (stax) and as finite random trunks (flax).

Both views describe the same network so that random-feature kernels of the flax trunk converge
to the neural-tangents NNGP of the stax network: NTK parameterization, weights
``N(0, W_std^2 / fan_in)``, biases ``N(0, b_std^2)``, 3x3 SAME convolutions and 2x2 stride-2
VALID average pooling. The trunk is everything but the Dense readout.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers

from distillbench._compat.neural_tangents import import_neural_tangents

#: Architecture names, as accepted by the ``arch`` parameter of the kernels.
ARCHS = ("fc1", "fc3", "convnet3", "convnet")

# (fully connected hidden layers, leading Conv+Relu blocks without pooling, Conv+Relu+Pool blocks)
_LAYOUT = {
    "fc1": (1, 0, 0),
    "fc3": (3, 0, 0),
    "convnet3": (0, 0, 3),
    "convnet": (0, 1, 3),
}


def _layout(arch: str) -> tuple[int, int, int]:
    try:
        return _LAYOUT[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r} (choose from: {', '.join(ARCHS)})") from None


def is_conv(arch: str) -> bool:
    """Whether ``arch`` is convolutional (its exact kernel costs (H*W)^2 per image pair)."""
    return _layout(arch)[2] > 0


def check_image_shape(arch: str, shape) -> None:
    """Raise ``ValueError`` when NHWC ``shape`` cannot go through ``arch`` (too small to pool)."""
    if len(shape) != 4:
        raise ValueError(f"{arch}: expected NHWC images (n, H, W, C), got shape {tuple(shape)}")
    pools = _layout(arch)[2]
    h, w = shape[1], shape[2]
    for i in range(pools):
        if h < 2 or w < 2:
            raise ValueError(
                f"{arch}: images of {shape[1]}x{shape[2]} are too small for its {pools} 2x2 "
                f"average pools (pool {i + 1} would get {h}x{w}; need at least {2**pools}x{2**pools})"
            )
        h, w = h // 2, w // 2


def stax_network(arch: str, w_std: float = 2**0.5, b_std: float = 0.1, width: int = 1):
    """The neural-tangents ``(init_fn, apply_fn, kernel_fn)`` of ``arch`` with a Dense readout.

    ``width`` only matters for ``init_fn``/``apply_fn``; the kernel is the infinite-width limit.
    """
    stax = import_neural_tangents().stax
    n_dense, n_plain_conv, n_pool_conv = _layout(arch)
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
        n_dense, n_plain_conv, n_pool_conv = _layout(self.arch)
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


def trunk_features(arch: str, width: int, image_shape) -> int:
    """F, the number of trunk features per image of NHWC ``image_shape`` (without batch)."""
    check_image_shape(arch, (1, *image_shape))
    n_dense, _, n_pool_conv = _layout(arch)
    if n_dense:
        return width
    h, w = image_shape[0], image_shape[1]
    for _ in range(n_pool_conv):
        h, w = h // 2, w // 2
    return width * h * w


def pixel_pairs(arch: str, image_shape) -> int:
    """Spatial covariance entries per image pair in the exact kernel: (H*W)^2 for convs, else 1."""
    if not is_conv(arch):
        return 1
    return int(math.prod(image_shape[:2])) ** 2
