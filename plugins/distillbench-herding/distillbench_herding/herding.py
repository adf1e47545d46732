"""Kernel herding (Chen, Welling & Smola, UAI 2010) as a distillbench objective.

For each class ``c``, with a candidate pool ``P_c`` of real training images (a seeded
class-balanced draw of ``pool`` images per class, ``distillbench.sampling.balanced_subset``),
herding picks ``ipc`` images greedily, without replacement::

    x_{t+1} = argmax_{x in P_c}  mean_{x' in P_c} k(x, x')  -  1/(t+1) * sum_{s<=t} k(x, x_s)

so that the kernel mean of the chosen images tracks the kernel mean of the class. ``k`` is the
kernel the run combined the objective with (``problem.kernel``): a feature-map kernel is used
through ``feature_fn`` (Gram matrix ``Phi Phi^T``), an exact one through ``kernel_fn``; a random
kernel is drawn once from the step key.

The selection is one step (``num_steps = 1``). ``init`` is the class-balanced random real subset,
the very set the evaluator's random baseline scores, so the reported gain is herding's gain over
random selection. The reported loss is the run's loss (``problem.loss``) of the KRR predictions of
the chosen set on every candidate image.

The state is a ``HerdingState`` NamedTuple (typed, like optax's states): the support images and
labels (``m = ipc * C``, grouped by class), the loss parameters and the candidate indices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distillbench.components.objectives import Distiller, Problem, Support, TrainData
from distillbench.krr import centered_one_hot, krr_predict
from distillbench.sampling import balanced_subset

_DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
_HIGHEST = jax.lax.Precision.HIGHEST


class HerdingState(NamedTuple):
    x: Any  # (m, H, W, C) float32 support images
    y: Any  # (m, C) float32 centered one-hot labels
    loss: Any  # loss.init()
    pool: Any  # (C, P) int32 candidate indices per class


def herd(gram, k: int):
    """Indices of ``k`` kernel-herding picks (distinct) from a ``(P, P)`` Gram matrix of a pool."""
    p = gram.shape[0]
    mean = gram.mean(axis=1)

    def pick(t, carry):
        total, taken, picks = carry
        score = jnp.where(taken, -jnp.inf, mean - total / (t + 1))
        i = jnp.argmax(score).astype(jnp.int32)
        return total + gram[:, i], taken.at[i].set(True), picks.at[t].set(i)

    carry = (jnp.zeros(p, gram.dtype), jnp.zeros(p, bool), jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, k, pick, carry)[2]


def build_herding(pool: int = 100, reg: float = 1e-6, dtype: str = "float64"):
    kernel_dtype = _DTYPES[dtype]

    def make(problem: Problem) -> Distiller:
        data, kernel, loss = problem.data, problem.kernel, problem.loss
        c, ipc = data.num_classes, problem.ipc
        counts = np.bincount(np.asarray(data.y_train), minlength=c)
        per_class = max(ipc, min(pool, int(counts.min())))
        candidates = balanced_subset(data.y_train, per_class, c, problem.seed).reshape(c, per_class)
        start = balanced_subset(data.y_train, ipc, c, problem.seed)
        labels = centered_one_hot(jnp.repeat(jnp.arange(c), ipc), c)

        def gram(x, key):
            if kernel.feature_fn is not None:  # feature-map form: one feature pass, then dot products
                f = kernel.feature_fn(x, key)
                return jnp.matmul(f, f.T, precision=_HIGHEST)
            return kernel.kernel_fn(x, x, key)

        def support_target(xs, xt, key):
            if kernel.feature_fn is not None:
                fs, ft = kernel.feature_fn(xs, key), kernel.feature_fn(xt, key)
                return jnp.matmul(fs, fs.T, precision=_HIGHEST), jnp.matmul(ft, fs.T, precision=_HIGHEST)
            return kernel.kernel_fn(xs, xs, key), kernel.kernel_fn(xt, xs, key)

        def init(key) -> HerdingState:
            del key  # the start is the seeded random real subset
            return HerdingState(x=jnp.asarray(data.x_train[start], jnp.float32), y=labels, loss=loss.init(),
                                pool=jnp.asarray(candidates, jnp.int32))

        def step(state: HerdingState, train: TrainData, key):
            pool_idx = state.pool
            flat = pool_idx.reshape(-1)
            cand = train.x[flat].astype(kernel_dtype)
            per_class_images = cand.reshape(c, -1, *cand.shape[1:])
            grams = jax.lax.map(lambda x: gram(x, key), per_class_images)  # (C, P, P), one class at a time
            picks = jax.vmap(lambda g: herd(g, ipc))(grams)  # (C, ipc) positions in each pool
            chosen = jnp.take_along_axis(pool_idx, picks, axis=1).reshape(-1)
            xs = train.x[chosen]
            k_ss, k_ts = support_target(xs.astype(kernel_dtype), cand, key)
            pred = krr_predict(k_ts, k_ss, state.y, reg)
            value = loss.apply(state.loss, pred, train.y[flat])
            return state._replace(x=xs.astype(state.x.dtype)), value

        def support(state: HerdingState) -> Support:
            return Support(x=state.x, y=state.y, loss_params=state.loss)

        return Distiller(init=init, step=step, support=support, num_steps=1)

    return make
