"""The jittable target sampler is jax.random.choice without replacement, bit for bit."""

import jax
import numpy as np
import pytest
from distillbench.compat.jax import disable_x64

from distillbench.sampling import sample_without_replacement


@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (50, 50), (1625, 100), (1626, 1000), (6000, 1280)])
def test_matches_jax_random_choice(n, k):
    # 1625/1626 straddle jax's switch from one shuffle round to two.
    sample = jax.jit(sample_without_replacement, static_argnums=(1, 2))
    for seed in range(5):
        key = jax.random.PRNGKey(seed)
        expected = np.asarray(jax.random.choice(key, n, (k,), replace=False))
        got = np.asarray(sample(key, n, k))
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.int32 and len(set(got.tolist())) == k


def test_matches_with_typed_keys():
    key = jax.random.key(11)
    expected = np.asarray(jax.random.choice(key, 6000, (300,), replace=False))
    np.testing.assert_array_equal(np.asarray(sample_without_replacement(key, 6000, 300)), expected)


@pytest.mark.slow
def test_is_uniform_over_positions():
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    picks = jax.vmap(lambda key: sample_without_replacement(key, 10, 3))(keys)
    counts = np.bincount(np.asarray(picks).ravel(), minlength=10)
    # each index is picked with probability 3/10: 1200 expected of 4000 draws, sd ~29
    assert np.all(np.abs(counts - 1200) < 150), counts
    first = np.bincount(np.asarray(picks[:, 0]), minlength=10)
    assert np.all(np.abs(first - 400) < 100), first


def test_falls_back_without_64_bit_integers():
    key = jax.random.PRNGKey(3)
    expected = np.asarray(jax.random.choice(key, 100, (10,), replace=False))
    with disable_x64():
        got = np.asarray(sample_without_replacement(key, 100, 10))
    np.testing.assert_array_equal(got, expected)


# -- the target-sampler contract: init() -> state, sample(state, train, key) -> TrainData -----------

def _train(labels):
    import jax.numpy as jnp

    from distillbench.components.objectives import TrainData

    labels = np.asarray(labels, np.int32)
    x = np.arange(len(labels), dtype=np.float32)[:, None, None, None]  # image i holds the value i
    return TrainData(jnp.asarray(x), jnp.asarray(np.eye(labels.max() + 1)[labels]), jnp.asarray(labels))


def _drawn(sampler, train, key):
    batch = jax.jit(sampler.sample)(sampler.init(), train, key)
    return np.asarray(batch.x).ravel().astype(int), np.asarray(batch.labels)


LABELS = np.array([0] * 7 + [1] * 5 + [2] * 9)


def test_class_balanced_draws_equally_from_each_class_without_replacement():
    from distillbench.sampling import ClassTableState, class_balanced

    sampler = class_balanced(LABELS, 3, 12)
    assert isinstance(sampler.init(), ClassTableState)
    train = _train(LABELS)
    for seed in range(5):
        idx, labels = _drawn(sampler, train, jax.random.PRNGKey(seed))
        assert len(set(idx.tolist())) == 12 and np.array_equal(LABELS[idx], labels)
        assert np.array_equal(np.bincount(labels, minlength=3), [4, 4, 4])
    # capped by the smallest class (5), and drawn only from the pool when one is given
    assert np.array_equal(np.bincount(_drawn(class_balanced(LABELS, 3, 20), train, jax.random.PRNGKey(0))[1]), [5, 5, 5])
    pool = np.array([0, 1, 2, 7, 8, 12, 13, 14])
    idx, labels = _drawn(class_balanced(LABELS, 3, 6, pool), train, jax.random.PRNGKey(1))
    assert set(idx.tolist()) <= set(pool.tolist()) and np.array_equal(np.bincount(labels), [2, 2, 2])


@pytest.mark.slow
def test_uniform_draws_distinct_targets_from_the_pool():
    from distillbench.sampling import PoolState, uniform

    train = _train(LABELS)
    key = jax.random.PRNGKey(4)
    idx, _ = _drawn(uniform(len(LABELS), 6), train, key)
    np.testing.assert_array_equal(idx, np.asarray(sample_without_replacement(key, len(LABELS), 6)))
    pool = np.arange(3, 15)
    sampler = uniform(len(LABELS), 6, pool)
    assert isinstance(sampler.init(), PoolState)
    idx, _ = _drawn(sampler, train, key)
    np.testing.assert_array_equal(idx, pool[np.asarray(sample_without_replacement(key, len(pool), 6))])


@pytest.mark.parametrize("make", ["class_balanced", "uniform"])
def test_a_batch_as_large_as_the_pool_is_the_whole_pool(make):
    import distillbench.sampling as sampling

    train = _train(LABELS)
    args = (LABELS, 3) if make == "class_balanced" else (len(LABELS),)
    whole = getattr(sampling, make)(*args, len(LABELS))
    assert whole.init() == () and whole.sample((), train, None) is train  # no copy of the training split
    pool = np.array([2, 5, 9, 11, 20])
    idx, _ = _drawn(getattr(sampling, make)(*args, 100, pool), train, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(idx, pool)
