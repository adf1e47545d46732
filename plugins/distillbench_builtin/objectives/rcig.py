"""RCIG, dataset distillation with convexified implicit gradients (Loo, Hasani, Lechner & Rus,
ICML 2023), as its reference code (``yolky/RCIG`` at a9fb1fa, ``algorithms.py``) computes it.

The kernel is a pool of finite networks whose networks learn (``kernel=rcig-pool``; any learning
kernel that offers ``Learning.network``). Each step, with the pool's current network ``f`` at its
base parameters ``w`` (never moved by this step):

* **the linearised model** ``g(x; θ) = J_w f(x) θ`` (``jax.jvp``; the reference's
  ``get_linear_forward``), and the base features ``φ(x)`` (the penultimate layer at ``w``): the
  prediction of a support ``(X, Y)`` on images ``x`` is ``g(x) + φ(x)φ(X)ᵀ α`` with
  ``α = (φ(X)φ(X)ᵀ + l2 I)⁻¹ (Y − g(X))``: the last layer solved in closed form, the rest linearised;
* **the inner problem** (``get_krr_loss_gd``): ``θ`` (from 0) takes ``inner_steps`` Adam steps on
  ``[½‖Y − pred(X)‖² + ½ l2 (tr(αᵀKα) + ‖θ‖²)] / (m C)``, with ``l2 = l2_rate · m`` (``m`` = images
  per class × C). As in the reference, the optimizer is a chain of two ``optax.masked`` Adams:
  the body and the readout's bias move by Adam at the inner learning rate, its step count starting
  at the network's age (its pool optimizer's count); the readout's weight, in neither mask, is
  passed through unchanged, i.e. moved by ``+gradient``;
* **the outer loss** on ``target_batch`` uniformly drawn training images (``get_krr_loss``): the run's
  loss of the predictions (``platt``: the reference's cross-entropy at the learned temperature
  ``e^k``) minus the mean label margin ``min(y₍₁₎ − y₍₂₎, 1/(2C))`` of the support labels;
* **the implicit gradient**: ``v ≈ H⁻¹ ∂L_out/∂θ`` by ``hinv_steps`` Adam steps at the Hessian
  learning rate on ``½ vᵀHv − vᵀg`` (``get_h_inv_vp``; ``H`` the inner loss's Hessian at the inner
  solution, by forward-over-reverse products), then ``−∂/∂S ⟨v, ∂L_in/∂θ⟩``, each of its leaves
  (images, labels, temperature) clipped to the norm of the direct gradient's leaf;
* one AdaBelief step (images and labels at ``lr``, the loss's parameters at ``loss_lr``), the
  bias-corrected moving average (decay 0.99) of the images and labels updated: it is the set the
  run returns, as the reference evaluates ``ema_average``;
* the pool's update on the new support (``rcig-pool``: the current network trains 1..15 steps).

The inner and Hessian learning rates are the reference's: both tuned before the first step
(``tune``: from 1e-5 and 5e-5, ×1.2 after each probe step, until one probe's losses do not fall
monotonically, then ×0.7, i.e. 0.84 × the first failing rung; at most ``_MAX_TUNE`` rounds), and the inner one adapted every 50 steps (×0.9 when at least 29%
of the steps' inner losses ended above their start, else ×1.05 when at least 70% fell monotonically).
``flip``: the support and its mirror images (the reference's ``use_flip``: on for CIFAR, off for
MNIST). Float32 throughout, as the reference. Defaults are CPU-sized (50 steps at lr 0.1, with
``rcig-pool``'s width 32); the reference's run is 10,000 steps at 3e-3 and width 128
(``campaigns/rcig-table1.toml``). Not supported: augmentation during distillation (``aug``, off in
its configs).

**Large supports** (the reference's subsampling, its CIFAR-100 50-ipc and 64/128-pixel configs):
``support_rows`` > 0 differentiates every pass through that many uniformly drawn rows of the
(seen) support only, the other rows' features entering as constants: the inner steps (each step
its own rows, the rest recomputed at the current ``θ``: ``inner_train_batch_size``), the direct
gradient (``direct_batch_sizes[0]``), the Hessian-inverse product (``hinv_batch_size``: its rows
drawn from ``PRNGKey(0)`` at every step, as the reference's ``do_meta_train_step`` passes
``get_h_inv_vp`` no key) and the implicit gradient (``implicit_batch_size``); the four are equal in
every reference config, so one parameter. ``target_rows`` > 0 does the same for the targets of the
direct pass (``direct_batch_sizes[1]``); ``repeats`` averages that many draws of the direct and
implicit gradients (``normal_repeats``). The constant rows' features are computed once per step
at the inner solution (the reference's ``do_precompute``, which changes no value). Memory then
grows with the rows, not the support. ``support_rows`` unset: from the device
(``devices.gradient_rows``, a row's cost measured by :func:`row_bytes`): every row where a pass
over all of them fits, else as many as fit (measured: ~1.0 MiB a row for width-32 networks on
28x28 images, ~3.4 MiB for width 128 on 32x32x3, as XLA:CPU compiles them; by that figure
CIFAR-100's 5,000 rows at 50 ipc fit a quarter of an 80 GB GPU, and are subsampled in a CPU's 8 GiB).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distillbench import devices
from distillbench.components.datasets import DatasetInfo
from distillbench.components.kernels import Network
from distillbench.components.objectives import Distiller, Problem, Support
from distillbench.sampling import uniform
from distillbench_builtin.objectives import check_rcig_rows
from distillbench_builtin.objectives.common import SupportParams, initial_support, target_pool

#: Tuning rounds at most per learning rate (the reference loops until the probe is not monotonic),
#: and the rungs of the ladder probed at once.
_MAX_TUNE = 100
_TUNE_BATCH = 10
#: Steps between adaptations of the inner learning rate (the reference's ``lr_monitor_interval``).
_ADAPT_EVERY = 50
_EMA = 0.99
#: Supports of at most this many rows are never subsampled by default, and their runs skip
#: measuring a row's cost (two compilations, 6-9 s here): 64 rows of a width-128 network on 32x32x3
#: images take ~0.2 GB (``row_bytes``), far below any budget of ``devices.gradient_rows``.
_ALWAYS_FITS = 64
_HIGHEST = jax.lax.Precision.HIGHEST


class RcigState(NamedTuple):
    """The objective's state: the support, its AdaBelief state, the target sampler's, the pool's,
    the two learning rates, the inner losses' verdicts since the last adaptation (falling
    monotonically, ending above their start, in all), the step count and the moving average."""

    params: SupportParams
    opt: Any
    sampler: Any
    kernel: Any
    inner_lr: Any
    hvp_lr: Any
    verdicts: Any  # (3,) int32: monotonic, failed, total
    step: Any
    ema_hidden: Any  # (x, y)


def tree_dot(a, b):
    return sum(jnp.sum(u * v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def linearized(apply, variables, theta, x):
    """``(φ(x), J f(x) θ)``: base features and the linearised output (``jax.jvp`` at the base params)."""
    base = jax.lax.stop_gradient(variables["params"])

    def f(p):
        return apply({**variables, "params": p}, x)

    (_, features), (out, _) = jax.jvp(f, (base,), (theta,))
    return features, out


def linearized_in_chunks(apply, variables, theta, xt, chunk: int):
    """:func:`linearized` on the targets, ``chunk`` at a time (0: all at once), each chunk's forward
    recomputed in the backward pass: the same values, with one chunk's activations alive instead of
    every target's (the outer pass held ~1.4 GB of temporaries at 1024 targets of 28x28, width 32;
    ~0.23 GB in chunks of 128, for ~10% more time). The last chunk is padded with zero images."""
    n = xt.shape[0]
    if not chunk or n <= chunk:
        return linearized(apply, variables, theta, xt)
    count = -(-n // chunk)
    padded = jnp.concatenate([xt, jnp.zeros((count * chunk - n, *xt.shape[1:]), xt.dtype)])
    body = jax.checkpoint(lambda x: linearized(apply, variables, theta, x))
    ft, out = jax.lax.map(body, padded.reshape(count, chunk, *xt.shape[1:]))
    return ft.reshape(-1, *ft.shape[2:])[:n], out.reshape(-1, *out.shape[2:])[:n]


def complement(rows, n: int):
    """The rows of ``range(n)`` not in ``rows``, ascending (the reference's ``invert_grad_indices``)."""
    mask = jnp.zeros((n,), jnp.bool_).at[rows].set(True)
    return jnp.nonzero(~mask, size=n - rows.shape[0])[0]


def draw_rows(key, n: int, rows: int):
    """``rows`` distinct rows of ``range(n)`` drawn from ``key`` (the reference's ``grad_indices``)."""
    return jax.random.choice(key, n, shape=(rows,), replace=False)


def linearized_rows(apply, variables, theta, x, rows=None, pre=None, chunk: int = 0, rest_chunk: int | None = None):
    """:func:`linearized_in_chunks` with gradients through ``rows`` only: ``(φ, g, order)``, the rows
    first, then the others in order (``order``: their indices, to reorder the labels alike). The
    others' features are ``pre[0][others], pre[1][others]`` (computed once) or recomputed without
    gradient, ``rest_chunk`` rows at a time (default ``chunk``; the reference's
    ``max_forward_batch_size``). ``rows`` None: every row, ``order`` None."""
    if rows is None:
        return (*linearized_in_chunks(apply, variables, theta, x, chunk), None)
    x = jnp.asarray(x)
    rest = complement(rows, x.shape[0])
    f1, o1 = linearized_in_chunks(apply, variables, theta, x[rows], chunk)
    if pre is None:
        f2, o2 = jax.lax.stop_gradient(linearized_in_chunks(apply, variables, theta, x[rest],
                                                            chunk if rest_chunk is None else rest_chunk))
    else:
        f2, o2 = pre[0][rest], pre[1][rest]
    return jnp.concatenate([f1, f2]), jnp.concatenate([o1, o2]), jnp.concatenate([rows, rest])


def _reorder(y, order):
    return y if order is None else jnp.asarray(y)[order]


def label_margin(y):
    """The reference's margin term per support label: ``min(y₍₁₎ − y₍₂₎, 1/(2C))`` (subtracted)."""
    top = jax.lax.top_k(y, 2)[0]
    return jnp.minimum(top[..., 0] - top[..., 1], 1.0 / (2 * y.shape[-1]))


def _solve(k, rhs, l2):
    with jax.default_matmul_precision("highest"):
        return jnp.linalg.solve(k + l2 * jnp.eye(k.shape[0], dtype=k.dtype), rhs)


def inner_loss(theta, apply, variables, x, y, l2, rows=None, pre=None, rest_chunk: int = 0):
    """The reference's ``get_krr_loss_gd(self_loss=True)``: the inner problem's loss at ``theta``
    (differentiable through ``rows`` only, when given: :func:`linearized_rows`)."""
    fs, out, order = linearized_rows(apply, variables, theta, x, rows, pre, 0, rest_chunk)
    y = _reorder(y, order)
    k = jnp.matmul(fs, fs.T, precision=_HIGHEST)
    alpha = _solve(k, y - out, l2)
    pred = out + jnp.matmul(k, alpha, precision=_HIGHEST)
    err = y - pred
    wtw = jnp.trace(jnp.matmul(alpha.T, jnp.matmul(k, alpha, precision=_HIGHEST), precision=_HIGHEST))
    loss = 0.5 * jnp.sum(err**2) + 0.5 * l2 * (wtw + tree_dot(theta, theta))
    return loss / (y.shape[0] * y.shape[1])


def outer_loss(theta, apply, variables, x, y, loss_params, xt, yt, l2, loss, chunk: int = 0, rows=None,
               target_rows=None, pre=None, pre_t=None):
    """The reference's ``get_krr_loss``: the run's loss of the predictions on the targets ``(xt, yt)``
    minus the support labels' mean margin (the targets' pass ``chunk`` at a time; differentiable
    through ``rows`` of the support and ``target_rows`` of the targets only, when given)."""
    fs, out_s, order = linearized_rows(apply, variables, theta, x, rows, pre, 0, chunk)
    ft, out_t, order_t = linearized_rows(apply, variables, theta, xt, target_rows, pre_t, chunk)
    y, yt = _reorder(y, order), _reorder(yt, order_t)
    k_ss = jnp.matmul(fs, fs.T, precision=_HIGHEST)
    k_ts = jnp.matmul(ft, fs.T, precision=_HIGHEST)
    pred = out_t + jnp.matmul(k_ts, _solve(k_ss, y - out_s, l2), precision=_HIGHEST)
    return loss.apply(loss_params, pred, yt) - label_margin(y).mean()


def readout_weight_mask(params, num_classes: int):
    """``True`` for every leaf but the readout's weight (a top-level module's ``kernel`` whose output
    axis is the classes: the reference's ``Dense_0`` ``kernel``, outside its inner optimizer's mask)."""

    def is_readout(path, leaf):
        names = [str(getattr(p, "key", p)) for p in path]
        return len(names) == 2 and names[-1] == "kernel" and leaf.ndim == 2 and leaf.shape[-1] == num_classes

    return jax.tree_util.tree_map_with_path(lambda path, leaf: not is_readout(path, leaf), params)


def inner_optimizer(lr, age, theta, num_classes: int):
    """The reference's inner optimizer on ``θ`` and its state: Adam at ``lr`` on the body and the
    readout's bias, its count starting at the network's ``age``; the readout's weight unmasked
    (``optax.masked`` passes its gradient through as the update)."""
    mask = readout_weight_mask(theta, num_classes)
    tx = optax.masked(optax.adam(lr), mask)
    state = tx.init(theta)
    inner = state.inner_state
    adam = inner[0]._replace(count=jnp.asarray(age, jnp.int32))
    return tx, state._replace(inner_state=(adam, *inner[1:]))


def verdict(losses):
    """The reference's check of a loss sequence: 1 falling monotonically, -1 ending above its start, else 0."""
    if losses.shape[0] == 0:
        return jnp.asarray(0, jnp.int32)
    diff = losses - jnp.roll(losses, -1)
    return jnp.where(jnp.all(diff[:-1] > 0), 1, jnp.where(diff[-1] > 0, -1, 0)).astype(jnp.int32)


def solve_inner(network: Network, x, y, l2, lr, steps: int, num_classes: int, rows: int = 0, key=None,
                rest_chunk: int = 0):
    """``steps`` inner optimizer steps from ``θ = 0``: the network's variables after them, ``θ`` and the
    loss before each step. As in the reference, where one optimizer moves the base and tangent
    parameters together, the base parameters keep taking their own optimizer's steps (its momentum;
    their gradient is zero) when the kernel offers it (``Network.optimizer``). ``rows`` > 0: each
    step's gradient through that many rows drawn from its key (``key``, then ``split(key)[0]``
    after each step, as the reference's ``do_training_steps``), the others' forward recomputed
    ``rest_chunk`` rows at a time."""
    variables = network.variables
    theta = jax.tree.map(jnp.zeros_like, variables["params"])
    tx, opt = inner_optimizer(lr, network.age, theta, num_classes)
    coast = network.optimizer is not None
    key = jax.random.PRNGKey(0) if key is None else key

    def one(i, carry):
        theta, opt, base, base_opt, losses, key = carry
        chosen = draw_rows(key, x.shape[0], rows) if rows else None
        value, grads = jax.value_and_grad(inner_loss)(theta, network.apply, {**variables, "params": base}, x, y, l2,
                                                      chosen, None, rest_chunk)
        updates, opt = tx.update(grads, opt, theta)
        if coast:
            drift, base_opt = network.optimizer.update(jax.tree.map(jnp.zeros_like, base), base_opt, base)
            base = optax.apply_updates(base, drift)
        return (optax.apply_updates(theta, updates), opt, base, base_opt, losses.at[i].set(value),
                jax.random.split(key)[0])

    dtype = jax.tree.leaves(theta)[0].dtype
    carry = (theta, opt, variables["params"], network.opt_state, jnp.zeros((steps,), dtype), key)
    theta, _, base, _, losses, _ = jax.lax.fori_loop(0, steps, one, carry)
    return {**variables, "params": base}, theta, losses


def hessian_inverse_product(apply, variables, theta, x, y, l2, g, lr, steps: int, rows: int = 0, pre=None):
    """The reference's ``get_h_inv_vp``: ``steps`` Adam steps at ``lr`` on ``½ vᵀHv − vᵀg`` from
    ``v = 0``; ``v`` and the residuals ``vᵀ(Hv − 2g)`` before each step. ``rows`` > 0: each step's
    ``H`` through that many rows (the others' features ``pre``), drawn as the reference draws
    them: from ``PRNGKey(0)``, ``key, k = split(key)`` per step."""
    tx = optax.adam(lr)
    v = jax.tree.map(jnp.zeros_like, g)

    def one(i, carry):
        v, opt, residuals, key = carry
        key, k_rows = jax.random.split(key)
        chosen = draw_rows(k_rows, x.shape[0], rows) if rows else None
        grad_fn = jax.grad(lambda t: inner_loss(t, apply, variables, x, y, l2, chosen, pre))
        hv = jax.jvp(grad_fn, (theta,), (v,))[1]
        step = jax.tree.map(jnp.subtract, hv, g)
        residual = tree_dot(v, jax.tree.map(lambda a, b: a - 2 * b, hv, g))
        updates, opt = tx.update(step, opt, v)
        return optax.apply_updates(v, updates), opt, residuals.at[i].set(residual), key

    dtype = jax.tree.leaves(g)[0].dtype
    carry = (v, tx.init(v), jnp.zeros((steps,), dtype), jax.random.PRNGKey(0))
    v, _, residuals, _ = jax.lax.fori_loop(0, steps, one, carry)
    return v, residuals


def clip_to(implicit, direct):
    """Each leaf of ``implicit`` scaled to at most the norm of ``direct``'s leaf (0/0 -> 0)."""

    def clip(i, d):
        ni, nd = jnp.linalg.norm(i), jnp.linalg.norm(d)
        return jnp.nan_to_num((i / ni) * jnp.minimum(nd, ni))

    return jax.tree.map(clip, implicit, direct)


class Settings(NamedTuple):
    l2: float
    inner_steps: int
    hinv_steps: int
    flip: bool
    learn_labels: bool
    target_chunk: int = 0
    support_rows: int = 0  # > 0: the passes differentiate through that many support rows
    target_rows: int = 0  # > 0: the direct pass through that many targets
    repeats: int = 1  # draws of rows averaged in the direct and implicit gradients


def meta_gradient(params: SupportParams, network, targets, inner_lr, hvp_lr, s: Settings, loss, num_classes: int,
                  key=None):
    """One meta-gradient of RCIG (the reference's inner steps and ``do_meta_train_step``): the
    gradient, the outer loss, and the inner losses and Hessian residuals (for the learning rates).
    ``key`` draws the rows of a large support's passes (``Settings.support_rows``), in the
    reference's order; unused otherwise."""
    x, y = jax.lax.stop_gradient(_seen_by(s)(params))
    k_inner, key = jax.random.split(jax.random.PRNGKey(0) if key is None else key)
    variables, theta, losses = solve_inner(network, x, y, s.l2, inner_lr, s.inner_steps, num_classes,
                                           s.support_rows, k_inner, s.target_chunk)
    grads, value, residuals = meta_gradient_at(params, network.apply, variables, theta, targets, hvp_lr, s, loss,
                                               key)
    return grads, value, losses, residuals


def _seen_by(s: Settings):
    """The support the networks see, its labels without gradient unless they are learned."""

    def seen(p: SupportParams):
        return seen_support(p if s.learn_labels else p._replace(y=jax.lax.stop_gradient(p.y)), s.flip)

    return seen


def meta_gradient_at(params: SupportParams, apply, variables, theta, targets, hvp_lr, s: Settings, loss, key):
    """The reference's ``do_meta_train_step`` at the inner solution ``(variables, theta)``: the direct
    gradient plus the clipped implicit one, the outer loss and the Hessian residuals. ``key``: its
    ``aug_key``, which draws the rows of a large support's passes."""
    seen = _seen_by(s)
    x, y = jax.lax.stop_gradient(seen(params))
    xt, yt = targets
    pre = pre_t = None
    if s.support_rows or s.target_rows:  # the rows without gradient, once (the reference's do_precompute)
        key = jax.random.split(key)[0]
        pre = jax.lax.stop_gradient(linearized_in_chunks(apply, variables, theta, x, s.target_chunk))
        pre_t = jax.lax.stop_gradient(linearized_in_chunks(apply, variables, theta, xt, s.target_chunk))

    def direct_pass(key):
        key, _, k_rows, k_targets = jax.random.split(key, 4)
        rows = draw_rows(k_rows, x.shape[0], s.support_rows) if s.support_rows else None
        target_rows = draw_rows(k_targets, xt.shape[0], s.target_rows) if s.target_rows else None

        def outer(theta, p):
            xs, ys = seen(p)
            return outer_loss(theta, apply, variables, xs, ys, p.loss, xt, yt, s.l2, loss, s.target_chunk, rows,
                              target_rows, pre, pre_t)

        return key, *jax.value_and_grad(outer, argnums=(0, 1))(theta, params)

    key, value, (g_t, direct) = _averaged(direct_pass, key, s.repeats)
    v, residuals = hessian_inverse_product(apply, variables, theta, x, y, s.l2, g_t, hvp_lr, s.hinv_steps,
                                           s.support_rows, pre)

    def implicit_pass(key):
        rows = draw_rows(jax.random.split(key)[1], x.shape[0], s.support_rows) if s.support_rows else None
        return jax.random.split(key)[0], None, implicit_gradient(v, theta, apply, variables, params, seen, s.l2,
                                                                   rows, pre)

    implicit = clip_to(_averaged(implicit_pass, key, s.repeats)[2], direct)
    return jax.tree.map(jnp.add, direct, implicit), value, residuals


def _averaged(one_pass, key, repeats: int):
    """``one_pass`` (``key -> (key, value, gradients)``) ``repeats`` times, chaining the key: the
    last value and the mean of the gradients (the reference's ``normal_repeats`` loops)."""
    key, value, total = one_pass(key)
    for _ in range(repeats - 1):
        key, value, grads = one_pass(key)
        total = jax.tree.map(jnp.add, total, grads)
    if repeats > 1:
        total = jax.tree.map(lambda g: g * (1.0 / repeats), total)
    return key, value, total


def implicit_gradient(v, theta, apply, variables, params, seen, l2, rows=None, pre=None):
    """The reference's ``get_implicit_grad``: ``−∂/∂S ⟨v, ∂L_in/∂θ⟩`` at the inner solution ``theta``
    (``seen(params)``: the support the inner problem sees), before clipping; through ``rows`` of
    it only, when given (the others' features ``pre``)."""

    def coupling(p):
        xs, ys = seen(p)
        return -tree_dot(v, jax.grad(inner_loss)(theta, apply, variables, xs, ys, l2, rows, pre))

    return jax.grad(coupling)(params)


def seen_support(p: SupportParams, flip: bool):
    """The support the networks see: the images and labels, with their mirror images when ``flip``."""
    if not flip:
        return p.x, p.y
    return jnp.concatenate([p.x, jnp.flip(p.x, axis=-2)]), jnp.concatenate([p.y, p.y])


def climb(start: float, verdicts_of) -> float:
    """The reference's tuning loop (``distill_dataset.py:main``): probe, x1.2 after every probe,
    stop after the first probe that does not fall monotonically, then x0.7; so the rate kept is
    0.84x the first failing rung (``_TUNE_BATCH`` rungs of the ladder per call of
    ``verdicts_of(rungs)``, at most ``_MAX_TUNE``)."""
    for first in range(0, _MAX_TUNE, _TUNE_BATCH):
        rungs = start * 1.2 ** np.arange(first, first + _TUNE_BATCH)
        found = np.flatnonzero(np.asarray(verdicts_of(jnp.asarray(rungs, jnp.float32))) != 1)
        if found.size:
            return float(rungs[found[0]] * 1.2) * 0.7
    return float(start * 1.2**_MAX_TUNE) * 0.7


def tune_learning_rates(learning, s: Settings, loss, classes: int, params, kernel, targets, inner_lr: float,
                        hvp_lr: float) -> tuple[float, float]:
    """The reference's tuning before the first step: the inner learning rate, then the Hessian one
    (the inner problem solved at the tuned rate), each climbed from its start by batched probes."""

    @jax.jit
    def inner_verdicts(params, kernel, lrs):
        network = learning.network(kernel)
        x, y = seen_support(params, s.flip)
        return jax.vmap(lambda lr: verdict(solve_inner(network, x, y, s.l2, lr, s.inner_steps, classes,
                                                       s.support_rows, None, s.target_chunk)[2]))(lrs)

    @jax.jit
    def solved(params, kernel, targets, inner_lr):
        """The network's variables and ``θ`` after the inner steps, ``∂L_out/∂θ`` and the features of
        the rows without gradient (a large support's)."""
        network = learning.network(kernel)
        x, y = seen_support(params, s.flip)
        variables, theta, _ = solve_inner(network, x, y, s.l2, inner_lr, s.inner_steps, classes, s.support_rows,
                                          None, s.target_chunk)
        pre = linearized_in_chunks(network.apply, variables, theta, x, s.target_chunk) if s.support_rows else None
        rows = draw_rows(jax.random.PRNGKey(0), x.shape[0], s.support_rows) if s.support_rows else None
        g_t = jax.grad(outer_loss)(theta, network.apply, variables, x, y, params.loss, *targets, s.l2, loss,
                                   s.target_chunk, rows, None, pre)
        return variables, theta, g_t, pre

    @jax.jit
    def hvp_verdicts(params, kernel, variables, theta, g_t, pre, lrs):
        apply = learning.network(kernel).apply
        x, y = seen_support(params, s.flip)
        return jax.vmap(lambda lr: verdict(hessian_inverse_product(
            apply, variables, theta, x, y, s.l2, g_t, lr, s.hinv_steps, s.support_rows, pre)[1]))(lrs)

    lr_in = climb(inner_lr, lambda lrs: inner_verdicts(params, kernel, lrs))
    point = solved(params, kernel, targets, jnp.float32(lr_in))
    return lr_in, climb(hvp_lr, lambda lrs: hvp_verdicts(params, kernel, *point, lrs))


def probe_targets(problem: Problem, pool, target_batch: int, key):
    """The tuning probe's targets: ``target_batch`` training images drawn from ``key``, centred one-hot."""
    data, classes = problem.data, problem.data.num_classes
    idx = np.asarray(jax.random.choice(key, pool, (min(target_batch, len(pool)),), replace=False))
    y_t = np.eye(classes, dtype=np.float32)[data.y_train[idx]] - 1.0 / classes
    return jnp.asarray(data.x_train[idx], jnp.float32), jnp.asarray(y_t)


def averaged_support(state: RcigState) -> Support:
    """The debiased moving average of the images and labels (the set the reference evaluates)."""
    count = state.step.astype(jnp.float32)
    x, y = jax.tree.map(lambda h, p: jnp.where(count > 0, h / (1 - _EMA**jnp.maximum(count, 1)), p),
                        state.ema_hidden, (state.params.x, state.params.y))
    return Support(x=x, y=y, loss_params=state.params.loss)


def support_optimizer(lr: float, loss_lr: float, learn_labels: bool, loss) -> optax.GradientTransformation:
    """AdaBelief on the images (and labels) at ``lr`` and on the loss's parameters at ``loss_lr``."""
    labels = SupportParams(x="support", y="support" if learn_labels else "frozen",
                           loss=jax.tree.map(lambda _: "loss", loss.init()), t=None)
    return optax.multi_transform({"support": optax.adabelief(lr), "loss": optax.adabelief(loss_lr),
                                  "frozen": optax.set_to_zero()}, labels)


def build_rcig(steps: int = 50, lr: float = 0.1, learn_labels: bool = True, target_batch: int = 1024,
               l2_rate: float = 5e-4, inner_steps: int = 20, hinv_steps: int = 20, flip: bool = False,
               loss_lr: float = 3e-2, tune: bool = True, inner_lr: float = 1e-5, hvp_lr: float = 5e-5,
               target_chunk: int = 128, init: str = "real", support_rows: int | None = None, target_rows: int = 0,
               repeats: int = 1):
    def make(problem: Problem) -> Distiller:
        learning = problem.kernel.learning
        if learning is None or learning.network is None:
            raise ValueError("objective=rcig linearises the networks of a learning kernel that offers them "
                             "(Learning.network); use kernel=rcig-pool or kernel=frepo-pool")
        loss, classes = problem.loss, problem.data.num_classes
        pool, _ = target_pool(problem, None, False)
        _refuse_rows(problem, len(pool), dict(support_rows=support_rows, target_rows=target_rows, flip=flip,
                                              target_batch=target_batch))
        settings = Settings(l2_rate * problem.ipc * classes, inner_steps, hinv_steps, flip, learn_labels,
                            target_chunk, support_rows or 0, target_rows, repeats)
        sampler = uniform(len(problem.data.y_train), target_batch, pool)
        tx = support_optimizer(lr, loss_lr, learn_labels, loss)
        resolved: dict[str, float] = {}  # what init resolves (recorded as objective_<name>)
        settings_of = [settings]  # support_rows, resolved by init when unset

        def init_state(key) -> RcigState:
            k_support, k_pool, k_tune = jax.random.split(key, 3)
            x, y = initial_support(problem, init, k_support)
            if init == "noise":  # the reference's init_random_noise: 0.3 standard normal
                x = 0.3 * x
            params = SupportParams(x=x, y=y, loss=loss.init(), t=None)
            kernel = learning.init(k_pool, *seen_support(params, flip))
            if support_rows is None:  # from the device: every row where a pass over them all fits
                resolved.update(support_rows=device_rows(learning.network(kernel), *seen_support(params, flip),
                                                         settings.l2))
                settings_of[0] = settings._replace(support_rows=int(resolved["support_rows"]))
            lrs = (tune_learning_rates(learning, settings_of[0], loss, classes, params, kernel,
                                       probe_targets(problem, pool, target_batch, k_tune), inner_lr, hvp_lr)
                   if tune else (inner_lr, hvp_lr))
            resolved.update(inner_lr=lrs[0], hvp_lr=lrs[1])
            return RcigState(params=params, opt=tx.init(params), sampler=sampler.init(), kernel=kernel,
                             inner_lr=jnp.asarray(lrs[0], jnp.float32), hvp_lr=jnp.asarray(lrs[1], jnp.float32),
                             verdicts=jnp.zeros((3,), jnp.int32), step=jnp.asarray(0, jnp.int32),
                             ema_hidden=jax.tree.map(jnp.zeros_like, (x, y)))

        def step(state: RcigState, train, key):
            k_targets, k_pool = jax.random.split(key)
            t = sampler.sample(state.sampler, train, k_targets)
            grads, value, losses, _ = meta_gradient(state.params, learning.network(state.kernel),
                                                    (t.x.astype(jnp.float32), t.y.astype(jnp.float32)),
                                                    state.inner_lr, state.hvp_lr, settings_of[0], loss, classes,
                                                    jax.random.fold_in(key, 1))
            updates, opt = tx.update(grads, state.opt, state.params)
            params = optax.apply_updates(state.params, updates)
            hidden = jax.tree.map(lambda h, p: _EMA * h + (1 - _EMA) * p, state.ema_hidden, (params.x, params.y))
            kernel = learning.update(state.kernel, *jax.lax.stop_gradient(seen_support(params, flip)), k_pool)
            inner_lr, verdicts = adapt(state.inner_lr, state.verdicts, verdict(losses), state.step)
            return state._replace(params=params, opt=opt, kernel=kernel, inner_lr=inner_lr, verdicts=verdicts,
                                  step=state.step + 1, ema_hidden=hidden), value

        return Distiller(init=init_state, step=step, support=averaged_support, num_steps=int(steps),
                         settings=resolved)

    return make


def _refuse_rows(problem: Problem, targets: int, params: dict) -> None:
    """The planner's refusal of more rows than there are (``check_rcig_rows``), for a direct call."""
    why = check_rcig_rows(params, DatasetInfo(problem.data.num_classes, (targets,)), problem.ipc)
    if why:
        raise ValueError(why)


def device_rows(network: Network, x, y, l2) -> int:
    """``support_rows`` from the device for the seen support ``(x, y)``: 0 (every row) up to
    ``_ALWAYS_FITS`` rows, else ``devices.gradient_rows`` of a row's measured cost."""
    if x.shape[0] <= _ALWAYS_FITS:
        return 0
    return devices.gradient_rows(devices.current(), row_bytes(network, x, y, l2), x.shape[0])


def row_bytes(network: Network, x, y, l2) -> int:
    """Memory one more support row adds to a Hessian-vector product of the inner loss (the passes
    whose memory grows with the rows they differentiate through), as XLA compiles it: the
    difference of its temporaries at 16 and 8 rows, per row; 0 where the backend reports none."""
    apply, variables = network.apply, network.variables
    theta = jax.tree.map(jnp.zeros_like, variables["params"])

    def hvp(variables, theta, xs, ys):  # everything an argument: nothing for XLA to constant-fold
        grad_fn = jax.grad(lambda t: inner_loss(t, apply, variables, xs, ys, l2))
        return jax.jvp(grad_fn, (theta,), (theta,))[1]

    sizes = []
    for n in (8, 16):
        shapes = (jax.ShapeDtypeStruct((n, *x.shape[1:]), jnp.float32), jax.ShapeDtypeStruct((n, y.shape[-1]), jnp.float32))
        analysis = jax.jit(hvp).lower(variables, theta, *shapes).compile().memory_analysis()
        if analysis is None:
            return 0
        sizes.append(int(analysis.temp_size_in_bytes))
    return max(0, (sizes[1] - sizes[0]) // 8)


def adapt(lr, verdicts, now, step):
    """The reference's adaptation of the inner learning rate: the verdict of this step counted, then
    every ``_ADAPT_EVERY`` steps (not at step 0) ×0.9 when >= 29% failed, else ×1.05 when >= 70%
    fell monotonically, and the counts restart."""
    verdicts = verdicts + jnp.stack([now == 1, now == -1, True]).astype(jnp.int32)
    due = (step % _ADAPT_EVERY == 0) & (step > 0)
    monotonic, failed, total = verdicts[0] / verdicts[2], verdicts[1] / verdicts[2], verdicts[2]
    del total
    factor = jnp.where(failed >= 0.29, 0.9, jnp.where(monotonic >= 0.7, 1.05, 1.0)).astype(lr.dtype)
    return jnp.where(due, lr * factor, lr), jnp.where(due, jnp.zeros_like(verdicts), verdicts)
