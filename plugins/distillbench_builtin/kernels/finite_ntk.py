"""The empirical (finite-width) NTK of frozen random networks: ``K(x, x') = ∇θ f(x) · ∇θ f(x')``.

``f`` is the architecture's trunk under a one-output Dense readout (the ``nn`` evaluator's RFAD
network with one output), at ``width``, drawn from the kernel's key and never trained: the kernel of
the network linearised at its initialisation, the "frozen finite-width NTK" RCIG learns on top of.
With ``num_networks`` > 1 the kernel is the mean over that many draws.

Parameterization (``parameterization``):

* ``ntk`` (default): each parameter's gradient is scaled by its initial standard deviation
  (``w_std/√fan_in`` for weights, ``b_std`` for biases), i.e. the gradient with respect to the
  NTK-parameterized weights. As the width grows this converges to the exact infinite-width ``ntk``
  kernel of the same architecture (``distillbench.testing.check_architecture`` checks it). It needs
  the architecture's RFAD initialisation, so only architectures with an infinite-width form.
* ``standard``: the gradients as they are (the network's own parameterization: what a finite
  network trained by gradient descent linearises to, and what RCIG's linearisation uses); any
  architecture with a trunk.

It is a feature kernel: ``feature_fn(x, key)`` is the scaled per-example gradient, flattened, so
``kernel_fn = feature_fn(x1) feature_fn(x2)ᵀ``. Memory: ``n × num_networks × P`` values for ``n``
images and ``P`` parameters per network (CPU-sized widths).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers

from distillbench.components.architectures import Architecture
from distillbench.components.kernels import Kernel


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


def build_finite_ntk(arch: Architecture, width: int = 64, num_networks: int = 1, w_std: float = 2**0.5,
                     b_std: float = 0.1, parameterization: str = "ntk") -> Kernel:
    """The empirical NTK of ``num_networks`` frozen random networks of ``arch`` at ``width``."""
    if parameterization == "ntk" and arch.stax is None:
        raise ValueError(f"kernel.parameterization=ntk needs {arch.name}'s RFAD initialisation (an architecture "
                         f"with an infinite-width form); use kernel.parameterization=standard")

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

    feature_fn = jax.jit(features)

    def kernel_fn(x1, x2, key):
        return feature_fn(x1, key) @ feature_fn(x2, key).T

    return Kernel(kernel_fn=kernel_fn, feature_fn=feature_fn, random=True, arch=arch.name)
