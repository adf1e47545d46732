"""The learned support transform (issue 33): the RFAD reference's training step with its
``transform_mat``, transcribed from ``yolky/RFAD`` (``distillation.distill_dataset``,
``data.transform_data``, ``corrupt_data``) into JAX here, against distillbench's step on the same
inputs; identity start, stored set, the switch, and the plan-time refusal."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distillbench.components.objectives import Problem, TrainData
from distillbench.krr import centered_one_hot
from distillbench_builtin.datasets.synthetic import build_synthetic
from distillbench_builtin.kernels.random_features import build_rf_nngp
from distillbench_builtin.losses.platt import build_platt
from distillbench_builtin.objectives.kip import build_kip
from distillbench_builtin.objectives.rfad import build_rfad
from distillbench_builtin.objectives.transform import apply, fit_problem

from helpers import architecture

jax.config.update("jax_enable_x64", True)

H, W, C, CLASSES, NETS, WIDTH = 8, 8, 2, 3, 2, 8  # two channels: NCHW and NHWC flattenings differ
DATA = build_synthetic(60, 12, CLASSES, H, W, C, 1.0, 0)
LABELS = jnp.asarray(DATA.y_train, jnp.int32)
TRAIN = TrainData(jnp.asarray(DATA.x_train), centered_one_hot(LABELS, CLASSES, dtype=jnp.float32), LABELS)
KERNEL = build_rf_nngp(arch=architecture("convnet3"), num_networks=NETS, width=WIDTH)
KEY = jax.random.PRNGKey(7)


def _distiller(**options):
    make = build_rfad(steps=3, lr=1e-2, target_batch=10_000, **options)  # every example is a target
    return make(Problem(DATA, 2, KERNEL, build_platt(), 0))


def _nchw_to_nhwc_order():
    """``perm``: NHWC-flat index j holds NCHW-flat index perm[j] (``T_ours = T_ref[perm][:, perm]``)."""
    return np.arange(H * W * C).reshape(C, H, W).transpose(1, 2, 0).ravel()


# --- transcription of the reference's step, in NCHW as it holds its images -------------------

def _trunk(x_nchw, key):
    """The concatenated raw trunk outputs ``[f_1(x), ..., f_N(x)]`` of the step's N random networks
    (``models_list[m](x)``; the networks are the layout-independent function of the image, taken
    from distillbench's ``rf-nngp`` with its scaling and bias column undone)."""
    f = KERNEL.feature_fn(jnp.transpose(x_nchw, (0, 2, 3, 1)), key)[:, :-1]
    n_feat = WIDTH  # 8x8 -> 4 -> 2 -> 1 after three pools
    return f * jnp.sqrt(NETS * n_feat) / jnp.sqrt(2.0), n_feat


def _reference_loss(x, t, y, k, x_init, mask, x_train, y_train, key, jit=5e-3):
    """``distill_dataset``'s training loss: transform_data, corrupt_data, features / sqrt(N F),
    K = 2 Phi Phi^T + 0.01 with the trace jitter, float64 solve, CE(e^k preds)."""
    m = x.shape[0]
    transformed = (x.reshape(m, -1) @ t).reshape(x.shape)  # data.transform_data
    if mask is not None:  # corrupt_data: frozen pixels keep X_init
        transformed = (1 - mask) * transformed + mask * x_init
    raw_s, n_feat = _trunk(transformed, key)
    phi_s = raw_s / jnp.sqrt(NETS * n_feat)
    raw_t, _ = _trunk(jax.lax.stop_gradient(x_train), key)
    phi_t = jax.lax.stop_gradient(raw_t / jnp.sqrt(NETS * n_feat))  # torch.no_grad
    k_xx = 2 * phi_s @ phi_s.T + 0.01
    k_xx = k_xx + jit * jnp.eye(m) * jnp.trace(k_xx) / m
    solved = jnp.linalg.solve(k_xx.astype(jnp.float64), y.astype(jnp.float64))
    preds = (2 * phi_t @ phi_s.T + 0.01).astype(jnp.float64) @ solved
    logits = jnp.exp(k) * preds
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y_train)), jnp.argmax(y_train, 1)])


def _ours_and_reference(corruption):
    distiller = _distiller(learn_labels=True, corruption=corruption)
    state = distiller.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)  # a T away from the identity, so the layouts and T's gradient matter
    t_ref = np.eye(H * W * C) + 0.05 * rng.standard_normal((H * W * C, H * W * C))
    perm = _nchw_to_nhwc_order()
    params = state.params._replace(t=jnp.asarray(t_ref[perm][:, perm], jnp.float32),
                                   loss={"log_scale": jnp.asarray(0.3, jnp.float32)})
    state = state._replace(params=params)
    ours, grads = jax.value_and_grad(lambda p: distiller.step(state._replace(params=p), TRAIN, KEY)[1])(params)

    to_nchw = (0, 3, 1, 2)
    mask = None if state.movable is None else 1 - jnp.transpose(state.movable, to_nchw)
    x_init = None if state.anchor is None else jnp.transpose(state.anchor, to_nchw)
    kernel_key = jax.random.split(KEY)[0]
    ref_args = (jnp.transpose(params.x, to_nchw), jnp.asarray(t_ref, jnp.float32), params.y,
                jnp.asarray(0.3, jnp.float64))
    ref, ref_grads = jax.value_and_grad(_reference_loss, argnums=(0, 1, 2, 3))(
        *ref_args, x_init, mask, jnp.transpose(TRAIN.x, to_nchw), TRAIN.y, kernel_key)
    return (ours, grads), (ref, ref_grads), perm


@pytest.mark.parametrize("corruption", [0.0, 0.3])
@pytest.mark.slow
def test_step_equals_the_reference_transcription(corruption):
    (ours, grads), (ref, (g_x, g_t, g_y, g_k)), perm = _ours_and_reference(corruption)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    # float32 features: the two sides sum X @ T in different orders (NCHW, NHWC), so entries agree
    # to float32 roundoff relative to the gradient's scale, not each to 1e-4 of itself
    for ours_g, ref_g in ((grads.x, np.transpose(g_x, (0, 2, 3, 1))), (grads.t, np.asarray(g_t)[perm][:, perm]),
                          (grads.y, g_y), (grads.loss["log_scale"], g_k)):
        np.testing.assert_allclose(ours_g, ref_g, rtol=2e-4, atol=1e-4 * float(np.abs(ref_g).max()))
    assert float(jnp.abs(grads.t).max()) > 1e-4  # T is really learned
    if corruption:  # the reference does not freeze X: its frozen pixels move through T's other columns
        assert float(jnp.abs(grads.x).max()) > 0


@pytest.mark.slow
def test_transform_moves_in_the_objectives_optimizer_at_its_own_rate():
    distiller = _distiller(learn_labels=True)
    state = distiller.init(jax.random.PRNGKey(0))
    grads = jax.grad(lambda p: distiller.step(state._replace(params=p), TRAIN, KEY)[1])(state.params)
    after, _ = distiller.step(state, TRAIN, KEY)
    expected, _ = optax.adabelief(5e-5, eps=1e-16).update(grads.t, optax.adabelief(5e-5, eps=1e-16).init(grads.t))
    # the step (5.6e-5 = lr/0.9 on a first AdaBelief step) to float32 roundoff of the two gradient
    # computations (an entry whose gradient is near 0 moves by g/(|g|+eps): jax 0.5.3 put one of
    # 16256 entries 5.4e-8 away); near T's ones float32 holds it to 6e-8
    off = ~np.eye(H * W * C, dtype=bool)
    np.testing.assert_allclose(np.asarray(after.params.t)[off], np.asarray(expected)[off], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(after.params.t, optax.apply_updates(state.params.t, expected), rtol=0, atol=1e-7)
    assert "ScaleByBeliefState" in repr(after.opt.inner_states["transform"])


# --- identity start, stored set, the switch ---------------------------------------------------

def _run(distiller, steps=3):
    state = distiller.init(jax.random.PRNGKey(0))
    step, losses = jax.jit(distiller.step), []
    for i in range(steps):
        state, value = step(state, TRAIN, jax.random.fold_in(KEY, i))
        losses.append(float(value))
    return state, losses


def test_identity_start_gives_todays_numbers_at_step_zero():
    on, off = _distiller(), _distiller(transform=False)
    s_on, s_off = on.init(jax.random.PRNGKey(0)), off.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(on.support(s_on).x, off.support(s_off).x)
    (a_on, l_on), (a_off, l_off) = on.step(s_on, TRAIN, KEY), off.step(s_off, TRAIN, KEY)
    assert float(l_on) == float(l_off)
    np.testing.assert_array_equal(a_on.params.x, a_off.params.x)  # X @ I passes X's gradient unchanged


@pytest.mark.parametrize("corruption", [0.0, 0.4])
@pytest.mark.slow
def test_stored_support_is_the_transformed_images(corruption):
    distiller = _distiller(corruption=corruption, val_every=2, val_per_class=5)
    state0 = distiller.init(jax.random.PRNGKey(0))
    state, _ = _run(distiller)
    best = state.select.best
    expected = apply(best.x, best.t)
    if corruption:
        expected = state.movable * expected + (1 - state.movable) * state0.params.x
        frozen = np.asarray(state.movable) == 0
        np.testing.assert_array_equal(np.asarray(distiller.support(state).x)[frozen], np.asarray(state0.params.x)[frozen])
    np.testing.assert_array_equal(distiller.support(state).x, expected)
    assert not np.array_equal(np.asarray(best.t), np.eye(H * W * C))


@pytest.mark.slow
def test_switch_off_is_the_step_without_a_transform():
    """``transform=false``: no T in the state, the pre-transform step's bits (the step written out
    here from the public pieces: loss of the raw params, AdaBelief on the images, Platt's k)."""
    from distillbench_builtin.objectives.common import krr_loss

    distiller = _distiller(transform=False)
    state, losses = _run(distiller)
    assert state.params.t is None and "transform" not in state.opt.inner_states
    params = distiller.init(jax.random.PRNGKey(0)).params
    tx = optax.multi_transform({"x": optax.adabelief(1e-2, eps=1e-16), "k": optax.adabelief(1e-2, eps=1e-16),
                                "0": optax.set_to_zero()},
                               params._replace(x="x", y="0", loss={"log_scale": "k"}))
    opt, expected = tx.init(params), []
    loss_and_grad = jax.jit(jax.value_and_grad(lambda p, k: krr_loss(  # one compile for the 3 steps
        p, TRAIN.x, TRAIN.y, k, kernel=KERNEL, loss=build_platt(), reg=5e-3, dtype=jnp.float32,
        method="lu", stop_target=True)))
    for i in range(3):
        kernel_key = jax.random.split(jax.random.fold_in(KEY, i))[0]
        value, grads = loss_and_grad(params, kernel_key)
        updates, opt = tx.update(grads, opt, params)
        params, _ = optax.apply_updates(params, updates), expected.append(float(value))
    assert losses == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(state.params.x, params.x, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_kip_learns_the_transform_when_asked_and_not_by_default():
    problem = Problem(DATA, 1, KERNEL, build_platt(), 0)
    assert build_kip(steps=2)(problem).init(KEY).params.t is None
    distiller = build_kip(steps=2, target_batch=30, dtype="float32", transform=True)(problem)
    state, _ = _run(distiller, steps=2)
    assert "ScaleByAdamState" in repr(state.opt.inner_states["transform"])
    np.testing.assert_array_equal(distiller.support(state).x, apply(state.params.x, state.params.t))
    assert not np.array_equal(np.asarray(state.params.t), np.eye(H * W * C))


@pytest.mark.slow
def test_same_seed_same_bits():
    (a, la), (b, lb) = _run(_distiller()), _run(_distiller())
    assert la == lb
    np.testing.assert_array_equal(a.params.t, b.params.t)


# --- plan time --------------------------------------------------------------------------------

def test_refused_at_plan_time_with_the_memory_it_needs():
    from distillbench.errors import ConfigError
    from distillbench.registry import load_registry
    from distillbench.runner.plan import plan

    reason = fit_problem({"transform": True, "val_every": 0}, (32, 32, 3), machine_bytes=2**27)
    assert reason and "\n" not in reason and "3072x3072" in reason and "0.2 GiB" in reason
    assert "objective.transform=false" in reason
    assert fit_problem({"transform": False}, (32, 32, 3), machine_bytes=1) is None
    assert fit_problem({"transform": True}, (28, 28, 1), machine_bytes=2**30) is None
    huge = ["objective=rfad", "dataset=synthetic", "dataset.n_train=20", "dataset.n_test=10",
            "dataset.height=1024", "dataset.width=1024", "dataset.channels=3"]  # d^2 ~ 1e13: no machine
    with pytest.raises(ConfigError, match=r"^objective rfad: objective.transform=true learns a 3145728x3145728"):
        plan(huge, load_registry())
    assert plan([*huge, "objective.transform=false"], load_registry()).configs
