"""The evaluation augmentation of FRePo's and RCIG's reference code (their copies of *augmax*), in JAX.

FRePo (``yongchao97/FRePo``, ``lib/dataset/augmax``) and RCIG (``yolky/RCIG``, ``augmax``) train their
evaluation networks on batches augmented by ``get_aug_by_name(strategy, res)``: one family of the
strategy (``flip``, ``color``, ``crop``, ``rotate``, ``translate``, ``cutout``), each image its own
parameters. They differ in where the family is chosen: FRePo draws one family for the whole batch
(``per="batch"``), RCIG one per image (``per="image"``). The families and their settings follow the
references' ``export.py``, each applied to one ``(H, W, C)`` image with the key it is given:

* ``flip``: mirror (axis 1) with probability 1/2;
* ``color``: brightness ± 0.25 added, contrast and saturation scaled by a log-uniform factor in
  ``[e^-0.25, e^0.25]`` about the image's mean and each pixel's channel mean;
* ``crop``: a random zoom in ``[0.8, 1.25]`` (log-uniform) about a random centre, the same size out;
* ``rotate``: a random angle in ±15°;
* ``translate``: a random shift of up to 1/8 of each side;
* ``cutout``: one ``res/4``-sided square set to 0.

The geometric families resample bilinearly with edge padding (``map_coordinates``, ``order=1``,
``mode="nearest"``), as augmax does. Keys are used as the references use them, so the same key gives
the references' images (``tests/golden/make_augmax_reference.py`` runs their code;
``tests/test_augmax.py`` compares). Draws are float32 / int32 whether or not x64 is on (the references
run without it; under x64 JAX's default draws would use other bits).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

_F32, _I32 = jnp.float32, jnp.int32  # the references draw in these (no x64); so do we, x64 or not
FAMILIES = ("flip", "color", "crop", "rotate", "translate", "cutout")
#: The references' evaluation strategies: FRePo on MNIST / Fashion-MNIST and elsewhere; RCIG's
#: ``test_aug`` on MNIST / Fashion-MNIST (``depth_3_no_flip``) and elsewhere.
FREPO_GRAY = "color_crop_rotate_translate_cutout"
FREPO_RGB = RCIG_RGB = "flip_color_crop_rotate_translate_cutout"
RCIG_GRAY = "crop_rotate_translate_cutout"


def families(strategy: str) -> tuple[str, ...]:
    """The families of ``strategy``; ``ValueError`` (one line) for an unknown one."""
    names = tuple(strategy.split("_"))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown augmax family {unknown[0]!r} in {strategy!r}; families: {', '.join(FAMILIES)}")
    return names


def _resample(image, transform):
    """``image`` (H, W, C) sampled at ``transform`` applied to its pixel grid about the centre (float32
    coordinates, as the references compute them)."""
    h, w = image.shape[:2]
    centre = jnp.array([h / 2 - 0.5, w / 2 - 0.5], _F32).reshape(2, 1, 1)
    grid = jnp.mgrid[0:h, 0:w].astype(_F32) - centre
    points = jnp.tensordot(transform.astype(_F32), jnp.concatenate([grid, jnp.ones((1, h, w), _F32)]), axes=1)
    coords = (points[:2] / points[2:] + centre).reshape(2, -1)
    channel = lambda c: ndimage.map_coordinates(c, coords, order=1, mode="nearest")  # noqa: E731
    return jax.vmap(channel, in_axes=-1, out_axes=-1)(image).reshape(image.shape)


def flip(key, image):
    f = 1.0 - 2.0 * jax.random.bernoulli(key, _F32(0.5))
    return _resample(image, jnp.array([[1.0, 0.0, 0.0], [0.0, f, 0.0], [0.0, 0.0, 1.0]]))


def rotate(key, image, degrees: float = 15.0):
    theta = jax.random.bernoulli(key, _F32(1.0)) * jax.random.uniform(key, (), _F32, -math.radians(degrees),
                                                                       math.radians(degrees))
    c, s = jnp.cos(theta), jnp.sin(theta)
    return _resample(image, jnp.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]))


def translate(key, image, ratio: float = 0.125):
    h, w = image.shape[:2]
    limit = jnp.array([h * ratio, w * ratio], _F32)
    dy, dx = jax.random.uniform(key, [2], _F32, -limit, limit)
    return _resample(image, jnp.array([[1.0, 0.0, -dy], [0.0, 1.0, -dx], [0.0, 0.0, 1.0]]))


def _log_uniform(key, low: float, high: float):
    return jnp.exp(jax.random.uniform(key, (), _F32, math.log(low), math.log(high)))


def crop(key, image, zoom_range: tuple[float, float] = (0.8, 1.25)):
    h, w = image.shape[:2]
    k_zoom, k_centre = jax.random.split(key)
    zoom = _log_uniform(k_zoom, *zoom_range)
    limit = jnp.abs(jnp.array([h, w], _F32) * zoom - jnp.array([h, w], _F32)) / 2
    centre = jax.random.uniform(k_centre, [2], _F32, -limit, limit)
    top = jnp.concatenate([jnp.eye(2), centre.reshape(2, 1)], axis=1) / zoom
    return _resample(image, jnp.concatenate([top, jnp.array([[0.0, 0.0, 1.0]])]))


def cutout(key, image):
    h, w, c = image.shape
    size = h // 4  # the references' res // 4, res the image side
    k_apply, k_holes = jax.random.split(key)
    k_hole, _ = jax.random.split(k_holes)
    y, x = jax.random.randint(k_hole, [2], jnp.array([0, 0], _I32), jnp.array([h - size + 1, w - size + 1], _I32),
                              _I32)
    hole = jax.lax.dynamic_update_slice(image, jnp.zeros((size, size, c), image.dtype), (x, y, _I32(0)))
    return jnp.where(jax.random.bernoulli(k_apply, _F32(1.0)), hole, image)


def color(key, image, strength: float = 0.25):
    k_bright, k_contrast, k_saturation = jax.random.split(key, 3)
    x = image + jax.random.uniform(k_bright, (), _F32, -strength, strength)
    factor = math.exp(strength)
    mean = x.mean(axis=(-1, -2, -3), keepdims=True)
    x = (x - mean) * _log_uniform(k_contrast, 1 / factor, factor) + mean
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) * _log_uniform(k_saturation, 1 / factor, factor) + mean


_FUNCTIONS = {"flip": flip, "color": color, "crop": crop, "rotate": rotate, "translate": translate,
              "cutout": cutout}


def apply(key, x, strategy: str, per: str = "image"):
    """``x`` (NHWC) augmented as the references do: one family of ``strategy`` per image (RCIG,
    ``per="image"``) or per batch (FRePo, ``per="batch"``), each image its own parameters."""
    names = families(strategy)
    batch = [jax.vmap(_FUNCTIONS[name]) for name in names]
    if per == "batch":
        choice = jax.random.randint(key, (1,), 0, len(names), _I32)[0]
        return jax.lax.switch(choice, batch, jax.random.split(key, len(x)), x)
    if per != "image":
        raise ValueError(f"per must be 'image' or 'batch', not {per!r}")

    def one(k, image):
        choice = jax.random.randint(k, (1,), 0, len(names), _I32)[0]
        branches = [lambda kk, im, f=_FUNCTIONS[name]: f(kk, im) for name in names]
        return jax.lax.switch(choice, branches, jax.random.split(k, 1)[0], image)

    return jax.vmap(one)(jax.random.split(key, len(x)), x)
