"""Dataset contract.

A dataset component's ``build(**params)`` returns a ``DataSplit``: host (numpy) arrays,
already preprocessed, in NHWC layout. Everything downstream assumes:

* ``x_train``/``x_test`` are float32 of shape ``(n, H, W, C)`` (flat data uses ``H = W = 1``);
* ``y_train``/``y_test`` are int32 class ids in ``[0, num_classes)``;
* every class appears in the training split (class-balanced sampling relies on it);
* the split is fixed by the dataset's own parameters, not by the run seed, so that seeds vary
  the distillation and never the test set.

A dataset may also declare ``describe(params) -> DatasetInfo`` on its ``Component``: what the
split will hold, found cheaply and without JAX (file headers, label files). The planner calls it
before any compute, so that ``ipc`` larger than a class, a class with no training example or a
corrupt file is one line of bad input rather than a failed run. Datasets without it are checked
when they are built.
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


class DatasetInfo(NamedTuple):
    """What a dataset's split holds, known before it is built (returned by ``describe``).

    ``train_class_counts[c]`` is the number of training examples of class ``c``;
    ``image_shape`` is ``(H, W, C)`` when known.
    """

    num_classes: int
    train_class_counts: tuple[int, ...]
    image_shape: tuple[int, ...] | None = None
    n_test: int | None = None


def info_problem(info: DatasetInfo, ipc: int) -> str | None:
    """Why a run with ``ipc`` images per class cannot use a dataset described by ``info``, or None."""
    counts = tuple(int(n) for n in info.train_class_counts)
    if len(counts) != info.num_classes:
        return f"describes {info.num_classes} classes but gives {len(counts)} class counts"
    empty = [c for c, n in enumerate(counts) if n <= 0]
    if empty:
        shown = ", ".join(str(c) for c in empty[:10]) + (", ..." if len(empty) > 10 else "")
        return f"class{'es' if len(empty) > 1 else ''} {shown} of its {info.num_classes} have no training example"
    if info.n_test is not None and info.n_test <= 0:
        return "its test split is empty"
    smallest = min(range(len(counts)), key=counts.__getitem__)
    if ipc > counts[smallest]:
        n = counts[smallest]
        return (f"ipc={ipc} is more than its smallest training class holds ({n} image{'s' * (n != 1)} of class "
                f"{smallest}); choose ipc <= {n}")
    return None


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
