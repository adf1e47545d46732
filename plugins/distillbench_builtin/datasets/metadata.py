"""``describe(params) -> DatasetInfo`` of the built-in datasets: what a split holds, before building it.

Read from labels and file headers only (numpy + stdlib, no JAX), so that the planner can refuse an
``ipc`` larger than a class, an empty class or a short or corrupt file before any compute. Each
problem raises ``DataFileError``/``ValueError`` with one line naming the file.
"""

from __future__ import annotations

import functools
import gzip
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from distillbench.components.datasets import DatasetInfo
from distillbench_builtin.datasets.catalog import CATALOG, KMNIST_NPZ, data_dir, layout
from distillbench_builtin.datasets.formats import _IDX_DTYPES, DataFileError, read_cifar_batch, read_idx


def _counts(labels: np.ndarray, num_classes: int, path: Path | str) -> tuple[int, ...]:
    labels = np.asarray(labels).reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFileError(f"{path} has labels outside [0, {num_classes})")
    return tuple(int(n) for n in np.bincount(labels.astype(np.int64), minlength=num_classes))


def idx_shape(path: Path) -> tuple[int, ...]:
    """The shape an IDX file declares, checked against its size (a ``.gz``'s recorded size).

    Reads the header and, for ``.gz``, the trailer's uncompressed length (mod 2**32), so a short
    file is found without decompressing it.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                head = f.read(4)
                ndim = head[3] if len(head) == 4 else 0
                head += f.read(4 * ndim)
            with open(path, "rb") as f:
                f.seek(-4, 2)
                size = struct.unpack("<I", f.read(4))[0]
            modulo = 2**32
        else:
            with open(path, "rb") as f:
                head = f.read(4)
                head += f.read(4 * (head[3] if len(head) == 4 else 0))
            size, modulo = path.stat().st_size, None
    except (OSError, EOFError) as exc:
        raise DataFileError(f"{path} is corrupt or truncated ({exc})") from None
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path} is not an IDX file (bad magic number)")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise DataFileError(f"{path} is truncated (incomplete IDX header)")
    shape = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = len(head) + int(np.prod(shape)) * np.dtype(_IDX_DTYPES[head[2]]).itemsize
    if size != (expected % modulo if modulo else expected):
        held = f"its gzip trailer records {size}" if modulo else f"it holds {size}"
        raise DataFileError(f"{path} is truncated or corrupt: its header promises {expected} bytes for shape "
                            f"{shape}, {held}")
    return shape


def _idx_split(folder: Path, prefix: str) -> tuple[tuple[int, ...], np.ndarray]:
    images, labels = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    shape = idx_shape(images)
    y = read_idx(labels)
    if len(shape) != 3:
        raise DataFileError(f"{images} holds shape {shape}, expected (n, height, width) images")
    if shape[0] != len(y):
        raise DataFileError(f"{images} holds {shape[0]} images but {labels} holds {len(y)} labels")
    return (*shape[1:], 1), y


def _npz_shape(path: Path) -> tuple[int, ...]:
    """The shape of the single array of an ``.npz``, from its header only."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as member:
            version = np.lib.format.read_magic(member)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, _, _ = read[version](member)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, IndexError, KeyError, OSError
        raise DataFileError(f"{path} is corrupt or not an .npz file ({type(exc).__name__})") from None
    return tuple(shape)


def _describe_files(name: str, root: str | None) -> DatasetInfo:
    folder = data_dir(root) / CATALOG[name].folder
    files = layout(name, root)
    if name == "kmnist" and files == KMNIST_NPZ:
        from distillbench_builtin.datasets.formats import read_npz_array

        shapes = [_npz_shape(folder / f) for f in KMNIST_NPZ[::2]]
        labels = [read_npz_array(folder / f) for f in KMNIST_NPZ[1::2]]
        for f, shape, y in zip(KMNIST_NPZ[::2], shapes, labels):
            if len(shape) != 3 or shape[0] != len(y):
                raise DataFileError(f"{folder / f} holds shape {shape}, not one image per label")
        return DatasetInfo(10, _counts(labels[0], 10, folder / KMNIST_NPZ[1]), (*shapes[0][1:], 1), len(labels[1]))
    if name in ("mnist", "fashion-mnist", "kmnist"):
        shape, y_train = _idx_split(folder, "train")
        test_shape, y_test = _idx_split(folder, "t10k")
        if test_shape != shape:
            raise DataFileError(f"{folder}: train images are {shape[:2]} but test images {test_shape[:2]}")
        return DatasetInfo(10, _counts(y_train, 10, folder / files[1]), shape, len(y_test))
    if name in ("cifar10", "cifar100"):
        classes, key = (10, "labels") if name == "cifar10" else (100, "fine_labels")
        train, test = files[:-1], files[-1]
        y_train = np.concatenate([read_cifar_batch(folder / f, key)[1] for f in train])
        _, y_test = read_cifar_batch(folder / test, key)
        return DatasetInfo(classes, _counts(y_train, classes, folder / train[0]), (32, 32, 3), len(y_test))
    if name == "svhn":
        return _describe_svhn(folder)
    raise ValueError(f"no metadata reader for dataset {name!r}")


def _describe_svhn(folder: Path) -> DatasetInfo:
    from scipy.io import loadmat, whosmat

    counts, n_test = None, 0
    for f in ("train_32x32.mat", "test_32x32.mat"):
        path = folder / f
        try:
            shapes = {var: shape for var, shape, _ in whosmat(path)}
            y = loadmat(path, variable_names=["y"])["y"].reshape(-1).astype(np.int64)
        except Exception as exc:
            raise DataFileError(f"{path} is corrupt or not an SVHN .mat file ({type(exc).__name__})") from None
        if tuple(shapes.get("X", ()))[:3] != (32, 32, 3) or shapes["X"][3] != len(y):
            raise DataFileError(f"{path}: unexpected SVHN layout {shapes.get('X')}")
        if f.startswith("train"):
            counts = _counts(np.where(y == 10, 0, y), 10, path)
        else:
            n_test = len(y)
    return DatasetInfo(10, counts, (32, 32, 3), n_test)


def describe_real(name: str):
    """The ``describe`` of a dataset with an official split."""

    def describe(params: Mapping[str, Any]) -> DatasetInfo:
        return _describe_files(name, params.get("data_dir"))

    return describe


def describe_mnist_t10k(params: Mapping[str, Any]) -> DatasetInfo:
    folder = data_dir(params.get("data_dir")) / "mnist"
    shape, y = _idx_split(folder, "t10k")
    counts = _counts(y, 10, folder / "t10k-labels-idx1-ubyte.gz")
    per_class = params["test_per_class"]
    small = [c for c, n in enumerate(counts) if n <= per_class]
    if small:
        c = small[0]
        raise ValueError(f"class {c} has {counts[c]} images, not more than test_per_class={per_class}; "
                         f"choose dataset.test_per_class < {min(counts)}")
    return DatasetInfo(10, tuple(n - per_class for n in counts), shape, 10 * per_class)


@functools.lru_cache(maxsize=1)
def _digits_labels() -> np.ndarray:
    from distillbench_builtin.datasets.digits import _read_digits

    return _read_digits()[1]


def describe_digits(params: Mapping[str, Any]) -> DatasetInfo:
    from distillbench_builtin.datasets.preprocessing import stratified_split

    labels = _digits_labels()
    train, test = stratified_split(labels, params["test_fraction"], params["split_seed"])
    return DatasetInfo(10, _counts(labels[train], 10, "digits"), (8, 8, 1), len(test))


def describe_synthetic(params: Mapping[str, Any]) -> DatasetInfo:
    n, classes = params["n_train"], params["num_classes"]
    counts = tuple(n // classes + (c < n % classes) for c in range(classes))  # labels cycle through classes
    return DatasetInfo(classes, counts, (params["height"], params["width"], params["channels"]), params["n_test"])
