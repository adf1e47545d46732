"""FRePo's and RCIG's evaluation augmentation (distillbench.augmax) gives the references' own images:
``tests/golden/augmax_reference.npz`` holds what their augmax code made from the same images and keys
(``tests/golden/make_augmax_reference.py`` runs it)."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from distillbench import augmax

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from make_augmax_reference import CASES, images, key  # noqa: E402  (the maker's inputs, regenerated)

REFERENCE = np.load(GOLDEN / "augmax_reference.npz")
PER = {"rcig": "image", "frepo": "batch"}


@pytest.mark.parametrize("reference", ["rcig", "frepo"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]}-{c[2][-1]}" for c in CASES])
def test_the_references_images_from_the_same_images_and_keys(reference, index):
    name, strategy, shape = CASES[index]
    ours = jax.jit(lambda k, x: augmax.apply(k, x, strategy, PER[reference]))(key(index), images(index, shape))
    # float32 bilinear sampling: XLA may round the coordinates differently from the reference's separately
    # jitted pieces (a few 1e-6 pixel), times neighbouring-pixel differences of up to ~4 in these noise
    # images: 1.1e-5 seen at one pixel of 3136 (crop), so 5e-5 absolute; all other cases agree to 1e-5
    np.testing.assert_allclose(np.asarray(ours), REFERENCE[f"{reference}/{name}/{shape[-1]}"], rtol=0, atol=5e-5)


def test_every_family_changes_images_and_keeps_their_shape():
    x = images(0, (28, 28, 1))
    for name in augmax.FAMILIES:
        y = augmax.apply(jax.random.PRNGKey(3), x, name)
        assert y.shape == x.shape and not np.allclose(np.asarray(y), x)


def test_an_unknown_family_or_mode_is_one_line():
    with pytest.raises(ValueError, match="unknown augmax family 'zoom'"):
        augmax.families("crop_zoom")
    with pytest.raises(ValueError, match="per must be"):
        augmax.apply(jax.random.PRNGKey(0), images(0, (28, 28, 1)), "crop", per="set")
