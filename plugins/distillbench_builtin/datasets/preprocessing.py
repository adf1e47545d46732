"""Splitting and standardization shared by the built-in datasets (numpy only)."""

from __future__ import annotations

import numpy as np

from distillbench.components.datasets import DataSplit


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices holding out ``test_fraction`` of every class (at least one each)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(len(members) - 1, max(1, int(round(test_fraction * len(members)))))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardize_channels(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channel-wise standardization with statistics of the training split only (SPEC §6)."""
    mean = x_train.mean(axis=(0, 1, 2), keepdims=True)
    std = x_train.std(axis=(0, 1, 2), keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def make_split(images: np.ndarray, labels: np.ndarray, num_classes: int, test_fraction: float,
               split_seed: int, standardize: bool) -> DataSplit:
    train, test = stratified_split(labels, test_fraction, split_seed)
    x_train, x_test = images[train].astype(np.float32), images[test].astype(np.float32)
    if standardize:
        x_train, x_test = standardize_channels(x_train, x_test)
    return DataSplit(x_train, labels[train].astype(np.int32), x_test, labels[test].astype(np.int32), num_classes)
