"""A distilled set made elsewhere (``evaluate --support FILE.npz``): read it safely, check it, keep its labels.

The file is untrusted. It is opened once (a regular file only: a FIFO or a device would block or
never end), hashed through that same handle, and read as a zip whose members' ``.npy`` headers
(shape, dtype) are checked before a byte of array data is decompressed, so a small file that
declares a huge array (a zip bomb) is refused without allocating it. Pickled (object) arrays are
never loaded.

Members: ``x`` images, ``y`` labels, optional ``classes``. ``y`` is integer labels (``run``'s
fixed labels: centered one-hot rows) or label rows of width C, used exactly as given (one-hot,
centered, soft, solved or learned): the scores are those of the set the method made. The class
balance comes from what the file states, integer labels or ``classes``; the argmax of a label row
is not its image's class (Label Solve's solved rows on mnist-t10k: 8% of rows at ipc 10, 0.8% at
ipc 50), so rows alone only need ``ipc`` rows per class in number.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from distillbench.records import Artifact, ComponentChoice, LabeledSet, RunConfig

EXTERNAL = "external"  # the objective name of a set made elsewhere
NO_KERNEL = "none"  # the kernel name of a set made elsewhere
MEMBERS = ("x", "y", "classes")
#: A set whose pixel std or mean is off by more than this many train-set stds (or this factor) was
#: not preprocessed like the dataset (raw 0-255 pixels, another scaling).
_SCALE_FACTOR = 10.0
_MEAN_STDS = 5.0
_SAVE_HINT = "save the set with numpy.savez(path, x=images, y=labels)"
_SLACK_BYTES = 1 << 20  # headers, zip entries and a zip comment (at most 64 KB), with room to spare


class ExternalSetError(ValueError):
    """An external set does not fit the dataset it claims to distill (bad input: one line, exit 2)."""


@dataclass(frozen=True)
class Header:
    """One member's ``.npy`` header: what it declares, before any data is read."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class ExternalSet:
    """A checked set: images, the label rows to score with, the images' classes when stated, ipc."""

    x: np.ndarray
    y: np.ndarray
    classes: np.ndarray | None
    ipc: int


class NpzFile:
    """An opened ``.npz``: its members' headers; its arrays and sha256 are read only by :meth:`load`."""

    def __init__(self, path: Path):
        self.where = str(path)
        self._file = _open_regular(path)
        self.size = os.fstat(self._file.fileno()).st_size
        self.sha256 = ""
        try:
            self._zip = zipfile.ZipFile(self._file)
            self.headers = _headers(self._zip, self.where)
        except ExternalSetError:
            self.close()
            raise
        except Exception as exc:  # not a zip, a truncated or corrupt one, an unreadable header
            self.close()
            raise ExternalSetError(f"{self.where}: not a readable .npz file ({_first_line(exc)}); {_SAVE_HINT}") \
                from None

    def load(self) -> dict[str, np.ndarray]:
        """The arrays, in native byte order, and the file's sha256 (through the same handle, so both
        are of one file); call after the headers were checked against the dataset."""
        self.sha256 = _sha256(self._file)
        out = {}
        for name, header in self.headers.items():
            try:
                with self._zip.open(header.info) as member:
                    array = npy.read_array(member, allow_pickle=False)
            except Exception as exc:  # truncated data, a bad CRC, an encrypted member
                raise ExternalSetError(f"{self.where}: array {name!r} cannot be read ({_first_line(exc)}); "
                                       f"{_SAVE_HINT}") from None
            out[name] = array.astype(array.dtype.newbyteorder("="), copy=False)
        return out

    def close(self) -> None:
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
        self._file.close()

    def __enter__(self) -> NpzFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _open_regular(path: Path):
    """Open ``path`` for reading if it is a regular file (symlinks followed); never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ExternalSetError(f"--support: no file at {str(path)!r}") from None
    except (OSError, ValueError) as exc:  # ELOOP, EACCES, a NUL byte in the name
        raise ExternalSetError(f"--support: cannot open {str(path)!r} ({getattr(exc, 'strerror', None) or exc})") \
            from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ExternalSetError(f"--support: {str(path)!r} is not a regular file; give an .npz file")
    return os.fdopen(fd, "rb")


def _sha256(file) -> str:
    h = hashlib.sha256()
    file.seek(0)
    for block in iter(lambda: file.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def _headers(archive: zipfile.ZipFile, where: str) -> dict[str, Header]:
    """Every member's header; refuses unknown or repeated members and arrays that need pickle."""
    infos = archive.infolist()
    names = [info.filename.removesuffix(".npy") for info in infos]
    if "x" not in names or "y" not in names:
        raise ExternalSetError(f"{where}: an external set needs arrays 'x' (images) and 'y' (labels); "
                               f"the file holds {', '.join(map(repr, names)) or 'nothing'}")
    for info, name in zip(infos, names):
        if name not in MEMBERS or not info.filename.endswith(".npy"):
            raise ExternalSetError(f"{where}: unknown member {info.filename!r}; an external set holds x, y and "
                                   f"optionally classes (the class of each image)")
        if names.count(name) > 1:
            raise ExternalSetError(f"{where}: holds {name!r} {names.count(name)} times; save each array once")
    return {name: _header(archive, info, name, where) for info, name in zip(infos, names)}


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, where: str) -> Header:
    with archive.open(info) as member:
        version = npy.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(member)
        else:
            raise ExternalSetError(f"{where}: array {name!r} is in .npy format {version}; {_SAVE_HINT}")
    if dtype.hasobject:
        raise ExternalSetError(f"{where}: array {name!r} holds Python objects (pickled); save numbers, "
                               f"e.g. numpy.savez(path, x=images.astype('float32'), y=labels)")
    if any(d < 0 for d in shape):
        raise ExternalSetError(f"{where}: array {name!r} declares shape {tuple(shape)}; {_SAVE_HINT}")
    return Header(info, tuple(int(d) for d in shape), dtype)


def check_headers(npz: NpzFile, image_shape: tuple[int, ...], num_classes: int, n_train: int) -> None:
    """Shapes and dtypes the file declares, against the dataset, before any data is read."""
    where, h = npz.where, npz.headers
    x, y, classes = h["x"], h["y"], h.get("classes")
    if not _real(x.dtype):
        raise ExternalSetError(f"{where}: x has dtype {x.dtype}; expected real numbers (float32 or float64)")
    if len(x.shape) < 2 or x.shape[1:] != image_shape:
        raise ExternalSetError(f"{where}: x has shape {x.shape}, but the dataset's images have shape {image_shape} "
                               f"(expected (n, {', '.join(map(str, image_shape))}))")
    n = x.shape[0]
    if not 0 < n <= n_train:
        raise ExternalSetError(f"{where}: x holds {n} images; a distilled set holds 1 to {n_train} images "
                               f"(the dataset's training images)")
    if not (_real(y.dtype) or y.dtype.kind == "b"):
        raise ExternalSetError(f"{where}: y has dtype {y.dtype}; expected integer labels or real label rows")
    if y.shape not in ((n,), (n, num_classes)):
        width = f"y has {y.shape[1]} columns, but the dataset has {num_classes} classes" if len(y.shape) == 2 \
            and y.shape[0] == n else f"y has shape {y.shape}"
        raise ExternalSetError(f"{where}: {width}; expected {n} integer labels or label rows of shape "
                               f"({n}, {num_classes}) (one per image in x)")
    if classes is not None and (classes.dtype.kind not in "iu" or classes.shape != (n,)):
        raise ExternalSetError(f"{where}: classes has shape {classes.shape} and dtype {classes.dtype}; expected "
                               f"{n} integer classes (one per image in x)")
    declared = sum(int(np.prod(m.shape)) * m.dtype.itemsize for m in h.values())
    if npz.size > 2 * declared + _SLACK_BYTES:  # compression never doubles .npy data
        raise ExternalSetError(f"{where}: the file is {npz.size / 2**20:.1f} MB, but its arrays hold "
                               f"{declared / 2**20:.1f} MB; {_SAVE_HINT}")


def _real(dtype: np.dtype) -> bool:
    """Integers, or floats JAX computes with (float16/32/64; not long double)."""
    return dtype.kind in "iu" or (dtype.kind == "f" and dtype.itemsize <= 8)


def check_external(arrays: dict[str, np.ndarray], data, where: str, preprocessing: str) -> ExternalSet:
    """Check a set's values against the dataset it claims to distill (after :func:`check_headers`).

    Finite values; integer labels (and ``classes``) in ``[0, C)``, the same count per class; pixel
    values whose overall std and mean are those of the preprocessed training images within a wide
    margin (a factor of 10 in the std, 5 stds in the mean): raw 0-255 pixels, or the dataset
    without its standardization, fail. Raises :class:`ExternalSetError` with one line.
    """
    x, y, classes = arrays["x"], arrays["y"], arrays.get("classes")
    c = int(data.num_classes)
    for name, values in (("x", x), ("y", y)):
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise ExternalSetError(f"{where}: {name} holds NaN or infinite values")
    if y.ndim == 1:
        labels = _integer_labels(y, where)
        if classes is not None and not np.array_equal(classes, labels):
            raise ExternalSetError(f"{where}: classes disagrees with the integer labels y at "
                                   f"{int(np.sum(classes != labels))} images; give one of them")
        classes, rows = labels, None
    else:
        classes = None if classes is None else classes.astype(np.int64)
        rows = y.astype(np.float64) if y.dtype.kind in "biu" else y
    ipc = _class_balance(classes, len(x), c, where)
    _check_scale(x, data, where, preprocessing)
    if rows is None:
        from distillbench.krr import centered_one_hot

        rows = np.asarray(centered_one_hot(classes, c))  # run's fixed labels
    return ExternalSet(x if x.dtype.kind == "f" else x.astype(np.asarray(data.x_train).dtype), rows, classes, ipc)


def _integer_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.dtype.kind == "b" or (y.dtype.kind == "f" and np.any(y != np.round(y))):
        raise ExternalSetError(f"{where}: y must hold integer class labels, got dtype {y.dtype}")
    if y.dtype.kind == "f" and np.any(np.abs(y) > 2**53):
        raise ExternalSetError(f"{where}: y holds labels beyond 2**53; expected integer class labels")
    return y.astype(np.int64)


def _class_balance(classes: np.ndarray | None, n: int, num_classes: int, where: str) -> int:
    """Images per class: from the stated classes, else from the number of label rows."""
    if classes is None:
        if n % num_classes:
            raise ExternalSetError(f"{where}: {n} label rows are not a multiple of the dataset's {num_classes} "
                                   f"classes; a distilled set holds the same number of images of every class "
                                   f"(add an integer array 'classes' to say which image is which class)")
        return n // num_classes
    lo, hi = int(classes.min()), int(classes.max())
    if lo < 0 or hi >= num_classes:
        raise ExternalSetError(f"{where}: labels range {lo}..{hi}, but the dataset has {num_classes} classes "
                               f"(labels 0..{num_classes - 1})")
    counts = np.bincount(classes, minlength=num_classes)
    if counts.min() != counts.max():
        raise ExternalSetError(f"{where}: images per class are {counts.tolist()}; a distilled set holds the same "
                               f"number of images of every class")
    return int(counts[0])


def _check_scale(x: np.ndarray, data, where: str, preprocessing: str) -> None:
    xf = x.astype(np.float64)
    train = np.asarray(data.x_train, dtype=np.float64)
    with np.errstate(all="ignore"):  # values near float64's range overflow here; they are refused below
        t_mean, t_std = float(train.mean()), float(train.std()) or 1.0
        s_mean, s_std = float(xf.mean()), float(xf.std())
    if not (np.isfinite(s_mean) and np.isfinite(s_std)) or s_std > _SCALE_FACTOR * t_std \
            or (xf.shape[0] > 1 and s_std < t_std / _SCALE_FACTOR) or abs(s_mean - t_mean) > _MEAN_STDS * t_std:
        raise ExternalSetError(
            f"{where}: pixel values (mean {s_mean:.3g}, std {s_std:.3g}) do not match the dataset's preprocessed "
            f"images (mean {t_mean:.3g}, std {t_std:.3g}; {preprocessing}); save the set after the same "
            f"preprocessing, or choose the matching dataset.* parameters")


def external_artifact(checked: ExternalSet, data, seed: int) -> Artifact:
    """The artifact ``run`` would store for this set: its own labels as given, and the run seed's baseline."""
    from distillbench.runner.pipeline import random_baseline

    return Artifact(LabeledSet(checked.x, checked.y, checked.classes), random_baseline(data, checked.ipc, seed))


def external_config(dataset: ComponentChoice, loss: ComponentChoice, ipc: int, seed: int, name: str,
                    sha256: str, file_name: str) -> RunConfig:
    """The stored config of a set made elsewhere: its provenance is the ``external`` objective's parameters."""
    provenance = tuple(sorted({"name": name, "sha256": sha256, "file": file_name}.items()))
    return RunConfig(dataset=dataset, kernel=ComponentChoice("kernel", NO_KERNEL, ()), loss=loss,
                     objective=ComponentChoice("objective", EXTERNAL, provenance),
                     evaluator=ComponentChoice("evaluator", "", ()), ipc=int(ipc), seed=int(seed))
