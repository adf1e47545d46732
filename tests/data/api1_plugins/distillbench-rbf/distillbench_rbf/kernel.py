"""The RBF kernel in its two forms.

Exact: ``k(x, x') = exp(-|x - x'|^2 / (2 l^2 d))`` with ``d`` the number of pixels times channels
(so one ``length_scale`` suits any image size). Deterministic: the key is ignored.

Random Fourier features (Rahimi & Recht, 2007), when ``features = D > 0``:
``phi(x) = sqrt(2 / D) cos(W x / (l sqrt(d)) + b)`` with ``W ~ N(0, I)`` of shape ``(d, D)`` and
``b ~ U[0, 2 pi)``, both drawn from the key, so ``E[phi(x) . phi(x')] = k(x, x')``. The kernel is
then random (``random=True``: one key is one draw) and objectives can use ``feature_fn`` for a
cost linear in the number of target images.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from distillbench.components.kernels import Kernel

_HIGHEST = jax.lax.Precision.HIGHEST


def _flat(x):
    return x.reshape(x.shape[0], -1)


def build_rbf(length_scale: float = 1.0, features: int = 0) -> Kernel:
    if features > 0:
        return _random_fourier(length_scale, features)

    def kernel_fn(x1, x2, key):
        del key  # exact kernel
        a, b = _flat(x1), _flat(x2)
        d = a.shape[1]
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * jnp.matmul(a, b.T, precision=_HIGHEST)
        return jnp.exp(-jnp.maximum(sq, 0) / (2 * length_scale**2 * d))

    return Kernel(kernel_fn=kernel_fn)


def _random_fourier(length_scale: float, num_features: int) -> Kernel:
    def feature_fn(x, key):
        a = _flat(x)
        d = a.shape[1]
        w_key, b_key = jax.random.split(key)
        # Drawn in float32 and cast: one key is one kernel, whatever the dtype of the images.
        w = jax.random.normal(w_key, (d, num_features), jnp.float32).astype(a.dtype)
        b = jax.random.uniform(b_key, (num_features,), jnp.float32, 0.0, 2 * math.pi).astype(a.dtype)
        proj = jnp.matmul(a, w, precision=_HIGHEST) / (length_scale * math.sqrt(d))
        return math.sqrt(2.0 / num_features) * jnp.cos(proj + b)

    def kernel_fn(x1, x2, key):
        return jnp.matmul(feature_fn(x1, key), feature_fn(x2, key).T, precision=_HIGHEST)

    return Kernel(kernel_fn=kernel_fn, feature_fn=feature_fn, random=True)
