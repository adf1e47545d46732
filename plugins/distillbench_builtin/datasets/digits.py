"""The embedded default dataset: scikit-learn's handwritten digits (UCI optdigits test set).

Read straight from the CSV that ships inside scikit-learn (no network, no ``import sklearn``,
which would cost a second); falls back to ``sklearn.datasets.load_digits`` if the file moved.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from distillbench.components.datasets import DataSplit
from distillbench_builtin.datasets.preprocessing import make_split


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8, 1), table[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.reshape(-1, 8, 8, 1), bunch.target.astype(np.int32)


def build_digits(test_fraction: float, split_seed: int, standardize: bool) -> DataSplit:
    images, labels = _read_digits()
    return make_split(images, labels, 10, test_fraction, split_seed, standardize)
