"""KIP, Kernel Inducing Points (Nguyen, Chen, Lee, ICLR 2021; SPEC §2).

Each step draws a class-balanced target batch (``target_batch`` in total, ``target_batch // C``
per class, capped by the smallest class; the whole training set when ``target_batch >= n_train``),
computes ``K_SS`` and ``K_TS`` in ``dtype`` (one kernel sample from the step key for random
kernels; via features for feature-map kernels), predicts ``K_TS (K_SS + λI)^-1 y_S`` with a
float64 Cholesky solve and ``λ = reg · tr(K_SS)/|S|``, and takes one Adam step on the support
images (and labels if ``learn_labels``) and, with their own Adam at ``loss.learning_rate``, on the
loss parameters. The reported loss is the one before the update. ``init=noise`` draws uniform
noise on [-1, 1], as the KIP paper's noise init does.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from distillbench.components.objectives import Distiller, Problem, TrainData
from distillbench.sampling import class_balanced_batch
from distillbench_builtin.objectives.common import (
    Selection,
    gradient_distiller,
    krr_loss,
    pooled_krr_loss,
    learning_rate,
    resolve_dtype,
    target_pool,
    whole_or_balanced,
)


def build_kip(steps: int = 100, lr: float = 0.01, learn_labels: bool = False,
              target_batch: int = 6000, reg: float = 1e-6, dtype: str = "float64",
              init: str = "real", lr_schedule: str = "constant", corruption: float = 0.0,
              val_every: int = 0, val_per_class: int | None = None, val_models: int = 1, patience: int = 1000):
    kernel_dtype = resolve_dtype(dtype)
    selection = Selection(val_every, patience, val_models) if val_every > 0 else None

    def make(problem: Problem) -> Distiller:
        pool, held_out = target_pool(problem, val_per_class, selection is not None)
        per_class, sampler = whole_or_balanced(problem, target_batch, pool)
        sampler = {**sampler, **held_out}

        def sample_targets(sampler_state, train: TrainData, key):
            if per_class is None:
                if "pool" in sampler_state:
                    idx = sampler_state["pool"]
                    return jnp.take(train.x, idx, axis=0), jnp.take(train.y, idx, axis=0)
                return train.x, train.y
            idx = class_balanced_batch(key, sampler_state["table"], sampler_state["counts"], per_class)
            return jnp.take(train.x, idx, axis=0), jnp.take(train.y, idx, axis=0)

        def loss_fn(params, xt, yt, key):
            return krr_loss(params, xt, yt, key, kernel=problem.kernel, loss=problem.loss,
                            reg=reg, dtype=kernel_dtype, method="cholesky")

        def val_loss_fn(params, xv, yv, keys):
            return pooled_krr_loss(params, xv, yv, keys, kernel=problem.kernel, loss=problem.loss,
                                   reg=reg, dtype=kernel_dtype, method="cholesky")

        return gradient_distiller(
            problem, steps=steps, support_opt=optax.adam(learning_rate(lr, lr_schedule, steps)),
            learn_labels=learn_labels, init=init, sampler_state=sampler, sample_targets=sample_targets,
            loss_fn=loss_fn, corruption=corruption, selection=selection, loss_opt=optax.adam, noise="uniform",
            val_loss_fn=val_loss_fn)

    return make
