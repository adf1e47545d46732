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

import jax

from distillbench.components.architectures import Architecture
from distillbench.components.kernels import Kernel
from distillbench.empirical_ntk import empirical_ntk_features


def build_finite_ntk(arch: Architecture, width: int = 64, num_networks: int = 1, w_std: float = 2**0.5,
                     b_std: float = 0.1, parameterization: str = "ntk") -> Kernel:
    """The empirical NTK of ``num_networks`` frozen random networks of ``arch`` at ``width``."""
    if parameterization == "ntk" and arch.stax is None:
        raise ValueError(f"kernel.parameterization=ntk needs {arch.name}'s RFAD initialisation (an architecture "
                         f"with an infinite-width form); use kernel.parameterization=standard")

    features = empirical_ntk_features(arch, width, num_networks, w_std, b_std, parameterization)
    feature_fn = jax.jit(features)

    def kernel_fn(x1, x2, key):
        return feature_fn(x1, key) @ feature_fn(x2, key).T

    return Kernel(kernel_fn=kernel_fn, feature_fn=feature_fn, random=True, arch=arch.name)
