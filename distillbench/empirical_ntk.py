"""The empirical (finite-width) NTK's features of an architecture's random networks: the per-example
parameter gradients of its trunk under a one-output Dense readout, optionally scaled by each
parameter's initial standard deviation (the NTK parameterization), so that their dot products tend
to the exact NTK as the width grows. Shared by the ``finite-ntk`` kernel and the architecture
conformance check (``distillbench.testing.check_architecture``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers

from distillbench.components.architectures import Architecture


class _Scalar(nn.Module):
    """The trunk of ``arch`` under a one-output Dense readout, in the trunk's initialisation."""

    make_trunk: object
    width: int
    w_std: float
    b_std: float
    dtype: object

    @nn.compact
    def __call__(self, x):
        h = self.make_trunk(self.width, self.w_std, self.b_std, self.dtype)(x)
        bias = initializers.normal(self.b_std) if self.b_std > 0 else initializers.zeros
        out = nn.Dense(1, kernel_init=initializers.variance_scaling(self.w_std**2, "fan_in", "normal"),
                       bias_init=bias, dtype=self.dtype, param_dtype=self.dtype)(h)
        return out[:, 0]


def init_scale(path, leaf, w_std: float, b_std: float) -> float:
    """A parameter's initial standard deviation (the RFAD initialisation): ``w_std/√fan_in`` for a
    weight (``kernel``: all axes but the last are fan-in), ``b_std`` for a bias."""
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "bias":
        return b_std
    return w_std / math.sqrt(math.prod(leaf.shape[:-1]))


def empirical_ntk_features(arch: Architecture, width: int, num_networks: int = 1, w_std: float = 2**0.5,
                           b_std: float = 0.1, parameterization: str = "ntk"):
    """``features(x, key) -> (n, num_networks * P)``: the scaled per-example gradients of
    ``num_networks`` networks drawn from ``key``, over ``sqrt(num_networks)`` (their kernel is the mean)."""

    def features(x, key):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        arch.check_image_shape(x.shape)
        module = _Scalar(arch.trunk, width, w_std, b_std, x.dtype)
        keys = jax.random.split(key, num_networks)
        params = jax.vmap(lambda k: module.init(k, jnp.zeros((1, *x.shape[1:]), jnp.float32)))(keys)
        params = jax.tree.map(lambda p: p.astype(x.dtype), params)

        def one_network(p):
            scales = jax.tree_util.tree_map_with_path(
                lambda path, leaf: init_scale(path, leaf[0] if leaf.ndim else leaf, w_std, b_std)
                if parameterization == "ntk" else 1.0, jax.tree.map(lambda q: q[None], p))

            def gradient(xi):
                g = jax.grad(lambda q: module.apply(q, xi[None])[0])(p)
                flat = jax.tree.map(lambda gi, s: (gi * s).reshape(-1), g, scales)
                return jnp.concatenate(jax.tree.leaves(flat))

            return jax.vmap(gradient)(x)  # (n, P)

        f = jax.lax.map(one_network, params)  # (N, n, P)
        return jnp.moveaxis(f, 0, 1).reshape(x.shape[0], -1) / math.sqrt(num_networks)

    return features
