"""KIP, Kernel Inducing Points (Nguyen, Chen, Lee, ICLR 2021; SPEC §2).

Each step draws a class-balanced target batch (``target_batch`` in total, ``target_batch // C``
per class, capped by the smallest class; the whole training set when ``target_batch >= n_train``;
``distillbench.sampling.class_balanced``), computes ``K_SS`` and ``K_TS`` in ``dtype`` (one kernel
sample from the step key for random kernels; via features for feature-map kernels), predicts
``K_TS (K_SS + λI)^-1 y_S`` with a float64 Cholesky solve and ``λ = reg · tr(K_SS)/|S|``, and takes
one Adam step on the support images (and labels if ``learn_labels``) and, with their own Adam at
``loss_lr``, on the loss parameters. The reported loss is the one before the update.
``init=noise`` draws uniform noise on [-1, 1], as the KIP paper's noise init does.
``transform=true`` learns RFAD's support transform (``transform.py``) in the same Adam at
``transform_lr``; off by default (KIP's reference has none).
"""

from __future__ import annotations

import optax

from distillbench.components.objectives import Distiller, Problem
from distillbench.sampling import class_balanced
from distillbench_builtin.objectives.common import KrrLoss, Optimizer, Selection, gradient_distiller
from distillbench_builtin.objectives.common import krr_plan, learning_rate, resolve_dtype, target_pool
from distillbench_builtin.objectives.transform import SupportTransform


def build_kip(steps: int = 300, lr: float = 0.01, learn_labels: bool = False,
              target_batch: int = 6000, reg: float = 1e-6, dtype: str = "float64",
              init: str = "real", lr_schedule: str = "constant", corruption: float = 0.0,
              val_every: int = 0, val_per_class: int | None = None, val_models: int = 1, patience: int = 1000,
              loss_lr: float = 1e-2, transform: bool = False, transform_lr: float = 5e-5):
    krr = KrrLoss(reg, resolve_dtype(dtype), "cholesky")
    selection = Selection(val_every, patience, val_models) if val_every > 0 else None
    optimizer = Optimizer(optax.adam(learning_rate(lr, lr_schedule, steps)), learn_labels, optax.adam, loss_lr)

    def make(problem: Problem) -> Distiller:
        pool, val = target_pool(problem, val_per_class, selection is not None)
        sampler = class_balanced(problem.data.y_train, problem.data.num_classes, target_batch, pool)
        plan = krr_plan(problem, krr, sampler, val, steps=steps, init=init, corruption=corruption,
                        selection=selection, noise="uniform",
                        transform=SupportTransform(transform_lr) if transform else None)
        return gradient_distiller(problem, plan, optimizer)

    return make
