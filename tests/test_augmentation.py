"""DSA augmentation (``distillbench.augmentation``) against the reference ``DiffAugment``.

``golden/dsa_reference.npz`` holds the reference's own outputs (``VICO-UoE/DatasetCondensation``
``utils.py``, run with PyTorch by ``golden/make_dsa_reference.py``) on a fixed NCHW input, with the
random values each family drew; every family here, fed those values, must give the same images.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench import augmentation as aug

GOLDEN = np.load(Path(__file__).parent / "golden" / "dsa_reference.npz")
X = jnp.asarray(GOLDEN["x"].transpose(0, 2, 3, 1))  # NHWC (4, 10, 12, 3)
P = aug.DsaParams()


def reference(name: str) -> np.ndarray:
    return GOLDEN[f"{name}/out"].transpose(0, 2, 3, 1)


def draw(name: str, i: int = 0) -> jax.Array:
    return jnp.asarray(GOLDEN[f"{name}/draw{i}"])


@pytest.mark.parametrize("name, ours", [
    ("rand_brightness", lambda: aug.brightness(X, draw("rand_brightness"), P)),
    ("rand_saturation", lambda: aug.saturation(X, draw("rand_saturation"), P)),
    ("rand_contrast", lambda: aug.contrast(X, draw("rand_contrast"), P)),
    ("rand_flip", lambda: aug.flip(X, draw("rand_flip"), P)),
    ("rand_crop", lambda: aug.crop(X, draw("rand_crop", 0), draw("rand_crop", 1))),
    ("rand_cutout", lambda: aug.cutout(X, draw("rand_cutout", 0), draw("rand_cutout", 1), P)),
    ("rand_scale", lambda: aug.scale(X, draw("rand_scale", 0) * (1.2 - 1 / 1.2) + 1 / 1.2,
                                     draw("rand_scale", 1) * (1.2 - 1 / 1.2) + 1 / 1.2)),
    ("rand_rotate", lambda: aug.rotate(X, (draw("rand_rotate") - 0.5) * 2 * 15.0 / 180 * np.pi)),
])
def test_each_family_equals_the_reference_on_its_draws(name, ours):
    np.testing.assert_allclose(np.asarray(ours()), reference(name), rtol=1e-5, atol=2e-6)


def test_the_reference_draws_cover_what_the_families_need():
    """A guard on the golden file: the draws are per image (evaluation mode, seed=-1), and the
    geometric families moved something (so the comparisons above are not of identities)."""
    assert all(GOLDEN[f"rand_crop/draw{i}"].shape == (4,) for i in (0, 1))
    for name in ("rand_crop", "rand_cutout", "rand_scale", "rand_rotate"):
        assert not np.allclose(reference(name), np.asarray(X)), name


def test_flip_mirrors_the_width_axis():
    out = aug.flip(X, jnp.zeros(4), P)  # every image flipped
    np.testing.assert_array_equal(np.asarray(out), np.asarray(X)[:, :, ::-1, :])


def test_identity_parameters_leave_images_unchanged():
    ones, zeros = jnp.ones(4), jnp.zeros(4)
    np.testing.assert_allclose(np.asarray(aug.scale(X, ones, ones)), np.asarray(X), atol=1e-6)
    np.testing.assert_allclose(np.asarray(aug.rotate(X, zeros)), np.asarray(X), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(aug.crop(X, zeros.astype(int), zeros.astype(int))), np.asarray(X))


@pytest.mark.slow
def test_siamese_shares_one_draw_per_batch_and_evaluation_mode_does_not():
    x = jnp.broadcast_to(X[:1], (8, *X.shape[1:]))  # eight copies of one image
    key = jax.random.PRNGKey(3)
    shared = aug.apply(key, x, "crop_rotate", siamese=True, mode="multiple")
    own = aug.apply(key, x, "crop_rotate", siamese=False, mode="multiple")
    assert np.allclose(np.asarray(shared), np.asarray(shared[:1]))
    assert not np.allclose(np.asarray(own), np.asarray(own[:1]))


@pytest.mark.slow
def test_single_mode_applies_exactly_one_family_of_the_strategy():
    key = jax.random.PRNGKey(0)
    choose, k = jax.random.split(key)
    names = aug.families(aug.DSA_STRATEGY)
    picked = names[int(jax.random.randint(choose, (), 0, len(names)))]
    np.testing.assert_array_equal(np.asarray(aug.apply(key, X)), np.asarray(aug._family(picked, k, X, P, False)))


@pytest.mark.slow
def test_apply_jits_is_deterministic_and_differentiable():
    f = jax.jit(lambda key, x: aug.apply(key, x, aug.DSA_STRATEGY, mode="multiple"))
    key = jax.random.PRNGKey(1)
    np.testing.assert_array_equal(np.asarray(f(key, X)), np.asarray(f(key, X)))
    grad = jax.grad(lambda x: f(key, x).sum())(X)
    assert grad.shape == X.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0


def test_draws_stay_in_the_reference_ranges():
    x = jnp.zeros((512, 10, 12, 1))
    key = jax.random.PRNGKey(0)
    shifts = aug._integers(key, 512, -1, 2, False)  # crop on 10 rows: int(10 * 0.125 + 0.5) = 1
    assert set(np.unique(np.asarray(shifts))) == {-1, 0, 1}
    assert aug.cutout_size(x.shape, P) == (5, 6)


@pytest.mark.parametrize("strategy", ["colour", "color_", "crop_blur"])
def test_unknown_families_are_refused_in_one_line(strategy):
    with pytest.raises(ValueError, match="unknown augmentation") as error:
        aug.families(strategy)
    assert "\n" not in str(error.value)


def test_none_is_the_identity():
    assert aug.families("none") == () and aug.apply(jax.random.PRNGKey(0), X, "none") is X
