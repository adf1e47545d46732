"""FRePo, neural feature regression with pooling (Zhou, Nezhadarya & Ba, NeurIPS 2022), as its
reference code (``yongchao97/FRePo``, ``lib/datadistillation/frepo.py``) computes it.

FRePo is KIP's meta-gradient through the conjugate kernel of *finite networks trained while the
support is distilled*: ``kernel=frepo-pool`` (``kernels/learned_pool.py``) holds the pool, and
this objective's step is the reference's ``proto_train_step`` followed by its online model update
(``common.gradient_distiller`` calls ``Learning.update`` after each support step). Per step:

* ``target_batch`` uniformly sampled targets; their features are constants (the reference
  computes them outside the gradient), the support's carry the gradient;
* the prediction of ``nfr``: ``K_TS (K_SS + λI)^-1 y_S`` with ``λ = reg · tr(K_SS)/|S|``
  (float64 Cholesky here, the reference's float32 ``solve(sym_pos=True)``);
* ``flip``: the support and its horizontal mirror images (labels repeated) form the kernel's
  support (the reference's ``use_flip``: on except for MNIST and Fashion-MNIST, and off at 10+
  images per class on CIFAR-100 and Tiny ImageNet);
* loss ``C · loss(pred, y_T)`` (the reference sums the squared error over the C classes, ``mse``
  averages over them) plus the mean label margin ``−min(y₍₁₎ − y₍₂₎, 1/C)`` of the support labels,
  whose gradient only matters when labels are learned (``learn_labels``, on by default as in the
  reference);
* labels start centred one-hot divided by ``sqrt(C / 10)`` (``init_proto(scale_y=True)``: 1 for
  10 classes);
* one LAMB step on images and labels, learning rate cosine-decayed over ``steps`` to
  ``0.1 · lr`` (``optax.cosine_decay_schedule(lr, steps, alpha=0.1)``).

The defaults are sized for a CPU (600 steps at ``lr=1e-2``, with ``kernel=frepo-pool``'s width 32:
about 30 s on the embedded ``digits`` on 2 cores; 300 steps gained 2.5 points less there over 3 seeds);
the reference's settings (500,000 steps at 3e-4, width 128) are ``campaigns/frepo-table1.toml``'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from distillbench.components.objectives import Distiller, Problem
from distillbench.sampling import uniform
from distillbench_builtin.objectives.common import (KrrLoss, Optimizer, Plan, gradient_distiller, krr_loss,
                                                   resolve_dtype, target_pool)


def label_margin(y):
    """The reference's ``lb_margin_th`` per support label: ``−min(top1 − top2, 1/C)``."""
    top = jax.lax.top_k(y, 2)[0]
    return -jnp.minimum(top[..., 0] - top[..., 1], 1.0 / y.shape[-1])


def with_flips(params):
    """The support and its horizontal mirror images (NHWC: the W axis), labels repeated."""
    return params._replace(x=jnp.concatenate([params.x, jnp.flip(params.x, axis=-2)]),
                           y=jnp.concatenate([params.y, params.y]))


def frepo_loss(params, xt, yt, key, *, kernel, loss, reg: float, dtype, flip: bool, num_classes: int):
    """The loss of the reference's ``proto_train_step`` for the support ``params`` on targets ``(xt, yt)``."""
    margin = label_margin(params.y).mean()
    seen = with_flips(params) if flip else params
    krr = krr_loss(seen, xt, yt, key, kernel=kernel, loss=loss, reg=reg, dtype=dtype, method="cholesky",
                   stop_target=True)
    return num_classes * krr + margin


def lamb_cosine(lr: float, steps: int) -> optax.GradientTransformation:
    """The reference's support optimizer: LAMB, cosine decay over the run to a tenth of ``lr``."""
    return optax.lamb(optax.cosine_decay_schedule(lr, max(int(steps), 1), alpha=0.1))


def build_frepo(steps: int = 600, lr: float = 1e-2, learn_labels: bool = True, target_batch: int = 1024,
                reg: float = 1e-6, dtype: str = "float32", init: str = "real", flip: bool = False,
                loss_lr: float = 1e-2):
    krr = KrrLoss(reg, resolve_dtype(dtype), "cholesky", stop_target=True)
    optimizer = Optimizer(lamb_cosine(lr, steps), learn_labels, optax.adam, loss_lr)

    def make(problem: Problem) -> Distiller:
        pool, _ = target_pool(problem, None, False)
        sampler = uniform(len(problem.data.y_train), target_batch, pool)

        def loss_fn(params, xt, yt, key, kernel):
            return frepo_loss(params, xt, yt, key, kernel=kernel, loss=problem.loss, reg=krr.reg, dtype=krr.dtype,
                              flip=flip, num_classes=problem.data.num_classes)

        classes = problem.data.num_classes
        plan = Plan(steps=steps, init=init, sampler=sampler, loss_fn=loss_fn, noise="normal",
                    label_scale=float((classes / 10) ** -0.5))  # init_proto(scale_y=True)
        return gradient_distiller(problem, plan, optimizer)

    return make
