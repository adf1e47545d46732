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
