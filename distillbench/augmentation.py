"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021), in JAX.

The evaluation standard of DC, DSA, MTT, FRePo and RCIG: a finite network trained on a distilled
set sees every batch through a random augmentation. The operations and their parameters follow the
reference ``DiffAugment`` (``VICO-UoE/DatasetCondensation``, ``utils.py``, ``ParamDiffAug``); images
here are NHWC where the reference's are NCHW, so its "x.size(2)" (height) is axis 1 and its
``flip(3)`` (width) is axis 2.

Each family draws its own parameters (per image, or one set for the whole batch when ``siamese``:
the reference's ``seed != -1``, used while distilling; its evaluation passes ``seed=-1``, so every
image gets its own). ``mode="single"`` (the reference's default ``aug_mode='S'``) applies one
family of the strategy, chosen at random per call; ``"multiple"`` (``'M'``) applies them all in
order. Everything is a pure function of a JAX key, so it jits, vectorises and is differentiable in
the images (the geometric families sample bilinearly with zero padding, as ``F.grid_sample`` with
``align_corners=False`` does).

``apply(key, x, strategy, params)`` is the entry point; the per-family functions take explicit
parameters so that tests can feed the reference's own draws.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # the DSA/DM papers' evaluation strategy


class DsaParams(NamedTuple):
    """The reference's ``ParamDiffAug`` defaults."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0  # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def families(strategy: str) -> tuple[str, ...]:
    """The families of ``strategy`` (``"color_crop"`` -> ``("color", "crop")``); ``ValueError``
    (one line) for an unknown one; ``()`` for ``""``/``"none"``."""
    if strategy in ("", "none", "None"):
        return ()
    names = tuple(strategy.split("_"))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r} in {strategy!r}; families: {', '.join(FAMILIES)}")
    return names


def _per_image(u: jax.Array) -> jax.Array:
    return u.reshape(-1, 1, 1, 1)


# --- the operations, with explicit parameters (one value per image, shape (n,)) ---------------------

def brightness(x, u, p: DsaParams = DsaParams()):
    return x + (_per_image(u) - 0.5) * p.brightness


def saturation(x, u, p: DsaParams = DsaParams()):
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) * (_per_image(u) * p.saturation) + mean


def contrast(x, u, p: DsaParams = DsaParams()):
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (_per_image(u) + p.contrast) + mean


def flip(x, u, p: DsaParams = DsaParams()):
    return jnp.where(_per_image(u) < p.prob_flip, x[:, :, ::-1, :], x)


def crop(x, shift_h, shift_w):
    """Translate by whole pixels, zeros entering: the reference pads one zero pixel and clamps."""
    n, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = jnp.clip(jnp.arange(h)[None, :] + shift_h[:, None] + 1, 0, h + 1)  # (n, h)
    cols = jnp.clip(jnp.arange(w)[None, :] + shift_w[:, None] + 1, 0, w + 1)  # (n, w)
    picked = jnp.take_along_axis(padded, rows[:, :, None, None], axis=1)
    return jnp.take_along_axis(picked, cols[:, None, :, None], axis=2)


def cutout_size(shape, p: DsaParams = DsaParams()) -> tuple[int, int]:
    return int(shape[1] * p.ratio_cutout + 0.5), int(shape[2] * p.ratio_cutout + 0.5)


def cutout(x, offset_h, offset_w, p: DsaParams = DsaParams()):
    """Zero one rectangle of ``cutout_size`` centred at the offsets (clipped to the image)."""
    ch, cw = cutout_size(x.shape, p)
    rows = jnp.arange(x.shape[1])[None, :] - (offset_h[:, None] - ch // 2)  # position inside the box
    cols = jnp.arange(x.shape[2])[None, :] - (offset_w[:, None] - cw // 2)
    inside = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]
    return x * jnp.where(inside, 0.0, 1.0).astype(x.dtype)[..., None]


def affine(x, theta):
    """``F.grid_sample(x, F.affine_grid(theta, x.shape))`` (bilinear, zero padding,
    ``align_corners=False``) for NHWC ``x`` and ``theta`` of shape (n, 2, 3)."""
    n, h, w, c = x.shape
    xs = ((2.0 * jnp.arange(w) + 1.0) / w - 1.0).astype(x.dtype)  # output pixel centres, normalised
    ys = ((2.0 * jnp.arange(h) + 1.0) / h - 1.0).astype(x.dtype)
    base = jnp.stack(jnp.broadcast_arrays(xs[None, :], ys[:, None], jnp.ones((h, w))), axis=-1)  # (h, w, 3)
    grid = jnp.einsum("hwk,njk->nhwj", base, theta.astype(x.dtype))  # (n, h, w, 2): x then y
    ix = ((grid[..., 0] + 1.0) * w - 1.0) / 2.0
    iy = ((grid[..., 1] + 1.0) * h - 1.0) / 2.0
    x0, y0 = jnp.floor(ix), jnp.floor(iy)
    flat = x.reshape(n, h * w, c)
    out = jnp.zeros_like(x)
    for dy in (0, 1):
        for dx in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            weight = (1.0 - jnp.abs(ix - cx)) * (1.0 - jnp.abs(iy - cy))
            valid = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            index = (jnp.clip(cy, 0, h - 1) * w + jnp.clip(cx, 0, w - 1)).astype(jnp.int32).reshape(n, h * w, 1)
            tap = jnp.take_along_axis(flat, index, axis=1).reshape(n, h, w, c)
            out = out + jnp.where(valid, weight, 0.0)[..., None] * tap
    return out


def scale(x, sx, sy):
    zero = jnp.zeros_like(sx)
    theta = jnp.stack([jnp.stack([sx, zero, zero], -1), jnp.stack([zero, sy, zero], -1)], 1)
    return affine(x, theta)


def rotate(x, angle):
    """Rotate by ``angle`` radians (in the normalised coordinates, as the reference's theta)."""
    cos, sin, zero = jnp.cos(angle), jnp.sin(angle), jnp.zeros_like(angle)
    theta = jnp.stack([jnp.stack([cos, -sin, zero], -1), jnp.stack([sin, cos, zero], -1)], 1)
    return affine(x, theta)


# --- random parameters, as the reference draws them ---------------------------------------------------

def _uniform(key, n: int, siamese: bool, dtype):
    u = jax.random.uniform(key, (1 if siamese else n,), dtype)
    return jnp.broadcast_to(u, (n,))


def _integers(key, n: int, low: int, high: int, siamese: bool):
    """Uniform integers in ``[low, high)`` (``torch.randint``'s convention)."""
    v = jax.random.randint(key, (1 if siamese else n,), low, high)
    return jnp.broadcast_to(v, (n,))


def _family(name: str, key, x, p: DsaParams, siamese: bool):
    n, h, w = x.shape[:3]
    k1, k2, k3 = jax.random.split(key, 3)
    if name == "color":
        x = brightness(x, _uniform(k1, n, siamese, x.dtype), p)
        x = saturation(x, _uniform(k2, n, siamese, x.dtype), p)
        return contrast(x, _uniform(k3, n, siamese, x.dtype), p)
    if name == "flip":
        return flip(x, _uniform(k1, n, siamese, x.dtype), p)
    if name == "crop":
        sh, sw = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
        return crop(x, _integers(k1, n, -sh, sh + 1, siamese), _integers(k2, n, -sw, sw + 1, siamese))
    if name == "cutout":
        ch, cw = cutout_size(x.shape, p)
        return cutout(x, _integers(k1, n, 0, h + (1 - ch % 2), siamese),
                      _integers(k2, n, 0, w + (1 - cw % 2), siamese), p)
    if name == "scale":
        r = p.ratio_scale
        return scale(x, _uniform(k1, n, siamese, x.dtype) * (r - 1.0 / r) + 1.0 / r,
                     _uniform(k2, n, siamese, x.dtype) * (r - 1.0 / r) + 1.0 / r)
    if name == "rotate":
        return rotate(x, (_uniform(k1, n, siamese, x.dtype) - 0.5) * 2.0 * p.ratio_rotate / 180.0 * math.pi)
    raise ValueError(f"unknown augmentation family {name!r}")


def apply(key, x, strategy: str = DSA_STRATEGY, params: DsaParams = DsaParams(), *, siamese: bool = False,
          mode: str = "single"):
    """``x`` (NHWC) augmented by ``strategy``: one family chosen at random (``single``) or all in
    order (``multiple``); per-image parameters unless ``siamese``."""
    names = families(strategy)
    if not names:
        return x
    if mode == "multiple":
        for name, k in zip(names, jax.random.split(key, len(names))):
            x = _family(name, k, x, params, siamese)
        return x
    if mode != "single":
        raise ValueError(f"mode must be 'single' or 'multiple', not {mode!r}")
    choose, k = jax.random.split(key)
    branches = [lambda x, k, name=name: _family(name, k, x, params, siamese).astype(x.dtype) for name in names]
    return jax.lax.switch(jax.random.randint(choose, (), 0, len(names)), branches, x, k)
