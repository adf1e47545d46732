"""Mean squared error of KRR predictions, as in the KIP notebook: ``½·mean((y − pred)²)``.

The mean runs over every entry of the ``(n, C)`` batch (not only over examples). No parameters.
"""

from __future__ import annotations

import jax.numpy as jnp

from distillbench.components.losses import Loss


def mse_loss(params, pred, y):
    """``½·mean((y − pred)²)`` over all entries; ``params`` is unused (``{}``)."""
    del params
    return 0.5 * jnp.mean(jnp.square(y - pred))


def mse_logits(params, pred):
    """Identity: the KRR outputs are the class scores."""
    del params
    return pred


def _init():
    return {}


def build_mse() -> Loss:
    return Loss(init=_init, apply=mse_loss, logits=mse_logits)
