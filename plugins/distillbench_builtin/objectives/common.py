"""Plumbing shared by the built-in objectives: support initialisation, the KRR loss of a support
set on a target batch, the optimizer of (images, labels, loss parameters), and the generic
gradient-descent ``Distiller`` that KIP and RFAD both are.

The state of the gradient objectives (KIP, RFAD) is a ``GradientState`` of typed NamedTuples,
like optax's own states: the moved ``SupportParams`` (images, labels, loss parameters), the optax
state, the ``TargetSampler`` state, the corruption mask and the model-selection state (``None``
when unused). The support set is ``m = ipc · C`` examples grouped by class (``ipc`` of class 0,
then class 1...).
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
from distillbench.sampling import TargetSampler, balanced_subset, take
from distillbench_builtin.objectives.transform import SupportTransform, identity, support_images

_OBJECTIVE_STREAM = 0x0B1EC7
_VALIDATION_STREAM = 0x7A11D
_LEARNING_STREAM = 0x1EA12
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


class SupportParams(NamedTuple):
    """What the optimizer moves: support images ``(m, H, W, C)`` float32, labels ``(m, C)``
    (mean-centered one-hot at init), the loss's parameters (``loss.init()``, ``{}`` for MSE) and
    the learned support transform ``t`` (``d × d``; ``None``: none, see ``transform.py``)."""

    x: Any
    y: Any
    loss: Any
    t: Any = None


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
    xs = params.x.astype(dtype)
    k_ss, k_ts = support_target_kernels(kernel, xs, xt.astype(dtype), key, stop_target)
    pred = krr_predict(k_ts, k_ss, params.y, reg, jnp.float64, method)
    return loss.apply(params.loss, pred, yt)


def pooled_krr_loss(params, xv, yv, keys, *, kernel: Kernel, loss: Loss, reg: float, dtype,
                    method: str = "cholesky"):
    """The loss of the support ``params`` on ``(xv, yv)`` under ONE kernel pooled from the draws ``keys``.

    The pooled kernel is the mean of the draws' kernel matrices. For ``rf-nngp`` (``K = w²ΦΦᵀ + b²``
    with ``Φ`` the features of N networks scaled by ``1/sqrt(N·F)``) that is exactly the kernel of
    all ``len(keys)·N`` networks together: the RFAD reference's validation kernel (16 fixed
    networks). One KRR solve, one loss; draws are computed one after the other (bounded memory).
    """
    xs = params.x.astype(dtype)
    xv = jax.lax.stop_gradient(xv.astype(dtype))
    if not kernel.random:
        keys = keys[:1]  # every draw of an exact kernel is the same kernel

    def draw(key):
        return support_target_kernels(kernel, xs, xv, key, stop_target=True)

    k_ss, k_vs = jax.lax.map(draw, keys)
    pred = krr_predict(k_vs.mean(axis=0), k_ss.mean(axis=0), params.y, reg, jnp.float64, method)
    return loss.apply(params.loss, pred, yv)


def learning_rate(lr: float, schedule: str, steps: int):
    """``lr`` as optax takes it: a constant, or a cosine decay from ``lr`` to 0 over ``steps``."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(int(steps), 1))
    raise ValueError(f"unknown lr_schedule {schedule!r} (choose constant or cosine)")


class Optimizer(NamedTuple):
    """The optimizer settings of a gradient objective.

    ``support``: the transformation of the images (and labels when ``learn_labels``);
    ``loss_opt(loss_lr)``: that of the loss's parameters (``loss_lr`` 0: frozen), the objective's
    own family, as in the RFAD reference, where Platt's log-scale is a parameter group of the
    images' AdaBelief with its own learning rate.
    """

    support: optax.GradientTransformation
    learn_labels: bool = False
    loss_opt: Callable[[float], optax.GradientTransformation] = optax.adam
    loss_lr: float = 0.0
    transform_lr: float = 0.0


def make_optimizer(opt: Optimizer, loss_params) -> optax.GradientTransformation:
    """One optax transformation for ``SupportParams``; frozen parts get zero updates (bit-identical)."""
    loss_label = "loss" if opt.loss_lr > 0 else "frozen"
    labels = SupportParams(x="support", y="support" if opt.learn_labels else "frozen",
                           loss=jax.tree_util.tree_map(lambda _: loss_label, loss_params),
                           t="transform" if opt.transform_lr > 0 else None)
    transforms = {"support": opt.support, "frozen": optax.set_to_zero()}
    if opt.loss_lr > 0:
        transforms["loss"] = opt.loss_opt(opt.loss_lr)
    if opt.transform_lr > 0:  # the RFAD reference: T is a parameter group of the images' AdaBelief
        transforms["transform"] = opt.loss_opt(opt.transform_lr)
    return optax.multi_transform(transforms, labels)


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


class SelectionState(NamedTuple):
    """Model selection's state: the best support so far and its validation loss, the steps since
    it and in all, the validation kernel draws and the held-out training indices."""

    best: SupportParams
    best_loss: Any
    since_best: Any
    step: Any
    keys: Any
    val: Any


class GradientState(NamedTuple):
    """The state of a gradient objective. ``movable``: the corruption mask (``None``: every pixel
    moves); ``select``: model selection (``None``: off); ``anchor``: the initial images, which the
    frozen pixels keep after a learned transform (``None`` without both); ``kernel``: the state of
    a kernel whose networks learn (``Kernel.learning``; ``None`` for the others)."""

    params: SupportParams
    opt: Any
    sampler: Any
    movable: Any = None
    select: SelectionState | None = None
    anchor: Any = None
    kernel: Any = None


class Plan(NamedTuple):
    """What a gradient objective does each step, besides the optimizer.

    ``loss_fn(params, x_T, y_T, kernel_key, kernel) -> scalar`` is the objective (``kernel``: the
    run's kernel, or for a kernel whose networks learn, the kernel of its networks as they are
    this step); ``sampler`` draws the targets. ``corruption`` (ρ, SPEC §4): a fixed random ρ fraction of the support pixels (drawn
    from the run seed) never moves from its initial value (KIP_ρ / RFAD_ρ use ``init=noise``).
    ``selection``: model selection on the held-out indices ``val`` by ``val_loss_fn(params, x_V,
    y_V, keys, kernel) -> scalar`` (``pooled_krr_loss`` with the objective's settings). ``noise``: how
    ``init=noise`` draws the images (``NOISE``). ``transform``: the learned support transform
    (``None``: off); with it, every loss and the returned support see ``support_images``.
    ``label_scale``: the initial labels are the centred one-hot ones times it (FRePo: sqrt(10 / C)).
    """

    steps: int
    init: str
    sampler: TargetSampler
    loss_fn: Callable[..., Any]
    corruption: float = 0.0
    selection: Selection | None = None
    val: Any = None
    val_loss_fn: Callable[..., Any] | None = None
    noise: str = "normal"
    transform: SupportTransform | None = None
    label_scale: float = 1.0


class KrrLoss(NamedTuple):
    """How a gradient objective scores a support: the trace-scaled ridge ``reg``, the kernels'
    ``dtype``, the float64 solve ``method`` (cholesky or lu), and ``stop_target`` (RFAD: the target
    side is a constant)."""

    reg: float
    dtype: Any
    method: str = "cholesky"
    stop_target: bool = False


def krr_plan(problem: Problem, krr: KrrLoss, sampler: TargetSampler, val, **options: Any) -> Plan:
    """The ``Plan`` of a KRR gradient objective (KIP, RFAD): its loss on the targets and, for model
    selection on the held-out ``val``, its pooled validation loss, both with ``krr``'s settings."""

    def loss_fn(params, xt, yt, key, kernel):
        return krr_loss(params, xt, yt, key, kernel=kernel, loss=problem.loss, reg=krr.reg,
                        dtype=krr.dtype, method=krr.method, stop_target=krr.stop_target)

    def val_loss_fn(params, xv, yv, keys, kernel):
        return pooled_krr_loss(params, xv, yv, keys, kernel=kernel, loss=problem.loss, reg=krr.reg,
                               dtype=krr.dtype, method=krr.method)

    return Plan(sampler=sampler, loss_fn=loss_fn, val=val, val_loss_fn=val_loss_fn, **options)


def _initial_state(problem: Problem, plan: Plan, tx: optax.GradientTransformation, key) -> GradientState:
    seed_key = jax.random.fold_in(jax.random.PRNGKey(problem.seed), _OBJECTIVE_STREAM)
    x, y = initial_support(problem, plan.init, key, plan.noise)
    if plan.label_scale != 1.0:
        y = y * jnp.asarray(plan.label_scale, y.dtype)
    t = None if plan.transform is None else identity(x.shape[1:])
    params = SupportParams(x=x, y=y, loss=problem.loss.init(), t=t)
    movable = select = anchor = None
    if plan.corruption > 0:
        frozen = jax.random.bernoulli(jax.random.fold_in(seed_key, 1), plan.corruption, x.shape)
        movable = (~frozen).astype(x.dtype)
        anchor = None if plan.transform is None else x
    if plan.selection is not None:
        select = SelectionState(best=params, best_loss=jnp.asarray(jnp.inf, jnp.float64),
                                since_best=jnp.asarray(0, jnp.int32), step=jnp.asarray(0, jnp.int32),
                                keys=jax.random.split(jax.random.fold_in(seed_key, 2), plan.selection.val_models),
                                val=jnp.asarray(plan.val, jnp.int32))
    kernel = None
    learning = problem.kernel.learning
    if learning is not None:
        seen = _viewer(plan, GradientState(params, None, None, movable, None, anchor))(params)
        kernel = learning.init(jax.random.fold_in(seed_key, 3), seen.x, seen.y)
    return GradientState(params, tx.init(params), plan.sampler.init(), movable, select, anchor, kernel)


def _kernel_now(problem: Problem, state: GradientState) -> Kernel:
    """The kernel this step uses: the run's, or that of the learning kernel's networks as they are."""
    learning = problem.kernel.learning
    return problem.kernel if learning is None else learning.bind(state.kernel)._replace(random=False)


def _learn(problem: Problem, state: GradientState, seen: SupportParams, key) -> Any:
    """The learning kernel's networks after their one update on the support as it now is."""
    learning = problem.kernel.learning
    if learning is None:
        return state.kernel
    seen = jax.lax.stop_gradient(seen)
    return learning.update(state.kernel, seen.x, seen.y, jax.random.fold_in(key, _LEARNING_STREAM))


def _viewer(plan: Plan, state: GradientState) -> Callable[[SupportParams], SupportParams]:
    """``params -> what every loss and the stored support see``: the params themselves, or with a
    learned transform the ``support_images`` (``X @ T``, then corruption) and no ``t``."""
    if plan.transform is None:
        return lambda params: params

    def view(params: SupportParams) -> SupportParams:
        return params._replace(x=support_images(params.x, params.t, state.movable, state.anchor), t=None)

    return view


def _select(plan: Plan, params: SupportParams, sel: SelectionState, train: TrainData,
            view: Callable[[SupportParams], SupportParams], kernel: Kernel) -> SelectionState:
    """Validate every ``val_every`` steps (before the update) the support ``view(params)`` sees,
    and keep the best ``params``."""

    def validate(sel: SelectionState) -> SelectionState:
        held = take(train, sel.val)
        value = plan.val_loss_fn(view(params), held.x, held.y, sel.keys, kernel).astype(jnp.float64)
        better = value < sel.best_loss
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), params, sel.best)
        return sel._replace(best=best, best_loss=jnp.where(better, value, sel.best_loss),
                            since_best=jnp.where(better, 0, sel.since_best))

    due = sel.step % plan.selection.val_every == 0
    sel = jax.lax.cond(due, validate, lambda s: s, sel)
    return sel._replace(step=sel.step + 1, since_best=sel.since_best + 1)


def gradient_distiller(problem: Problem, plan: Plan, optimizer: Optimizer) -> Distiller:
    """A ``Distiller`` taking one optimizer step on the support per call.

    The reported loss is the one at the parameters before the update.
    """
    if plan.selection is not None and plan.val_loss_fn is None:
        raise ValueError("model selection needs a val_loss_fn")
    if plan.transform is not None:
        optimizer = optimizer._replace(transform_lr=plan.transform.lr)
    tx = make_optimizer(optimizer, problem.loss.init())
    plan = plan._replace(loss_fn=_frozen_stopped(plan.loss_fn, optimizer))

    def step(state: GradientState, train: TrainData, key):
        kernel_key, batch_key = jax.random.split(key)
        view = _viewer(plan, state)
        kernel = _kernel_now(problem, state)
        select = None if state.select is None else _select(plan, state.params, state.select, train, view, kernel)
        targets = plan.sampler.sample(state.sampler, train, batch_key)
        value, grads = jax.value_and_grad(lambda p, *a: plan.loss_fn(view(p), *a, kernel))(
            state.params, targets.x, targets.y, kernel_key)
        updates, opt = tx.update(grads, state.opt, state.params)
        if state.movable is not None and plan.transform is None:  # with T: corruption is in the view
            updates = updates._replace(x=updates.x * state.movable)
        params = optax.apply_updates(state.params, updates)
        learned = _learn(problem, state, view(params), key)
        return state._replace(params=params, opt=opt, select=select, kernel=learned), value

    def support(state: GradientState) -> Support:
        p = _viewer(plan, state)(state.params if state.select is None else state.select.best)
        return Support(x=p.x, y=p.y, loss_params=p.loss)

    stopped = None
    if plan.selection is not None:
        def stopped(state: GradientState):
            return state.select.since_best > plan.selection.patience

    return Distiller(init=lambda key: _initial_state(problem, plan, tx, key), step=step, support=support,
                     num_steps=int(plan.steps), stopped=stopped, settings=_settings(problem, plan))


def _frozen_stopped(loss_fn: Callable[..., Any], optimizer: Optimizer) -> Callable[..., Any]:
    """``loss_fn`` with the parts the optimizer never moves (labels unless ``learn_labels``, loss
    parameters unless ``loss_lr`` > 0) as constants: their gradients, which ``make_optimizer`` would
    zero anyway, are not computed (same updates, same bits)."""

    def stopped(params: SupportParams, *args):
        y = params.y if optimizer.learn_labels else jax.lax.stop_gradient(params.y)
        loss = params.loss if optimizer.loss_lr > 0 else jax.lax.stop_gradient(params.loss)
        return loss_fn(params._replace(y=y, loss=loss), *args)

    return stopped


def _settings(problem: Problem, plan: Plan) -> dict[str, Any] | None:
    """What this run resolved (``Distiller.settings``, stored as ``objective_<name>``): the images
    held out per class for model selection (``val_per_class=None`` resolves to 500 or 100, or half
    the smallest class of a smaller dataset)."""
    if plan.selection is None or plan.val is None:
        return None
    return {"val_per_class": len(plan.val) // problem.data.num_classes}


def validation_per_class(num_classes: int, val_per_class: int | None, smallest: int | None = None) -> int:
    """Images held out per class: ``val_per_class``, or the RFAD reference's 500 for 10 classes and
    100 otherwise (its ``run_distillation.py``). With ``none`` on a dataset whose ``smallest`` class
    holds no more than that (``digits``: 139), half of that class, so ``val_every`` works on every
    dataset by default; the run records what it held out (``objective_val_per_class``)."""
    if val_per_class is not None:
        return int(val_per_class)
    reference = 500 if num_classes == 10 else 100
    if smallest is not None and reference >= smallest:
        return max(smallest // 2, 1)
    return reference


def target_pool(problem: Problem, val_per_class: int | None,
                use_validation: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Training indices available as targets, and those held out for selection (``None``: none).

    The validation images, ``validation_per_class`` of each class, come from the training split
    (from the run seed on their own stream), never from the test split, and are never used as
    targets (the reference draws them with replacement and leaves them among the targets).
    """
    data = problem.data
    everything = np.arange(len(data.y_train))
    if not use_validation:
        return everything, None
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    per_class = validation_per_class(data.num_classes, val_per_class, int(counts.min()))
    if per_class >= counts.min():
        raise ValueError(f"holding out {per_class} validation images per class leaves no training targets "
                         f"for the smallest class ({counts.min()} images); set objective.val_per_class lower")
    val = balanced_subset(data.y_train, per_class, data.num_classes, problem.seed, stream=_VALIDATION_STREAM)
    return np.setdiff1d(everything, val), val
