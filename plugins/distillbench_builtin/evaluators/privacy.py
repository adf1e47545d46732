"""The privacy evaluator: how close a support set is to the training images, and what a simple attack learns.

Metrics (the runner reports each for the distilled set and, as ``random_*``, for the class-balanced
random real subset, which holds training images themselves):

* ``nn_dist``: the mean over support images of the Euclidean distance (in the preprocessed pixel
  space) to the nearest training image; ``nn_dist_min``: the smallest such distance (0: a copy).
* ``nn_dist_rel``: ``nn_dist`` over the median distance of a training image to its nearest *other*
  training image, so 1 means "as far from the training set as a typical real image is from its
  neighbour", and 0 means copies.
* ``mia_acc``: accuracy of a loss-threshold membership-inference attack (Yeom et al. 2018) on the
  KRR model fitted to the support set: ``samples`` training images (members: the distillation saw
  them) against as many test images (non-members), scored by the squared error of the KRR
  prediction, with the best threshold (an optimistic attacker): 0.5 means the model leaks nothing
  about who was in the training set.
* ``acc``: the KRR test accuracy of the same model, so accuracy and privacy sit side by side.

Rows of training images are drawn with the run seed; all distances are matrix products, blocked
over the training set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from distillbench.components.architectures import Architecture
from distillbench.components.evaluators import EvalContext, Evaluator
from distillbench.components.objectives import Support
from distillbench.krr import centered_one_hot, krr_fit

_STREAM = 0x9A1F
_BLOCK = 2048


def _min_sq_dist(a: np.ndarray, b: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """For each row of ``a``, the smallest squared distance to a row of ``b`` (blocked over ``b``)."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    a2 = np.sum(a * a, axis=1)[:, None]
    best = np.full(a.shape[0], np.inf)
    for start in range(0, b.shape[0], _BLOCK):
        block = b[start:start + _BLOCK]
        d = a2 + np.sum(block * block, axis=1)[None, :] - 2.0 * a @ block.T
        if exclude_self:
            d[d <= 1e-9 * max(1.0, float(np.max(a2)))] = np.inf  # the image itself (and exact duplicates)
        best = np.minimum(best, d.min(axis=1))
    return np.maximum(best, 0.0)


def attack_accuracy(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    """Best accuracy of "loss <= t means member" over all thresholds t, on equally many of each."""
    losses = np.concatenate([member_loss, nonmember_loss])
    is_member = np.concatenate([np.ones(len(member_loss)), np.zeros(len(nonmember_loss))])
    order = np.argsort(losses, kind="stable")
    members_below = np.concatenate([[0.0], np.cumsum(is_member[order])])  # threshold after k sorted losses
    k = np.arange(len(losses) + 1)
    nonmembers_above = len(nonmember_loss) - (k - members_below)
    ranked = losses[order]
    cut = np.concatenate([[True], ranked[1:] > ranked[:-1], [True]])  # a threshold never splits equal losses
    return float(np.max(((members_below + nonmembers_above) / len(losses))[cut]))


def build_privacy(*, kernel: str = "nngp", arch: Architecture, reg: float | None = None,
                  samples: int = 1000, b_std: float | None = None) -> Evaluator:
    from distillbench_builtin.evaluators.krr import kernel_params, resolve_reg

    def evaluate(support: Support, ctx: EvalContext) -> dict:
        data = ctx.data
        eval_reg = resolve_reg(reg, ctx)
        k = ctx.make_kernel(kernel, **kernel_params(arch, b_std))
        key = jax.random.fold_in(jax.random.PRNGKey(ctx.seed), _STREAM)
        rng = np.random.default_rng([int(ctx.seed), _STREAM])
        n = min(samples, len(data.y_train), len(data.y_test))
        members = rng.choice(len(data.y_train), size=n, replace=False)
        nonmembers = rng.choice(len(data.y_test), size=n, replace=False)

        xs = jnp.asarray(support.x, dtype=jnp.float64)
        alpha = krr_fit(k.kernel_fn(xs, xs, key), jnp.asarray(support.y), eval_reg)

        def predict(x):
            return np.asarray(k.kernel_fn(jnp.asarray(x, dtype=jnp.float64), xs, key) @ alpha)

        def sq_error(x, y):
            target = np.asarray(centered_one_hot(jnp.asarray(y), data.num_classes, dtype=jnp.float64))
            return np.mean((predict(x) - target) ** 2, axis=1)

        logits = ctx.loss.logits(support.loss_params, jnp.asarray(predict(data.x_test)))
        acc = float(np.mean(np.asarray(jnp.argmax(logits, axis=-1)) == np.asarray(data.y_test)))
        mia = attack_accuracy(sq_error(data.x_train[members], data.y_train[members]),
                              sq_error(data.x_test[nonmembers], data.y_test[nonmembers]))

        nearest = np.sqrt(_min_sq_dist(np.asarray(support.x), np.asarray(data.x_train)))
        real = np.sqrt(_min_sq_dist(np.asarray(data.x_train[members]), np.asarray(data.x_train), exclude_self=True))
        typical = float(np.median(real))
        return {"acc": acc, "nn_dist": float(nearest.mean()), "nn_dist_min": float(nearest.min()),
                "nn_dist_rel": float(nearest.mean() / typical) if typical > 0 else None, "mia_acc": mia,
                "eval_reg": eval_reg, "eval_kernel": kernel, "eval_arch": k.arch}

    return Evaluator(evaluate=evaluate)
