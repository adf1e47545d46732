"""Readers for the official file formats of the real datasets (numpy + stdlib only).

Every reader raises ``DataFileError`` with one line naming the file and what is wrong with it
(missing, truncated, not the expected format), never a bare traceback from deep inside numpy.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFileError(ValueError):
    """A data file is missing or unreadable; the message names it."""


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataFileError(f"missing file {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(f"{path} is corrupt or truncated ({exc})") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (MNIST, Fashion-MNIST, KMNIST), ``.gz`` or raw."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path} is truncated (incomplete IDX header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataFileError(f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_npz_array(path: Path) -> np.ndarray:
    """The single array ``arr_0`` of an ``.npz`` (the layout KMNIST ships)."""
    if not path.exists():
        raise DataFileError(f"missing file {path}")
    try:
        with np.load(path) as data:
            return data[data.files[0]]
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, ...
        raise DataFileError(f"{path} is corrupt or not an .npz file ({type(exc).__name__})") from None


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 32, 32, 3) uint8 and labels of one CIFAR python pickle batch."""
    raw = _read_bytes(path)
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key.encode()], dtype=np.int32)
    except Exception as exc:
        raise DataFileError(f"{path} is corrupt or not a CIFAR python batch ({type(exc).__name__})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataFileError(f"{path}: unexpected CIFAR batch layout {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 32, 32, 3) uint8 and labels 0-9 of an SVHN cropped-digits ``.mat`` file."""
    if not path.exists():
        raise DataFileError(f"missing file {path}")
    from scipy.io import loadmat  # scipy comes with jax

    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"].reshape(-1).astype(np.int32)
    except Exception as exc:
        raise DataFileError(f"{path} is corrupt or not an SVHN .mat file ({type(exc).__name__})") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataFileError(f"{path}: unexpected SVHN layout {x.shape}")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), np.where(y == 10, 0, y)
