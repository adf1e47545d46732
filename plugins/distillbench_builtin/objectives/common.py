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


#: How ``init=noise`` draws the support images: KIP's uniform noise on [-1, 1] (KIP paper,
#: appendix "noise init", with the [-1, 1] range of its corruption noise) and the RFAD reference's
#: standard normal (``torch.empty(...).normal_(0, 1)``).
NOISE = {"uniform": lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0),
         "normal": lambda key, shape: jax.random.normal(key, shape, jnp.float32)}


def initial_support(problem: Problem, init: str, key, noise: str = "normal") -> tuple[Any, Any]:
    """Support images (float32) and centered one-hot labels (float32) to start from.

    ``real``: ``balanced_subset(y_train, ipc, C, seed)`` (the very set the random baseline scores).
    ``noise``: images drawn from ``key`` by ``NOISE[noise]``, labels ``ipc`` per class in class order.
    """
    data = problem.data
    c = data.num_classes
    if init == "real":
        idx = balanced_subset(data.y_train, problem.ipc, c, problem.seed)
        x = jnp.asarray(data.x_train[idx], dtype=jnp.float32)
        labels = jnp.asarray(data.y_train[idx], dtype=jnp.int32)
    elif init == "noise":
        shape = (problem.ipc * c, *data.image_shape)
        x = NOISE[noise](key, shape)
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


def pooled_krr_loss(params, xv, yv, keys, *, kernel: Kernel, loss: Loss, reg: float, dtype,
                    method: str = "cholesky"):
    """The loss of the support ``params`` on ``(xv, yv)`` under ONE kernel pooled from the draws ``keys``.

    The pooled kernel is the mean of the draws' kernel matrices. For ``rf-nngp`` (``K = w²ΦΦᵀ + b²``
    with ``Φ`` the features of N networks scaled by ``1/sqrt(N·F)``) that is exactly the kernel of
    all ``len(keys)·N`` networks together: the RFAD reference's validation kernel (16 fixed
    networks). One KRR solve, one loss; draws are computed one after the other (bounded memory).
    """
    xs = params["x"].astype(dtype)
    xv = jax.lax.stop_gradient(xv.astype(dtype))
    if not kernel.random:
        keys = keys[:1]  # every draw of an exact kernel is the same kernel

    def draw(key):
        return support_target_kernels(kernel, xs, xv, key, stop_target=True)

    k_ss, k_vs = jax.lax.map(draw, keys)
    pred = krr_predict(k_vs.mean(axis=0), k_ss.mean(axis=0), params["y"], reg, jnp.float64, method)
    return loss.apply(params["loss"], pred, yv)


def learning_rate(lr: float, schedule: str, steps: int):
    """``lr`` as optax takes it: a constant, or a cosine decay from ``lr`` to 0 over ``steps``."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(int(steps), 1))
    raise ValueError(f"unknown lr_schedule {schedule!r} (choose constant or cosine)")


def make_optimizer(support_opt: optax.GradientTransformation, loss: Loss, learn_labels: bool,
                   loss_params, loss_opt: Callable[[float], optax.GradientTransformation] = optax.adam,
                   ) -> tuple[optax.GradientTransformation, Any]:
    """One optax transformation for ``{"x", "y", "loss"}``.

    Images (and labels when ``learn_labels``) use ``support_opt``; frozen labels get zero updates
    (they stay bit-identical); loss parameters use ``loss_opt(loss.learning_rate)`` (frozen if 0):
    the objective's own optimizer family, as in the RFAD reference, where Platt's log-scale is a
    parameter group of the images' AdaBelief with its own learning rate.
    """
    loss_label = "loss" if loss.learning_rate > 0 else "frozen"
    labels = {
        "x": "support",
        "y": "support" if learn_labels else "frozen",
        "loss": jax.tree_util.tree_map(lambda _: loss_label, loss_params),
    }
    transforms = {"support": support_opt, "frozen": optax.set_to_zero()}
    if loss.learning_rate > 0:
        transforms["loss"] = loss_opt(loss.learning_rate)
    return optax.multi_transform(transforms, labels), labels


class Selection(NamedTuple):
    """Validation-based model selection (RFAD reference: every 40 steps, one kernel of 16 fixed
    networks, patience 1000).

    ``val_every`` steps, before the update, the loss of the current support on the held-out
    validation images (never the test split) is computed under one kernel pooled from
    ``val_models`` fixed kernel draws (``pooled_krr_loss``; with ``rf-nngp``, ``val_models ×
    num_networks`` networks); the best support so far (loss parameters included) is kept and
    returned; after ``patience`` steps without improvement the run stops early.
    """

    val_every: int
    patience: int
    val_models: int


def gradient_distiller(problem: Problem, *, steps: int, support_opt: optax.GradientTransformation,
                       learn_labels: bool, init: str, sampler_state: dict,
                       sample_targets: Callable[[dict, TrainData, Any], tuple[Any, Any]],
                       loss_fn: Callable[..., Any], corruption: float = 0.0,
                       selection: Selection | None = None,
                       loss_opt: Callable[[float], optax.GradientTransformation] = optax.adam,
                       noise: str = "normal", val_loss_fn: Callable[..., Any] | None = None) -> Distiller:
    """A ``Distiller`` taking one optimizer step on the support per call.

    ``sample_targets(sampler_state, train, key) -> (x_T, y_T)`` picks the target batch;
    ``loss_fn(params, x_T, y_T, kernel_key) -> scalar`` is the objective. The reported loss is the
    one at the parameters before the update.

    ``corruption`` (ρ, SPEC §4): a fixed random ρ fraction of the support pixels (drawn from the
    run seed) never moves from its initial value (KIP_ρ / RFAD_ρ use ``init=noise``).
    ``selection``: model selection on ``sampler_state["val"]`` (indices of held-out training images)
    by ``val_loss_fn(params, x_V, y_V, keys) -> scalar`` (``pooled_krr_loss`` with the objective's
    settings).
    ``loss_opt``: the optimizer of the loss parameters (see ``make_optimizer``); ``noise``: how
    ``init=noise`` draws the images (``NOISE``).
    """
    loss = problem.loss
    loss_params0 = loss.init()
    if selection is not None and val_loss_fn is None:
        raise ValueError("model selection needs a val_loss_fn")
    tx, _ = make_optimizer(support_opt, loss, learn_labels, loss_params0, loss_opt)
    sampler_state = {k: jnp.asarray(v) for k, v in sampler_state.items()}
    seed_key = jax.random.fold_in(jax.random.PRNGKey(problem.seed), _OBJECTIVE_STREAM)

    def init_fn(key):
        x, y = initial_support(problem, init, key, noise)
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
        value = val_loss_fn(params, xv, yv, sel["keys"]).astype(jnp.float64)
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


def validation_per_class(num_classes: int, val_per_class: int | None) -> int:
    """Images held out per class: ``val_per_class``, or the RFAD reference's 500 for 10 classes and
    100 otherwise (its ``run_distillation.py``)."""
    if val_per_class is not None:
        return int(val_per_class)
    return 500 if num_classes == 10 else 100


def target_pool(problem: Problem, val_per_class: int | None, use_validation: bool) -> tuple[np.ndarray, dict]:
    """Training indices available as targets, and ``{"val": indices}`` held out for selection.

    The validation images, ``validation_per_class`` of each class, come from the training split
    (from the run seed on their own stream), never from the test split, and are never used as
    targets (the reference draws them with replacement and leaves them among the targets).
    """
    data = problem.data
    everything = np.arange(len(data.y_train))
    if not use_validation:
        return everything, {}
    per_class = validation_per_class(data.num_classes, val_per_class)
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    if per_class >= counts.min():
        raise ValueError(f"holding out {per_class} validation images per class leaves no training targets "
                         f"for the smallest class ({counts.min()} images); set objective.val_per_class lower")
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
