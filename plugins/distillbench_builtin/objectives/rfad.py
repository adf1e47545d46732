"""RFAD, dataset distillation with random-feature NNGP (Loo et al., NeurIPS 2022; SPEC §4,
Algorithm 1).

Each step samples a uniform target batch of ``target_batch`` training examples without
replacement (all of them when ``target_batch >= n_train``), one kernel sample from the step key
(the default ``rf-nngp`` kernel draws its random networks from it), computes the support and
target features in ``dtype`` (float32 by default) with **no gradient through the target side**
(target features are ``stop_gradient`` constants), predicts ``K_TS (K_SS + λI)^-1 y_S`` with a
float64 LU solve and ``λ = reg · tr(K_SS)/|S|``, and takes one AdaBelief step (eps 1e-16) on the
support images (and labels if ``learn_labels``) and one Adam step at ``loss.learning_rate`` on the
loss parameters (Platt's log-scale by default). With an exact kernel this is RFAD's algorithm with
that kernel. Not implemented: the reference's validation-based model selection and its optional
learned linear transform of the support images (SPEC §4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from distillbench.components.objectives import Distiller, Problem, TrainData
from distillbench_builtin.objectives.common import gradient_distiller, krr_loss, resolve_dtype


def build_rfad(steps: int = 100, lr: float = 1e-3, target_batch: int = 5120, reg: float = 5e-3,
               learn_labels: bool = False, dtype: str = "float32", init: str = "real"):
    kernel_dtype = resolve_dtype(dtype)

    def make(problem: Problem) -> Distiller:
        n_train = len(problem.data.y_train)
        batch = None if target_batch >= n_train else int(target_batch)

        def sample_targets(sampler_state, train: TrainData, key):
            del sampler_state
            if batch is None:
                return train.x, train.y
            idx = jax.random.choice(key, n_train, shape=(batch,), replace=False)
            return jnp.take(train.x, idx, axis=0), jnp.take(train.y, idx, axis=0)

        def loss_fn(params, xt, yt, key):
            return krr_loss(params, xt, yt, key, kernel=problem.kernel, loss=problem.loss,
                            reg=reg, dtype=kernel_dtype, method="lu", stop_target=True)

        return gradient_distiller(
            problem, steps=steps, support_opt=optax.adabelief(lr, eps=1e-16),
            learn_labels=learn_labels, init=init, sampler_state={},
            sample_targets=sample_targets, loss_fn=loss_fn)

    return make
