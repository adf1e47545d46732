"""FRePo's reference, transcribed (issue 29 item 5): ``nfr``, ``lb_margin_th``, the loss of
``proto_train_step`` (with and without ``use_flip``), one whole ``proto_train_step`` (LAMB), and the
loop of ``proto_train_and_evaluate`` (the pool's staggered ages, its reset after ``T`` updates, the
online ``train_step`` on the support after each step), against distillbench's ``objective=frepo``,
``kernel=frepo-pool`` and ``frepo-conv`` on the same parameters and inputs.

Transcribed from ``yongchao97/FRePo`` at 9b98c65 (``lib/datadistillation/frepo.py``,
``lib/training/utils.py``, ``lib/training/metrics.py``, ``lib/models/networks.py``,
``script/distill.py``; its ``Conv`` is test_networks.py's ``ReferenceConv``), with two substitutions: ``jnp.linalg.solve`` for the removed
``solve(..., sym_pos=True)`` (the same symmetric system), and optax directly for flax's
``TrainState`` (``apply_gradients`` is ``tx.update`` then ``optax.apply_updates``, ``step + 1``).
Values and gradients agree to 1e-6 relative in float64 (the suite enables x64, conftest.py).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distillbench.components.datasets import DataSplit
from distillbench.components.objectives import Problem, TrainData
from distillbench.krr import centered_one_hot, krr_predict
from distillbench_builtin.losses.mse import build_mse
from distillbench_builtin.objectives.common import SupportParams
from distillbench_builtin.objectives.frepo import build_frepo, frepo_loss, label_margin

from helpers import build_kernel
from test_networks import REFERENCE_NAMES, ReferenceConv

RTOL = 1e-6
#: The pool's networks train in float32, in the reference as here: their parameters after Adam steps
#: agree to float32's rounding of two compilations (~30 ulp on near-zero biases), not to 1e-6.
FLOAT32_RTOL = 1e-5


# --- the reference, transcribed -------------------------------------------------------------

class NNState(NamedTuple):
    """The fields of utils.py ``TrainState`` the loop reads (``apply_fn``, ``params``,
    ``batch_stats``, ``step``, the optimizer's state)."""

    apply_fn: Any
    params: Any
    batch_stats: Any
    step: int
    opt_state: Any


def nn_feat_fn(x, state, has_bn=False):
    """frepo.py ``nn_feat_fn`` (``use_ema=False``)."""
    if has_bn:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
    else:
        variables = {"params": state.params}
    return state.apply_fn(variables, x, train=False, mutable=False)[1]


def nfr(x_target, x_proto, y_proto, nn_state, feat_fn, reg=1e-6):
    """frepo.py ``nfr``; ``jnp.linalg.solve`` for ``sp.linalg.solve(k_pp_reg, y_proto, sym_pos=True)``."""
    x_proto = feat_fn(x_proto, nn_state)
    k_pp = x_proto.dot(x_proto.T)
    k_tp = x_target.dot(x_proto.T)
    k_pp_reg = (k_pp + jnp.abs(reg) * jnp.trace(k_pp) * jnp.eye(k_pp.shape[0]) / k_pp.shape[0])
    pred = jnp.dot(k_tp, jnp.linalg.solve(k_pp_reg, y_proto))
    return pred


@jax.vmap
def lb_margin_th(logits):
    """frepo.py ``lb_margin_th``."""
    dim = logits.shape[-1]
    val, idx = jax.lax.top_k(logits, k=2)
    margin = jnp.minimum(val[0] - val[1], 1 / dim)
    return -margin


def mean_squared_loss(logits, labels):
    """metrics.py ``mean_squared_loss``."""
    return jnp.sum((logits - labels) ** 2 * 0.5, axis=-1)


def proto_loss_fn(params, images, labels, nn_state, feat_fn, use_flip=False, learn_label=True):
    """The ``loss_fn`` of frepo.py ``proto_train_step`` (``ProtoHolder`` read as the params dict;
    ``images`` are the targets' features, computed outside the gradient by the loop)."""
    x_proto, y_proto = params["x_proto"], params["y_proto"]
    if not learn_label:
        y_proto = jax.lax.stop_gradient(y_proto)
    lb_loss = lb_margin_th(y_proto).mean()
    if use_flip:
        x_proto_flip = jnp.flip(x_proto, axis=-2)
        x_proto = jnp.concatenate([x_proto, x_proto_flip], axis=0)
        y_proto = jnp.concatenate([y_proto, y_proto], axis=0)
    preds = nfr(images, x_proto, y_proto, nn_state, feat_fn)
    kernel_loss = mean_squared_loss(preds, labels).mean()
    return kernel_loss + lb_loss


def proto_train_step(params, opt_state, tx, nn_state, batch, use_flip=False, feat_fn=None):
    """frepo.py ``proto_train_step``: value and gradient of the loss, then ``apply_gradients``."""
    loss, grads = jax.value_and_grad(proto_loss_fn)(params, batch["image"], batch["label"], nn_state, feat_fn,
                                                    use_flip)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def train_step(state, batch, tx, has_bn=False):
    """utils.py ``train_step`` (``has_feat=True``, ``loss_type=mean_squared_loss``, no l2, one device)."""

    def loss_fn(params):
        if has_bn:
            variables = {"params": params, "batch_stats": state.batch_stats}
        else:
            variables = {"params": params}
        (logits, feat), new_model_state = state.apply_fn(variables, batch["image"], train=True,
                                                         mutable=["batch_stats"])
        loss = mean_squared_loss(logits, batch["label"]).mean()
        return loss, (new_model_state, logits)

    aux, grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_model_state, logits = aux[1]
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    stats = new_model_state["batch_stats"] if has_bn else state.batch_stats
    return state._replace(params=params, batch_stats=stats, opt_state=opt_state, step=state.step + 1)


def get_sample_proto(x_proto, y_proto, rng, bs=1000):
    """frepo.py ``get_sample_proto`` (the support is read directly, not through ``ProtoHolder``)."""
    if y_proto.shape[0] < bs:
        return x_proto, y_proto
    sample_idx = jax.random.choice(rng, y_proto.shape[0], shape=(bs,), replace=False)
    return x_proto[sample_idx], y_proto[sample_idx]


def init_proto_labels(labels, num_classes, scale_y=True):
    """The labels of frepo.py ``init_proto`` (``script/distill.py`` passes ``scale_y=True``)."""
    y_proto = jax.nn.one_hot(labels, num_classes)
    y_proto = y_proto - 1 / num_classes
    if scale_y:
        y_scale = np.sqrt(num_classes / 10)
        y_proto = y_proto / y_scale
    return y_proto


def initial_pool(create_online_state, num_nn_state, max_online_updates):
    """The pool of ``proto_train_and_evaluate``: ``num_nn_state`` fresh states whose ``step`` is
    set to the staggered ``(max_online_updates // num_nn_state) * i`` (their optimizer states stay
    fresh: ``dataclasses.replace`` touches ``step`` only)."""
    pool = []
    for i in range(num_nn_state):
        init_step = (max_online_updates // num_nn_state) * i
        pool.append(create_online_state(i)._replace(step=init_step))
    return pool


# --- the shared setting ---------------------------------------------------------------------

C, IPC, WIDTH, SIDE = 3, 2, 4, 16


def _data(channels: int, n_per_class: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(C), n_per_class)
    x = rng.standard_normal((len(labels), SIDE, SIDE, channels)).astype(np.float32)
    x += 0.5 * labels[:, None, None, None].astype(np.float32)  # some class signal
    data = DataSplit(x, labels, x[:C], labels[:C], C)
    train = TrainData(x=jnp.asarray(x), y=centered_one_hot(jnp.asarray(labels), C), labels=jnp.asarray(labels))
    return data, train


def _pool_kernel(normalization="batch", num_networks=2, max_updates=2, lr=3e-4):
    return build_kernel("frepo-pool", arch="frepo-conv", width=WIDTH, normalization=normalization,
                        num_networks=num_networks, max_updates=max_updates, lr=lr, batch=1000)


def _has_bn(normalization: str) -> bool:
    return normalization == "batch"


def _ref_module(normalization: str, dtype):
    """networks.py ``Conv`` (its transcription in test_networks.py, which checks frepo-conv against it)."""
    return ReferenceConv(width=WIDTH, num_classes=C, normalization=REFERENCE_NAMES[normalization], dtype=dtype)


def _network(pool_state, i, dtype=jnp.float32):
    """Network ``i`` of distillbench's pool as the reference's ``TrainState`` (cast to ``dtype``)."""
    pick = lambda tree: jax.tree.map(lambda a: jnp.asarray(a[i], dtype), tree)
    return pick(pool_state.params), pick(pool_state.batch_stats)


def _ref_state(pool_state, i, normalization, dtype, step, online_lr=3e-4):
    params, stats = _network(pool_state, i, dtype)
    return NNState(apply_fn=_ref_module(normalization, dtype).apply, params=params,
                   batch_stats=stats if _has_bn(normalization) else None, step=step,
                   opt_state=optax.adam(online_lr).init(params))


def _close(ours, ref, rtol=RTOL, what=""):
    """Equal to ``rtol`` relative, entry-wise, with entries near zero judged against the largest one."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * float(np.abs(ref).max()), err_msg=what)


def _perturbed_stats(state, seed=1):
    """Running statistics away from the fresh (0, 1), so that the kernel's use of them shows."""
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))
    stats = jax.tree.map(lambda a: a + 0.3 * jax.random.uniform(next(keys), a.shape, a.dtype), state.batch_stats)
    return state._replace(batch_stats=stats)


# --- nfr, lb_margin_th ----------------------------------------------------------------------

def test_nfr_is_the_krr_prediction_in_values_and_gradients():
    rng = np.random.default_rng(0)
    fs, ft = rng.standard_normal((8, 20)), jnp.asarray(rng.standard_normal((30, 20)))
    ys = np.asarray(centered_one_hot(np.arange(8) % 4, 4), np.float64) + 0.1 * rng.standard_normal((8, 4))
    identity_feat = lambda x, state: x

    def ours(fs, ys):
        return krr_predict(ft @ fs.T, fs @ fs.T, ys, 1e-6, jnp.float64, "cholesky")

    def ref(fs, ys):
        return nfr(ft, fs, ys, None, identity_feat)

    _close(ours(fs, ys), ref(fs, ys), what="prediction")
    probe = rng.standard_normal((30, 4))
    g_ours = jax.grad(lambda f, y: jnp.sum(probe * ours(f, y)), argnums=(0, 1))(fs, ys)
    g_ref = jax.grad(lambda f, y: jnp.sum(probe * ref(f, y)), argnums=(0, 1))(fs, ys)
    for a, b, name in zip(g_ours, g_ref, ("features", "labels")):
        _close(a, b, what=name)


def test_label_margin_is_lb_margin_th_in_values_and_gradients():
    rng = np.random.default_rng(1)
    y = np.asarray(centered_one_hot(np.arange(12) % 5, 5), np.float64)
    soft = (np.arange(12) % 2 == 1)[:, None]
    y = np.where(soft, 0.3 * rng.standard_normal(y.shape), y)  # half soft (gaps below 1/C), half one-hot (capped)
    margins = -np.asarray(lb_margin_th(jnp.asarray(y)))
    assert (margins < 1 / 5 - 1e-3).any() and np.isclose(margins, 1 / 5).any()
    _close(label_margin(y), lb_margin_th(y))
    _close(jax.grad(lambda y: label_margin(y).mean())(y), jax.grad(lambda y: lb_margin_th(y).mean())(y))


# --- the network, the loss, one step ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("channels,use_flip", [(1, False), (3, True)])
def test_frepo_loss_is_the_proto_train_step_loss(channels, use_flip):
    data, train = _data(channels)
    kernel = _pool_kernel()
    xs = jnp.asarray(data.x_train[::5], jnp.float64) * 0.7  # 6 support images, 2 per class
    ys = centered_one_hot(jnp.asarray(data.y_train[::5]), C, jnp.float64)
    ys = ys + 0.2 * jax.random.normal(jax.random.PRNGKey(2), ys.shape, jnp.float64)  # learned-looking labels
    state = _perturbed_stats(kernel.learning.init(jax.random.PRNGKey(0), xs, ys))
    i = int(state.current)
    nn_state = _ref_state(state, i, "batch", jnp.float64, int(state.age[i]))
    feat_fn = functools.partial(nn_feat_fn, has_bn=True)
    xt, yt = train.x.astype(jnp.float64), train.y.astype(jnp.float64)

    def ours(x, y):
        return frepo_loss(SupportParams(x=x, y=y, loss={}), xt, yt, None, kernel=kernel.learning.bind(state),
                          loss=build_mse(), reg=1e-6, dtype=jnp.float64, flip=use_flip, num_classes=C)

    def ref(x, y):
        images = feat_fn(xt, nn_state)  # the loop: feat = jit_feat_fn(image, nn_state), outside the gradient
        return proto_loss_fn({"x_proto": x, "y_proto": y}, images, yt, nn_state, feat_fn, use_flip)

    v_ours, g_ours = jax.value_and_grad(ours, argnums=(0, 1))(xs, ys)
    v_ref, g_ref = jax.value_and_grad(ref, argnums=(0, 1))(xs, ys)
    _close(v_ours, v_ref, what="loss")
    _close(g_ours[0], g_ref[0], what="gradient of the images")
    _close(g_ours[1], g_ref[1], what="gradient of the labels")
    assert np.abs(g_ref[0]).max() > 0 and np.abs(g_ref[1]).max() > 0


def _distiller(channels, *, steps=10, lr=0.01, flip=False, normalization="batch", num_networks=2, max_updates=2,
               online_lr=3e-4, seed=0):
    data, train = _data(channels)
    kernel = _pool_kernel(normalization, num_networks, max_updates, online_lr)
    distiller = build_frepo(steps=steps, lr=lr, learn_labels=True, target_batch=1024, reg=1e-6, dtype="float64",
                            flip=flip)(Problem(data, IPC, kernel, build_mse(), seed))
    return distiller, train


def _in_float64(state):
    """The support and its optimizer state in float64 (a run holds them in float32), so that steps
    of ~lr are compared at 1e-6 of themselves rather than at float32's resolution of the images.
    The pool still trains in float32 (its update casts the support), as the reference's does."""
    up = lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a
    return state._replace(params=jax.tree.map(up, state.params), opt=jax.tree.map(up, state.opt))


def _lamb(lr, steps):
    """create_proto_state's optimizer with proto_train_and_evaluate's schedule."""
    return optax.lamb(learning_rate=optax.cosine_decay_schedule(init_value=lr, decay_steps=steps, alpha=0.1))


@pytest.mark.slow
@pytest.mark.parametrize("channels,use_flip", [(1, False), (3, True)])
def test_one_frepo_step_is_one_proto_train_step(channels, use_flip):
    distiller, train = _distiller(channels, flip=use_flip)
    state0 = _in_float64(distiller.init(jax.random.PRNGKey(0)))
    state1, value = jax.jit(distiller.step)(state0, train, jax.random.PRNGKey(7))

    i = int(state0.kernel.current)
    nn_state = _ref_state(state0.kernel, i, "batch", jnp.float64, int(state0.kernel.age[i]))
    feat_fn = functools.partial(nn_feat_fn, has_bn=True)
    tx = _lamb(0.01, 10)
    params = {"x_proto": state0.params.x, "y_proto": state0.params.y}
    batch = {"image": feat_fn(train.x, nn_state), "label": train.y}  # 30 targets < 1024: the whole set
    new, _, loss = proto_train_step(params, tx.init(params), tx, nn_state, batch, use_flip, feat_fn)
    _close(value, loss, what="loss")
    # the step moves the support by ~lr: compare the moves, not the (much larger) images
    _close(state1.params.x - state0.params.x, new["x_proto"] - params["x_proto"], what="image update")
    _close(state1.params.y - state0.params.y, new["y_proto"] - params["y_proto"], what="label update")


# --- the pool and the whole loop ------------------------------------------------------------

@pytest.mark.slow
def test_initial_support_labels_are_init_protos():
    """init_proto(..., scale_y=True): centred one-hot divided by sqrt(C / 10)."""
    distiller, _ = _distiller(1)
    state = distiller.init(jax.random.PRNGKey(0))
    labels = np.repeat(np.arange(C), IPC)
    _close(state.params.y, init_proto_labels(labels, C))


@pytest.mark.slow
@pytest.mark.parametrize("normalization", ["batch", "none"])
def test_k_frepo_steps_are_the_references_loop(normalization):
    """proto_train_and_evaluate's loop body, ``k`` times, from the same pool: the proto step with the
    current network, then that network's reset (``nn_step > max_online_updates``) or its online
    ``train_step`` on the new support, then the next network. The reference draws the next index
    with numpy and a reset's fresh network from its own key: here both are read from distillbench's
    run (the index it drew, the fresh network it made), every other number is the transcription's."""
    steps, lr, online_lr, pool_size, max_updates, k = 10, 0.01, 1e-3, 2, 2, 8
    distiller, train = _distiller(1, steps=steps, lr=lr, normalization=normalization, num_networks=pool_size,
                                  max_updates=max_updates, online_lr=online_lr)
    has_bn = _has_bn(normalization)
    state = _in_float64(distiller.init(jax.random.PRNGKey(0)))
    step = jax.jit(distiller.step)
    x0, y0 = state.params.x, state.params.y

    create = lambda i: _ref_state(state.kernel, i, normalization, jnp.float32, 0, online_lr)
    pool = initial_pool(create, pool_size, max_updates)
    np.testing.assert_array_equal(state.kernel.age, [p.step for p in pool])  # staggered (T // P) * i
    for i, net in enumerate(pool):  # fresh Adam states despite the staggered ages
        for a, b in zip(jax.tree.leaves(jax.tree.map(lambda a: a[i], state.kernel.opt)),
                        jax.tree.leaves(net.opt_state), strict=True):
            np.testing.assert_array_equal(a, b)

    feat_fn = functools.partial(nn_feat_fn, has_bn=has_bn)
    apply64 = _ref_module(normalization, jnp.float64).apply
    tx, online_tx = _lamb(lr, steps), optax.adam(online_lr)

    @jax.jit
    def ref_proto_step(params, opt_state, nn_params, nn_stats):
        """The loop's feature call and proto step, with the network cast to float64."""
        cast = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float64), tree)
        nn_state = NNState(apply64, cast(nn_params), cast(nn_stats), 0, None)
        feat = feat_fn(train.x, nn_state)
        return proto_train_step(params, opt_state, tx, nn_state, {"image": feat, "label": train.y}, False, feat_fn)

    @jax.jit
    def ref_online_step(nn_params, nn_stats, nn_opt, x, y):
        nn_state = NNState(_ref_module(normalization, jnp.float32).apply, nn_params, nn_stats, 0, nn_opt)
        new = train_step(nn_state, {"image": x, "label": y}, online_tx, has_bn)
        return new.params, new.batch_stats, new.opt_state

    params = {"x_proto": x0, "y_proto": y0}
    opt_state = tx.init(params)
    resets = 0
    for t in range(k):
        idx = int(state.kernel.current)
        nn_state = pool[idx]
        params, opt_state, loss = ref_proto_step(params, opt_state, nn_state.params, nn_state.batch_stats)
        state, value = step(state, train, jax.random.PRNGKey(100 + t))
        if nn_state.step > max_updates:
            resets += 1
            assert int(state.kernel.age[idx]) == 0, f"step {t}: network {idx} should have been reset"
            nn_state = _ref_state(state.kernel, idx, normalization, jnp.float32, 0, online_lr)
        else:
            img, lb = get_sample_proto(params["x_proto"], params["y_proto"], None)
            img, lb = img.astype(jnp.float32), lb.astype(jnp.float32)  # the reference holds its support in float32
            new = ref_online_step(nn_state.params, nn_state.batch_stats, nn_state.opt_state, img, lb)
            nn_state = nn_state._replace(params=new[0], batch_stats=new[1], opt_state=new[2], step=nn_state.step + 1)
        pool[idx] = nn_state

        _close(value, loss, what=f"loss at step {t}")
        _close(state.params.x - x0, params["x_proto"] - x0, what=f"images after {t + 1} steps")
        _close(state.params.y - y0, params["y_proto"] - y0, what=f"labels after {t + 1} steps")
        np.testing.assert_array_equal(state.kernel.age, [p.step for p in pool])
        ours_params, ours_stats = _network(state.kernel, idx)
        for a, b in zip(jax.tree.leaves((ours_params, ours_stats if has_bn else {})),
                        jax.tree.leaves((nn_state.params, nn_state.batch_stats if has_bn else {})), strict=True):
            _close(a, b, rtol=FLOAT32_RTOL, what=f"network {idx} after step {t}")
    assert resets >= 1  # the run passed a reset
