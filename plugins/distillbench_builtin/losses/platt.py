"""Platt-scaled cross-entropy (RFAD, SPEC §4).

``logits = e^k · pred`` with one learnable scalar ``k`` (``params["log_scale"]``, float32),
initialised at ``init_log_scale`` (0 ⇒ temperature 1); the loss is the mean over the batch of the
softmax cross-entropy against ``argmax y`` (``y`` is mean-centered one-hot, so its argmax is the
class). ``e^k > 0``, so the scale never changes the argmax of the predictions. ``k`` is learned by
the objective, at its ``loss_lr``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distillbench.components.losses import Loss


def platt_logits(params, pred):
    """``e^k · pred``."""
    return jnp.exp(params["log_scale"]) * pred


def platt_loss(params, pred, y):
    """Mean cross-entropy of ``softmax(e^k · pred)`` against the classes ``argmax y``."""
    logits = platt_logits(params, pred)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    labels = jnp.argmax(y, axis=-1)
    picked = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    return -jnp.mean(picked)


def build_platt(init_log_scale: float = 0.0) -> Loss:
    def init():
        return {"log_scale": jnp.asarray(init_log_scale, dtype=jnp.float32)}

    return Loss(init=init, apply=platt_loss, logits=platt_logits)
