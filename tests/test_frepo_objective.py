"""The frepo objective and the gradient objectives' handling of kernels whose networks learn
(``Kernel.learning``), with a toy learning kernel made here (the built-in pool has its own tests)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench.components.kernels import Kernel, Learning
from distillbench.components.objectives import Problem
from distillbench.krr import centered_one_hot, krr_predict
from distillbench_builtin.losses.mse import build_mse
from distillbench_builtin.objectives import COMPONENTS
from distillbench_builtin.objectives.common import SupportParams
from distillbench_builtin.objectives.frepo import build_frepo, frepo_loss, label_margin, with_flips
from distillbench_builtin.objectives.kip import build_kip
from test_objectives import DATA, TRAIN, run


class Toy(dict):
    pass


def toy_learning_kernel(width=16):
    """Features ``relu(x W)`` of one layer whose ``W`` moves each update towards the support mean;
    ``age`` counts the updates, ``seen`` sums the support it was given."""

    def features(w, x):
        return jax.nn.relu(x.reshape(x.shape[0], -1) @ w)

    def init(key, x, y):
        d = int(np.prod(x.shape[1:]))
        return {"w": jax.random.normal(key, (d, width), x.dtype) / jnp.sqrt(d), "age": jnp.zeros((), jnp.int32),
                "seen": jnp.zeros((), jnp.float32), "classes": jnp.zeros((y.shape[-1],), jnp.float32)}

    def bind(state):
        w = state["w"]
        return Kernel(kernel_fn=lambda a, b, key: features(w.astype(a.dtype), a) @ features(w.astype(b.dtype), b).T,
                      feature_fn=lambda x, key: features(w.astype(x.dtype), x), random=False)

    def update(state, x, y, key):
        step = 0.01 * jax.random.normal(key, state["w"].shape, state["w"].dtype)
        return {"w": state["w"] + step, "age": state["age"] + 1, "seen": state["seen"] + jnp.sum(x).astype(jnp.float32),
                "classes": state["classes"] + jnp.sum(y, axis=0)}

    fresh = lambda x, key: bind(init(key, x, jnp.zeros((1, 1)))).feature_fn(x, key)
    return Kernel(kernel_fn=lambda a, b, key: fresh(a, key) @ fresh(b, key).T, feature_fn=fresh, random=True,
                  learning=Learning(init=init, bind=bind, update=update))


TOY = toy_learning_kernel()


def problem(kernel=TOY, ipc=2):
    return Problem(DATA, ipc, kernel, build_mse(), 0)


def test_label_margin_is_the_references_thresholded_margin():
    c = 10
    y = centered_one_hot(jnp.arange(4) % c, c)
    np.testing.assert_allclose(label_margin(y), -1.0 / c)  # a one-hot gap of 1 is capped at 1/C
    soft = jnp.array([[0.30, 0.28, 0.0], [0.9, 0.1, 0.0]])
    np.testing.assert_allclose(label_margin(soft), [-0.02, -1.0 / 3], rtol=1e-6)


def test_frepo_loss_is_c_times_the_krr_loss_plus_the_margin_and_flips_mirror_width():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 4, 1))
    y = centered_one_hot(jnp.array([0, 1, 2, 3]), 10)
    params = SupportParams(x=x, y=y, loss={})
    kernel = TOY.learning.bind(TOY.learning.init(jax.random.PRNGKey(1), x, y))
    xt, yt = TRAIN.x[:50], TRAIN.y[:50]
    common = dict(kernel=kernel, loss=build_mse(), reg=1e-6, dtype=jnp.float64, num_classes=10)
    plain = frepo_loss(params, xt, yt, None, flip=False, **common)
    fs, ft = kernel.feature_fn(x.astype(jnp.float64), None), kernel.feature_fn(xt.astype(jnp.float64), None)
    pred = krr_predict(ft @ fs.T, fs @ fs.T, y, 1e-6)
    np.testing.assert_allclose(plain, 10 * 0.5 * jnp.mean((pred - yt) ** 2) - 0.1, rtol=1e-8)
    flipped = with_flips(params)
    np.testing.assert_array_equal(flipped.x[4:], x[:, :, ::-1, :])
    assert flipped.y.shape == (8, 10)
    assert not np.isclose(frepo_loss(params, xt, yt, None, flip=True, **common), plain)


def test_learning_kernel_is_updated_once_per_step_after_the_support_step():
    distiller = build_kip(steps=3, lr=0.01, target_batch=100)(problem())
    state = distiller.init(jax.random.PRNGKey(0))
    assert int(state.kernel["age"]) == 0
    step = jax.jit(distiller.step)
    key = jax.random.PRNGKey(5)
    before = state
    state, value = step(state, TRAIN, key)
    assert int(state.kernel["age"]) == 1
    # the update saw the support after this step's update (not the one before it)
    np.testing.assert_allclose(float(state.kernel["seen"]), float(jnp.sum(state.params.x)), rtol=1e-5)
    assert not np.allclose(state.kernel["w"], before.kernel["w"])
    # the loss of the step is the loss under the kernel of the networks as they were
    kernel = TOY.learning.bind(before.kernel)
    kernel_key, batch_key = jax.random.split(key)
    targets = distiller_targets(distiller, before, batch_key)
    from distillbench_builtin.objectives.common import krr_loss
    expected = krr_loss(before.params, targets.x, targets.y, kernel_key, kernel=kernel, loss=build_mse(),
                        reg=1e-6, dtype=jnp.float64)
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-6)


def distiller_targets(distiller, state, batch_key):
    """The targets the step drew (the sampler is deterministic in its key)."""
    from distillbench.sampling import class_balanced

    sampler = class_balanced(DATA.y_train, DATA.num_classes, 100, np.arange(len(DATA.y_train)))
    return sampler.sample(state.sampler, TRAIN, batch_key)


def test_exact_kernels_keep_no_learning_state():
    from test_objectives import NTK

    state = build_kip(steps=1)(problem(NTK)).init(jax.random.PRNGKey(0))
    assert state.kernel is None


def test_frepo_declaration_and_a_run_that_learns():
    decl = {c.name: c for c in COMPONENTS}["frepo"]
    assert decl.learning and decl.defaults == {"kernel": "frepo-pool", "loss": "mse"}
    assert decl.default_params() == {"steps": 600, "lr": 1e-2, "learn_labels": True, "target_batch": 1024,
                                     "reg": 1e-6, "dtype": "float32", "init": "real", "flip": False,
                                     "loss_lr": 1e-2}
    distiller = build_frepo(steps=20, lr=3e-3, target_batch=100)(problem())
    state, losses = run(distiller)
    assert int(state.kernel["age"]) == 20
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    support = distiller.support(state)
    assert support.x.shape == (20, 4, 4, 1)
    assert not np.allclose(support.y, centered_one_hot(jnp.repeat(jnp.arange(10), 2), 10))  # labels learned


def test_krr_evaluator_trains_a_learning_kernels_networks_on_the_set_first():
    from distillbench.components.kernels import fit
    from distillbench_builtin.evaluators.krr import _scorer

    xs, ys = TRAIN.x[:20], TRAIN.y[:20]
    key = jax.random.PRNGKey(3)
    state = fit(TOY.learning, jax.random.fold_in(key, 1), xs.astype(jnp.float64), ys, 4)
    assert int(state["age"]) == 4
    kernel = TOY.learning.bind(state)
    x64, xt = xs.astype(jnp.float64), TRAIN.x[20:60].astype(jnp.float64)
    expected = krr_predict(kernel.kernel_fn(xt, x64, key), kernel.kernel_fn(x64, x64, key), ys, 1e-6)
    got = _scorer(TOY, jnp.float64, 1e-6, 4)(xs, ys, TRAIN.x[20:60], key)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    untrained = _scorer(TOY, jnp.float64, 1e-6, 0)(xs, ys, TRAIN.x[20:60], key)
    assert not np.allclose(untrained, got)
