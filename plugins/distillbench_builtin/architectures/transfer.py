"""The networks dataset-distillation papers transfer their sets to, as the DC/DSA code defines them
(``VICO-UoE/DatasetCondensation``, ``networks.py`` at 53f63a6; DC, DSA, DM, MTT, FRePo and RCIG
evaluate on these): ``convnet-dc`` (``ConvNet``: depth 3, average pooling), ``alexnet``
(``AlexNet``/``AlexNetBN``), ``vgg11`` (``VGG11``/``VGG11BN``), ``resnet18``
(``ResNet18``/``ResNet18BN``). Finite networks only (no infinite-width form): the ``nn`` evaluator
trains them, the exact kernels refuse them.

Each is ``(logits, features)`` (features: what the reference's ``embed`` returns). ``width`` is the
first layer's channels, the others keep the reference's ratios: DC's networks are
``convnet-dc``/``alexnet`` at 128 and ``vgg11``/``resnet18`` at 64. Layers as the reference has
them, in PyTorch's conventions: ``instance`` is ``GroupNorm(C, C)`` (epsilon 1e-5), ``batch`` is
``BatchNorm2d`` (epsilon 1e-5, running averages ``0.9 old + 0.1 batch``, i.e. flax momentum 0.9),
symmetric explicit padding (3 on a 1-channel image's first conv, so 28x28 MNIST runs as 32x32),
and PyTorch's default initialisation (weights and biases uniform in +-1/sqrt(fan_in)).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.nn import initializers

from distillbench.components.architectures import Architecture
from distillbench_builtin.architectures.finite import check_normalization
from distillbench_builtin.architectures.layout import TRANSFER_NORMALIZATIONS

_VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # channels / width; M: 2x2 max pool
_ALEXNET = ((1, 5, "pool"), (1.5, 5, "pool"), (2, 3, None), (1.5, 3, None), (1.5, 3, "pool"))


def _torch_weight():
    """PyTorch's default ``kaiming_uniform_(a=sqrt(5))``: uniform in +-1/sqrt(fan_in)."""
    return initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias(fan_in: int):
    bound = 1.0 / fan_in**0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _conv(x, channels: int, kernel: int, pad: int, dtype, stride: int = 1, bias: bool = True):
    fan_in = x.shape[-1] * kernel * kernel
    return nn.Conv(int(channels), (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=bias, kernel_init=_torch_weight(), bias_init=_torch_bias(fan_in),
                   dtype=dtype, param_dtype=dtype)(x)


def _dense(x, out: int, dtype):
    return nn.Dense(out, kernel_init=_torch_weight(), bias_init=_torch_bias(x.shape[-1]), dtype=dtype,
                    param_dtype=dtype, name="classifier")(x)


def _norm(normalization: str, train: bool, dtype):
    """The reference's normalization layer, as a factory (``None`` for ``none``)."""
    if normalization == "none":
        return None
    if normalization == "instance":
        return functools.partial(nn.GroupNorm, num_groups=None, group_size=1, epsilon=1e-5, dtype=dtype,
                                 param_dtype=dtype)
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=dtype, param_dtype=dtype, force_float32_reductions=jnp.dtype(dtype) != jnp.float64)


def _first_pad(x, usual: int, gray: int) -> int:
    return gray if x.shape[-1] == 1 else usual


def _max_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def _check_shape(name: str, shape) -> None:
    if len(shape) != 4:
        raise ValueError(f"{name}: expected NHWC images (n, H, W, C), got shape {tuple(shape)}")
    grow, smallest = _SIZES[name]
    side = min(shape[1], shape[2]) + (grow if shape[3] == 1 else 0)
    if side < smallest:
        raise ValueError(f"{name}: images of {shape[1]}x{shape[2]}x{shape[3]} are too small for its pooling "
                         f"(need a side of at least {smallest - (grow if shape[3] == 1 else 0)})")


#: (pixels a 1-channel image's first conv adds to each side's length, smallest side then taken):
#: 28x28 MNIST and 32x32 CIFAR fit all four.
_SIZES = {"convnet-dc": (4, 8), "alexnet": (4, 8), "vgg11": (4, 32), "resnet18": (0, 25)}


class TransferNetwork(nn.Module):
    """One of DC's networks (``name``); see the module docstring."""

    kind: str
    width: int
    num_classes: int
    normalization: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        norm = _norm(self.normalization, train, self.dtype)
        features = getattr(self, "_" + self.kind.replace("-", "_"))(x, norm, train)
        return _dense(features, self.num_classes, self.dtype), features

    def _convnet_dc(self, x, norm, train):
        for d in range(3):
            x = _conv(x, self.width, 3, _first_pad(x, 1, 3) if d == 0 else 1, self.dtype)
            x = nn.relu(x if norm is None else norm()(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return x.reshape((x.shape[0], -1))

    def _alexnet(self, x, norm, train):
        for i, (ratio, kernel, pool) in enumerate(_ALEXNET):
            pad = _first_pad(x, 2, 4) if i == 0 else kernel // 2
            x = _conv(x, ratio * self.width, kernel, pad, self.dtype)
            x = nn.relu(x if norm is None else norm()(x))
            x = _max_pool(x) if pool else x
        return x.reshape((x.shape[0], -1))

    def _vgg11(self, x, norm, train):
        first = True
        for item in _VGG11:
            if item == "M":
                x = _max_pool(x)
                continue
            x = _conv(x, item * self.width, 3, _first_pad(x, 1, 3) if first else 1, self.dtype)
            x = nn.relu(norm()(x))
            first = False
        return x.reshape((x.shape[0], -1))

    def _resnet18(self, x, norm, train):
        x = nn.relu(norm()(_conv(x, self.width, 3, 1, self.dtype, bias=False)))
        for stage, stride in enumerate((1, 2, 2, 2)):
            planes = self.width * 2**stage
            for block in range(2):
                x = self._basic_block(x, planes, stride if block == 0 else 1, norm)
        x = nn.avg_pool(x, (4, 4), strides=(4, 4))  # F.avg_pool2d(out, 4)
        return x.reshape((x.shape[0], -1))

    def _basic_block(self, x, planes: int, stride: int, norm):
        out = nn.relu(norm()(_conv(x, planes, 3, 1, self.dtype, stride=stride, bias=False)))
        out = norm()(_conv(out, planes, 3, 1, self.dtype, bias=False))
        shortcut = x
        if stride != 1 or x.shape[-1] != planes:
            shortcut = norm()(_conv(x, planes, 1, 0, self.dtype, stride=stride, bias=False))
        return nn.relu(out + shortcut)


def transfer_architecture(name: str) -> Architecture:
    """The ``Architecture`` of DC's network ``name``: finite views only."""
    offered = TRANSFER_NORMALIZATIONS[name]
    check = functools.partial(_check_shape, name)

    def network(num_classes: int, width: int, normalization: str = offered[0], dtype=None):
        check_normalization(name, normalization, offered)
        return TransferNetwork(kind=name, width=width, num_classes=num_classes, normalization=normalization,
                               dtype=dtype or jnp.float32)

    def trunk(width: int, w_std: float = 2**0.5, b_std: float = 0.1, dtype=jnp.float32):
        """The features of the network with its reference's first normalization (PyTorch's init:
        ``w_std`` and ``b_std`` are ignored)."""
        del w_std, b_std
        return _Features(network(1, width, offered[0] if offered[0] != "batch" else "none", dtype))

    return Architecture(trunk=trunk, check_image_shape=check, network=network)


class _Features(nn.Module):
    """A network's features alone (its trunk view)."""

    net: nn.Module

    def __call__(self, x):
        return self.net(x)[1]


#: The components' builders (``architectures/__init__.py``).
build_convnet_dc, build_alexnet, build_vgg11, build_resnet18 = (
    functools.partial(transfer_architecture, name) for name in ("convnet-dc", "alexnet", "vgg11", "resnet18"))
