"""Dataset contract.

A dataset component's ``build(**params)`` returns a ``DataSplit``: host (numpy) arrays,
already preprocessed, in NHWC layout. Everything downstream assumes:

* ``x_train``/``x_test`` are float32 of shape ``(n, H, W, C)`` (flat data uses ``H = W = 1``);
* ``y_train``/``y_test`` are int32 class ids in ``[0, num_classes)``;
* every class appears in the training split (class-balanced sampling relies on it);
* the split is fixed by the dataset's own parameters, not by the run seed, so that seeds vary
  the distillation and never the test set.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DataSplit(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def check_datasplit(split: DataSplit, name: str = "dataset") -> DataSplit:
    """Validate a ``DataSplit`` returned by a plugin; raise ``ValueError`` naming what is wrong."""
    if not isinstance(split, DataSplit):
        raise ValueError(f"{name}: build must return a DataSplit, got {type(split).__name__}")
    for part in ("x_train", "x_test"):
        arr = getattr(split, part)
        if arr.ndim != 4 or arr.dtype != np.float32:
            raise ValueError(f"{name}: {part} must be float32 (n, H, W, C), got {arr.dtype} {arr.shape}")
    for xs, ys in (("x_train", "y_train"), ("x_test", "y_test")):
        x, y = getattr(split, xs), getattr(split, ys)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name}: {ys} must be integer labels, one per row of {xs}")
        if len(y) and (y.min() < 0 or y.max() >= split.num_classes):
            raise ValueError(f"{name}: {ys} has labels outside [0, {split.num_classes})")
    if split.x_train.shape[1:] != split.x_test.shape[1:]:
        raise ValueError(f"{name}: train and test images differ in shape")
    missing = set(range(split.num_classes)) - set(np.unique(split.y_train).tolist())
    if missing:
        raise ValueError(f"{name}: classes {sorted(missing)} have no training example")
    return split
