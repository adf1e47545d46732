"""Small deterministic data for the checks (and for plugin authors' own tests)."""

from __future__ import annotations

import numpy as np

from distillbench.components.datasets import DataSplit


def tiny_datasplit(num_classes: int = 3, per_class: int = 6, test_per_class: int = 4,
                   image_shape: tuple[int, ...] = (8, 8, 1), seed: int = 0) -> DataSplit:
    """A class-balanced ``DataSplit`` of Gaussian class prototypes plus noise (float32 NHWC).

    Classes are interleaved (0, 1, 2, 0, 1, 2, ...), so any prefix is roughly balanced.
    """
    rng = np.random.default_rng([seed, 0xDA7A])
    prototypes = rng.standard_normal((num_classes, *image_shape))

    def draw(per: int):
        labels = np.tile(np.arange(num_classes, dtype=np.int32), per)
        x = prototypes[labels] + 0.5 * rng.standard_normal((len(labels), *image_shape))
        return x.astype(np.float32), labels

    x_train, y_train = draw(per_class)
    x_test, y_test = draw(test_per_class)
    return DataSplit(x_train, y_train, x_test, y_test, num_classes)


def images(n: int, image_shape: tuple[int, ...] = (8, 8, 1), seed: int = 0, dtype=np.float64) -> np.ndarray:
    """``n`` standard normal NHWC images."""
    rng = np.random.default_rng([seed, 0x1A6E])
    return rng.standard_normal((n, *image_shape)).astype(dtype)
