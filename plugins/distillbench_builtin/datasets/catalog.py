"""Where each real dataset's files live under the data directory, and where to get them.

Shared by the loaders (which files to read), the plan-time check (are they there?) and
``distillbench data download`` (URL and md5 of each official file). JAX-free.

Data directory: the dataset parameter ``data_dir``, else ``$DISTILLBENCH_DATA_DIR``, else
``~/.cache/distillbench/data``. Each dataset has its own subfolder (``mnist/``, ``cifar10/``...),
so ``DISTILLBENCH_DATA_DIR=../shared/datasets`` finds the shared MNIST test set.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR_ENV = "DISTILLBENCH_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/distillbench/data")


@dataclass(frozen=True)
class RemoteFile:
    name: str          # path relative to the dataset folder
    url: str
    md5: str
    extract_to: str | None = None  # tar.gz archives are unpacked into the dataset folder


@dataclass(frozen=True)
class DatasetFiles:
    folder: str
    required: tuple[str, ...]      # files the loader reads (relative to the folder)
    remote: tuple[RemoteFile, ...]
    homepage: str
    alternatives: tuple[tuple[str, ...], ...] = ()  # other accepted layouts (e.g. KMNIST .npz)
    #: md5 of each official file the loader reads (relative path -> md5); defaults to ``remote``'s
    checksums: dict[str, str] = field(default_factory=dict)

    def official_md5(self, relative: str) -> str | None:
        if relative in self.checksums:
            return self.checksums[relative]
        return next((r.md5 for r in self.remote if r.name == relative and r.extract_to is None), None)


def data_dir(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def _idx(folder: str, base: str, md5s: dict[str, str], homepage: str, prefixes=("train", "t10k"),
         alternatives=()) -> DatasetFiles:
    names = [f"{p}-{kind}-ubyte.gz" for p in prefixes for kind in ("images-idx3", "labels-idx1")]
    return DatasetFiles(folder, tuple(names), tuple(RemoteFile(n, base + n, md5s[n]) for n in names), homepage,
                        alternatives)


_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_KMNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
}
KMNIST_NPZ = ("kmnist-train-imgs.npz", "kmnist-train-labels.npz", "kmnist-test-imgs.npz", "kmnist-test-labels.npz")

CATALOG: dict[str, DatasetFiles] = {
    "mnist": _idx("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", _MNIST_MD5,
                  "http://yann.lecun.com/exdb/mnist/"),
    "mnist-t10k": _idx("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", _MNIST_MD5,
                       "http://yann.lecun.com/exdb/mnist/ (test set only)", prefixes=("t10k",)),
    "fashion-mnist": _idx("fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                          _FASHION_MD5, "https://github.com/zalandoresearch/fashion-mnist"),
    "kmnist": _idx("kmnist", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", _KMNIST_MD5,
                   "https://github.com/rois-codh/kmnist", alternatives=(KMNIST_NPZ,)),
    "cifar10": DatasetFiles(
        "cifar10",
        tuple(f"cifar-10-batches-py/{n}" for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]),
        (RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    "c58f30108f718f92721af3b95e74349a", extract_to="."),),
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        checksums={f"cifar-10-batches-py/{n}": md5 for n, md5 in [
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"), ("test_batch", "40351d587109b95175f43aff81a1287e")]},
    ),
    "cifar100": DatasetFiles(
        "cifar100",
        ("cifar-100-python/train", "cifar-100-python/test"),
        (RemoteFile("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                    "eb9058c3a382ffc7106e4002c42a8d85", extract_to="."),),
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        checksums={"cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
                   "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
    ),
    "svhn": DatasetFiles(
        "svhn",
        ("train_32x32.mat", "test_32x32.mat"),
        (RemoteFile("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                    "e26dedcc434d2e4c54c9b2d4a06d8373"),
         RemoteFile("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                    "eb5a983be6a315427106f1b164d9cef3")),
        "http://ufldl.stanford.edu/housenumbers/",
    ),
}


def layout(name: str, explicit_dir: str | None) -> tuple[str, ...]:
    """The files the loader will read: the first complete layout, else the official one."""
    spec = CATALOG[name]
    folder = data_dir(explicit_dir) / spec.folder
    for files in (spec.required, *spec.alternatives):
        if all((folder / f).exists() for f in files):
            return files
    return spec.required


_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def file_md5(path: Path) -> str:
    """md5 of a file, remembered for the process while its size and mtime stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MD5_CACHE:
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _MD5_CACHE[key] = digest.hexdigest()
    return _MD5_CACHE[key]


def checksum_problem(name: str, explicit_dir: str | None) -> str | None:
    """One line naming the first file to be read whose md5 is not the official one, or ``None``.

    A layout with no official checksum on record (KMNIST's ``.npz`` files) cannot be verified,
    so it is refused too: the user opts in with ``dataset.verify=false``.
    """
    spec = CATALOG[name]
    folder = data_dir(explicit_dir) / spec.folder
    fix = (f"re-download it with `distillbench data download {name}`, or pass dataset.verify=false to "
           "use it anyway (recorded with each run)")
    for relative in layout(name, explicit_dir):
        path = folder / relative
        expected = spec.official_md5(relative)
        if expected is None:
            return (f"{path} has no official checksum on record, so it cannot be verified; use the official "
                    f"files (`distillbench data download {name}`), or pass dataset.verify=false to use it anyway")
        try:
            actual = file_md5(path)
        except OSError as exc:
            return f"cannot read {path} ({exc.strerror or exc})"
        if actual != expected:
            return (f"{path} is not the official file (md5 {actual}, expected {expected}): corrupt, truncated "
                    f"or altered; {fix}")
    return None


def missing_files(name: str, explicit_dir: str | None) -> list[Path]:
    """Required files that are not there (an accepted alternative layout counts as present)."""
    spec = CATALOG[name]
    folder = data_dir(explicit_dir) / spec.folder
    for layout in (spec.required, *spec.alternatives):
        missing = [folder / f for f in layout if not (folder / f).exists()]
        if not missing:
            return []
    return [folder / f for f in spec.required if not (folder / f).exists()]


def availability_problem(name: str, explicit_dir: str | None) -> str | None:
    """One line saying which file is missing and how to get it, or ``None``."""
    missing = missing_files(name, explicit_dir)
    if not missing:
        return None
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (f"missing file {missing[0]}{more}; run `distillbench data download {name}`, or point "
            f"dataset.data_dir= or ${DATA_DIR_ENV} at a folder holding {CATALOG[name].folder}/ "
            f"(official files: {CATALOG[name].homepage})")
