"""The RFAD reference's protocol, transcribed: ZCA, model selection, the Platt optimizer, KIP's
defaults, and the protocol commands of docs/protocols.md (issue 18)."""

import numpy as np
import pytest

from distillbench_builtin.datasets.preprocessing import preprocess

from helpers import architecture


def _reference_zca_nchw(x_train, x_test, reg_coef):
    """Transcription of yolky/RFAD ``data.py`` (``get_cifar10`` standardization, ``get_zca_matrix``,
    ``transform_data``) in numpy float64, on NCHW images as the reference holds them."""
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True, ddof=1)  # torch.std is unbiased
    x_test = (x_test - mean) / std
    x_train = (x_train - mean) / std
    x_flat = x_train.reshape(x_train.shape[0], -1)
    cov = (x_flat.T @ x_flat) / x_flat.shape[0]
    reg_amount = reg_coef * np.trace(cov) / cov.shape[0]
    u, s, _ = np.linalg.svd(cov + reg_amount * np.eye(cov.shape[0]))
    whitening = np.einsum("ij,j,kj->ik", u, s**-0.5, u)

    def transform(x):
        return (x.reshape(x.shape[0], -1) @ whitening).reshape(x.shape)

    return transform(x_train), transform(x_test)


def _layernorm_nchw(x):
    """``data.layernorm_data``."""
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    return x / np.sqrt(np.sum(x**2, axis=(1, 2, 3), keepdims=True))


def _rgb(hw):
    rng = np.random.default_rng(18)
    n = 300
    # correlated pixels (a smooth random field per image) with per-channel offsets and scales
    base = rng.standard_normal((n, hw // 4, hw // 4, 3)).repeat(4, axis=1).repeat(4, axis=2)
    x = 40.0 * (base + 0.3 * rng.standard_normal((n, hw, hw, 3))) + np.array([120.0, 100.0, 80.0])
    return x[:250].astype(np.float32), x[250:].astype(np.float32)


@pytest.mark.slow
def test_zca_is_the_rfad_reference_transform():
    # 16x16x3 (d = 768): the same code path as CIFAR's 32x32x3 (still fewer images than
    # dimensions, so the ridge matters), at a 64th of the cost of the 3072x3072 decompositions.
    x_train, x_test = _rgb(16)
    ours_train, ours_test = preprocess(x_train, x_test, "zca", 0.1)
    to_nchw = (0, 3, 1, 2)
    ref_train, ref_test = _reference_zca_nchw(x_train.astype(np.float64).transpose(to_nchw),
                                              x_test.astype(np.float64).transpose(to_nchw), 0.1)
    assert ours_train.dtype == np.float32
    np.testing.assert_allclose(ours_train, ref_train.transpose(0, 2, 3, 1).astype(np.float32), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours_test, ref_test.transpose(0, 2, 3, 1).astype(np.float32), rtol=1e-6, atol=1e-6)
    # the reference centers nothing: the outputs keep a clear mean, unlike a centered ZCA
    assert np.abs(ours_train.reshape(len(ours_train), -1).mean(0)).max() > 1e-2


@pytest.mark.slow
def test_zca_layernorm_is_the_rfad_reference_svhn_transform():
    x_train, x_test = _rgb(16)  # the same code path as 32x32x3 at a 64th of the cost
    ours_train, ours_test = preprocess(x_train, x_test, "zca-layernorm", 0.1)
    to_nchw = (0, 3, 1, 2)
    tr, te = x_train.astype(np.float64).transpose(to_nchw), x_test.astype(np.float64).transpose(to_nchw)
    mean, std = tr.mean(axis=(0, 2, 3), keepdims=True), tr.std(axis=(0, 2, 3), keepdims=True, ddof=1)
    tr, te = _layernorm_nchw((tr - mean) / std), _layernorm_nchw((te - mean) / std)
    # get_svhn standardizes, run_distillation layer-norms, then whitens the layer-normed images
    x_flat = tr.reshape(len(tr), -1)
    cov = x_flat.T @ x_flat / len(x_flat)
    u, s, _ = np.linalg.svd(cov + 0.1 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))
    w = np.einsum("ij,j,kj->ik", u, s**-0.5, u)
    ref_test = (te.reshape(len(te), -1) @ w).reshape(te.shape)
    np.testing.assert_allclose(ours_test, ref_test.transpose(0, 2, 3, 1).astype(np.float32), rtol=1e-6, atol=1e-6)
    assert ours_train.shape == x_train.shape


# --- RFAD model selection: 500 per class, one kernel of 16 networks ---------------------------

def _softmax_xent(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(labels)), labels]))


@pytest.mark.slow
def test_validation_loss_is_one_kernel_of_sixteen_networks():
    import jax
    import jax.numpy as jnp

    from distillbench.krr import centered_one_hot
    from distillbench_builtin.kernels.random_features import build_rf_nngp
    from distillbench_builtin.losses.platt import build_platt
    from distillbench_builtin.objectives.common import SupportParams, pooled_krr_loss

    rng = np.random.default_rng(3)
    width, n_networks, c = 8, 8, 3
    kernel = build_rf_nngp(arch=architecture("convnet3"), num_networks=n_networks, width=width)
    xs, xv = rng.standard_normal((6, 8, 8, 1)), rng.standard_normal((40, 8, 8, 1))
    ys = np.asarray(centered_one_hot(np.arange(6) % c, c), np.float64)
    yv_labels = rng.integers(0, c, 40)
    platt = build_platt(init_log_scale=0.7)
    params = SupportParams(x=jnp.asarray(xs, jnp.float32), y=jnp.asarray(ys), loss=platt.init())
    keys = jax.random.split(jax.random.PRNGKey(5), 2)  # 2 draws of 8 networks: the reference's 16
    ours = float(pooled_krr_loss(params, jnp.asarray(xv, jnp.float32), centered_one_hot(yv_labels, c), keys,
                                 kernel=kernel, loss=platt, reg=5e-3, dtype=jnp.float32, method="lu"))

    # Transcription of the reference (distillation.py): the 16 networks' raw trunk outputs f_m,
    # Phi = concat_m f_m / sqrt(16 F), K = 2 Phi Phi^T + 0.01, jitter 5e-3 tr(K)/n, one solve, CE(e^k pred)
    n_feat = width * 1 * 1  # 8x8 -> 4 -> 2 -> 1 after three pools
    def raw(x, key):  # undo rf-nngp's scaling w_std/sqrt(N F) and drop its bias column
        f = np.asarray(kernel.feature_fn(jnp.asarray(x, jnp.float32), key), np.float64)[:, :-1]
        return f * np.sqrt(n_networks * n_feat) / np.sqrt(2.0)
    phi_s = np.concatenate([raw(xs, k) for k in keys], axis=1) / np.sqrt(16 * n_feat)
    phi_v = np.concatenate([raw(xv, k) for k in keys], axis=1) / np.sqrt(16 * n_feat)
    k_xx = 2 * phi_s @ phi_s.T + 0.01
    k_xx = k_xx + 5e-3 * np.eye(6) * np.trace(k_xx) / 6
    preds = (2 * phi_v @ phi_s.T + 0.01) @ np.linalg.solve(k_xx, ys)
    expected = _softmax_xent(np.exp(0.7) * preds, yv_labels)
    assert ours == pytest.approx(expected, rel=1e-4)

    # and it is not the mean of per-draw losses (what selection scored before)
    per_draw = []
    for k in keys:
        f_s, f_v = np.asarray(kernel.feature_fn(params.x, k), np.float64), np.asarray(
            kernel.feature_fn(jnp.asarray(xv, jnp.float32), k), np.float64)
        kk = f_s @ f_s.T
        kk = kk + 5e-3 * np.eye(6) * np.trace(kk) / 6
        per_draw.append(_softmax_xent(np.exp(0.7) * (f_v @ f_s.T) @ np.linalg.solve(kk, ys), yv_labels))
    assert abs(np.mean(per_draw) - expected) > 1e-4


@pytest.mark.slow
def test_rfad_holds_out_500_per_class_and_validates_with_the_pooled_kernel():
    import jax
    import jax.numpy as jnp

    from distillbench.components.objectives import Problem, TrainData
    from distillbench.krr import centered_one_hot
    from distillbench_builtin.datasets.synthetic import build_synthetic
    from distillbench_builtin.kernels.random_features import build_rf_nngp
    from distillbench_builtin.losses.platt import build_platt
    from distillbench_builtin.objectives import COMPONENTS
    from distillbench_builtin.objectives.common import pooled_krr_loss, target_pool
    from distillbench_builtin.objectives.rfad import build_rfad

    defaults = {c.name: c for c in COMPONENTS}["rfad"].default_params()
    assert defaults["val_per_class"] is None and defaults["val_models"] == 2 and defaults["patience"] == 1000
    data = build_synthetic(5300, 20, 10, 4, 4, 1, 1.0, 0)
    kernel, platt = build_rf_nngp(arch=architecture("fc1"), num_networks=8, width=4), build_platt()
    problem = Problem(data, 1, kernel, platt, 0)
    pool, held = target_pool(problem, None, True)
    assert np.all(np.bincount(data.y_train[held], minlength=10) == 500)
    assert not set(pool) & set(held.tolist())

    distiller = build_rfad(steps=3, val_every=40, target_batch=256)(problem)
    train = TrainData(jnp.asarray(data.x_train), centered_one_hot(data.y_train, 10), jnp.asarray(data.y_train))
    state0 = distiller.init(jax.random.PRNGKey(0))
    state1, _ = jax.jit(distiller.step)(state0, train, jax.random.PRNGKey(1))
    val = state0.select.val
    expected = pooled_krr_loss(state0.params, train.x[val], train.y[val], state0.select.keys, kernel=kernel,
                               loss=platt, reg=5e-3, dtype=jnp.float32, method="lu")
    assert state0.select.keys.shape[0] == 2  # 2 draws x 8 networks
    assert float(state1.select.best_loss) == pytest.approx(float(expected), rel=1e-6)


# --- Platt's temperature: in the objective's optimizer ------------------------------------------

@pytest.mark.parametrize("objective, state_type", [("rfad", "ScaleByBeliefState"), ("kip", "ScaleByAdamState")])
def test_platt_log_scale_is_trained_by_the_objectives_optimizer(objective, state_type):
    import jax

    from distillbench.components.objectives import Problem
    from distillbench_builtin.datasets.synthetic import build_synthetic
    from distillbench_builtin.kernels.exact import build_ntk
    from distillbench_builtin.losses.platt import build_platt
    from distillbench_builtin.objectives.kip import build_kip
    from distillbench_builtin.objectives.rfad import build_rfad

    data = build_synthetic(40, 10, 2, 4, 4, 1, 1.0, 0)
    build = build_rfad if objective == "rfad" else build_kip
    distiller = build(steps=2)(Problem(data, 1, build_ntk(arch=architecture("fc1")), build_platt(), 0))
    state = distiller.init(jax.random.PRNGKey(0))
    loss_state = state.opt.inner_states["loss"].inner_state
    found = [type(s).__name__ for s in jax.tree_util.tree_leaves(
        loss_state, is_leaf=lambda s: isinstance(s, tuple) and hasattr(s, "_fields"))]
    assert state_type in found, found


# --- KIP's sigma_b^2 = 1e-4 reaches the evaluation kernel too ------------------------------------

def test_krr_evaluator_builds_its_kernel_with_the_given_b_std():
    from distillbench.components.evaluators import EvalContext
    from distillbench.components.objectives import Support
    from distillbench.krr import centered_one_hot
    from distillbench_builtin.datasets.synthetic import build_synthetic
    from distillbench_builtin.evaluators.krr import build_krr
    from distillbench_builtin.kernels.exact import build_ntk
    from distillbench_builtin.losses.mse import build_mse

    data = build_synthetic(40, 20, 2, 4, 4, 1, 1.0, 0)
    built = []

    def make_kernel(name, **params):
        built.append(params)
        return build_ntk(**{**params, "arch": architecture(params["arch"])})  # as the run's registry builds it

    ctx = EvalContext(data, build_mse(), "fc1", {"reg": 1e-6}, make_kernel, 0)
    support = Support(data.x_train[:6], np.asarray(centered_one_hot(data.y_train[:6], 2)), {})
    kip = build_krr(kernel="ntk", arch=architecture("fc1"), b_std=0.01).evaluate(support, ctx)
    default = build_krr(kernel="ntk", arch=architecture("fc1")).evaluate(support, ctx)
    assert built == [{"arch": "fc1", "b_std": 0.01}, {"arch": "fc1"}]
    assert kip["mse"] != default["mse"]  # a different kernel, not only a different label
