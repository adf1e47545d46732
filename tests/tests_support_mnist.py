"""Write a tiny but valid MNIST folder (IDX .gz files) for tests that need a real-format dataset."""

import gzip
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_tiny_mnist(root: Path, n_train: int = 30, n_test: int = 20, side: int = 6, seed: int = 0) -> Path:
    """``root/mnist/{train,t10k}-{images,labels}`` with ``side``x``side`` images; returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, side, side), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return root
