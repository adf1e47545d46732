"""Finite-network transfer (RFAD Table 2): train real finite networks on the support set.

Which network (``normalization``; ``_net``):

* ``none`` on an architecture with an infinite-width form (``stax``): the RFAD reference's network,
  the flax ``trunk`` of ``arch`` plus a Dense readout, weights ~ N(0, W_std²/fan_in), biases ~
  N(0, b_std²). It stays on this path, not ``Architecture.network``: the built-in networks'
  parameters are laid out (and so drawn) otherwise, and its numbers would move.
* otherwise (``instance``, ``batch``, or an architecture without ``stax``, e.g. ``frepo-conv``, whose
  trunk has no RFAD init to keep: it trains FRePo's own ``Conv``, readout included): the
  architecture's documented finite network, ``arch.network(C, width, normalization, float32)``,
  built-in or third-party alike. With batch norm, training normalizes by the batch's statistics and
  updates their running averages (``train=True``, ``mutable=["batch_stats"]``), evaluation uses the
  running averages (``train=False``), as FRePo's reference trains and evaluates its networks; the
  initial network of the centering term follows the same batches, so its statistics are its own.

It is trained on the support set, full-batch (``batch=none``) or on a fresh minibatch of ``batch``
distinct images each step (RCIG's and DC's evaluation: 256; on the whole training split, scored for
the recovery of full-data accuracy, ``batch=none`` means 256 and the validation images are held out),
with the RFAD reference's MSE (below) or, ``loss=cross-entropy`` (the KIP paper's MNIST transfer),
soft-max cross-entropy against the labels' classes (or their rows, when they are distributions),
with SGD with momentum, or Adam: ``optimizer``; a constant or
FRePo's warmup-cosine ``schedule``; optionally scored by the parameters' ``ema``), with the two tricks of the RFAD
reference (SPEC §4):

* centering: the trained function is ``f_θ(x) − f_θ0(x)`` (the network at its initialisation is
  subtracted, so the model starts at 0 like the kernel predictor);
* label scaling α: the loss is ``mean((f − α·y)²) / α²``, the mean over all ``n·C`` entries as in
  the reference (``torch.mean``), so its learning rates mean what they say; predictions are
  divided by α.

Augmentation (``augment``; ``distillbench.augmentation``): ``none`` (the RFAD reference's
protocol), ``flip`` (each image mirrored with probability 1/2) or ``dsa`` (DSA's evaluation:
``color_crop_cutout_flip_scale_rotate``, one family per step, per-image draws); or the references' own
augmax strategies (``distillbench.augmax``): ``frepo`` (one family per batch, of
``color_crop_rotate_translate_cutout`` on 1-channel images, ``flip_`` first on colour ones) and
``rcig`` (one family per image, of ``crop_rotate_translate_cutout``, or ``flip_color_..._cutout``). Each SGD step sees
the support through a fresh draw, keyed by the network's seed and the step; the loss and the
centering term see the same augmented images. ``none`` compiles the step without keys (the same
bits as before the option existed).

Early stopping (``val_every > 0``; the reference: 100, ``patience=500``, ``steps=20000``): every
``val_every`` steps, before the update, the network's accuracy on ``val_per_class`` training
images per class is measured; the best network so far (strictly better accuracy) is kept and
returned, and training stops once ``patience`` steps have passed since it. The validation images
come from the training split, never the test split.

One SGD step is compiled once and reused for every step and every network seed. The step is
driven from Python rather than ``lax.scan``: on XLA's CPU backend (jax 0.5.3) convolutions inside
a loop body ran 14x slower (211 vs 15.5 ms per step, convnet3 width 64, 100 images); the
per-call dispatch costs microseconds. Test accuracy is reported as the mean and the sample
standard deviation over the network seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.linen import initializers

from distillbench import augmax, augmentation
from distillbench.components.evaluators import EvalContext, Evaluator
from distillbench.components.objectives import Support
from distillbench.krr import centered_one_hot
from distillbench.sampling import balanced_subset
from distillbench.components.architectures import Architecture, complete

_SEED_STREAM = 0x7A115  # network seeds derive from the run seed on their own stream
_VALIDATION_STREAM = 0x7A1D  # and the validation hold-out on another
_AUGMENT_STREAM = 0xA06  # each network's augmentation draws on a third
_BATCH_STREAM = 0xBA7C  # a step's minibatch, from the step's key on a stream of its own
#: ``batch=none`` on the whole training split (``EvalContext.full_data``): DC's and RCIG's minibatch
FULL_DATA_BATCH = 256
STRATEGIES = {"none": "none", "flip": "flip", "dsa": augmentation.DSA_STRATEGY}
#: The references' own evaluation augmentation (distillbench.augmax): where the family is chosen, and
#: the strategy for 1-channel (MNIST, Fashion-MNIST) and colour images.
AUGMAX = {"frepo": ("batch", augmax.FREPO_GRAY, augmax.FREPO_RGB),
          "rcig": ("image", augmax.RCIG_GRAY, augmax.RCIG_RGB)}


def augment_images(augment: str, key, x):
    """``x`` as one training step of the evaluator sees it under ``augment``."""
    if augment == "none":
        return x
    if augment in AUGMAX:
        per, gray, rgb = AUGMAX[augment]
        return augmax.apply(key, x, gray if x.shape[-1] == 1 else rgb, per)
    return augmentation.apply(key, x, STRATEGIES[augment])


class Network(nn.Module):
    """The architecture's trunk (``make_trunk``: its ``Architecture.trunk``) + a Dense readout."""

    make_trunk: Callable[..., nn.Module]
    width: int
    num_classes: int
    w_std: float = 2**0.5
    b_std: float = 0.1

    @nn.compact
    def __call__(self, x):
        h = self.make_trunk(self.width, self.w_std, self.b_std, jnp.float32)(x)
        return nn.Dense(self.num_classes, kernel_init=initializers.variance_scaling(self.w_std**2, "fan_in", "normal"),
                        bias_init=initializers.normal(self.b_std), dtype=jnp.float32, param_dtype=jnp.float32)(h)


def reference_loss(outputs, targets, label_scale: float):
    """``mean((f − α·y)²) / α²`` over all ``n·C`` entries (the RFAD reference's ``mse`` mode)."""
    return jnp.mean(jnp.square(outputs - label_scale * targets)) / label_scale**2


def validation_per_class(num_classes: int, val_per_class: int | None) -> int:
    """The reference's hold-out size: 500 images per class for 10 classes, else 100."""
    if val_per_class is not None:
        return int(val_per_class)
    return 500 if num_classes == 10 else 100


def validation_indices(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` training images of each class (capped by its size), from the run seed."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    return balanced_subset(labels, min(per_class, int(counts.min())), num_classes, seed, stream=_VALIDATION_STREAM)


class _Net(NamedTuple):
    """One network as the evaluator trains it: ``init(key) -> (params, stats)`` (``params`` the
    variables to train, ``stats`` ``{}`` or ``{"batch_stats": ...}``) and ``apply(params, stats, x,
    train) -> (logits, stats)`` (the stats updated in train mode, used as they are in evaluation)."""

    init: Callable
    apply: Callable


def _rfad_net(arch: Architecture, width: int, num_classes: int, x_s) -> _Net:
    """The RFAD reference's network: the trunk under a Dense readout, both in the NTK twin's init."""
    net = Network(arch.trunk, width, num_classes)
    return _Net(init=jax.jit(lambda k: (net.init(k, x_s[:1]), {})),
                apply=lambda params, stats, x, train: (net.apply(params, x), stats))


def _arch_net(arch: Architecture, width: int, num_classes: int, normalization: str, x_s) -> _Net:
    """``arch.network``: batch statistics of the batch in training (and their running averages
    updated), the running averages in evaluation (``train=False``), as FRePo trains and evaluates."""
    module = arch.network(num_classes, width, normalization, jnp.float32)

    def init(key):
        variables = module.init(key, x_s[:1], train=False)
        return {"params": variables["params"]}, {k: v for k, v in variables.items() if k == "batch_stats"}

    def apply(params, stats, x, train):
        if not (stats and train):
            return module.apply({**params, **stats}, x, train=train)[0], stats
        (logits, _), new = module.apply({**params, **stats}, x, train=True, mutable=["batch_stats"])
        return logits, {"batch_stats": new["batch_stats"]}

    return _Net(init=jax.jit(init), apply=apply)


def _net(arch: Architecture, width: int, num_classes: int, normalization: str, x_s) -> _Net:
    """The RFAD reference's network where it served before ``normalization`` existed (an architecture
    with an infinite-width form, no normalization: the same numbers), else ``arch.network``."""
    if normalization == "none" and arch.stax is not None:
        return _rfad_net(arch, width, num_classes, x_s)
    return _arch_net(complete(arch), width, num_classes, normalization, x_s)


class _Program(NamedTuple):
    """The compiled pieces of one evaluation: initialise, one step, predictions in chunks. A
    network is ``(params, stats)``; the step returns the trained one, the optimizer state (with the
    parameters' moving average when ``ema``) and the initial one's stats (its running averages
    follow the same batches, for the centering term). ``start(params)`` is the first optimizer
    state, ``view(w, state)`` the network to score: ``w``, or its averaged parameters."""

    init: Callable
    start: Callable
    sgd_step: Callable
    outputs_on: Callable
    view: Callable
    augmented: bool = False  # whether sgd_step uses its key (augmentation, minibatches; else it gets None)


def make_optimizer(name: str, lr: float, momentum: float, schedule: str, warmup: int, steps: int):
    """The evaluator's optimizer: SGD with momentum (the RFAD reference) or Adam (FRePo's and RCIG's
    evaluation), at a constant rate or FRePo's schedule (``warmup-cosine``: linear from 0 over
    ``warmup`` steps, then a cosine decay to 1% over the rest of ``steps``, the schedule's length;
    a step past it keeps the 1%)."""
    rate = lr
    if schedule == "warmup-cosine":
        rate = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                     optax.cosine_decay_schedule(lr, max(steps - warmup, 1), alpha=0.01)], [warmup])
    return optax.sgd(rate, momentum=momentum) if name == "sgd" else optax.adam(rate)


def cross_entropy_targets(y) -> np.ndarray:
    """The soft-max cross-entropy targets of label rows ``y``: the rows themselves when they are
    distributions (non-negative, summing to 1), else the class of each row of one-hot codes (fixed
    labels, centred or not, ``target_kind``); other learned rows are regression targets and are
    refused (one line), never argmaxed."""
    y = np.asarray(y, np.float64)
    if np.all(y >= 0) and np.allclose(y.sum(-1), 1.0, atol=1e-6):
        return y.astype(np.float32)
    if target_kind(y) == "one-hot":
        return (y == y.max(axis=-1, keepdims=True)).astype(np.float32)
    raise ValueError("loss=cross-entropy needs class codes or probability rows, and these labels are learned "
                     "regression targets (negative or not summing to 1); score them with evaluator.loss=mse")


def _program(net: _Net, y_s, tx, label_scale: float, centering: bool, eval_batch: int, augment: str, x_s,
             ema: float = 0.0, batch: int | None = None, loss_kind: str = "mse") -> _Program:
    def model(w, w0, x, train):
        out, stats = net.apply(*w, x, train)
        stats0 = w0[1]
        if centering:
            out0, stats0 = net.apply(*w0, x, train)
            out = out - jax.lax.stop_gradient(out0)
        return out, (stats, stats0)

    def loss(params, stats, w0, x, y):
        out, new_stats = model((params, stats), w0, x, True)
        if loss_kind == "cross-entropy":
            return jnp.mean(optax.softmax_cross_entropy(out, y)), new_stats
        return reference_loss(out, y, label_scale), new_stats

    def update(w, state, w0, x, y):
        grads, (stats, stats0) = jax.grad(loss, has_aux=True)(w[0], w[1], w0, x, y)
        opt, averaged = (state, None) if ema == 0 else state
        updates, opt = tx.update(grads, opt, w[0])
        params = optax.apply_updates(w[0], updates)
        if ema:  # FRePo's EMA: hidden <- decay hidden + (1 - decay) params, debiased by 1 - decay^count
            hidden, count = averaged
            averaged = (jax.tree.map(lambda h, p: ema * h + (1 - ema) * p, hidden, params), count + 1)
        return (params, stats), (opt if ema == 0 else (opt, averaged)), stats0

    def start(params):
        return tx.init(params) if ema == 0 else (tx.init(params), (jax.tree.map(jnp.zeros_like, params), 0))

    def view(w, state):
        if ema == 0:
            return w
        hidden, count = state[1]
        return jax.tree.map(lambda h: h / (1 - ema**count), hidden), w[1]

    def augmented(key, x):
        return augment_images(augment, key, x)

    if batch is not None and batch < len(x_s):  # a fresh minibatch each step; the set is an argument, not a constant
        x_all, y_all = x_s, y_s

        def batch_step(w, state, w0, key, x_all, y_all):
            idx = jax.random.choice(jax.random.fold_in(key, _BATCH_STREAM), len(x_all), (batch,), replace=False)
            return update(w, state, w0, augmented(key, x_all[idx]), y_all[idx])

        compiled = jax.jit(batch_step)
        sgd_step = lambda w, state, w0, key: compiled(w, state, w0, key, x_all, y_all)  # noqa: E731
    elif augment == "none":
        sgd_step = jax.jit(lambda w, state, w0, key: update(w, state, w0, x_s, y_s))
    else:
        sgd_step = jax.jit(lambda w, state, w0, key: update(w, state, w0, augmented(key, x_s), y_s))

    predict = jax.jit(lambda w, w0, x: model(w, w0, x, False)[0] / label_scale)

    def outputs_on(w, w0, x):
        return np.concatenate([np.asarray(predict(w, w0, jnp.asarray(x[i:i + eval_batch])))
                               for i in range(0, len(x), eval_batch)])

    keyed = augment != "none" or (batch is not None and batch < len(x_s))
    return _Program(net.init, start, sgd_step, outputs_on, view, keyed)


def _train(program: _Program, w0, steps: int, val_every: int, patience: int, val, key):
    """The trained network (as ``program.view`` scores it) and the initial one (its running
    statistics followed along), the step they come from, and their validation accuracy; ``key``
    seeds the augmentation of step i (``fold_in(key, i)``; unused without augmentation)."""
    w, state = w0, program.start(w0[0])
    step_key = (lambda i: jax.random.fold_in(key, i)) if program.augmented else (lambda i: None)
    if val_every <= 0:
        for i in range(steps):
            w, state, stats0 = program.sgd_step(w, state, w0, step_key(i))
            w0 = (w0[0], stats0)
        return (program.view(w, state), w0), steps, float("nan")
    x_val, y_val = val
    best, best_acc, best_step = (w, w0), -1.0, 0
    for i in range(steps):
        if i % val_every == 0:  # validate before the update, as the reference does
            scored = program.view(w, state) if i else w
            acc = float(np.mean(program.outputs_on(scored, w0, x_val).argmax(-1) == y_val))
            if acc > best_acc:
                best, best_acc, best_step = (scored, w0), acc, i
        if i >= best_step + patience:
            break
        w, state, stats0 = program.sgd_step(w, state, w0, step_key(i))
        w0 = (w0[0], stats0)
    return best, best_step, best_acc


def target_kind(y) -> str:
    """``one-hot`` when every row of ``y`` is one class's code (two values in all, one high per row:
    one-hot, centred or scaled), else ``learned``: what the network was trained to regress."""
    y = np.asarray(y)
    values = np.unique(y)
    return "one-hot" if len(values) == 2 and bool(np.all((y == values[1]).sum(-1) == 1)) else "learned"


def _test_metrics(outputs: np.ndarray, y_test, num_classes: int) -> dict[str, float]:
    """Accuracy (mean +- sample std over the seeds) and MSE of (seeds, n_test, C) outputs."""
    seeds = outputs.shape[0]
    accs = (outputs.argmax(-1) == y_test[None, :]).mean(axis=1)
    target = np.asarray(centered_one_hot(jnp.asarray(y_test), num_classes))
    mses = ((outputs - target[None]) ** 2).mean(axis=(1, 2))
    return {
        "acc": float(accs.mean()),
        "acc_std": float(accs.std(ddof=1)) if seeds > 1 else 0.0,
        "mse": float(mses.mean()),
        "nn_seeds": float(seeds),
    }


#: ``lr=auto``: the learning rates tried (log-spaced around the RFAD reference's 1e-3 and 1e-2).
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def choose_lr(make_program: Callable[[float], _Program], key, steps: int, val) -> tuple[float, float]:
    """``lr=auto``: the rate of :data:`LR_GRID` whose network (the first seed's, trained ``steps``
    steps) scores best on ``val``, a split of the training data (ties: the smaller rate); and that
    accuracy. The test split is never seen here."""
    x_val, y_val = val
    scores = []
    for rate in LR_GRID:
        program = make_program(rate)
        (trained, w0), _, _ = _train(program, program.init(key), steps, 0, 1, None,
                                     jax.random.fold_in(key, _AUGMENT_STREAM))
        scores.append(float(np.mean(program.outputs_on(trained, w0, x_val).argmax(-1) == y_val)))
    best = int(np.argmax(scores))
    return LR_GRID[best], scores[best]


def build_nn(arch: Architecture, width: int = 1024, steps: int = 1000, lr: float | None = 1e-3, momentum: float = 0.9,
             label_scale: float = 2.0, centering: bool = True, seeds: int = 3, eval_batch: int = 500,
             val_every: int = 0, patience: int = 500, val_per_class: int | None = None,
             augment: str = "none", normalization: str = "none", optimizer: str = "sgd",
             schedule: str = "constant", warmup: int = 500, ema: float = 0.0, batch: int | None = None,
             schedule_steps: int | None = None, loss: str = "mse", mirror: bool = False) -> Evaluator:
    if normalization != "none" or arch.stax is None:
        complete(arch).network(1, width, normalization, jnp.float32)  # one it does not offer: one line, now

    def evaluate(support: Support, ctx: EvalContext) -> dict[str, float]:
        c = ctx.data.num_classes
        x_s, y_s = support.x, support.y
        val = None
        if val_every > 0 or lr is None:
            idx = validation_indices(ctx.data.y_train, c, validation_per_class(c, val_per_class), ctx.seed)
            val = ctx.data.x_train[idx], np.asarray(ctx.data.y_train)[idx]
            if ctx.full_data:  # the whole split is the set: its validation images are not trained on
                keep = np.setdiff1d(np.arange(len(x_s)), idx)
                x_s, y_s = np.asarray(x_s)[keep], np.asarray(y_s)[keep]
        if mirror:  # RCIG's use_flip: the set and its mirror images, the same labels
            x_s, y_s = np.concatenate([x_s, np.flip(x_s, axis=2)]), np.concatenate([y_s, y_s])
        targets = cross_entropy_targets(y_s) if loss == "cross-entropy" else y_s
        x_s, targets = jnp.asarray(x_s, jnp.float32), jnp.asarray(targets, jnp.float32)
        net = _net(arch, width, c, normalization, x_s)
        minibatch = batch if batch is not None else (FULL_DATA_BATCH if ctx.full_data else None)
        scale = label_scale if loss == "mse" else 1.0  # logits are scored as they are

        def make_program(rate: float) -> _Program:
            tx = make_optimizer(optimizer, rate, momentum, schedule, warmup, schedule_steps or steps)
            return _program(net, targets, tx, scale, centering, eval_batch, augment, x_s, ema, minibatch, loss)
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(ctx.seed), _SEED_STREAM), seeds)
        rate, lr_val_acc = (lr, None) if lr is not None else choose_lr(make_program, keys[0], steps, val)
        program = make_program(rate)
        outputs, trained_steps, val_accs = [], [], []
        for key in keys:
            (trained, w0), n_steps, val_acc = _train(program, program.init(key), steps, val_every, patience, val,
                                                     jax.random.fold_in(key, _AUGMENT_STREAM))
            trained_steps.append(n_steps)
            val_accs.append(val_acc)
            outputs.append(program.outputs_on(trained, w0, ctx.data.x_test))
        metrics = _test_metrics(np.stack(outputs), ctx.data.y_test, c)
        metrics["eval_arch"] = arch.name  # what ran (stored and shown; reports never re-derive "auto")
        metrics["eval_targets"] = target_kind(support.y)
        metrics["eval_lr"] = float(rate)
        if lr_val_acc is not None:
            metrics["nn_lr_val_acc"] = lr_val_acc
        if val_every > 0:
            metrics["nn_best_step"] = float(np.mean(trained_steps))
            metrics["nn_val_acc"] = float(np.mean(val_accs))
        return metrics

    return Evaluator(evaluate=evaluate)
