"""Real-dataset loaders, preprocessing and downloads, on tiny files written in each real format."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.errors import ConfigError
from distillbench.registry import load_registry
from distillbench.runner.plan import plan
from distillbench_builtin.datasets.formats import DataFileError, read_idx
from distillbench_builtin.datasets.preprocessing import ZCA, preprocess
from tests_support_mnist import write_idx

from distillbench_builtin.datasets.real import build_cifar10, build_cifar100, build_kmnist, build_mnist, build_svhn

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def fake_images(rng, n, shape):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def labels_for(n, classes=10):
    return (np.arange(n) % classes).astype(np.uint8)


def make_idx_dataset(folder: Path, rng, n_train=30, n_test=20, side=6):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", fake_images(rng, n, (side, side)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels_for(n))


def test_idx_mnist_layout(tmp_path):
    rng = np.random.default_rng(0)
    make_idx_dataset(tmp_path / "mnist", rng)
    split = build_mnist(str(tmp_path), "standardize", 0.1, verify=False)
    assert split.x_train.shape == (30, 6, 6, 1) and split.x_test.shape == (20, 6, 6, 1)
    assert split.x_train.dtype == np.float32 and split.num_classes == 10
    np.testing.assert_allclose(split.x_train.mean(), 0, atol=1e-5)
    np.testing.assert_array_equal(split.y_train, labels_for(30))


def test_kmnist_npz_layout(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "kmnist"
    folder.mkdir()
    for name, arr in [("kmnist-train-imgs.npz", fake_images(rng, 30, (6, 6))), ("kmnist-train-labels.npz", labels_for(30)),
                      ("kmnist-test-imgs.npz", fake_images(rng, 20, (6, 6))), ("kmnist-test-labels.npz", labels_for(20))]:
        np.savez_compressed(folder / name, arr)
    split = build_kmnist(str(tmp_path), "none", 0.1, verify=False)
    assert split.x_train.shape == (30, 6, 6, 1) and split.x_train.max() <= 1.0
    assert plan(["dataset=kmnist", f"dataset.data_dir={tmp_path}", "dataset.verify=false"],
                load_registry(entry_points=False)).configs


def _cifar_batch(path: Path, images: np.ndarray, labels, key: bytes):
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    path.write_bytes(pickle.dumps({b"data": rows, key: list(labels)}))


def test_cifar10_and_cifar100_pickle_batches(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [fake_images(rng, 10, (32, 32, 3)) for _ in range(6)]
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", batches[i - 1], labels_for(10), b"labels")
    _cifar_batch(folder / "test_batch", batches[5], labels_for(10), b"labels")
    split = build_cifar10(str(tmp_path), "none", 0.1, verify=False)
    assert split.x_train.shape == (50, 32, 32, 3)
    np.testing.assert_allclose(split.x_train[0], batches[0][0] / 255.0, rtol=1e-6)  # HWC order preserved
    folder100 = tmp_path / "cifar100" / "cifar-100-python"
    folder100.mkdir(parents=True)
    _cifar_batch(folder100 / "train", batches[0], np.arange(10) * 7, b"fine_labels")
    _cifar_batch(folder100 / "test", batches[1], np.arange(10) * 7, b"fine_labels")
    split100 = build_cifar100(str(tmp_path), "none", 0.1, verify=False)
    assert split100.num_classes == 100 and split100.y_train.max() == 63


def test_svhn_mat_maps_label_10_to_0(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "svhn"
    folder.mkdir()
    y = np.array([[10], [1], [2], [10]])
    for name in ("train_32x32.mat", "test_32x32.mat"):
        scipy.io.savemat(folder / name, {"X": fake_images(rng, 4, (32, 32, 3)).transpose(1, 2, 3, 0), "y": y})
    split = build_svhn(str(tmp_path), "none", 0.1, verify=False)
    assert split.x_train.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(split.y_train, [0, 1, 2, 0])


def test_truncated_and_corrupt_files_give_clear_errors(tmp_path):
    rng = np.random.default_rng(4)
    make_idx_dataset(tmp_path / "mnist", rng)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    with gzip.open(images, "wb") as f:
        f.write(raw[:-7])
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte.gz is truncated or corrupt"):
        build_mnist(str(tmp_path), "none", 0.1, verify=False)
    images.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataFileError, match="corrupt or truncated"):
        read_idx(images)
    bad_magic = tmp_path / "x.idx"
    bad_magic.write_bytes(b"\x08\x03\x00\x00")
    with pytest.raises(DataFileError, match="not an IDX file"):
        read_idx(bad_magic)
    (tmp_path / "kmnist").mkdir()
    (tmp_path / "kmnist" / "kmnist-train-imgs.npz").write_bytes(b"PK garbage")
    from distillbench_builtin.datasets.formats import read_npz_array

    with pytest.raises(DataFileError, match="kmnist-train-imgs.npz is corrupt"):
        read_npz_array(tmp_path / "kmnist" / "kmnist-train-imgs.npz")


def test_missing_files_refused_before_compute_one_line(tmp_path):
    result = CliRunner().invoke(main, ["run", "dataset=cifar10", f"dataset.data_dir={tmp_path}",
                                       "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2
    (line,) = [x for x in result.output.splitlines() if x.strip()]
    assert "missing file" in line and "cifar-10-batches-py/data_batch_1" in line
    assert "distillbench data download cifar10" in line
    assert not (tmp_path / "s.sqlite").exists()
    with pytest.raises(ConfigError):
        plan(["dataset=svhn", f"dataset.data_dir={tmp_path}"], load_registry(entry_points=False))


def test_zca_whitened_covariance_matches_numpy_eigendecomposition():
    rng = np.random.default_rng(5)
    mixing = rng.standard_normal((12, 12))
    x = (rng.standard_normal((400, 12)) @ mixing).reshape(400, 2, 2, 3).astype(np.float32)
    zca = ZCA(x, reg=0.1)
    white = zca(x).reshape(400, -1).astype(np.float64)
    # independent computation in numpy
    flat = x.reshape(400, -1).astype(np.float64)
    z = (flat - flat.mean(0)) / flat.std(0)
    cov = z.T @ z / len(z)
    s, u = np.linalg.eigh(cov)
    eps = 0.1 * np.trace(cov) / cov.shape[0]
    expected = u @ np.diag(s / (s + eps)) @ u.T
    np.testing.assert_allclose(white.T @ white / len(white), expected, atol=2e-5)
    # statistics come from train only: test data is transformed with the same matrix
    x_test = x[:10] + 1.0
    _, test_white = preprocess(x, x_test, "zca-features", 0.1)
    np.testing.assert_allclose(test_white, zca(x_test), rtol=1e-6)


def test_zca_kip_variant_layer_norms_first():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 2, 2, 3)).astype(np.float32)
    a, _ = preprocess(x, x[:2], "zca-kip", 0.1)
    b, _ = preprocess(3.0 * x + 2.0, x[:2], "zca-kip", 0.1)  # per-image affine changes are normalized away
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="shared MNIST not present")
def test_mnist_t10k_balanced_split_of_the_real_files():
    from distillbench_builtin.datasets.real import build_mnist_t10k

    split = build_mnist_t10k(str(SHARED_MNIST.parent), "standardize", 0.1, 200, 0)
    assert split.x_train.shape == (8000, 28, 28, 1) and split.x_test.shape == (2000, 28, 28, 1)
    assert np.all(np.bincount(split.y_test) == 200)
    again = build_mnist_t10k(str(SHARED_MNIST.parent), "standardize", 0.1, 200, 0)
    np.testing.assert_array_equal(split.y_train, again.y_train)


def _run(tmp_path, *args):
    store = tmp_path / "store" / "s.sqlite"
    result = CliRunner().invoke(main, ["run", "--store", str(store), *args])
    lines = [x for x in result.output.splitlines() if x.strip()]
    return result, lines, store


def test_a_file_that_is_not_the_official_one_is_refused_naming_it(tmp_path):
    make_idx_dataset(tmp_path / "mnist", np.random.default_rng(6))
    result, lines, store = _run(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path}")
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "train-images-idx3-ubyte.gz is not the official file" in lines[0]
    assert "dataset.verify=false" in lines[0] and "Traceback" not in result.output
    assert not store.parent.exists()


def test_verify_false_is_the_explicit_opt_in_and_is_recorded(tmp_path):
    make_idx_dataset(tmp_path / "mnist", np.random.default_rng(7))
    (config,) = plan(["dataset=mnist", f"dataset.data_dir={tmp_path}", "dataset.verify=false"],
                     load_registry(entry_points=False)).configs
    assert config.to_dict()["dataset"]["params"]["verify"] is False
    split = load_registry(entry_points=False).instantiate("dataset", "mnist", config.dataset.as_dict())
    assert split.x_train.shape == (30, 6, 6, 1)


def test_a_file_replaced_after_planning_is_refused_when_loaded(tmp_path):
    make_idx_dataset(tmp_path / "mnist", np.random.default_rng(15))
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz is not the official file"):
        build_mnist(str(tmp_path), "none", 0.1, verify=True)


@pytest.mark.parametrize("damage", ["cut the gzip stream", "gzip of a short file"])
def test_a_truncated_file_is_refused_at_plan_time_naming_it_even_unverified(tmp_path, damage):
    make_idx_dataset(tmp_path / "mnist", np.random.default_rng(8))
    images = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    if damage == "cut the gzip stream":
        images.write_bytes(images.read_bytes()[:-30])
    else:
        images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-7]))
    result, lines, store = _run(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path}", "dataset.verify=false")
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{images} is truncated or corrupt" in lines[0]
    assert not store.parent.exists()


def test_images_and_labels_that_disagree_are_refused_at_plan_time(tmp_path):
    make_idx_dataset(tmp_path / "mnist", np.random.default_rng(9))
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", labels_for(29))
    with pytest.raises(ConfigError, match="holds 30 images but .*train-labels-idx1-ubyte.gz holds 29 labels"):
        plan(["dataset=mnist", f"dataset.data_dir={tmp_path}", "dataset.verify=false"], load_registry(entry_points=False))
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", labels_for(30) + 3)
    with pytest.raises(ConfigError, match=r"train-labels-idx1-ubyte.gz has labels outside \[0, 10\)"):
        plan(["dataset=mnist", f"dataset.data_dir={tmp_path}", "dataset.verify=false"], load_registry(entry_points=False))


def test_ipc_is_checked_against_the_files_class_counts(tmp_path):
    make_idx_dataset(tmp_path / "mnist", np.random.default_rng(10))  # 3 training images per class
    args = ["dataset=mnist", f"dataset.data_dir={tmp_path}", "dataset.verify=false"]
    assert plan([*args, "ipc=3"], load_registry(entry_points=False)).configs
    with pytest.raises(ConfigError, match=r"ipc=4 is more than its smallest training class holds \(3 images"):
        plan([*args, "ipc=4"], load_registry(entry_points=False))


def test_kmnist_npz_has_no_official_checksum_so_it_needs_the_opt_in(tmp_path):
    folder = tmp_path / "kmnist"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for name, arr in [("kmnist-train-imgs.npz", fake_images(rng, 30, (6, 6))), ("kmnist-train-labels.npz", labels_for(30)),
                      ("kmnist-test-imgs.npz", fake_images(rng, 20, (6, 6))), ("kmnist-test-labels.npz", labels_for(20))]:
        np.savez_compressed(folder / name, arr)
    with pytest.raises(ConfigError, match="kmnist-train-imgs.npz has no official checksum on record"):
        plan(["dataset=kmnist", f"dataset.data_dir={tmp_path}"], load_registry(entry_points=False))
    (folder / "kmnist-test-imgs.npz").write_bytes(b"PK not a zip")
    with pytest.raises(ConfigError, match="kmnist-test-imgs.npz is corrupt or not an .npz file"):
        plan(["dataset=kmnist", f"dataset.data_dir={tmp_path}", "dataset.verify=false"], load_registry(entry_points=False))


def test_cifar_batches_are_verified_against_their_official_checksums(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(12)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        _cifar_batch(folder / name, fake_images(rng, 10, (32, 32, 3)), labels_for(10), b"labels")
    with pytest.raises(ConfigError, match="data_batch_1 is not the official file"):
        plan(["dataset=cifar10", f"dataset.data_dir={tmp_path}"], load_registry(entry_points=False))
    args = ["dataset=cifar10", f"dataset.data_dir={tmp_path}", "dataset.verify=false"]
    assert plan([*args, "ipc=5"], load_registry(entry_points=False)).configs  # 5 batches x 1 image per class
    with pytest.raises(ConfigError, match="ipc=6 is more than"):
        plan([*args, "ipc=6"], load_registry(entry_points=False))


def test_svhn_class_counts_come_from_the_labels_only(tmp_path):
    folder = tmp_path / "svhn"
    folder.mkdir()
    y = np.array([[10], [1], [2], [10], [3], [4], [5], [6], [7], [8], [9], [9]])
    for name in ("train_32x32.mat", "test_32x32.mat"):
        scipy.io.savemat(folder / name, {"X": fake_images(np.random.default_rng(13), 12, (32, 32, 3)).transpose(1, 2, 3, 0),
                                         "y": y})
    args = ["dataset=svhn", f"dataset.data_dir={tmp_path}", "dataset.verify=false"]
    assert plan(args, load_registry(entry_points=False)).configs
    with pytest.raises(ConfigError, match=r"ipc=2 is more than .*\(1 image of class 1\)"):
        plan([*args, "ipc=2"], load_registry(entry_points=False))


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="shared MNIST test files absent")
def test_the_official_mnist_test_files_pass_verification():
    args = ["dataset=mnist-t10k", f"dataset.data_dir={SHARED_MNIST.parent}"]
    (config,) = plan(args, load_registry(entry_points=False)).configs
    assert config.dataset.as_dict()["verify"] is True
    with pytest.raises(ConfigError, match=r"ipc=693 is more than .*\(692 images of class 5\); choose ipc <= 692"):
        plan([*args, "ipc=693"], load_registry(entry_points=False))


def test_the_real_loaders_hold_what_describe_promised(tmp_path):
    rng = np.random.default_rng(14)
    make_idx_dataset(tmp_path / "mnist", rng, n_train=37, n_test=23)
    registry = load_registry(entry_points=False)
    fake = ("dataset.verify=false", f"dataset.data_dir={tmp_path}")
    cases = [("mnist", *fake), ("mnist-t10k", *fake, "dataset.test_per_class=1")]
    if (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        cases.append(("mnist-t10k", f"dataset.data_dir={SHARED_MNIST.parent}"))
    for name, *args in cases:
        (config,) = plan([f"dataset={name}", *args], registry).configs
        split = registry.instantiate("dataset", name, config.dataset.as_dict())  # checks describe() against it
        assert split.num_classes == 10


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="shared MNIST test files absent")
@pytest.mark.slow
def test_fake_then_real_files_the_real_run_is_not_served_from_the_cache(tmp_path):
    """Defect 2 end to end: unofficial files need dataset.verify=false, and their result is not reused."""
    import sqlite3

    rng = np.random.default_rng(16)
    folder = tmp_path / "fake" / "mnist"
    folder.mkdir(parents=True)
    labels = (np.arange(2100) % 10).astype(np.uint8)  # 210 per class: the default split's 200 test + 10 train
    write_idx(folder / "t10k-images-idx3-ubyte.gz", fake_images(rng, 2100, (28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    store = tmp_path / "s.sqlite"
    common = ["run", "--store", str(store), "dataset=mnist-t10k", "objective=ls"]

    refused, lines, _ = _run(tmp_path, "dataset=mnist-t10k", f"dataset.data_dir={tmp_path / 'fake'}")
    assert refused.exit_code == 2 and "is not the official file" in lines[0]
    fake = CliRunner().invoke(main, [*common, f"dataset.data_dir={tmp_path / 'fake'}", "dataset.verify=false", "-q"])
    assert fake.exit_code == 0, fake.output
    real = CliRunner().invoke(main, [*common, f"dataset.data_dir={SHARED_MNIST.parent}", "-q"])
    assert real.exit_code == 0, real.output
    assert "data changed since the cached run" in real.output  # one line says why it re-runs
    with sqlite3.connect(store) as conn:
        ((acc, config),) = conn.execute("SELECT acc, config FROM runs").fetchall()
    assert '"verify": true' in config and str(SHARED_MNIST.parent) in config
    assert acc > 0.3  # real digits: far above the 10% a fake set scores
