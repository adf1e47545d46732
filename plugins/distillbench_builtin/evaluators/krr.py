"""The KRR evaluator: fit kernel ridge regression on the support set, score the test split.

``pred = K_test,S (K_SS + λI)^-1 y_S`` with ``λ = reg · tr(K_SS)/|S|`` (float64 Cholesky solve),
kernels in ``dtype``. Metrics: ``acc`` (argmax of ``loss.logits(loss_params, pred)`` against the
test labels; for MSE the logits are the predictions, for Platt a positive scaling, so the argmax is
the KRR argmax either way), ``mse`` (``mean((pred − y)²)`` over all entries against centered
one-hot test labels), ``eval_reg`` (the ridge coefficient used), and what ran: ``eval_kernel`` and
``eval_arch`` (the arch the kernel was built with; ``None`` for a kernel that has none).

Resolution of the parameters: ``arch`` arrives built (``arch="auto"``, the run kernel's arch,
else ``fc1``, is resolved by the planner: ``runner.plan.auto_reference``); ``reg=None`` is the
run objective's ``reg`` when it declares one, else 1e-6;
``b_std=None`` is the evaluation kernel's own default (0.1; the KIP paper's kernels use 0.01). A kernel
whose networks learn (``Kernel.learning``, e.g. ``frepo-pool``) first has them trained on the set
being scored for ``updates`` updates (``distillbench.components.kernels.fit``; FRePo's
``eval_on_proto_krr`` trains one fresh network 1000 steps), then scores with their kernel. Random
evaluation kernels draw one sample from a key derived from the run seed. The kernels block their
own work, so the test set is passed whole; one jitted computation is reused across the calls
made with the same context (distilled set and baseline have the same shapes).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distillbench.components.architectures import Architecture
from distillbench.components.evaluators import EvalContext, Evaluator
from distillbench.components.kernels import fit
from distillbench.components.objectives import Support
from distillbench.krr import DEFAULT_REG, EVAL_STREAM, centered_one_hot, krr_predict

_DTYPES = {"float64": jnp.float64, "float32": jnp.float32}


def kernel_params(arch: Architecture, b_std: float | None) -> dict[str, Any]:
    """The evaluation kernel's parameters: the architecture by name (the registry that built it
    hands the kernel the same value) and ``b_std`` when given (KIP's kernels: 0.01)."""
    return {"arch": arch.name, **({} if b_std is None else {"b_std": b_std})}


def resolve_reg(reg: float | None, ctx: EvalContext) -> float:
    if reg is not None:
        return float(reg)
    return float(ctx.ridge) if ctx.ridge is not None else DEFAULT_REG


def _scorer(kernel, dtype, reg: float, updates: int):
    def score(xs, ys, x_test, key):
        xs = xs.astype(dtype)
        scored = kernel
        if kernel.learning is not None:  # the networks are trained on the set first, as the method evaluates
            scored = kernel.learning.bind(fit(kernel.learning, jax.random.fold_in(key, 1), xs, ys, updates))
        k_ss = scored.kernel_fn(xs, xs, key)
        k_ts = scored.kernel_fn(x_test.astype(dtype), xs, key)
        return krr_predict(k_ts, k_ss, ys, reg, jnp.float64, "cholesky")

    return jax.jit(score)


def build_krr(*, kernel: str = "nngp", arch: Architecture, reg: float | None = None,
              dtype: str = "float64", b_std: float | None = None, updates: int = 1000) -> Evaluator:
    if dtype not in _DTYPES:
        raise ValueError(f"krr evaluator: unknown dtype {dtype!r} (choose float64 or float32)")
    kernel_dtype = _DTYPES[dtype]
    cache: dict = {}

    def evaluate(support: Support, ctx: EvalContext) -> dict[str, float]:
        eval_reg = resolve_reg(reg, ctx)
        if cache.get("ctx") is not ctx or cache.get("key") != eval_reg:
            k = ctx.make_kernel(kernel, **kernel_params(arch, b_std))
            cache.clear()
            cache.update(ctx=ctx, key=eval_reg, arch=k.arch,
                         fn=_scorer(k, kernel_dtype, eval_reg, updates))
        data = ctx.data
        key = jax.random.fold_in(jax.random.PRNGKey(ctx.seed), EVAL_STREAM)
        pred = cache["fn"](jnp.asarray(support.x), jnp.asarray(support.y),
                           jnp.asarray(data.x_test), key)
        logits = ctx.loss.logits(support.loss_params, pred)
        y_test = np.asarray(data.y_test)
        acc = float(np.mean(np.asarray(jnp.argmax(logits, axis=-1)) == y_test))
        target = centered_one_hot(jnp.asarray(y_test), data.num_classes, dtype=jnp.float64)
        mse = float(jnp.mean(jnp.square(pred - target)))
        # what ran: the kernel and the arch it was built with (None for a kernel without one)
        return {"acc": acc, "mse": mse, "eval_reg": eval_reg, "eval_kernel": kernel, "eval_arch": cache["arch"]}

    return Evaluator(evaluate=evaluate)
