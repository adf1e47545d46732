"""The finite networks of the built-in architectures (``Architecture.network``): the ones components
*train* (FRePo's pool, the ``nn`` evaluator), as ``(logits, features)``.

* A built-in layout (fc1, fc3, convnet3, convnet): its trunk's layers (``layers``, which the random
  ``Trunk`` runs too) with an optional normalization, in DC-ConvNet's order conv -> norm -> ReLU
  (-> pool), under a Dense readout; initialised as the trunk is (the NTK parameterization's twin,
  ``w_std=sqrt(2)``, ``b_std=0.1``). Fully connected layouts offer batch norm (not instance norm: a vector has no spatial axis).
* ``FrepoConv``: FRePo's ``Conv`` (yongchao97/FRePo, lib/models/networks.py): 3 blocks of 3x3 conv
  with ``width * 2**i`` channels, ReLU, 2x2 average pool; the normalization comes *before* the conv
  of blocks 2 and 3; a 1-channel image gets 2 more pixels of padding on each side in the first
  conv (28x28 MNIST ends at 4x4, as 32x32 CIFAR does); flax's default initialisers. It has no
  infinite-width form (its widths grow with depth).

Normalizations, as FRePo has them: ``instance`` is ``GroupNorm(num_groups=None, group_size=1)``
(per image and channel, no state); ``batch`` is ``BatchNorm(momentum=0.1, epsilon=1e-5)`` with
``use_running_average=not train``. In flax's convention the running statistics become
``0.1 * old + 0.9 * batch``, i.e. nearly those of the last batch (PyTorch's 0.1 would be flax's
0.9): FRePo's value, kept.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers

from distillbench.components.architectures import NORMALIZATIONS
from distillbench_builtin.architectures.layout import check_image_shape, layout

#: The initialisation of the built-in layouts' networks (that of their random trunks' defaults).
W_STD, B_STD = 2**0.5, 0.1
#: FRePo's Conv: depth and padding added on each side of a 1-channel image in its first conv.
FREPO_DEPTH, FREPO_GRAY_PAD = 3, 2


def weight_init(w_std: float):
    # Untruncated normal with variance w_std^2 / fan_in: the standard-parameterization twin of
    # the NTK parameterization, identical in distribution at initialisation.
    return initializers.variance_scaling(w_std**2, "fan_in", "normal")


def bias_init(b_std: float):
    return initializers.normal(stddev=b_std) if b_std > 0 else initializers.zeros


def check_normalization(arch: str, normalization: str, offered: tuple[str, ...]) -> None:
    if normalization not in offered:
        raise ValueError(f"{arch}'s network has no normalization {normalization!r} (choose from: {', '.join(offered)})")


def norm_layer(normalization: str, train: bool, dtype):
    """A factory of the ``normalization`` layer (``None`` for ``none``), as FRePo's networks make it."""
    if normalization == "none":
        return None
    if normalization == "instance":
        return functools.partial(nn.GroupNorm, num_groups=None, group_size=1, dtype=dtype, param_dtype=dtype)
    # float64 statistics for a float64 network: flax keeps them in float32 by default, and they would
    # turn float64 at the first update (a state whose dtype changes cannot be a scan's carry).
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.1, epsilon=1e-5,
                             dtype=dtype, param_dtype=dtype,
                             force_float32_reductions=jnp.dtype(dtype) != jnp.float64)


def layers(arch: str, x, width: int, w_std: float, b_std: float, dtype, norm=None):
    """The built-in ``arch`` but its readout, called inside a compact module: NHWC -> ``(n, F)``.

    ``norm``: ``None`` or a factory of normalization layers, applied after each conv (before its
    ReLU). Layers are named ``Dense_i``/``Conv_i`` as in the random ``Trunk``, which runs this too.
    """
    check_image_shape(arch, x.shape)
    n_dense, n_plain_conv, n_pool_conv = layout(arch)
    x = x.astype(dtype)
    common = dict(kernel_init=weight_init(w_std), bias_init=bias_init(b_std), dtype=dtype, param_dtype=dtype)
    if n_dense:
        x = x.reshape((x.shape[0], -1))
        for _ in range(n_dense):
            x = nn.Dense(width, **common)(x)
            x = nn.relu(x if norm is None else norm()(x))
        return x
    for i in range(n_plain_conv + n_pool_conv):
        x = nn.Conv(width, (3, 3), padding="SAME", **common)(x)
        x = nn.relu(x if norm is None else norm()(x))
        if i >= n_plain_conv:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    return x.reshape((x.shape[0], -1))


class LayoutNetwork(nn.Module):
    """A built-in layout's network: ``(logits, features)``, the readout named ``readout`` (the other
    parameters, with ``normalization="none"``, are those of the random ``Trunk``)."""

    arch: str
    width: int
    num_classes: int
    normalization: str = "none"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        features = layers(self.arch, x, self.width, W_STD, B_STD, self.dtype,
                          norm_layer(self.normalization, train, self.dtype))
        readout = nn.Dense(self.num_classes, kernel_init=weight_init(W_STD), bias_init=bias_init(B_STD),
                           dtype=self.dtype, param_dtype=self.dtype, name="readout")
        return readout(features), features


def layout_network(arch: str):
    """``Architecture.network`` of the built-in layout ``arch``."""
    offered = NORMALIZATIONS if layout(arch)[2] else ("none", "batch")  # per-image norm of a vector: none

    def network(num_classes: int, width: int, normalization: str = "none", dtype=None):
        check_normalization(arch, normalization, offered)
        return LayoutNetwork(arch=arch, width=width, num_classes=num_classes, normalization=normalization,
                             dtype=dtype or jnp.float32)

    return network


def _frepo_pooled_size(image_shape) -> tuple[int, int]:
    """Height and width of ``FrepoConv``'s last block for one NHWC image (no batch axis)."""
    h, w, c = image_shape
    grow = 2 * FREPO_GRAY_PAD if c == 1 else 0  # 3x3 convs keep the size, but for the extra padding
    h, w = h + grow, w + grow
    for _ in range(FREPO_DEPTH):
        h, w = h // 2, w // 2
    return h, w


def frepo_check_image_shape(shape) -> None:
    if len(shape) != 4:
        raise ValueError(f"frepo-conv: expected NHWC images (n, H, W, C), got shape {tuple(shape)}")
    if min(_frepo_pooled_size(shape[1:])) < 1:
        raise ValueError(f"frepo-conv: images of {shape[1]}x{shape[2]}x{shape[3]} are too small for its "
                         f"{FREPO_DEPTH} 2x2 average pools (need at least 8x8, 4x4 with 1 channel)")


def frepo_trunk_features(width: int, image_shape) -> int:
    frepo_check_image_shape((1, *image_shape))
    h, w = _frepo_pooled_size(image_shape)
    return width * 2 ** (FREPO_DEPTH - 1) * h * w


class FrepoConv(nn.Module):
    """FRePo's ``Conv``: ``(logits, features)``, or the features alone when ``num_classes`` is None
    (the trunk: the same parameters but the readout ``Dense_0``). Parameters are named as the
    reference's (``Conv_i``, ``GroupNorm_i``/``BatchNorm_i``, ``Dense_0``)."""

    width: int
    num_classes: int | None = None
    normalization: str = "none"
    dtype: Any = jnp.float32
    #: 0: ReLU; beta > 0: ``softplus(beta x) / beta``, RCIG's smooth ReLU while it distils (beta 60)
    softplus: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        frepo_check_image_shape(x.shape)
        norm = norm_layer(self.normalization, train, self.dtype)
        x = x.astype(self.dtype)
        for i in range(FREPO_DEPTH):
            if i and norm is not None:
                x = norm()(x)
            pad = 1 + (FREPO_GRAY_PAD if i == 0 and x.shape[-1] == 1 else 0)
            x = nn.Conv(self.width * 2**i, (3, 3), padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                        param_dtype=self.dtype)(x)
            x = nn.avg_pool(activation(x, self.softplus), (2, 2), strides=(2, 2))
        features = x.reshape((x.shape[0], -1))
        if self.num_classes is None:
            return features
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype)(features), features


def activation(x, softplus: float):
    """ReLU, or with ``softplus`` = beta > 0 the smooth ``softplus(beta x) / beta`` (RCIG's ``Conv``)."""
    return nn.relu(x) if not softplus else nn.softplus(softplus * x) / softplus


def frepo_network(num_classes: int, width: int, normalization: str = "none", dtype=None, softplus: float = 0.0):
    """``Architecture.network`` of ``frepo-conv`` (``softplus``: see ``FrepoConv``; RCIG's ``Conv`` is
    this network without normalization)."""
    check_normalization("frepo-conv", normalization, NORMALIZATIONS)
    return FrepoConv(width=width, num_classes=num_classes, normalization=normalization, dtype=dtype or jnp.float32,
                     softplus=float(softplus))


def frepo_trunk(width: int, w_std: float = 2**0.5, b_std: float = 0.1, dtype=jnp.float32):
    """``Architecture.trunk`` of ``frepo-conv``: its network without readout or normalization, in
    flax's default initialisation (``w_std`` and ``b_std`` are ignored)."""
    del w_std, b_std
    return FrepoConv(width=width, dtype=dtype)
