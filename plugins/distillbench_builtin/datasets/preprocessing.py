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


def standardize_channels_unbiased(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The RFAD reference's standardization: per channel, train mean and *unbiased* std (torch.std)."""
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
    mean = x_train.mean(axis=(0, 1, 2), keepdims=True)
    std = x_train.std(axis=(0, 1, 2), keepdims=True, ddof=1)
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


def zca_matrix(flat: np.ndarray, reg: float) -> np.ndarray:
    """``W = U (S + ε)^(-1/2) Uᵀ`` with ``XᵀX/n = U diag(S) Uᵀ`` (as given, not centered) and
    ``ε = reg · tr(XᵀX/n)/d``, in float64."""
    flat = flat.astype(np.float64)
    cov = flat.T @ flat / len(flat)
    epsilon = reg * float(np.trace(cov)) / cov.shape[0]
    s, u = np.linalg.eigh(cov)
    return (u / np.sqrt(np.clip(s, 0.0, None) + epsilon)) @ u.T


def reference_zca(x_train: np.ndarray, x_test: np.ndarray, reg: float, pre_layer_norm: bool = False):
    """The RFAD reference's preprocessing of RGB data (its ``data.py``): per-channel standardization
    (``standardize_channels_unbiased``), per-image layer norm for SVHN (``pre_layer_norm``), then
    ``x @ zca_matrix(x_train)`` on the flattened images. Nothing is centered: the whitening uses the
    uncentered second moment ``XᵀX/n`` and the outputs keep their mean.
    """
    x_train, x_test = standardize_channels_unbiased(x_train, x_test)
    if pre_layer_norm:
        x_train, x_test = layer_norm(x_train), layer_norm(x_test)
    w = zca_matrix(x_train.reshape(len(x_train), -1), reg)

    def apply(x):
        return (x.reshape(len(x), -1) @ w).reshape(x.shape).astype(np.float32)

    return apply(x_train), apply(x_test)


class ZCA:
    """Regularized ZCA of per-feature standardized data (the KIP-ConvNet variant, SPEC §6).

    Features are flattened and standardized per feature (pixel-channel) with train statistics, so
    they are centered; with ``cov = XᵀX/n`` = U diag(s) Uᵀ, ``W = U (S + ε)^(-1/2) Uᵀ`` and
    ``ε = reg · tr(cov)/d``. Whitened training features then have covariance
    ``U diag(s/(s+ε)) Uᵀ``. Computed in float64. ``pre_layer_norm`` applies per-image layer norm
    first (``zca-kip``). This is not the RFAD reference's transform (``reference_zca``): that one
    standardizes per channel and neither centers the features nor the output.
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
PREPROCESSING = ("standardize", "zca", "zca-layernorm", "zca-kip", "zca-features", "none")


def preprocess(x_train: np.ndarray, x_test: np.ndarray, method: str, zca_reg: float):
    """Apply a ``PREPROCESSING`` method with statistics fitted on the training split only.

    ``zca``: the RFAD reference (``reference_zca``: per-channel standardization, whitening by the
    uncentered ``XᵀX/n``); ``zca-layernorm``: the same with per-image layer norm after the
    standardization (the reference's SVHN); ``zca-kip``: the KIP-ConvNet variant (per-image layer
    norm, then ``ZCA`` of per-feature standardized data, float64); ``zca-features``: ``ZCA``
    without the layer norm (what ``zca`` computed before it matched the reference);
    ``standardize``: channel-wise standardization.
    """
    if method == "standardize":
        return standardize_channels(x_train, x_test)
    if method in ("zca", "zca-layernorm"):
        return reference_zca(x_train, x_test, zca_reg, pre_layer_norm=method == "zca-layernorm")
    if method in ("zca-kip", "zca-features"):
        zca = ZCA(x_train, zca_reg, pre_layer_norm=method == "zca-kip")
        return zca(x_train), zca(x_test)
    if method == "none":
        return x_train.astype(np.float32), x_test.astype(np.float32)
    raise ValueError(f"unknown preprocessing {method!r} (choose from {', '.join(PREPROCESSING)})")
