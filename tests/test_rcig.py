"""RCIG (objective=rcig, kernel=rcig-pool) against its reference code, and end to end.

``golden/rcig_reference*.npz`` hold what the reference's own functions (``yolky/RCIG`` at a9fb1fa,
run by ``golden/make_rcig_reference.py``) computed on small fixed inputs: a width-4 ``Conv`` with
softplus 60 on 8x8 grey images, 10 support images, 32 targets, in float64 and in float32.
distillbench's pieces, on the same parameters and inputs, must give the same values, gradients and
steps: in float64 to 1e-6 relative (of each array's largest entry), every piece. In float32, the
reference's own dtype, rounding sets the floor: the KRR solve (ridge 5e-3 on a kernel of 10
images) amplifies it to ~3e-4 relative in the gradients, and Adam's normalised steps
(``lr · m/√v``) carry that into the trajectories (inner problem, Hessian-inverse product), and
AdaBelief's first step (``lr · g/|g|``) turns it into a few % of a step for an entry whose
gradient is near rounding (measured: 0.9% with jax 0.10.2, 2.8% with jax 0.5.3); the float32 cases are compared
at those floors (``TOLERANCE``: 5% of a step).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distillbench.components.kernels import Network
from distillbench_builtin.architectures.finite import FrepoConv
from distillbench_builtin.kernels.rcig_pool import pool_train
from distillbench_builtin.losses.platt import build_platt
from distillbench_builtin.objectives import rcig
from distillbench_builtin.objectives.common import SupportParams
from helpers import run_cli

GOLDEN = {"float64": Path(__file__).parent / "golden" / "rcig_reference_f64.npz",
          "float32": Path(__file__).parent / "golden" / "rcig_reference.npz"}
#: (functions on the same inputs, optimizer trajectories) relative to each array's largest entry,
#: and the support's step relative to its learning rate.
TOLERANCE = {"float64": (1e-6, 1e-6, 1e-6), "float32": (5e-4, 5e-3, 5e-2)}
WIDTH, CLASSES, SUPPORT = 4, 10, 10
L2 = 5e-4 * SUPPORT
POOL_LR, INNER_LR, HVP_LR = 5e-5, 1e-3, 1e-2
POOL_STEPS, INNER_STEPS, HINV_STEPS = 3, 5, 5


@pytest.fixture(scope="module", params=["float64", "float32"])
def dtype(request):
    return request.param


@pytest.fixture(scope="module")
def ref(dtype):
    return dict(np.load(GOLDEN[dtype]))


@pytest.fixture(scope="module")
def tol(dtype):
    return TOLERANCE[dtype]


def tree(ref, prefix):
    out = {}
    for name, value in ref.items():
        if name.startswith(prefix + "/"):
            module, leaf = name[len(prefix) + 1:].split("/")
            out.setdefault(module, {})[leaf] = jnp.asarray(value)
    return out


def assert_tree_close(ours, theirs, rtol):
    for path, a in jax.tree_util.tree_leaves_with_path(ours):
        b = theirs
        for p in path:
            b = b[getattr(p, "key", p)]
        scale = float(np.max(np.abs(b))) or 1.0
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol * scale,
                                   err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def net(dtype):
    module = FrepoConv(width=WIDTH, num_classes=CLASSES, softplus=60.0, dtype=jnp.dtype(dtype))

    def apply(variables, x):
        return module.apply(variables, x, train=False)

    return module, apply


@pytest.fixture(scope="module")
def solved(ref, net):
    """distillbench's pool training then inner problem, on the reference's inputs."""
    module, apply = net
    tx = optax.adam(POOL_LR)
    base = tree(ref, "params")
    pooled, opt = pool_train(module, tx, base, tx.init(base), ref["xs"], ref["ys"], POOL_STEPS)
    network = Network(apply, {"params": pooled}, POOL_STEPS, tx, opt)
    variables, theta, losses = rcig.solve_inner(network, ref["xs"], ref["ys"], L2, INNER_LR, INNER_STEPS, CLASSES)
    return pooled, variables, theta, losses, network


@pytest.fixture(scope="module")
def at_reference(ref):
    """The reference's inner solution: its base parameters (moved by the pool optimizer's momentum
    during the inner steps) and its tangent parameters, to evaluate both codes on the same point."""
    return {"params": tree(ref, "inner_base")}, tree(ref, "theta")


def test_the_pool_trains_its_base_network_as_the_reference(ref, solved, tol):
    assert_tree_close(solved[0], tree(ref, "pooled"), tol[1])


def test_the_inner_problem_takes_the_reference_steps(ref, solved, tol):
    """Same losses, base drift and tangent parameters after the reference's inner steps: its Adam
    counts from the network's age, the readout weight (outside both masks) moves by +gradient and
    the base parameters by their pool optimizer's momentum. A trajectory of Adam steps (``lr · m/√v``)
    amplifies float32 rounding where gradients are small."""
    _, variables, theta, losses, _ = solved
    np.testing.assert_allclose(losses, ref["inner_losses"], rtol=tol[1])
    assert_tree_close(variables["params"], tree(ref, "inner_base"), tol[1])
    assert_tree_close(theta, tree(ref, "theta"), tol[1])
    assert float(jnp.abs(theta["Dense_0"]["kernel"]).max()) > 0  # the unmasked readout weight moved


def test_inner_loss_and_gradient_equal_the_reference(ref, net, at_reference, tol):
    variables, theta = at_reference
    value, grads = jax.value_and_grad(rcig.inner_loss)(theta, net[1], variables, ref["xs"], ref["ys"], L2)
    np.testing.assert_allclose(value, ref["inner_loss"], rtol=max(tol[0], 1e-7))  # its loss is cast to float32
    assert_tree_close(grads, tree(ref, "inner_grad"), tol[0])


def _support(ref):
    return SupportParams(x=jnp.asarray(ref["xs"]), y=jnp.asarray(ref["ys"]), loss=build_platt().init(), t=None)


def _seen(p):
    return p.x, p.y


@pytest.mark.parametrize("chunk", [0, 12], ids=["all targets at once", "in chunks of 12 (the last padded)"])
def test_outer_loss_direct_and_model_gradients_equal_the_reference(ref, net, at_reference, tol, chunk):
    variables, theta = at_reference
    loss = build_platt()

    def outer(theta, p):
        return rcig.outer_loss(theta, net[1], variables, p.x, p.y, p.loss, ref["xt"], ref["yt"], L2, loss, chunk)

    value, (g_t, direct) = jax.value_and_grad(outer, argnums=(0, 1))(theta, _support(ref))
    np.testing.assert_allclose(value, ref["outer_loss"], rtol=max(tol[0], 1e-7))  # cast to float32 there
    assert_tree_close(g_t, tree(ref, "g_t"), tol[0])
    assert_tree_close({"x_proto": direct.x, "y_proto": direct.y, "log_temp": direct.loss["log_scale"]},
                      {k: ref[f"direct/{k}"] for k in ("x_proto", "y_proto", "log_temp")}, tol[0])


def test_hessian_inverse_product_and_implicit_gradient_equal_the_reference(ref, net, at_reference, tol):
    """``H⁻¹g`` is a trajectory of Adam steps; the implicit gradient is then evaluated at the
    reference's ``H⁻¹g``."""
    variables, theta = at_reference
    v, residuals = rcig.hessian_inverse_product(net[1], variables, theta, ref["xs"], ref["ys"], L2,
                                                tree(ref, "g_t"), HVP_LR, HINV_STEPS)
    np.testing.assert_allclose(residuals, ref["residuals"], rtol=tol[1], atol=tol[1] * np.abs(ref["residuals"]).max())
    assert_tree_close(v, tree(ref, "h_inv_vp"), tol[1])
    implicit = rcig.implicit_gradient(tree(ref, "h_inv_vp"), theta, net[1], variables, _support(ref), _seen, L2)
    assert_tree_close({"x_proto": implicit.x, "y_proto": implicit.y},
                      {k: ref[f"implicit/{k}"] for k in ("x_proto", "y_proto")}, tol[0])


def test_one_meta_step_moves_the_support_as_the_reference(ref, solved, tol):
    """The whole step from the pool's network: inner steps, direct + clipped implicit gradient,
    AdaBelief (images and labels at 3e-3, the temperature at 0.03), and the moving average the
    reference evaluates. AdaBelief's first step is ``lr · g/|g|`` per entry, so the support moves by
    about ``lr`` wherever the gradient is not tiny: compared relative to that step."""
    network = solved[4]
    loss = build_platt()
    settings = rcig.Settings(L2, INNER_STEPS, HINV_STEPS, False, True)
    params = _support(ref)
    grads, _, _, _ = rcig.meta_gradient(params, network, (ref["xt"], ref["yt"]), INNER_LR, HVP_LR, settings, loss,
                                        CLASSES)
    labels = SupportParams(x="support", y="support", loss={"log_scale": "loss"}, t=None)
    tx = optax.multi_transform({"support": optax.adabelief(3e-3), "loss": optax.adabelief(0.03)}, labels)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    for ours, name, lr in ((new.x, "x_proto", 3e-3), (new.y, "y_proto", 3e-3), (new.loss["log_scale"], "log_temp", 0.03)):
        np.testing.assert_allclose(ours, ref[f"stepped/{name}"], rtol=0, atol=tol[2] * lr)
        np.testing.assert_allclose(ref[f"ema/{name}"], ref[f"stepped/{name}"], rtol=1e-6)  # one step: the average is it


def test_clipping_scales_each_leaf_to_the_direct_norm():
    implicit = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4]), "c": jnp.zeros(2)}
    direct = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([10.0, 0.0]), "c": jnp.zeros(2)}
    out = rcig.clip_to(implicit, direct)
    np.testing.assert_allclose(out["a"], [0.6, 0.8])  # norm 5 -> 1
    np.testing.assert_allclose(out["b"], [0.3, 0.4])  # already below 10
    np.testing.assert_array_equal(out["c"], [0.0, 0.0])  # 0/0 -> 0


@pytest.mark.parametrize("losses, expected", [([3.0, 2.0, 1.0], 1), ([1.0, 2.0, 1.5], -1), ([3.0, 1.0, 2.0], 0)])
def test_verdicts_of_a_loss_sequence_are_the_reference(losses, expected):
    assert int(rcig.verdict(jnp.asarray(losses))) == expected


def _reference_ladder(start: float, monotonic) -> float:
    """``distill_dataset.py:main``'s tuning loop, transcribed: probe, x1.2, until a probe is not
    monotonic; then x0.7."""
    lr, result = start, 1
    while result == 1:
        result = 1 if monotonic(lr) else 0
        lr *= 1.2
    return lr * 0.7


@pytest.mark.parametrize("fails_from", [1e-5, 3e-5, 2e-3, 1.9, 500.0])
def test_the_learning_rate_ladder_stops_where_the_reference_does(fails_from):
    """The rate kept is 0.84x the first failing rung (x1.2 after that probe, then x0.7), as in the
    reference, also when the first failure is the first rung or many batches of probed rungs up
    (500: the 98th rung; past the 100th, distillbench stops climbing, the reference does not).
    (An end-to-end run beside the reference, benchmarks/cross_reference.py --method rcig, found
    distillbench keeping 0.7x, one rung lower.)"""
    probed = []

    def verdicts_of(rungs):
        probed.append(len(rungs))
        return jnp.where(rungs < jnp.float32(fails_from), 1, 0)

    ours = rcig.climb(1e-5, verdicts_of)
    theirs = _reference_ladder(1e-5, lambda lr: np.float32(lr) < np.float32(fails_from))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert sum(probed) < 100 + rcig._TUNE_BATCH


def test_the_inner_learning_rate_adapts_every_50_steps_as_the_reference():
    lr, verdicts = jnp.float32(1.0), jnp.zeros(3, jnp.int32)
    for step in range(51):  # steps 0..50, all failing: adapted once, at step 50 (51 verdicts)
        lr, verdicts = rcig.adapt(lr, verdicts, jnp.int32(-1), jnp.int32(step))
    assert float(lr) == pytest.approx(0.9) and int(verdicts[2]) == 0
    for step in range(51, 101):  # 50 monotonic: x1.05
        lr, verdicts = rcig.adapt(lr, verdicts, jnp.int32(1), jnp.int32(step))
    assert float(lr) == pytest.approx(0.9 * 1.05)


@pytest.mark.slow
def test_rcig_runs_end_to_end_on_the_embedded_dataset(tmp_path):
    store = tmp_path / "r.sqlite"
    # small enough for the suite's unoptimised XLA (its tuning probes dozens of learning rates)
    result = run_cli("run", "-q", "--store", str(store), "objective=rcig", "objective.steps=3", "kernel.width=8",
                     "kernel.num_networks=2", "objective.inner_steps=3", "objective.hinv_steps=3",
                     "objective.target_batch=64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rcig/rcig-pool(frepo-conv)/platt" in result.stdout
    import sqlite3
    import json

    metrics = json.loads(sqlite3.connect(store).execute("select metrics from runs").fetchone()[0])
    assert metrics["objective_inner_lr"] > 0 and metrics["objective_hvp_lr"] > 0  # tuned, recorded


def test_rcig_refuses_a_kernel_without_networks(tmp_path):
    result = run_cli("run", "objective=rcig", "kernel=ntk", "objective.steps=1", cwd=tmp_path)
    assert result.returncode == 2
    assert "kernel=rcig-pool" in result.stderr and "Traceback" not in result.stderr


# -- large supports: the reference's subsampling (its cifar100_50 config), on given and drawn rows --
# Where rows are drawn from keys, the reference's JAX (0.4.30) derived random bits the older way
# (jax_threefry_partitionable off; newer JAX turns it on, so the same key draws other rows): those
# tests draw under the reference's setting, so that the same key chain must give the same rows.

SUB_ROWS, SUB_TARGETS, SUB_REPEATS = 4, 12, 2


@pytest.fixture
def reference_bits():
    with jax.threefry_partitionable(False):
        yield


def test_rows_are_drawn_as_the_reference_draws_them(ref, reference_bits):
    np.testing.assert_array_equal(rcig.draw_rows(jax.random.PRNGKey(1), SUPPORT, SUB_ROWS), ref["sub/rows"])
    np.testing.assert_array_equal(rcig.draw_rows(jax.random.PRNGKey(2), 32, SUB_TARGETS), ref["sub/target_rows"])


@pytest.fixture(scope="module")
def precomputed(ref, net, at_reference):
    """The features of every support and target row at the reference's inner solution (its do_precompute)."""
    variables, theta = at_reference
    return (rcig.linearized(net[1], variables, theta, ref["xs"]), rcig.linearized(net[1], variables, theta, ref["xt"]))


@pytest.mark.parametrize("given", [False, True], ids=["rest recomputed", "rest precomputed"])
def test_inner_loss_through_some_rows_equals_the_reference(ref, net, at_reference, precomputed, tol, given):
    """Same value as over every row (the other rows' features are constants), gradient through the rows only."""
    variables, theta = at_reference
    pre = precomputed[0] if given else None
    rows = jnp.asarray(ref["sub/rows"])
    value, grads = jax.value_and_grad(rcig.inner_loss)(theta, net[1], variables, ref["xs"], ref["ys"], L2, rows, pre)
    prefix = "sub/inner_pre" if given else "sub/inner"
    np.testing.assert_allclose(value, ref[f"{prefix}_loss"], rtol=max(tol[0], 1e-7))
    np.testing.assert_allclose(value, ref["inner_loss"], rtol=max(tol[0], 1e-7))
    assert_tree_close(grads, tree(ref, f"{prefix}_grad"), tol[0])
    full = tree(ref, "inner_grad")["Dense_0"]["kernel"]
    assert float(jnp.abs(grads["Dense_0"]["kernel"] - full).max()) > 1e-3 * float(np.abs(full).max())


def test_outer_loss_through_some_rows_equals_the_reference(ref, net, at_reference, precomputed, tol):
    """Direct gradient through 4 of the 10 support rows and 12 of the 32 targets, the rest precomputed:
    the images outside the rows get no direct gradient; the labels and the temperature all of theirs."""
    variables, theta = at_reference
    loss = build_platt()
    rows, target_rows = jnp.asarray(ref["sub/rows"]), jnp.asarray(ref["sub/target_rows"])

    def outer(theta, p):
        return rcig.outer_loss(theta, net[1], variables, p.x, p.y, p.loss, ref["xt"], ref["yt"], L2, loss, 0, rows,
                               target_rows, *precomputed)

    value, (g_t, direct) = jax.value_and_grad(outer, argnums=(0, 1))(theta, _support(ref))
    np.testing.assert_allclose(value, ref["sub/outer_loss"], rtol=max(tol[0], 1e-7))
    assert_tree_close(g_t, tree(ref, "sub/g_t"), tol[0])
    assert_tree_close({"x_proto": direct.x, "y_proto": direct.y, "log_temp": direct.loss["log_scale"]},
                      {k: ref[f"sub/direct/{k}"] for k in ("x_proto", "y_proto", "log_temp")}, tol[0])
    others = np.setdiff1d(np.arange(SUPPORT), ref["sub/rows"])
    assert not np.any(np.asarray(direct.x)[others])


def test_hessian_products_through_some_rows_equal_the_reference(ref, net, at_reference, precomputed, tol,
                                                                reference_bits):
    """One Hessian-vector product on given rows, and the Hessian-inverse product drawing its rows
    from PRNGKey(0) at every step, as the reference's does inside do_meta_train_step."""
    variables, theta = at_reference
    rows, g_t = jnp.asarray(ref["sub/rows"]), tree(ref, "sub/g_t")
    grad_fn = jax.grad(lambda t: rcig.inner_loss(t, net[1], variables, ref["xs"], ref["ys"], L2, rows, precomputed[0]))
    assert_tree_close(jax.jvp(grad_fn, (theta,), (g_t,))[1], tree(ref, "sub/hvp"), tol[0])
    v, residuals = rcig.hessian_inverse_product(net[1], variables, theta, ref["xs"], ref["ys"], L2, g_t, HVP_LR,
                                                HINV_STEPS, SUB_ROWS, precomputed[0])
    np.testing.assert_allclose(residuals, ref["sub/residuals"], rtol=tol[1],
                               atol=tol[1] * np.abs(ref["sub/residuals"]).max())
    assert_tree_close(v, tree(ref, "sub/h_inv_vp"), tol[1])


def test_inner_steps_through_some_rows_take_the_reference_steps(ref, solved, tol, reference_bits):
    """Each inner step differentiates through its own 4 rows (drawn from the step's key), the rest recomputed."""
    network = solved[4]
    _, theta, losses = rcig.solve_inner(network, ref["xs"], ref["ys"], L2, INNER_LR, INNER_STEPS, CLASSES, SUB_ROWS,
                                        jax.random.PRNGKey(0))
    np.testing.assert_allclose(losses, ref["sub/inner_losses"], rtol=tol[1])
    assert_tree_close(theta, tree(ref, "sub/theta"), tol[1])


def test_one_meta_step_through_some_rows_moves_the_support_as_the_reference(ref, net, at_reference, tol,
                                                                           reference_bits):
    """do_meta_train_step with the cifar100_50 config's subsampling (rows for the direct, Hessian and
    implicit passes, targets for the direct one, 2 draws averaged, precomputed features) from the
    reference's inner solution and key: the same AdaBelief step."""
    variables, theta = at_reference
    settings = rcig.Settings(L2, INNER_STEPS, HINV_STEPS, False, True, 0, SUB_ROWS, SUB_TARGETS, SUB_REPEATS)
    params = _support(ref)
    grads, _, _ = rcig.meta_gradient_at(params, net[1], variables, theta, (ref["xt"], ref["yt"]), HVP_LR, settings,
                                        build_platt(), jax.random.PRNGKey(0))
    labels = SupportParams(x="support", y="support", loss={"log_scale": "loss"}, t=None)
    tx = optax.multi_transform({"support": optax.adabelief(3e-3), "loss": optax.adabelief(0.03)}, labels)
    new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    for ours, name, lr in ((new.x, "x_proto", 3e-3), (new.y, "y_proto", 3e-3), (new.loss["log_scale"], "log_temp", 0.03)):
        np.testing.assert_allclose(ours, ref[f"sub/stepped/{name}"], rtol=0, atol=tol[2] * lr)


@pytest.mark.parametrize("bad, says", [
    (["objective.support_rows=10"], "objective.support_rows=10 is not below the 10 rows"),
    (["objective.target_rows=1024"], "objective.target_rows=1024 is not below the 1024 targets"),
    (["objective.repeats=0"], "objective.repeats=0"),
], ids=["rows", "targets", "repeats"])
def test_rcig_refuses_more_rows_than_there_are_before_any_compute(tmp_path, bad, says):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), "objective=rcig", *bad, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not store.exists()
