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


def layer_norm(x: np.ndarray) -> np.ndarray:
    """Per-image layer norm (KIP-ConvNet): subtract each image's mean, divide by its L2 norm."""
    flat = x.reshape(len(x), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return (flat / np.where(norm > 0, norm, 1.0)).reshape(x.shape)


class ZCA:
    """Regularized ZCA whitening fitted on the training split (SPEC §6).

    Features are flattened and standardized per feature with train statistics; with
    ``cov = XᵀX/n`` = U diag(s) Uᵀ, ``W = U (S + ε)^(-1/2) Uᵀ`` and ``ε = reg · tr(cov)/d``.
    Whitened training features then have covariance ``U diag(s/(s+ε)) Uᵀ``. Computed in float64.
    ``pre_layer_norm`` applies per-image layer norm first (the KIP-ConvNet variant).
    """

    def __init__(self, x_train: np.ndarray, reg: float, pre_layer_norm: bool = False):
        self.pre_layer_norm = pre_layer_norm
        flat = self._flat(x_train)
        self.mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        z = (flat - self.mean) / self.std
        cov = z.T @ z / len(z)
        s, u = np.linalg.eigh(cov)
        self.eigenvalues, self.eigenvectors = np.clip(s, 0.0, None), u
        self.epsilon = reg * float(np.trace(cov)) / cov.shape[0]
        self.matrix = (u / np.sqrt(self.eigenvalues + self.epsilon)) @ u.T

    def _flat(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        if self.pre_layer_norm:
            x = layer_norm(x)
        return x.reshape(len(x), -1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (self._flat(x) - self.mean) / self.std
        return (z @ self.matrix).reshape(x.shape).astype(np.float32)


#: ``dataset.preprocess`` choices.
PREPROCESSING = ("standardize", "zca", "zca-kip", "none")


def preprocess(x_train: np.ndarray, x_test: np.ndarray, method: str, zca_reg: float):
    """Apply a ``PREPROCESSING`` method with statistics fitted on the training split only.

    ``zca``: the RFAD variant (standardize, regularized ZCA); ``zca-kip``: the KIP-ConvNet variant
    (per-image layer norm first, float64); ``standardize``: channel-wise standardization.
    """
    if method == "standardize":
        return standardize_channels(x_train, x_test)
    if method in ("zca", "zca-kip"):
        zca = ZCA(x_train, zca_reg, pre_layer_norm=method == "zca-kip")
        return zca(x_train), zca(x_test)
    if method == "none":
        return x_train.astype(np.float32), x_test.astype(np.float32)
    raise ValueError(f"unknown preprocessing {method!r} (choose from {', '.join(PREPROCESSING)})")
