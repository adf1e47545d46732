"""KIP, Kernel Inducing Points (Nguyen, Chen, Lee, ICLR 2021; SPEC §2).

Each step draws a class-balanced target batch (``target_batch`` in total, ``target_batch // C``
per class, capped by the smallest class; the whole training set when ``target_batch >= n_train``),
computes ``K_SS`` and ``K_TS`` in ``dtype`` (one kernel sample from the step key for random
kernels; via features for feature-map kernels), predicts ``K_TS (K_SS + λI)^-1 y_S`` with a
float64 Cholesky solve and ``λ = reg · tr(K_SS)/|S|``, and takes one Adam step on the support
images (and labels if ``learn_labels``) and, with their own Adam at ``loss.learning_rate``, on the
loss parameters. The reported loss is the one before the update.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from distillbench.components.objectives import Distiller, Problem, TrainData
from distillbench.sampling import class_balanced_batch
from distillbench_builtin.objectives.common import (
    gradient_distiller,
    krr_loss,
    resolve_dtype,
    whole_or_balanced,
)


def build_kip(steps: int = 100, lr: float = 0.01, learn_labels: bool = False,
              target_batch: int = 6000, reg: float = 1e-6, dtype: str = "float64",
              init: str = "real"):
    kernel_dtype = resolve_dtype(dtype)

    def make(problem: Problem) -> Distiller:
        per_class, sampler = whole_or_balanced(problem, target_batch)

        def sample_targets(sampler_state, train: TrainData, key):
            if per_class is None:
                return train.x, train.y
            idx = class_balanced_batch(key, sampler_state["table"], sampler_state["counts"], per_class)
            return jnp.take(train.x, idx, axis=0), jnp.take(train.y, idx, axis=0)

        def loss_fn(params, xt, yt, key):
            return krr_loss(params, xt, yt, key, kernel=problem.kernel, loss=problem.loss,
                            reg=reg, dtype=kernel_dtype, method="cholesky")

        return gradient_distiller(
            problem, steps=steps, support_opt=optax.adam(lr), learn_labels=learn_labels,
            init=init, sampler_state=sampler, sample_targets=sample_targets, loss_fn=loss_fn)

    return make
