"""Builders of the real datasets, read from the data directory (see ``catalog``).

Images are scaled to [0, 1] and preprocessed with statistics of the training split only
(``preprocessing.preprocess``); the same transform is applied to the test split.
"""

from __future__ import annotations

import numpy as np

from distillbench.components.datasets import DataSplit
from distillbench_builtin.datasets.catalog import CATALOG, KMNIST_NPZ, checksum_problem, data_dir
from distillbench_builtin.datasets.formats import (
    DataFileError,
    read_cifar_batch,
    read_idx,
    read_npz_array,
    read_svhn_mat,
)
from distillbench_builtin.datasets.preprocessing import preprocess


def _idx_pair(folder, prefix):
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int32)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} {prefix} images but {len(labels)} labels")
    return images[..., None], labels


def _load_raw(name: str, root):
    """Raw uint8 NHWC images and int labels: (x_train, y_train, x_test, y_test, num_classes)."""
    folder = data_dir(root) / CATALOG[name].folder
    if name in ("mnist", "fashion-mnist") or (name == "kmnist" and (folder / "train-images-idx3-ubyte.gz").exists()):
        return (*_idx_pair(folder, "train"), *_idx_pair(folder, "t10k"), 10)
    if name == "kmnist":
        arrays = [read_npz_array(folder / f) for f in KMNIST_NPZ]
        return arrays[0][..., None], arrays[1].astype(np.int32), arrays[2][..., None], arrays[3].astype(np.int32), 10
    if name == "cifar10":
        parts = [read_cifar_batch(folder / "cifar-10-batches-py" / f"data_batch_{i}", "labels") for i in range(1, 6)]
        x_test, y_test = read_cifar_batch(folder / "cifar-10-batches-py" / "test_batch", "labels")
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test, 10
    if name == "cifar100":
        x_train, y_train = read_cifar_batch(folder / "cifar-100-python" / "train", "fine_labels")
        x_test, y_test = read_cifar_batch(folder / "cifar-100-python" / "test", "fine_labels")
        return x_train, y_train, x_test, y_test, 100
    if name == "svhn":
        return (*read_svhn_mat(folder / "train_32x32.mat"), *read_svhn_mat(folder / "test_32x32.mat"), 10)
    raise ValueError(f"no loader for dataset {name!r}")


def _finish(x_train, y_train, x_test, y_test, num_classes, method, zca_reg) -> DataSplit:
    x_train, x_test = preprocess(x_train.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0,
                                 method, zca_reg)
    return DataSplit(x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32), num_classes)


def _verified(name: str, root: str | None, verify: bool) -> None:
    """Refuse files that are not the official ones (again: they may have changed since planning)."""
    problem = checksum_problem(name, root) if verify else None
    if problem:
        raise DataFileError(problem)


def builder(name: str):
    """The ``build(data_dir, preprocess, zca_reg, verify)`` function of a dataset with an official split."""

    def build(data_dir: str | None, preprocess: str, zca_reg: float, verify: bool = True) -> DataSplit:
        _verified(name, data_dir, verify)
        x_train, y_train, x_test, y_test, c = _load_raw(name, data_dir)
        return _finish(x_train, y_train, x_test, y_test, c, preprocess, zca_reg)

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


build_mnist = builder("mnist")
build_fashion_mnist = builder("fashion-mnist")
build_kmnist = builder("kmnist")
build_cifar10 = builder("cifar10")
build_cifar100 = builder("cifar100")
build_svhn = builder("svhn")


def balanced_holdout(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices with exactly ``per_class`` test images of every class."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= per_class:
            raise ValueError(f"class {c} has {len(members)} images, not more than test_per_class={per_class}")
        test.append(rng.choice(members, size=per_class, replace=False))
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def build_mnist_t10k(data_dir: str | None, preprocess: str, zca_reg: float, test_per_class: int,
                     split_seed: int, verify: bool = True) -> DataSplit:
    """The 10,000 official MNIST test images split into a fixed, class-balanced train/test split.

    Default: 200 test images per class (2,000) and the other 8,000 for training, seed 0. Results
    are close to, not identical with, the papers' 60k-train protocol.
    """
    from distillbench_builtin.datasets.catalog import data_dir as resolve

    _verified("mnist-t10k", data_dir, verify)
    images, labels = _idx_pair(resolve(data_dir) / "mnist", "t10k")
    train, test = balanced_holdout(labels, test_per_class, split_seed)
    return _finish(images[train], labels[train], images[test], labels[test], 10, preprocess, zca_reg)
