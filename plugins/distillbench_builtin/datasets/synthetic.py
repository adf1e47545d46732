"""Generated data of any shape: one random prototype per class plus Gaussian noise."""

from __future__ import annotations

import numpy as np

from distillbench.components.datasets import DataSplit


def build_synthetic(n_train: int, n_test: int, num_classes: int, height: int, width: int,
                    channels: int, noise: float, data_seed: int) -> DataSplit:
    if n_train < num_classes:
        raise ValueError(f"synthetic: n_train={n_train} must be at least num_classes={num_classes}")
    rng = np.random.default_rng(data_seed)
    prototypes = rng.standard_normal((num_classes, height, width, channels))

    def draw(n):
        labels = (np.arange(n) % num_classes).astype(np.int32)
        rng.shuffle(labels)
        x = prototypes[labels] + noise * rng.standard_normal((n, height, width, channels))
        return x.astype(np.float32), labels

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return DataSplit(x_train, y_train, x_test, y_test, num_classes)
