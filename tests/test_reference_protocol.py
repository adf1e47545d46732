"""The RFAD reference's protocol, transcribed: ZCA, model selection, the Platt optimizer, KIP's
defaults, and the protocol commands of docs/protocols.md (issue 18)."""

import numpy as np
import pytest

from distillbench_builtin.datasets.preprocessing import preprocess


def _reference_zca_nchw(x_train, x_test, reg_coef):
    """Transcription of yolky/RFAD ``data.py`` (``get_cifar10`` standardization, ``get_zca_matrix``,
    ``transform_data``) in numpy float64, on NCHW images as the reference holds them."""
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True, ddof=1)  # torch.std is unbiased
    x_test = (x_test - mean) / std
    x_train = (x_train - mean) / std
    x_flat = x_train.reshape(x_train.shape[0], -1)
    cov = (x_flat.T @ x_flat) / x_flat.shape[0]
    reg_amount = reg_coef * np.trace(cov) / cov.shape[0]
    u, s, _ = np.linalg.svd(cov + reg_amount * np.eye(cov.shape[0]))
    whitening = np.einsum("ij,j,kj->ik", u, s**-0.5, u)

    def transform(x):
        return (x.reshape(x.shape[0], -1) @ whitening).reshape(x.shape)

    return transform(x_train), transform(x_test)


def _layernorm_nchw(x):
    """``data.layernorm_data``."""
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    return x / np.sqrt(np.sum(x**2, axis=(1, 2, 3), keepdims=True))


def _rgb(hw):
    rng = np.random.default_rng(18)
    n = 300
    # correlated pixels (a smooth random field per image) with per-channel offsets and scales
    base = rng.standard_normal((n, hw // 4, hw // 4, 3)).repeat(4, axis=1).repeat(4, axis=2)
    x = 40.0 * (base + 0.3 * rng.standard_normal((n, hw, hw, 3))) + np.array([120.0, 100.0, 80.0])
    return x[:250].astype(np.float32), x[250:].astype(np.float32)


@pytest.fixture(scope="module")
def rgb():
    """Random 32x32x3 images (d = 3072: each whitening is a 3072x3072 decomposition)."""
    return _rgb(32)


def test_zca_is_the_rfad_reference_transform(rgb):
    x_train, x_test = rgb
    ours_train, ours_test = preprocess(x_train, x_test, "zca", 0.1)
    to_nchw = (0, 3, 1, 2)
    ref_train, ref_test = _reference_zca_nchw(x_train.astype(np.float64).transpose(to_nchw),
                                              x_test.astype(np.float64).transpose(to_nchw), 0.1)
    assert ours_train.dtype == np.float32
    np.testing.assert_allclose(ours_train, ref_train.transpose(0, 2, 3, 1).astype(np.float32), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours_test, ref_test.transpose(0, 2, 3, 1).astype(np.float32), rtol=1e-6, atol=1e-6)
    # the reference centers nothing: the outputs keep a clear mean, unlike a centered ZCA
    assert np.abs(ours_train.reshape(len(ours_train), -1).mean(0)).max() > 1e-2


def test_zca_layernorm_is_the_rfad_reference_svhn_transform():
    x_train, x_test = _rgb(16)  # the same code path as 32x32x3 at a 64th of the cost
    ours_train, ours_test = preprocess(x_train, x_test, "zca-layernorm", 0.1)
    to_nchw = (0, 3, 1, 2)
    tr, te = x_train.astype(np.float64).transpose(to_nchw), x_test.astype(np.float64).transpose(to_nchw)
    mean, std = tr.mean(axis=(0, 2, 3), keepdims=True), tr.std(axis=(0, 2, 3), keepdims=True, ddof=1)
    tr, te = _layernorm_nchw((tr - mean) / std), _layernorm_nchw((te - mean) / std)
    # get_svhn standardizes, run_distillation layer-norms, then whitens the layer-normed images
    x_flat = tr.reshape(len(tr), -1)
    cov = x_flat.T @ x_flat / len(x_flat)
    u, s, _ = np.linalg.svd(cov + 0.1 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))
    w = np.einsum("ij,j,kj->ik", u, s**-0.5, u)
    ref_test = (te.reshape(len(te), -1) @ w).reshape(te.shape)
    np.testing.assert_allclose(ours_test, ref_test.transpose(0, 2, 3, 1).astype(np.float32), rtol=1e-6, atol=1e-6)
    assert ours_train.shape == x_train.shape
