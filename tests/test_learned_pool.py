"""kernel=frepo-pool: FRePo's pool of networks trained on the support (shapes, f f^T, the
reference's reset schedule and online update, one compilation, determinism)."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from distillbench.testing import check_kernel

from helpers import build_kernel, builtins, run_cli

# Networks are compiled and trained in every test: the slow lane (README's full command).
pytestmark = pytest.mark.slow

SMALL = dict(arch="convnet3", width=8, normalization="none", num_networks=3, max_updates=4, lr=1e-2, batch=1000)


def _kernel(**params):
    """Built once per parameter set: the tests of one pool share its compiled init and update."""
    return _built(tuple(sorted({**SMALL, **params}.items())))


@functools.cache
def _built(params):
    return build_kernel("frepo-pool", **dict(params))


def _support(m=12, c=4, seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, (m, 8, 8, 1), jnp.float32)
    y = jax.nn.one_hot(jax.random.randint(ky, (m,), 0, c), c) - 1 / c  # centred labels, as FRePo's
    return x, y


def _batch_norm_arch():
    """A registered architecture whose network offers batch norm, or None."""
    registry = builtins()
    for name in ("frepo-conv", "convnet3"):
        if name in registry.names("architecture"):
            try:
                registry.architecture(name).network(2, 8, "batch", jnp.float32)
            except ValueError:
                continue
            return name
    return None


def _net(state, i):
    return jax.tree.map(lambda a: a[i], (state.params, state.batch_stats, state.opt))


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_shapes_and_bind_is_f_f_transpose():
    kernel = _kernel()
    x, y = _support()
    state = kernel.learning.init(jax.random.PRNGKey(0), x, y)
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves((state.params, state.opt)))
    assert state.age.shape == (3,) and state.current.shape == () and state.classes.shape == (4,)
    bound = kernel.learning.bind(state)
    assert bound.learning is None and not bound.random and bound.arch == "convnet3"
    x2 = x[:5] * 0.5
    f1, f2 = bound.feature_fn(x, None), bound.feature_fn(x2, None)
    features = builtins().architecture("convnet3").trunk_features(8, (8, 8, 1))
    assert f1.shape == (12, features) and f2.shape == (5, features)
    np.testing.assert_allclose(bound.kernel_fn(x, x2, None), f1 @ f2.T, rtol=1e-6, atol=1e-6)
    # The features are those of network ``current`` of the pool, running stats, train=False.
    params, _, _ = _net(state, state.current)
    net = builtins().architecture("convnet3").network(4, 8, "none", jnp.float32)
    np.testing.assert_allclose(f1, net.apply({"params": params}, x, train=False)[1], rtol=1e-6, atol=1e-7)
    # Without learning: one freshly initialised network per key.
    k = jax.random.PRNGKey(3)
    assert kernel.kernel_fn(x, x2, k).shape == (12, 5)
    np.testing.assert_array_equal(kernel.feature_fn(x, k), kernel.feature_fn(x, k))
    assert not np.array_equal(kernel.feature_fn(x, k), kernel.feature_fn(x, jax.random.PRNGKey(4)))


def test_conforms_fresh_and_bound():
    small = {k: v for k, v in SMALL.items() if k != "lr"}
    kernel = check_kernel("kernel:frepo-pool", small)  # fresh networks: one per key
    x, y = _support()
    state = kernel.learning.init(jax.random.PRNGKey(0), x, y)
    for step in range(2):
        state = kernel.learning.update(state, x, y, jax.random.PRNGKey(step))
    check_kernel(kernel.learning.bind(state))  # a trained network's kernel: the key is not used


def test_features_chunked_and_in_the_images_dtype():
    kernel = _kernel()
    x, y = _support(m=300)  # more than a CPU chunk (256)
    state = kernel.learning.init(jax.random.PRNGKey(1), x, y)
    f = kernel.learning.bind(state).feature_fn(x, None)
    params, _, _ = _net(state, state.current)
    net = builtins().architecture("convnet3").network(4, 8, "none", jnp.float32)
    np.testing.assert_allclose(f, net.apply({"params": params}, x, train=False)[1], rtol=1e-5, atol=1e-6)
    f64 = kernel.learning.bind(state).feature_fn(x[:7].astype(jnp.float64), None)
    assert f64.dtype == jnp.float64
    np.testing.assert_allclose(f64, f[:7], rtol=1e-4, atol=1e-5)


def _reference_ages(ages, currents, max_updates):
    """The reference's pool schedule (proto_train_and_evaluate): the current network is reset when
    ``nn_step > max_online_updates`` (fresh state: step 0), else trained (step + 1)."""
    ages, out = list(ages), []
    for idx in currents:
        ages[idx] = 0 if ages[idx] > max_updates else ages[idx] + 1
        out.append(list(ages))
    return out


def test_ages_staggered_and_reset_as_the_reference():
    kernel = _kernel(num_networks=3, max_updates=4)
    x, y = _support()
    state = kernel.learning.init(jax.random.PRNGKey(0), x, y)
    np.testing.assert_array_equal(state.age, [0, 1, 2])  # (T // P) * i
    assert _kernel(num_networks=10, max_updates=100).learning.init(jax.random.PRNGKey(0), x, y).age.tolist() == \
        [10 * i for i in range(10)]
    ages, currents = [state.age.tolist()], []
    for step in range(25):
        currents.append(int(state.current))
        state = kernel.learning.update(state, x, y, jax.random.PRNGKey(100 + step))
        ages.append(state.age.tolist())
    assert len(set(currents)) == 3  # every network was current at least once
    assert ages[1:] == _reference_ages(ages[0], currents, 4)


def test_reset_after_t_plus_one_updates_to_a_fresh_network():
    kernel = _kernel(num_networks=1, max_updates=2)
    x, y = _support()
    state = kernel.learning.init(jax.random.PRNGKey(0), x, y)
    for step in range(3):  # ages 0, 1, 2: all three train (nn_step > 2 is false)
        before = state.params
        state = kernel.learning.update(state, x, y, jax.random.PRNGKey(step))
        assert int(state.age[0]) == step + 1 and not _leaves_equal(before, state.params)
    key = jax.random.PRNGKey(9)
    reset = kernel.learning.update(state, x, y, key)  # age 3 > 2: re-initialised
    assert int(reset.age[0]) == 0
    module = builtins().architecture("convnet3").network(4, 8, "none", jnp.float32)
    # jitted as the update is (an eager init draws other bits under float64)
    fresh = jax.jit(lambda k: module.init(k, jnp.zeros((1, 8, 8, 1), jnp.float32), train=False)["params"])(
        jax.random.split(key, 3)[0])
    assert _leaves_equal(jax.tree.map(lambda a: a[0], reset.params), fresh)
    assert all(not np.any(c) for c in jax.tree.leaves(reset.opt))  # fresh Adam: zero moments and count


def test_an_update_changes_only_the_current_network():
    kernel = _kernel(num_networks=4, max_updates=100)
    x, y = _support()
    state = kernel.learning.init(jax.random.PRNGKey(5), x, y)
    for step in range(4):
        i = int(state.current)
        new = kernel.learning.update(state, x, y, jax.random.PRNGKey(step))
        for j in range(4):
            assert _leaves_equal(_net(state, j), _net(new, j)) == (j != i), (step, i, j)
        state = new


def test_no_gradient_flows_into_the_support_through_an_update():
    kernel = _kernel()
    x, y = _support()
    state = kernel.learning.init(jax.random.PRNGKey(0), x, y)

    def through(x, y):
        new = kernel.learning.update(state, x, y, jax.random.PRNGKey(1))
        return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(new.params))

    gx, gy = jax.grad(through, argnums=(0, 1))(x, y)
    assert not np.any(gx) and not np.any(gy)
    # The bound kernel's features are differentiable in the images (the meta-gradient).
    bound = kernel.learning.bind(state)
    assert np.any(jax.grad(lambda x: jnp.sum(bound.kernel_fn(x, x[:3], None)))(x))


def test_a_jitted_loop_of_updates_compiles_once_and_same_key_same_bits():
    kernel = _kernel()
    learning = kernel.learning
    x, y = _support()

    traces = []

    @jax.jit
    def step(state, key):
        traces.append(1)  # runs once per trace (= compilation)
        state = learning.update(state, x, y, key)
        return state, learning.bind(state).feature_fn(x, None)

    def run():
        state = learning.init(jax.random.PRNGKey(0), x, y)
        out = []
        for k in jax.random.split(jax.random.PRNGKey(1), 7):  # passes the reset (T = 4)
            state, f = step(state, k)
            out.append(f)
        return state, out

    (s1, f1), (s2, f2) = run(), run()
    assert len(traces) == 1
    assert _leaves_equal(s1, s2) and _leaves_equal(f1, f2)

    def scanned(state):
        return jax.lax.scan(lambda s, k: (learning.update(s, x, y, k), None), state,
                            jax.random.split(jax.random.PRNGKey(1), 7))[0]

    s3 = jax.jit(scanned)(learning.init(jax.random.PRNGKey(0), x, y))  # one program: bits may differ
    np.testing.assert_array_equal(s3.age, s1.age)
    for a, b in zip(jax.tree.leaves(s3.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- the reference's online update (lib/training/utils.py, train_step; metrics.py), transcribed --

class _TrainState(train_state.TrainState):
    batch_stats: Any = None


def _mean_squared_loss(logits, labels):
    return jnp.sum((logits - labels) ** 2 * 0.5, axis=-1)


def _reference_train_step(state, batch, rng, loss_type, has_feat=False, has_bn=False):
    def loss_fn(params):
        if has_bn:
            variables = {"params": params, "batch_stats": state.batch_stats}
        else:
            variables = {"params": params}
        if has_feat:
            (logits, feat), new_model_state = state.apply_fn(variables, batch["image"], rngs={"dropout": rng},
                                                             train=True, mutable=["batch_stats"])
        else:
            logits, new_model_state = state.apply_fn(variables, batch["image"], rngs={"dropout": rng}, train=True,
                                                     mutable=["batch_stats"])
        loss = loss_type(logits, batch["label"]).mean()
        return loss, (new_model_state, logits)

    aux, grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_model_state, logits = aux[1]
    if has_bn:
        return state.apply_gradients(grads=grads, batch_stats=new_model_state["batch_stats"])
    return state.apply_gradients(grads=grads)


def _normalizations():
    arch = _batch_norm_arch()
    return [("convnet3", "none")] + ([(arch, "batch")] if arch else [])


@pytest.mark.parametrize("arch,normalization", _normalizations())
@pytest.mark.parametrize("batch", [1000, 5])
def test_online_update_equals_the_references_train_step(arch, normalization, batch):
    lr = 3e-4
    kernel = _kernel(arch=arch, normalization=normalization, num_networks=1, max_updates=100, lr=lr, batch=batch)
    x, y = _support()
    state = kernel.learning.init(jax.random.PRNGKey(0), x, y)
    params, stats, _ = _net(state, 0)
    has_bn = normalization == "batch"
    module = builtins().architecture(arch).network(4, 8, normalization, jnp.float32)
    ref = _TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(learning_rate=lambda _: lr),
                             batch_stats=stats if has_bn else None)
    step = jax.jit(lambda s, b, r: _reference_train_step(s, b, r, _mean_squared_loss, has_feat=True, has_bn=has_bn))
    for i in range(3):
        key = jax.random.PRNGKey(10 + i)
        if batch < x.shape[0]:  # the reference's get_sample_proto, with the update's batch key
            idx = jax.random.choice(jax.random.split(key, 3)[1], x.shape[0], (batch,), replace=False)
            image, label = x[idx], y[idx]
        else:
            image, label = x, y
        ref = step(ref, {"image": image, "label": label}, key)
        state = kernel.learning.update(state, x, y, key)
    ours, our_stats, _ = _net(state, 0)
    # 1e-6 relative to the parameters' scale: a leaf of tiny values (a bias ~1e-3 after three Adam
    # steps, which divide by sqrt(v)) carries float32 rounding of the whole network's sums.
    scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(ref.params))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * scale)
    if has_bn:
        assert not _leaves_equal(stats, our_stats)  # batch statistics were updated
        for a, b in zip(jax.tree.leaves(our_stats), jax.tree.leaves(ref.batch_stats), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(state.age[0]) == 3


def test_listed_and_refused_by_an_objective_that_does_not_train_it(tmp_path):
    listed = run_cli("list", "kernel", cwd=tmp_path)
    assert listed.returncode == 0 and "frepo-pool" in listed.stdout, listed.stderr
    refused = run_cli("run", "--store", str(tmp_path / "r.sqlite"), "dataset=digits", "kernel=frepo-pool",
                      "kernel.arch=convnet3", "kernel.normalization=none", "objective=ls", cwd=tmp_path)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and "frepo-pool" in lines[0], refused.stderr
    assert not (tmp_path / "r.sqlite").exists()


def test_fit_trains_one_fresh_network_never_reset():
    """``Learning.fit`` (the krr evaluator's): one network, ``updates`` online updates, no reset
    even past ``max_updates``; equal to that many updates of a one-network pool that never resets."""
    kernel = _kernel(max_updates=2, batch=5)
    x, y = _support()
    key = jax.random.PRNGKey(4)
    state = kernel.learning.fit(key, x, y, 6)
    assert state.age.tolist() == [6] and int(state.current) == 0
    assert all(leaf.shape[0] == 1 for leaf in jax.tree.leaves((state.params, state.opt)))
    module = builtins().architecture("convnet3").network(4, 8, "none", jnp.float32)
    k_init, k_loop = jax.random.split(key)
    params = jax.jit(lambda k: module.init(k, jnp.zeros((1, 8, 8, 1), jnp.float32), train=False)["params"])(k_init)
    ref = _TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(learning_rate=lambda _: 1e-2))
    step = jax.jit(lambda s, b: _reference_train_step(s, b, k_loop, _mean_squared_loss, has_feat=True))
    for i in range(6):
        idx = jax.random.choice(jax.random.fold_in(k_loop, i), 12, (5,), replace=False)
        ref = step(ref, {"image": x[idx], "label": y[idx]})
    scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(ref.params))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-5 * scale)
    assert kernel.learning.bind(state).feature_fn(x, None).shape[0] == 12
