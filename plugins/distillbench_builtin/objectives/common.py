"""Plumbing shared by the built-in objectives: support initialisation, the KRR loss of a support
set on a target batch, the optimizer of (images, labels, loss parameters), and the generic
gradient-descent ``Distiller`` that KIP and RFAD both are.

State layout of the gradient objectives (KIP, RFAD), a dict pytree::

    {"params": {"x": (m, H, W, C) float32,      # support images
                "y": (m, C) float32,             # support labels (mean-centered one-hot at init)
                "loss": loss.init()},            # loss parameters ({} for MSE)
     "opt": optax state,
     "sampler": {...}}                           # per-problem index tables (may be {})

The support set is ``m = ipc · C`` examples grouped by class (``ipc`` of class 0, then class 1...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distillbench.components.kernels import Kernel
from distillbench.components.losses import Loss
from distillbench.components.objectives import Distiller, Problem, Support, TrainData
from distillbench.krr import centered_one_hot, krr_predict
from distillbench.sampling import balanced_subset, class_index_table

_OBJECTIVE_STREAM = 0x0B1EC7
_VALIDATION_STREAM = 0x7A11D
_DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
_HIGHEST = jax.lax.Precision.HIGHEST


def resolve_dtype(name: str):
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (choose float64 or float32)") from None


def initial_support(problem: Problem, init: str, key) -> tuple[Any, Any]:
    """Support images (float32) and centered one-hot labels (float32) to start from.

    ``real``: ``balanced_subset(y_train, ipc, C, seed)`` (the very set the random baseline scores).
    ``noise``: standard normal images drawn from ``key``, labels ``ipc`` per class in class order.
    """
    data = problem.data
    c = data.num_classes
    if init == "real":
        idx = balanced_subset(data.y_train, problem.ipc, c, problem.seed)
        x = jnp.asarray(data.x_train[idx], dtype=jnp.float32)
        labels = jnp.asarray(data.y_train[idx], dtype=jnp.int32)
    elif init == "noise":
        shape = (problem.ipc * c, *data.image_shape)
        x = jax.random.normal(key, shape, dtype=jnp.float32)
        labels = jnp.repeat(jnp.arange(c, dtype=jnp.int32), problem.ipc)
    else:
        raise ValueError(f"unknown init {init!r} (choose real or noise)")
    return x, centered_one_hot(labels, c, dtype=jnp.float32)


def support_target_kernels(kernel: Kernel, xs, xt, key, stop_target: bool = False):
    """``(K_SS, K_TS)`` for support images ``xs`` and target images ``xt``, in their dtype.

    Feature-map kernels compute the support and target features once (linear cost) and take dot
    products. ``stop_target`` cuts autodiff through the target side (RFAD: target features are
    constants; the gradient reaches the support only through the support features).
    """
    if stop_target:
        xt = jax.lax.stop_gradient(xt)
    if kernel.feature_fn is not None:
        fs = kernel.feature_fn(xs, key)
        ft = kernel.feature_fn(xt, key)
        if stop_target:
            ft = jax.lax.stop_gradient(ft)
        k_ss = jnp.matmul(fs, fs.T, precision=_HIGHEST)
        k_ts = jnp.matmul(ft, fs.T, precision=_HIGHEST)
        return k_ss, k_ts
    return kernel.kernel_fn(xs, xs, key), kernel.kernel_fn(xt, xs, key)


def krr_loss(params, xt, yt, key, *, kernel: Kernel, loss: Loss, reg: float, dtype,
             method: str = "cholesky", stop_target: bool = False):
    """Loss of the KRR predictions of the support ``params`` on the targets ``(xt, yt)``.

    Kernels are computed in ``dtype``; the solve runs in float64 (``method``: cholesky or lu)
    with the trace-scaled ridge ``reg · tr(K_SS)/|S|``.
    """
    xs = params["x"].astype(dtype)
    k_ss, k_ts = support_target_kernels(kernel, xs, xt.astype(dtype), key, stop_target)
    pred = krr_predict(k_ts, k_ss, params["y"], reg, jnp.float64, method)
    return loss.apply(params["loss"], pred, yt)


def learning_rate(lr: float, schedule: str, steps: int):
    """``lr`` as optax takes it: a constant, or a cosine decay from ``lr`` to 0 over ``steps``."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(int(steps), 1))
    raise ValueError(f"unknown lr_schedule {schedule!r} (choose constant or cosine)")


def make_optimizer(support_opt: optax.GradientTransformation, loss: Loss, learn_labels: bool,
                   loss_params) -> tuple[optax.GradientTransformation, Any]:
    """One optax transformation for ``{"x", "y", "loss"}``.

    Images (and labels when ``learn_labels``) use ``support_opt``; frozen labels get zero updates
    (they stay bit-identical); loss parameters use Adam at ``loss.learning_rate`` (frozen if 0).
    """
    loss_label = "loss" if loss.learning_rate > 0 else "frozen"
    labels = {
        "x": "support",
        "y": "support" if learn_labels else "frozen",
        "loss": jax.tree_util.tree_map(lambda _: loss_label, loss_params),
    }
    transforms = {"support": support_opt, "frozen": optax.set_to_zero()}
    if loss.learning_rate > 0:
        transforms["loss"] = optax.adam(loss.learning_rate)
    return optax.multi_transform(transforms, labels), labels


class Selection(NamedTuple):
    """Validation-based model selection (RFAD reference: every 40 steps, 16 models, patience 1000).

    ``val_every`` steps, the loss of the current support on the held-out validation images (never
    the test split) is averaged over ``val_models`` fixed kernel draws; the best support so far is
    kept and returned; after ``patience`` steps without improvement the run stops early.
    """

    val_every: int
    patience: int
    val_models: int


def gradient_distiller(problem: Problem, *, steps: int, support_opt: optax.GradientTransformation,
                       learn_labels: bool, init: str, sampler_state: dict,
                       sample_targets: Callable[[dict, TrainData, Any], tuple[Any, Any]],
                       loss_fn: Callable[..., Any], corruption: float = 0.0,
                       selection: Selection | None = None) -> Distiller:
    """A ``Distiller`` taking one optimizer step on the support per call.

    ``sample_targets(sampler_state, train, key) -> (x_T, y_T)`` picks the target batch;
    ``loss_fn(params, x_T, y_T, kernel_key) -> scalar`` is the objective. The reported loss is the
    one at the parameters before the update.

    ``corruption`` (ρ, SPEC §4): a fixed random ρ fraction of the support pixels (drawn from the
    run seed) never moves from its initial value (KIP_ρ / RFAD_ρ use ``init=noise``).
    ``selection``: model selection on ``sampler_state["val"]`` (indices of held-out training images).
    """
    loss = problem.loss
    loss_params0 = loss.init()
    tx, _ = make_optimizer(support_opt, loss, learn_labels, loss_params0)
    sampler_state = {k: jnp.asarray(v) for k, v in sampler_state.items()}
    seed_key = jax.random.fold_in(jax.random.PRNGKey(problem.seed), _OBJECTIVE_STREAM)

    def init_fn(key):
        x, y = initial_support(problem, init, key)
        params = {"x": x, "y": y, "loss": loss.init()}
        state = {"params": params, "opt": tx.init(params), "sampler": dict(sampler_state)}
        if corruption > 0:
            frozen = jax.random.bernoulli(jax.random.fold_in(seed_key, 1), corruption, x.shape)
            state["movable"] = (~frozen).astype(x.dtype)
        if selection is not None:
            state["select"] = {
                "best": params, "best_loss": jnp.asarray(jnp.inf, jnp.float64),
                "since_best": jnp.asarray(0, jnp.int32), "step": jnp.asarray(0, jnp.int32),
                "keys": jax.random.split(jax.random.fold_in(seed_key, 2), selection.val_models),
            }
        return state

    def validate(params, sel, train: TrainData, idx):
        xv, yv = jnp.take(train.x, idx, axis=0), jnp.take(train.y, idx, axis=0)
        value = jnp.mean(jax.vmap(lambda k: loss_fn(params, xv, yv, k))(sel["keys"])).astype(jnp.float64)
        better = value < sel["best_loss"]
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), params, sel["best"])
        return {**sel, "best": best, "best_loss": jnp.where(better, value, sel["best_loss"]),
                "since_best": jnp.where(better, 0, sel["since_best"])}

    def step(state, train: TrainData, key):
        kernel_key, batch_key = jax.random.split(key)
        new_state = dict(state)
        if selection is not None:
            sel = state["select"]
            due = sel["step"] % selection.val_every == 0
            sel = jax.lax.cond(due, lambda s: validate(state["params"], s, train, state["sampler"]["val"]),
                               lambda s: s, sel)
            new_state["select"] = {**sel, "step": sel["step"] + 1, "since_best": sel["since_best"] + 1}
        xt, yt = sample_targets(state["sampler"], train, batch_key)
        value, grads = jax.value_and_grad(loss_fn)(state["params"], xt, yt, kernel_key)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        if corruption > 0:
            updates = {**updates, "x": updates["x"] * state["movable"]}
        new_state["params"] = optax.apply_updates(state["params"], updates)
        new_state["opt"] = opt
        return new_state, value

    def support(state) -> Support:
        p = state["select"]["best"] if selection is not None else state["params"]
        return Support(x=p["x"], y=p["y"], loss_params=p["loss"])

    stopped = None
    if selection is not None:
        def stopped(state):
            return state["select"]["since_best"] > selection.patience

    return Distiller(init=init_fn, step=step, support=support, num_steps=int(steps), stopped=stopped)


def target_pool(problem: Problem, val_size: int, use_validation: bool) -> tuple[np.ndarray, dict]:
    """Training indices available as targets, and ``{"val": indices}`` held out for selection.

    The validation images come from the training split (class-balanced, from the run seed on
    their own stream), never from the test split, and are never used as targets.
    """
    data = problem.data
    everything = np.arange(len(data.y_train))
    if not use_validation:
        return everything, {}
    per_class = max(1, val_size // data.num_classes)
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    if per_class >= counts.min():
        raise ValueError(f"val_size={val_size} leaves no training targets for the smallest class "
                         f"({counts.min()} images)")
    val = balanced_subset(data.y_train, per_class, data.num_classes, problem.seed, stream=_VALIDATION_STREAM)
    return np.setdiff1d(everything, val), {"val": val}


def whole_or_balanced(problem: Problem, target_batch: int, pool: np.ndarray | None = None):
    """Class-balanced target sampling plan for KIP over the training indices ``pool`` (default all).

    Returns ``(per_class, sampler_state)``; ``per_class`` is ``None`` when the whole pool is used
    (``target_batch >= len(pool)``; ``sampler_state["pool"]`` then lists it unless it is the whole
    training set). Otherwise ``per_class = target_batch // C`` (at least 1), capped by the
    smallest class count, with a per-class table of global indices.
    """
    data = problem.data
    n = len(data.y_train)
    pool = np.arange(n) if pool is None else np.asarray(pool)
    if target_batch >= len(pool):
        return None, ({} if len(pool) == n else {"pool": pool.astype(np.int32)})
    table, counts = class_index_table(data.y_train[pool], data.num_classes)
    per_class = max(1, target_batch // data.num_classes)
    per_class = min(per_class, int(np.min(counts)))
    return per_class, {"table": pool[table].astype(np.int32), "counts": counts}
