"""RFAD, dataset distillation with random-feature NNGP (Loo et al., NeurIPS 2022; SPEC §4,
Algorithm 1).

Each step samples a uniform target batch of ``target_batch`` training examples without
replacement (all of them when ``target_batch >= n_train``; ``distillbench.sampling.uniform``), one
kernel sample from the step key (the default ``rf-nngp`` kernel draws its random networks from it),
computes the support and target features in ``dtype`` (float32 by default) with **no gradient
through the target side** (target features are ``stop_gradient`` constants), predicts
``K_TS (K_SS + λI)^-1 y_S`` with a float64 LU solve and ``λ = reg · tr(K_SS)/|S|``, and takes one
AdaBelief step (eps 1e-16) on the support images (and labels if ``learn_labels``) and, in the same
AdaBelief at its own rate ``loss_lr``, on the loss parameters (Platt's log-scale by default), as
the reference does. ``init=noise`` draws standard normal images (the reference's
``normal_(0, 1)``). With an exact kernel this is RFAD's algorithm with that kernel.
Validation-based model selection (``val_every``; the reference uses 40, one kernel of 16 fixed
networks = ``val_models=2`` draws of the default 8, and patience 1000), corruption ρ and a cosine
learning-rate decay (``lr_schedule``) are documented options, off by default. The reference's
learned support transform (``transform.py``: an identity-initialised ``d × d`` matrix ``T`` in the
same AdaBelief at ``transform_lr=5e-5``; every kernel and the stored set see ``X @ T``) is on by
default, as every published RFAD number was made with it; ``transform=false`` is the algorithm as
the paper describes it.
"""

from __future__ import annotations

import optax

from distillbench.components.objectives import Distiller, Problem
from distillbench.sampling import uniform
from distillbench_builtin.objectives.common import (KrrLoss, Optimizer, Selection, gradient_distiller, krr_plan,
                                                   learning_rate, resolve_dtype, target_pool)
from distillbench_builtin.objectives.transform import SupportTransform


def adabelief(lr):
    """The RFAD reference's optimizer: AdaBelief with eps 1e-16 (``torch_optimizer.AdaBelief``)."""
    return optax.adabelief(lr, eps=1e-16)


def build_rfad(steps: int = 300, lr: float = 1e-3, target_batch: int = 5120, reg: float = 5e-3,
               learn_labels: bool = False, dtype: str = "float32", init: str = "real",
               lr_schedule: str = "constant", corruption: float = 0.0, val_every: int = 0,
               val_per_class: int | None = None, val_models: int = 2, patience: int = 1000,
               loss_lr: float = 1e-2, transform: bool = True, transform_lr: float = 5e-5):
    krr = KrrLoss(reg, resolve_dtype(dtype), "lu", stop_target=True)
    selection = Selection(val_every, patience, val_models) if val_every > 0 else None
    optimizer = Optimizer(adabelief(learning_rate(lr, lr_schedule, steps)), learn_labels, adabelief, loss_lr)
    support_transform = SupportTransform(transform_lr) if transform else None

    def make(problem: Problem) -> Distiller:
        pool, val = target_pool(problem, val_per_class, selection is not None)
        sampler = uniform(len(problem.data.y_train), target_batch, pool)
        plan = krr_plan(problem, krr, sampler, val, steps=steps, init=init, corruption=corruption,
                        selection=selection, noise="normal", transform=support_transform)
        return gradient_distiller(problem, plan, optimizer)

    return make
