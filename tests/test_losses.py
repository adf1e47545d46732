"""The built-in losses against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench_builtin.losses import COMPONENTS
from distillbench_builtin.losses.mse import build_mse
from distillbench_builtin.losses.platt import build_platt

PRED = jnp.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=jnp.float64)
Y = jnp.asarray([[0.5, -0.5], [-0.5, 0.5]], dtype=jnp.float64)


def test_declarations():
    by_name = {c.name: c for c in COMPONENTS}
    assert set(by_name) == {"mse", "platt"}
    assert all(c.kind == "loss" for c in COMPONENTS)
    assert by_name["platt"].default_params() == {"init_log_scale": 0.0}  # its rate: objective.loss_lr
    assert by_name["mse"].params == ()
    # declared builders resolve and build with the declared defaults
    for c in COMPONENTS:
        c.instantiate(c.default_params())


def test_mse_by_hand():
    loss = build_mse()
    assert loss.init() == {}
    # residuals y - pred: -0.5, -2.5, -3.5, -3.5 -> squares 0.25 + 6.25 + 12.25 + 12.25 = 31
    # mean over the 4 entries = 7.75, half = 3.875
    assert float(loss.apply({}, PRED, Y)) == pytest.approx(3.875, rel=1e-12)
    np.testing.assert_array_equal(np.asarray(loss.logits({}, PRED)), np.asarray(PRED))
    # gradient w.r.t. pred of 0.5*mean((y-p)^2) is (p - y)/4
    grad = jax.grad(lambda p: loss.apply({}, p, Y))(PRED)
    np.testing.assert_allclose(np.asarray(grad), (np.asarray(PRED) - np.asarray(Y)) / 4, rtol=1e-12)


def test_platt_by_hand():
    loss = build_platt(init_log_scale=math.log(2.0))
    params = loss.init()
    assert set(params) == {"log_scale"}
    assert params["log_scale"].dtype == jnp.float32 and params["log_scale"].shape == ()
    pred = jnp.asarray([[1.0, 0.0], [0.0, 2.0]], dtype=jnp.float64)
    y = jnp.asarray([[0.5, -0.5], [0.5, -0.5]], dtype=jnp.float64)  # both rows are class 0
    # logits = 2 * pred = [[2, 0], [0, 4]]
    np.testing.assert_allclose(np.asarray(loss.logits(params, pred)), [[2.0, 0.0], [0.0, 4.0]], rtol=1e-6)
    # row 0: -log(e^2 / (e^2 + 1)) = log(1 + e^-2); row 1: -log(1 / (1 + e^4)) = log(1 + e^4)
    expected = 0.5 * (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(4.0)))
    assert float(loss.apply(params, pred, y)) == pytest.approx(expected, rel=1e-6)


def test_platt_gradient_of_log_scale():
    loss = build_platt(init_log_scale=0.3)
    params = loss.init()
    pred = jnp.asarray([[0.2, -0.1, 0.4], [0.9, 0.1, -0.3], [-0.2, 0.5, 0.0]], dtype=jnp.float64)
    labels = np.array([2, 0, 0])
    y = np.full((3, 3), -1 / 3) + np.eye(3)[labels]
    g = jax.grad(lambda p: loss.apply(p, pred, jnp.asarray(y)))(params)["log_scale"]
    # d/dk mean CE(softmax(e^k f)) = mean_i sum_c (p_ic - onehot_ic) * e^k f_ic
    s = math.exp(float(params["log_scale"]))
    logits = s * np.asarray(pred)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = np.mean(np.sum((p - np.eye(3)[labels]) * logits, axis=1))
    assert float(g) == pytest.approx(expected, rel=1e-5)


def test_platt_default_is_unit_temperature():
    loss = build_platt()
    assert float(loss.init()["log_scale"]) == 0.0
    pred = jnp.asarray([[3.0, 1.0]], dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(loss.logits(loss.init(), pred)), [[3.0, 1.0]])


def test_loss_has_no_optimizer_setting():
    """A loss is init/apply/logits: how fast its parameters learn is the objective's ``loss_lr``."""
    from distillbench.components.losses import Loss

    assert Loss._fields == ("init", "apply", "logits")
    for loss in (build_mse(), build_platt()):
        assert type(loss) is Loss
    with pytest.raises(TypeError):
        Loss(dict, build_mse().apply, build_mse().logits, learning_rate=0.5)
