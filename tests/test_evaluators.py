"""The KRR evaluator on small synthetic class blobs with a real fc1 NNGP kernel."""

import jax.numpy as jnp
import numpy as np
import pytest

from distillbench.compat.neural_tangents import import_neural_tangents
from distillbench_builtin.datasets.synthetic import build_synthetic
from distillbench.components.evaluators import EvalContext
from distillbench.components.kernels import Kernel
from distillbench.components.objectives import Support
from distillbench.krr import centered_one_hot, krr_predict
from distillbench.sampling import balanced_subset
from distillbench_builtin.evaluators import COMPONENTS
from distillbench_builtin.evaluators.krr import build_krr
from distillbench_builtin.losses.mse import build_mse
from distillbench_builtin.losses.platt import build_platt

from helpers import architecture

FC1_ARCH = architecture("fc1")  # as the run's registry hands it to the builder (auto: the planner's rule)
stax = import_neural_tangents().stax
_, _, FC1 = stax.serial(stax.Flatten(), stax.Dense(1, 2**0.5, 0.1), stax.Relu(), stax.Dense(1, 2**0.5, 0.1))


def blobs(num_classes=3, n_train=60, n_test=90, hw=4, noise=0.3, seed=0):
    """Gaussian class blobs from the built-in ``synthetic`` dataset."""
    return build_synthetic(n_train, n_test, num_classes, hw, hw, 1, noise / 2.0, seed)


class KernelFactory:
    """``ctx.make_kernel``: records what was asked, returns the fc1 NNGP."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, **params):
        self.calls.append((name, params))
        return Kernel(kernel_fn=lambda a, b, key: FC1(a, b, "nngp"), arch=params.get("arch"))


def context(data, loss=None, arch=None, objective_params=None, make_kernel=None, ridge=None):
    return EvalContext(data=data, loss=loss or build_mse(), run_kernel_arch=arch,
                       objective_params=objective_params or {}, make_kernel=make_kernel or KernelFactory(),
                       seed=0, ridge=ridge)


def random_support(data, ipc, loss):
    idx = balanced_subset(data.y_train, ipc, data.num_classes, 0)
    return Support(x=data.x_train[idx], y=centered_one_hot(jnp.asarray(data.y_train[idx]), data.num_classes),
                   loss_params=loss.init())


def reference(data, support, reg):
    xs = jnp.asarray(support.x, jnp.float64)
    xte = jnp.asarray(data.x_test, jnp.float64)
    pred = np.asarray(krr_predict(FC1(xte, xs, "nngp"), FC1(xs, xs, "nngp"), jnp.asarray(support.y), reg))
    target = np.eye(data.num_classes)[data.y_test] - 1.0 / data.num_classes
    return float(np.mean(pred.argmax(1) == data.y_test)), float(np.mean((pred - target) ** 2))


def test_declaration():
    krr = {c.name: c for c in COMPONENTS}["krr"]
    assert krr.kind == "evaluator"
    assert krr.default_params() == {"kernel": "nngp", "arch": "auto", "reg": None, "dtype": "float64",
                                    "b_std": None, "updates": 1000}


@pytest.mark.slow
def test_high_accuracy_on_separable_blobs_and_float_metrics():
    data = blobs()
    factory = KernelFactory()
    ctx = context(data, make_kernel=factory)
    support = random_support(data, 2, build_mse())
    metrics = build_krr(arch=FC1_ARCH).evaluate(support, ctx)
    assert set(metrics) == {"acc", "mse", "eval_reg", "eval_kernel", "eval_arch"}
    assert all(type(metrics[k]) is float for k in ("acc", "mse", "eval_reg"))
    assert (metrics["eval_kernel"], metrics["eval_arch"]) == ("nngp", "fc1")  # what ran, reported
    assert metrics["acc"] >= 0.95
    acc, mse = reference(data, support, 1e-6)
    assert metrics["acc"] == acc
    assert metrics["mse"] == pytest.approx(mse, rel=1e-9)
    assert factory.calls == [("nngp", {"arch": "fc1"})]  # no run arch -> fc1


def test_reg_none_resolves_to_the_objectives_declared_ridge():
    data = blobs(noise=1.5)  # harder, so that the ridge visibly matters
    support = random_support(data, 2, build_mse())
    evaluator = build_krr(arch=FC1_ARCH)
    with_obj = evaluator.evaluate(support, context(data, objective_params={"reg": 0.5}, ridge=0.5))
    assert with_obj["eval_reg"] == 0.5
    assert with_obj["mse"] == pytest.approx(reference(data, support, 0.5)[1], rel=1e-9)
    # A parameter merely named reg is not the ridge: only the declared one (Param(role="ridge")) is.
    named_only = evaluator.evaluate(support, context(data, objective_params={"reg": 0.5}))
    assert named_only["eval_reg"] == 1e-6
    without = evaluator.evaluate(support, context(data, objective_params={"steps": 3}))
    assert without["eval_reg"] == 1e-6
    assert without["mse"] == pytest.approx(reference(data, support, 1e-6)[1], rel=1e-9)
    assert with_obj["mse"] != pytest.approx(without["mse"], rel=1e-3)
    explicit = build_krr(arch=FC1_ARCH, reg=0.01).evaluate(support, context(data, ridge=0.5))
    assert explicit["eval_reg"] == 0.01


def test_the_kernel_is_built_with_the_architecture_given():
    data = blobs()
    support = random_support(data, 1, build_mse())
    factory = KernelFactory()
    build_krr(arch=architecture("convnet3")).evaluate(support, context(data, make_kernel=factory))
    build_krr(kernel="ntk", arch=architecture("fc3")).evaluate(support, context(data, make_kernel=factory))
    assert factory.calls == [("nngp", {"arch": "convnet3"}), ("ntk", {"arch": "fc3"})]


def test_platt_logits_and_reuse_across_calls():
    data = blobs(noise=1.0)
    loss = build_platt(init_log_scale=3.0)
    factory = KernelFactory()
    ctx = context(data, loss=loss, make_kernel=factory)
    evaluator = build_krr(arch=FC1_ARCH)
    distilled = random_support(data, 2, loss)
    baseline = Support(distilled.x[::-1].copy(), distilled.y[::-1], loss.init())
    m1 = evaluator.evaluate(distilled, ctx)
    m2 = evaluator.evaluate(baseline, ctx)
    assert len(factory.calls) == 1  # one kernel (and one compiled scorer) per context
    acc, mse = reference(data, distilled, 1e-6)
    assert m1["acc"] == acc and m1["mse"] == pytest.approx(mse, rel=1e-9)
    assert m2["acc"] == pytest.approx(acc) and m2["mse"] == pytest.approx(mse, rel=1e-9)  # same set, permuted


def test_accuracy_uses_the_loss_logits():
    from distillbench.components.losses import Loss

    data = blobs()
    support = random_support(data, 2, build_mse())
    flipped = Loss(init=dict, apply=lambda p, pred, y: 0.0, logits=lambda p, pred: -pred)
    normal = build_krr(arch=FC1_ARCH).evaluate(support, context(data))
    reversed_ = build_krr(arch=FC1_ARCH).evaluate(support, context(data, loss=flipped))
    assert normal["acc"] >= 0.95 and reversed_["acc"] <= 0.05
    assert reversed_["mse"] == normal["mse"]  # the MSE metric is on the raw predictions
