"""Hostile inputs for ``evaluate --support FILE.npz`` and ``explain`` (issue 27: items 2, 10, 15, 25; issue 35).

Two tables, in the style of tests/test_bad_inputs.py. ``NPZ_CASES``: one untrusted ``.npz`` (or a path
that is not one) per row, each built in a fresh folder and scored against the tiny synthetic
dataset; ``EXPLAIN_CASES``: one damaged copy of a stored run per row (its artifact, its row, its
data, the output path). Each row asserts its documented outcome: one stderr line naming what is
wrong and exit code 2, and that nothing in its temporary world (the store, its artifacts, the data,
the working folder) changed. A few tests check what is accepted, and that a zip bomb is refused
before its data is decompressed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sqlite3
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.lib import format as npy

from distillbench.cli import main
from distillbench.store.database import open_existing
from tests_support_mnist import make_tiny_mnist

from helpers import TINY

pytestmark = pytest.mark.xdist_group("hostile_evaluate")

EXIT_BAD_INPUT = 2
DATASET = tuple(a for a in TINY if a.startswith("dataset."))  # synthetic: 60 train images 4x4x1, 3 classes
RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 4, 4, 1)).astype(np.float32)  # one image per class, preprocessed like the dataset
Y = np.arange(3)
ROWS = RNG.normal(size=(3, 3))


# -- building hostile files -----------------------------------------------------------------------

def _npz(folder: Path, **arrays) -> Path:
    path = folder / "set.npz"
    np.savez(path, **arrays)
    return path


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    npy.write_array(buffer, np.asarray(array), allow_pickle=True)
    return buffer.getvalue()


def _header(shape, descr="<f4", version=1, text=None) -> bytes:
    """An ``.npy`` header declaring ``shape`` (any text with ``text``), without data."""
    body = (text if text is not None else repr({"descr": descr, "fortran_order": False, "shape": shape})).encode()
    magic = b"\x93NUMPY" + bytes([version, 0])
    size = 2 if version == 1 else 4
    pad = (64 - (len(magic) + size + len(body) + 1) % 64) % 64
    body = body + b" " * pad + b"\n"
    return magic + len(body).to_bytes(size, "little") + body


def _zip(folder: Path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    """A zip of ``(name, bytes)`` members (names repeat as given)."""
    path = folder / "set.npz"
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def _valid(**override):
    arrays = {"x": X, "y": Y}
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


def _objects(array):
    out = np.empty(array.shape, dtype=object)
    out[...] = array.tolist() if array.ndim == 0 else np.asarray(array, dtype=object)
    return out


def _flip_data_byte(folder: Path) -> Path:
    path = _zip(folder, [("x.npy", _npy(X)), ("y.npy", _npy(Y))], zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[data.index(b"\x93NUMPY") + 140] ^= 0xFF  # inside x's array data: its CRC no longer matches
    path.write_bytes(bytes(data))
    return path


def _fifo(folder: Path) -> Path:
    path = folder / "pipe.npz"
    os.mkfifo(path)
    return path


def _link(folder: Path, target) -> Path:
    path = folder / "link.npz"
    path.symlink_to(target)
    return path


def _loop(folder: Path) -> Path:
    (folder / "a.npz").symlink_to(folder / "b.npz")
    (folder / "b.npz").symlink_to(folder / "a.npz")
    return folder / "a.npz"


def _nan(array, where=0):
    out = np.array(array, dtype=np.float64)
    out.flat[where] = np.nan
    return out


def _with(array, index, value):
    out = np.array(array, dtype=np.float64)
    out[index] = value
    return out


def _bad_link(folder: Path) -> Path:
    target = _npz(folder, **_valid(x=_nan(X)))
    return _link(folder, target)


NOT_READABLE = "not a readable .npz file"
X_DTYPE = "x has dtype"
Y_DTYPE = "y has dtype"
X_SHAPE = "but the dataset's images have shape (4, 4, 1)"
UNBALANCED = "a distilled set holds the same number of images of every class"

#: (id, builds the --support path in a fresh folder, fragment of the one stderr line)
NPZ_CASES = [
    # -- pickles: never loaded ---------------------------------------------------------------------
    ("pickled x", lambda d: _npz(d, **_valid(x=_objects(X))), "array 'x' holds Python objects (pickled)"),
    ("pickled y", lambda d: _npz(d, **_valid(y=_objects(Y))), "array 'y' holds Python objects (pickled)"),
    ("pickled classes", lambda d: _npz(d, **_valid(y=ROWS, classes=_objects(Y))), "array 'classes' holds Python"),
    ("pickled field", lambda d: _npz(d, **_valid(x=np.zeros(3, dtype=[("a", "O")]))), "holds Python objects"),
    ("pickled scalar", lambda d: _npz(d, **_valid(y=np.array({"a": 1}, dtype=object))), "holds Python objects"),
    # -- declared sizes: refused from the header, before any data ------------------------------------
    ("huge declared x", lambda d: _zip(d, [("x.npy", _header((10**9, 4, 4, 1))), ("y.npy", _npy(Y))]),
     "x holds 1000000000 images; a distilled set holds 1 to 60 images"),
    ("huge declared y", lambda d: _zip(d, [("x.npy", _npy(X)), ("y.npy", _header((10**12,), "<i8"))]),
     "y has shape (1000000000000,)"),
    ("huge declared rows", lambda d: _zip(d, [("x.npy", _npy(X)), ("y.npy", _header((3, 10**9)))]),
     "y has 1000000000 columns, but the dataset has 3 classes"),
    ("huge declared classes", lambda d: _zip(d, [("x.npy", _npy(X)), ("y.npy", _npy(ROWS)),
                                                 ("classes.npy", _header((10**12,), "<i8"))]),
     "classes has shape (1000000000000,)"),
    ("huge image dims", lambda d: _zip(d, [("x.npy", _header((3, 10**6, 10**6, 1))), ("y.npy", _npy(Y))]), X_SHAPE),
    ("negative dim", lambda d: _zip(d, [("x.npy", _header((-3, 4, 4, 1))), ("y.npy", _npy(Y))]),
     "array 'x' declares shape (-3, 4, 4, 1)"),
    ("float dim", lambda d: _zip(d, [("x.npy", _header((3.5, 4, 4, 1))), ("y.npy", _npy(Y))]), NOT_READABLE),
    ("header not a dict", lambda d: _zip(d, [("x.npy", _header(None, text="[1, 2]")), ("y.npy", _npy(Y))]),
     NOT_READABLE),
    ("header code", lambda d: _zip(d, [("x.npy", _header(None, text="__import__('os').system('true')")),
                                       ("y.npy", _npy(Y))]), NOT_READABLE),
    ("bogus descr", lambda d: _zip(d, [("x.npy", _header((3, 4, 4, 1), "<q9")), ("y.npy", _npy(Y))]), NOT_READABLE),
    ("header too long", lambda d: _zip(d, [("x.npy", _header(None, text="{" + " " * 20000 + "}")),
                                           ("y.npy", _npy(Y))]), NOT_READABLE),
    ("npy format 3", lambda d: _zip(d, [("x.npy", _header((3, 4, 4, 1), version=3)), ("y.npy", _npy(Y))]),
     "is in .npy format (3, 0)"),
    ("bad magic", lambda d: _zip(d, [("x.npy", b"PK not an npy at all"), ("y.npy", _npy(Y))]), NOT_READABLE),
    ("empty member", lambda d: _zip(d, [("x.npy", b""), ("y.npy", _npy(Y))]), NOT_READABLE),
    ("data cut short", lambda d: _zip(d, [("x.npy", _npy(X)[:-20]), ("y.npy", _npy(Y))]),
     "array 'x' cannot be read"),
    ("header only", lambda d: _zip(d, [("x.npy", _header((3, 4, 4, 1))), ("y.npy", _npy(Y))]),
     "array 'x' cannot be read"),
    ("bad crc", _flip_data_byte, "Bad CRC-32 for file 'x.npy'"),
    # -- dtypes --------------------------------------------------------------------------------------
    ("complex x", lambda d: _npz(d, **_valid(x=X.astype(np.complex128))), X_DTYPE),
    ("bool x", lambda d: _npz(d, **_valid(x=X > 0)), X_DTYPE),
    ("string x", lambda d: _npz(d, **_valid(x=X.astype(str))), X_DTYPE),
    ("bytes x", lambda d: _npz(d, **_valid(x=X.astype("S8"))), X_DTYPE),
    ("structured x", lambda d: _npz(d, **_valid(x=np.zeros((3, 4, 4, 1), dtype=[("a", "<f4")]))), X_DTYPE),
    ("long double x", lambda d: _npz(d, **_valid(x=X.astype(np.longdouble))), X_DTYPE),
    ("datetime x", lambda d: _npz(d, **_valid(x=np.zeros((3, 4, 4, 1), dtype="datetime64[s]"))), X_DTYPE),
    ("timedelta x", lambda d: _npz(d, **_valid(x=np.zeros((3, 4, 4, 1), dtype="timedelta64[s]"))), X_DTYPE),
    ("complex y", lambda d: _npz(d, **_valid(y=Y.astype(np.complex64))), Y_DTYPE),
    ("string y", lambda d: _npz(d, **_valid(y=np.array(["0", "1", "2"]))), Y_DTYPE),
    ("datetime y", lambda d: _npz(d, **_valid(y=np.zeros(3, dtype="datetime64[D]"))), Y_DTYPE),
    ("float classes", lambda d: _npz(d, **_valid(y=ROWS, classes=Y.astype(float))), "classes has shape (3,) and dtype"),
    ("bool classes", lambda d: _npz(d, **_valid(y=ROWS, classes=Y > 0)), "expected 3 integer classes"),
    ("bool labels", lambda d: _npz(d, **_valid(y=np.array([True, False, True]))), "y must hold integer class labels"),
    # -- NaN and infinity ----------------------------------------------------------------------------
    ("nan in x", lambda d: _npz(d, **_valid(x=_nan(X))), "x holds NaN or infinite values"),
    ("inf in x", lambda d: _npz(d, **_valid(x=_with(X, (1, 2, 2, 0), np.inf))), "x holds NaN or infinite values"),
    ("-inf in x", lambda d: _npz(d, **_valid(x=_with(X, (2, 0, 0, 0), -np.inf))), "x holds NaN or infinite"),
    ("float16 inf in x", lambda d: _npz(d, **_valid(x=np.full((3, 4, 4, 1), np.inf, np.float16))),
     "x holds NaN or infinite values"),
    ("nan in rows", lambda d: _npz(d, **_valid(y=_nan(ROWS, 4))), "y holds NaN or infinite values"),
    ("inf in rows", lambda d: _npz(d, **_valid(y=_with(ROWS, (0, 0), np.inf))), "y holds NaN or infinite values"),
    ("all-nan row", lambda d: _npz(d, **_valid(y=_with(ROWS, 1, np.nan))), "y holds NaN or infinite values"),
    ("nan in one-hot row", lambda d: _npz(d, **_valid(y=_with(np.eye(3), (2, 0), np.nan))), "y holds NaN"),
    ("nan label", lambda d: _npz(d, **_valid(y=_nan(Y))), "y holds NaN or infinite values"),
    ("inf label", lambda d: _npz(d, **_valid(y=_with(Y, 0, np.inf))), "y holds NaN or infinite values"),
    # -- shapes --------------------------------------------------------------------------------------
    ("flat x", lambda d: _npz(d, **_valid(x=X.reshape(-1))), X_SHAPE),
    ("no channel axis", lambda d: _npz(d, **_valid(x=X[..., 0])), "x has shape (3, 4, 4)"),
    ("three channels", lambda d: _npz(d, **_valid(x=np.repeat(X, 3, axis=-1))), X_SHAPE),
    ("channels first", lambda d: _npz(d, **_valid(x=X.transpose(0, 3, 1, 2))), "x has shape (3, 1, 4, 4)"),
    ("scalar x", lambda d: _npz(d, **_valid(x=np.float32(1.0))), "x has shape ()"),
    ("flattened images", lambda d: _npz(d, **_valid(x=X.reshape(3, 16))), X_SHAPE),
    ("rows too wide", lambda d: _npz(d, **_valid(y=np.eye(4)[:3])), "y has 4 columns, but the dataset has 3 classes"),
    ("rows too narrow", lambda d: _npz(d, **_valid(y=np.eye(3)[:, :2])), "y has 2 columns"),
    ("a label too many", lambda d: _npz(d, **_valid(y=np.arange(4))), "y has shape (4,); expected 3 integer labels"),
    ("a label too few", lambda d: _npz(d, **_valid(y=np.arange(2))), "y has shape (2,)"),
    ("labels 3-d", lambda d: _npz(d, **_valid(y=ROWS[..., None])), "y has shape (3, 3, 1)"),
    ("scalar y", lambda d: _npz(d, **_valid(y=np.int64(0))), "y has shape ()"),
    ("more rows than images", lambda d: _npz(d, **_valid(y=np.tile(ROWS, (2, 1)))), "y has shape (6, 3)"),
    ("a class too many", lambda d: _npz(d, **_valid(y=ROWS, classes=np.arange(4))), "classes has shape (4,)"),
    ("classes 2-d", lambda d: _npz(d, **_valid(y=ROWS, classes=Y[:, None])), "classes has shape (3, 1)"),
    # -- class counts ---------------------------------------------------------------------------------
    ("label out of range", lambda d: _npz(d, **_valid(y=np.array([0, 1, 3]))), "labels range 0..3, but the dataset"),
    ("negative label", lambda d: _npz(d, **_valid(y=np.array([-1, 1, 2]))), "labels range -1..2"),
    ("unbalanced labels", lambda d: _npz(d, **_valid(y=np.array([0, 0, 1]))), "images per class are [2, 1, 0]"),
    ("fractional labels", lambda d: _npz(d, **_valid(y=np.array([0.0, 1.5, 2.0]))), "y must hold integer class"),
    ("labels beyond 2**53", lambda d: _npz(d, **_valid(y=np.array([0.0, 1e20, 2.0]))), "beyond 2**53"),
    ("uint64 label", lambda d: _npz(d, **_valid(y=np.array([0, 1, 2**64 - 1], dtype=np.uint64))), "labels range"),
    ("rows not whole classes", lambda d: _npz(d, x=np.concatenate([X, X[:1]]), y=np.vstack([ROWS, ROWS[:1]])),
     "4 label rows are not a multiple of the dataset's 3 classes"),
    ("rows with unbalanced classes", lambda d: _npz(d, **_valid(y=ROWS, classes=np.array([0, 0, 2]))), UNBALANCED),
    ("rows with classes out of range", lambda d: _npz(d, **_valid(y=ROWS, classes=np.array([0, 1, 7]))),
     "labels range 0..7"),
    ("classes disagree", lambda d: _npz(d, **_valid(classes=np.array([2, 1, 0]))), "classes disagrees with the"),
    ("more images than the training split", lambda d: _npz(d, x=np.tile(X, (21, 1, 1, 1)), y=np.tile(Y, 21)),
     "x holds 63 images; a distilled set holds 1 to 60 images"),
    # -- empty, missing and extra members ------------------------------------------------------------
    ("no images", lambda d: _npz(d, x=X[:0], y=Y[:0]), "x holds 0 images"),
    ("no members", lambda d: _zip(d, []), "the file holds nothing"),
    ("only x", lambda d: _npz(d, x=X), "needs arrays 'x' (images) and 'y' (labels)"),
    ("only y", lambda d: _npz(d, y=Y), "needs arrays 'x' (images) and 'y' (labels)"),
    ("renamed arrays", lambda d: _npz(d, images=X, labels=Y), "the file holds 'images', 'labels'"),
    ("a whole artifact", lambda d: _npz(d, support_x=X, support_y=ROWS, baseline_x=X), "needs arrays 'x'"),
    ("extra array", lambda d: _npz(d, **_valid(z=Y)), "unknown member 'z.npy'"),
    ("misspelt classes", lambda d: _npz(d, **_valid(y=ROWS, klasses=Y)), "unknown member 'klasses.npy'"),
    ("text member", lambda d: _zip(d, [("x.npy", _npy(X)), ("y.npy", _npy(Y)), ("README.txt", b"hi")]),
     "unknown member 'README.txt'"),
    ("member without .npy", lambda d: _zip(d, [("x", _npy(X)), ("y.npy", _npy(Y))]), "unknown member 'x'"),
    ("x twice", lambda d: _zip(d, [("x.npy", _npy(X)), ("y.npy", _npy(Y)), ("x.npy", _npy(X * 0))]),
     "holds 'x' 2 times"),
    ("member in a folder", lambda d: _zip(d, [("sub/x.npy", _npy(X)), ("y.npy", _npy(Y))]), "needs arrays 'x'"),
    # -- not a zip -----------------------------------------------------------------------------------
    ("text file", lambda d: (d / "set.npz").write_text("x,y\n1,2\n") and d / "set.npz", NOT_READABLE),
    ("empty file", lambda d: (d / "set.npz").write_bytes(b"") or d / "set.npz", NOT_READABLE),
    ("random bytes", lambda d: (d / "set.npz").write_bytes(RNG.bytes(4096)) and d / "set.npz", NOT_READABLE),
    ("an .npy file", lambda d: (d / "set.npz").write_bytes(_npy(X)) and d / "set.npz", NOT_READABLE),
    ("gzipped npz", lambda d: _gzipped(d), NOT_READABLE),
    ("truncated zip", lambda d: _truncated(d), NOT_READABLE),
    ("junk before the zip", lambda d: _prepended(d), "the file is 3.0 MB, but its arrays hold 0.0 MB"),
    ("sparse 4 GB file", lambda d: _sparse(d), NOT_READABLE),
    # -- paths that are not a regular file ------------------------------------------------------------
    ("missing file", lambda d: d / "nope.npz", "--support: no file at"),
    ("a folder", lambda d: d, "is a directory"),
    ("a fifo", _fifo, "is not a regular file"),
    ("dev null", lambda d: Path(os.devnull), "is not a regular file"),
    ("link to dev zero", lambda d: _link(d, "/dev/zero"), "is not a regular file"),
    ("dangling link", lambda d: _link(d, d / "gone.npz"), "--support: no file at"),
    ("link loop", _loop, "--support: cannot open"),
    ("link to a bad set", _bad_link, "x holds NaN or infinite values"),
    ("newline in the name", lambda d: d / "a\nb.npz", "no file at"),
    ("empty path", lambda d: "", "--support is empty"),
    ("blank path", lambda d: " ", "--support: no file at"),
    # -- values not preprocessed like the dataset ------------------------------------------------------
    ("raw pixels", lambda d: _npz(d, **_valid(x=X * 60 + 128)), "do not match the dataset's preprocessed images"),
    ("raw uint8 pixels", lambda d: _npz(d, **_valid(x=(X * 60 + 128).clip(0, 255).astype(np.uint8))),
     "do not match"),
    ("constant images", lambda d: _npz(d, **_valid(x=np.zeros_like(X))), "do not match"),
    ("near float64 max", lambda d: _npz(d, **_valid(x=np.full((3, 4, 4, 1), 1e308))), "do not match"),
]


def _gzipped(folder: Path) -> Path:
    plain = _npz(folder, **_valid())
    plain.write_bytes(gzip.compress(plain.read_bytes()))
    return plain


def _prepended(folder: Path) -> Path:
    path = _npz(folder, **_valid())
    path.write_bytes(bytes(3 * 2**20) + path.read_bytes())  # zipfile still finds the members
    return path


def _sparse(folder: Path) -> Path:
    path = folder / "set.npz"
    with open(path, "wb") as f:
        f.truncate(2**32)
    return path


def _truncated(folder: Path) -> Path:
    path = _npz(folder, **_valid())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


#: (id, extra argv, fragment): option misuse with --support
OPTION_CASES = [
    ("empty name", ("--name", ""), "--support needs --name"),
    ("blank name", ("--name", "  "), "--name must be printable text"),
    ("name with newline", ("--name", "a\nb"), "--name must be printable text"),
    ("with --ipc", ("--name", "n", "--ipc", "1"), "--support scores one file"),
    ("two datasets", ("--name", "n", "--dataset", "digits"), "--support needs --dataset NAME"),
    ("objective key", ("--name", "n", "objective=kip"), "evaluate does not take objective="),
]


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every file's mode, size and mtime; SQLite's shared-memory index and an empty WAL, which a
    read-only reader of a WAL store creates and touches, are not writes of ours."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.name.endswith("-shm") or (p.name.endswith("-wal") and st.st_size == 0):
            continue
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _one_line(result, fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == EXIT_BAD_INPUT, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output and not result.stdout.strip(), result.stdout


def _evaluate(file: Path, store: Path, *extra: str):
    argv = ["evaluate", "--support", str(file), "--dataset", "synthetic", *DATASET, "evaluator=krr",
            "--store", str(store), *extra]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


def test_the_tables_are_large_and_unique():
    ids = [c[0] for c in NPZ_CASES + OPTION_CASES + EXPLAIN_CASES]
    assert len(ids) >= 150 and len(set(ids)) == len(ids)


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # the "x twice" file, on purpose
@pytest.mark.parametrize("index", range(len(NPZ_CASES)), ids=[c[0] for c in NPZ_CASES])
def test_a_hostile_npz_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, index):
    _, build, fragment = NPZ_CASES[index]
    world = tmp_path / "world"
    world.mkdir()
    monkeypatch.chdir(world)
    file = build(world)
    before = _snapshot(world)
    result = _evaluate(file, world / "r.sqlite", "--name", "hostile")
    _one_line(result, fragment)
    assert _snapshot(world) == before  # no store, no artifact, the input as it was


@pytest.mark.parametrize("index", range(len(OPTION_CASES)), ids=[c[0] for c in OPTION_CASES])
def test_support_option_misuse_is_one_line(tmp_path, monkeypatch, index):
    _, extra, fragment = OPTION_CASES[index]
    monkeypatch.chdir(tmp_path)
    file = _npz(tmp_path, **_valid())
    before = _snapshot(tmp_path)
    _one_line(_evaluate(file, tmp_path / "r.sqlite", *extra), fragment)
    assert _snapshot(tmp_path) == before


def test_a_zip_bomb_is_refused_before_its_data_is_decompressed(tmp_path):
    """0.5 MB on disk that declares and holds 512 MB of zeros: refused from its header, memory flat."""
    n = 2**29 // (16 * 8)
    header = _header((n, 4, 4, 1), "<f8")
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as member:
        member.write(header)
        zeros = bytes(1 << 22)
        for _ in range(2**29 // len(zeros)):
            member.write(zeros)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("y.npy", _npy(Y))
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        result = _evaluate(path, tmp_path / "r.sqlite", "--name", "bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _one_line(result, f"x holds {n} images")
    assert peak < 100 * 2**20, peak


ACCEPTED = [
    ("one-hot bool rows", {"x": X, "y": np.eye(3, dtype=bool)}),
    ("big-endian rows and fortran images", {"x": np.asfortranarray(X.astype(">f8")), "y": ROWS.astype(">f4")}),
    ("integer rows with classes", {"x": X, "y": np.eye(3, dtype=np.int8), "classes": Y.astype(np.uint8)}),
    ("float16 images, float integer labels", {"x": X.astype(np.float16), "y": Y.astype(np.float64)}),
]


@pytest.mark.parametrize("index", range(len(ACCEPTED)), ids=[c[0] for c in ACCEPTED])
def test_what_is_accepted_is_scored_with_its_rows(tmp_path, monkeypatch, index):
    _, arrays = ACCEPTED[index]
    monkeypatch.chdir(tmp_path)
    file = _npz(tmp_path, **arrays)
    result = _evaluate(file, tmp_path / "r.sqlite", "--name", "ok", "-q")
    assert result.exit_code == 0, result.output
    reader = open_existing(tmp_path / "r.sqlite")
    (row,) = list(reader.records())
    stored = reader.load_artifact(row)
    reader.close()
    y = np.asarray(arrays["y"])
    expected = (np.eye(3, dtype=np.float32)[y.astype(int)] - np.float32(1 / 3)) if y.ndim == 1 else y
    np.testing.assert_array_equal(stored.support.y, expected)
    np.testing.assert_array_equal(stored.support.x, np.asarray(arrays["x"]))
    assert row.status == "done" and 0.0 <= row.metrics["acc"] <= 1.0


# -- explain -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A world with a stored synthetic run, its evaluation row, and a run on a tiny unofficial MNIST."""
    root = tmp_path_factory.mktemp("explain_world")
    store = root / "r.sqlite"
    make_tiny_mnist(root / "data")
    for args in ([*TINY], ["dataset=mnist", f"dataset.data_dir={root / 'data'}", "dataset.verify=false",
                           "objective.steps=3"]):
        result = CliRunner().invoke(main, ["run", *args, "--store", str(store), "-q"])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["evaluate", "evaluator=krr", "evaluator.kernel=ntk", "--dataset", "synthetic",
                                       "--store", str(store), "-q"])
    assert result.exit_code == 0, result.output
    return root


def _world(base: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the base world, and the run_ids in it by role (synthetic, mnist, evaluation)."""
    world = tmp_path / "world"
    shutil.copytree(base, world, symlinks=True)
    data_dir = str(base / "data")
    with sqlite3.connect(world / "r.sqlite") as conn:  # the mnist run's data_dir now points into the copy
        for run_id, config in conn.execute("SELECT run_id, config FROM runs").fetchall():
            conn.execute("UPDATE runs SET config = ? WHERE run_id = ?",
                         (config.replace(data_dir, str(world / "data")), run_id))
    conn.close()
    reader = open_existing(world / "r.sqlite")
    roles = {}
    for r in reader.records():
        role = "evaluation" if r.parent_run_id else r.config.dataset.name
        roles[role] = r.run_id
    reader.close()
    return world, roles


def _row(world: Path, run_id: str, column: str, change) -> None:
    """Replace one column of a row with ``change(its JSON value)`` (or raw text when it is a str)."""
    with sqlite3.connect(world / "r.sqlite") as conn:
        (value,) = conn.execute(f"SELECT {column} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        new = change(json.loads(value) if column in ("config", "metrics") else value)
        conn.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?",
                     (new if isinstance(new, str) or new is None else json.dumps(new), run_id))
    conn.close()


def _artifact(world: Path, run_id: str) -> Path:
    with sqlite3.connect(world / "r.sqlite") as conn:
        (name,) = conn.execute("SELECT artifact FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    conn.close()
    return world / name


def _rewrite(world: Path, run_id: str, change) -> None:
    """Rewrite the run's artifact with ``change(arrays)``."""
    path = _artifact(world, run_id)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    with open(path, "wb") as out:
        np.savez(out, **change(arrays))


def _set(arrays, **changes):
    out = dict(arrays)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v(out[k]) if callable(v) else v
    return out


def _pickled_support(world, run_id):
    _rewrite(world, run_id, lambda a: _set(a, support_x=lambda x: _objects(x)))


def _dir_artifact(world, run_id):
    path = _artifact(world, run_id)
    path.unlink()
    path.mkdir()


def _change_data(world, _):
    shutil.rmtree(world / "data")
    make_tiny_mnist(world / "data", seed=1)


def _trunc_data(world, _):
    images = world / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-7]))


def _metrics(**changes):
    return lambda m: {**m, **changes}


def _config(kind, **params):
    def change(c):
        c[kind]["params"].update(params)
        return c
    return change


SYN, MNIST, EVALUATION = "synthetic", "mnist", "evaluation"
CANNOT_READ_SET = "cannot read its support set"
NOT_SUPPORT = "do not fit the dataset (images (4, 4, 1), 3 classes)"
REBUILD = "cannot rebuild what evaluated it"
RUNS = "cannot read the runs of"

#: (id, the run (by role) or a literal RUN_ID, damage(world, run_id) or None, extra argv, fragment)
EXPLAIN_CASES = [
    # -- which run -------------------------------------------------------------------------------------
    ("unknown run", "zzzz", None, (), "matches no run"),
    ("empty run id", "", None, (), "RUN_ID is empty"),
    ("blank run id", "  ", None, (), "RUN_ID is empty"),
    ("an evaluation row", EVALUATION, None, (), "has no distilled set to explain"),
    ("an error row", SYN, lambda w, r: _row(w, r, "status", lambda s: "error"), (), "status error"),
    ("a row without artifact", SYN, lambda w, r: _row(w, r, "artifact", lambda a: None), (), "no distilled set"),
    # -- the store ------------------------------------------------------------------------------------
    ("store missing", SYN, lambda w, r: None, ("--store", "{world}/none.sqlite"), "no results store at"),
    ("store is text", SYN, lambda w, r: (w / "t.sqlite").write_text("hello"), ("--store", "{world}/t.sqlite"),
     "is not a distillbench results store"),
    ("store is empty", SYN, lambda w, r: (w / "e.sqlite").write_bytes(b""), ("--store", "{world}/e.sqlite"),
     "is not a distillbench results store"),
    ("store of another program", SYN, lambda w, r: _foreign(w), ("--store", "{world}/f.sqlite"),
     "is not a distillbench results store"),
    ("store is a folder", SYN, None, ("--store", "{world}/data"), "is a directory"),
    # -- the artifact ---------------------------------------------------------------------------------
    ("artifact deleted", SYN, lambda w, r: _artifact(w, r).unlink(), (), CANNOT_READ_SET),
    ("artifact truncated", SYN, lambda w, r: _artifact(w, r).write_bytes(_artifact(w, r).read_bytes()[:100]), (),
     CANNOT_READ_SET),
    ("artifact is text", SYN, lambda w, r: _artifact(w, r).write_text("not a zip"), (), CANNOT_READ_SET),
    ("artifact is a folder", SYN, _dir_artifact, (), CANNOT_READ_SET),
    ("artifact pickled", SYN, _pickled_support, (), CANNOT_READ_SET),
    ("no support_x", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_x=None)), (),
     "holds no support set"),
    ("no support_y", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_y=None)), (),
     "holds no support set"),
    ("support_x of another shape", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_x=lambda x: x[:, :3])),
     (), NOT_SUPPORT),
    ("support_x flat", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_x=lambda x: x.reshape(-1))), (),
     NOT_SUPPORT),
    ("support_y too wide", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_y=np.eye(4)[:3])), (),
     NOT_SUPPORT),
    ("support_y of other length", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_y=np.eye(3)[:2])), (),
     NOT_SUPPORT),
    ("empty support", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_x=lambda x: x[:0],
                                                                      support_y=lambda y: y[:0])), (), NOT_SUPPORT),
    ("nan in support_x", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_x=lambda x: x * np.nan)), (),
     "NaN or infinite values"),
    ("inf in support_y", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_y=lambda y: y + np.inf)), (),
     "NaN or infinite values"),
    ("string support_x", SYN, lambda w, r: _rewrite(w, r, lambda a: _set(a, support_x=lambda x: x.astype(str))), (),
     "non-numeric"),
    # -- the row's JSON -------------------------------------------------------------------------------
    ("config not json", SYN, lambda w, r: _raw(w, r, "config", "{oops"), (), RUNS),
    ("config a list", SYN, lambda w, r: _raw(w, r, "config", "[1, 2]"), (), RUNS),
    ("config without dataset", SYN, lambda w, r: _row(w, r, "config", lambda c: {k: v for k, v in c.items()
                                                                                 if k != "dataset"}), (), RUNS),
    ("config ipc a word", SYN, lambda w, r: _row(w, r, "config", lambda c: {**c, "ipc": "one"}), (), RUNS),
    ("metrics not json", SYN, lambda w, r: _raw(w, r, "metrics", "nope"), (), RUNS),
    ("dataset param of the wrong type", SYN, lambda w, r: _row(w, r, "config", _config("dataset", n_train="many")),
     (), "its dataset synthetic cannot be loaded"),
    ("dataset param unknown", SYN, lambda w, r: _row(w, r, "config", _config("dataset", colour=1)), (),
     "its dataset synthetic cannot be loaded"),
    ("dataset unknown", SYN, lambda w, r: _row(w, r, "config", lambda c: {**c, "dataset": {**c["dataset"],
                                                                                           "name": "imagenet"}}),
     (), "its dataset imagenet cannot be loaded"),
    ("eval kernel unknown", SYN, lambda w, r: _row(w, r, "metrics", _metrics(eval_kernel="rbf9")), (), REBUILD),
    ("eval arch unknown", SYN, lambda w, r: _row(w, r, "metrics", _metrics(eval_arch="resnet999")), (), REBUILD),
    ("eval reg negative", SYN, lambda w, r: _row(w, r, "metrics", _metrics(eval_reg=-1.0)), (), REBUILD),
    ("eval reg a word", SYN, lambda w, r: _row(w, r, "metrics", _metrics(eval_reg="small")), (), "eval_reg"),
    ("loss unknown", SYN, lambda w, r: _row(w, r, "config", lambda c: {**c, "loss": {"name": "hinge", "params": {}}}),
     (), REBUILD),
    # -- the data -------------------------------------------------------------------------------------
    ("fingerprint differs", SYN, lambda w, r: _row(w, r, "data_fingerprint", lambda f: "0" * 32), (),
     "the synthetic data changed since the run"),
    ("data folder gone", MNIST, lambda w, r: shutil.rmtree(w / "data"), (), "its dataset mnist cannot be loaded"),
    ("data files changed", MNIST, _change_data, (), "the mnist data changed since the run"),
    ("data file truncated", MNIST, _trunc_data, (), "its dataset mnist cannot be loaded"),
    ("data file is a folder", MNIST, lambda w, r: _swap_for_folder(w), (), "its dataset mnist cannot be loaded"),
    # -- where the page goes --------------------------------------------------------------------------
    ("output .json", SYN, None, ("-o", "{world}/out.json"), "would both be"),
    ("output .JSON", SYN, None, ("-o", "{world}/OUT.JSON"), "would both be"),
    ("output the store", SYN, None, ("-o", "{world}/r.sqlite"), "would overwrite the results store"),
    ("output the store journal", SYN, None, ("-o", "{world}/r.sqlite-wal"), "would overwrite the results store"),
    ("output in the artifacts", SYN, None, ("-o", "{world}/r.sqlite.artifacts/page.html"), "would overwrite"),
    ("output a folder", SYN, None, ("-o", "{world}/data"), "is a directory"),
    ("json beside it a folder", SYN, lambda w, r: (w / "page.json").mkdir(), ("-o", "{world}/page.html"),
     "is a folder"),
    ("output under a file", SYN, lambda w, r: (w / "file").write_text("x"), ("-o", "{world}/file/page.html"),
     "cannot write"),
    ("tests zero", SYN, None, ("--tests", "0"), "--tests"),
    ("top zero", SYN, None, ("--top", "0"), "--top"),
    ("train zero", SYN, None, ("--train", "0"), "--train"),
]


def _raw(world: Path, run_id: str, column: str, text: str) -> None:
    _row(world, run_id, column, lambda _: text)


def _foreign(world: Path) -> None:
    with sqlite3.connect(world / "f.sqlite") as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.close()


def _swap_for_folder(world: Path) -> None:
    images = world / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    images.unlink()
    images.mkdir()


def _explain(world: Path, run_id: str, *extra: str):
    argv = ["explain", run_id, "--store", str(world / "r.sqlite"), *extra]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


@pytest.mark.parametrize("index", range(len(EXPLAIN_CASES)), ids=[c[0] for c in EXPLAIN_CASES])
def test_explain_on_a_damaged_run_is_one_line_exit_2_and_writes_nothing(base, tmp_path, monkeypatch, index):
    _, role, damage, extra, fragment = EXPLAIN_CASES[index]
    world, roles = _world(base, tmp_path)
    run_id = roles.get(role, role)
    if damage is not None:
        damage(world, run_id)
    monkeypatch.chdir(world)
    before = _snapshot(world)
    store = [] if "--store" in extra else ["--store", str(world / "r.sqlite")]
    argv = ["explain", run_id, *store, *(a.format(world=world) for a in extra)]
    result = CliRunner().invoke(main, argv, env={"COLUMNS": "200"})
    _one_line(result, fragment)
    assert _snapshot(world) == before


def test_explain_writes_two_distinct_files_atomically(base, tmp_path, monkeypatch):
    world, roles = _world(base, tmp_path)
    monkeypatch.chdir(world)
    page = world / "site" / "page.html"
    page.parent.mkdir()
    page.write_text("old page")
    page.chmod(0o640)
    result = _explain(world, roles[SYN], "-o", str(page))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {page} and {page.with_suffix('.json')}"
    assert page.read_text().startswith("<!DOCTYPE html>") and (page.stat().st_mode & 0o777) == 0o640
    assert json.loads(page.with_suffix(".json").read_text())["schema"] == "distillbench.explain"
    assert sorted(p.name for p in page.parent.iterdir()) == ["page.html", "page.json"]  # no temporary file left


def test_explain_on_a_full_disk_keeps_the_old_page_and_leaves_no_temporary_file(base, tmp_path, monkeypatch):
    import resource
    import signal

    world, roles = _world(base, tmp_path)
    monkeypatch.chdir(world)
    page = world / "page.html"
    page.write_text("old page")
    before = _snapshot(world)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:  # room for SQLite's 32 KB index of the store, not for the page: EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, limits[1]))
        result = _explain(world, roles[SYN], "-o", str(page), "--tests", "30", "--top", "8")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    _one_line(result, "cannot write")
    assert page.read_text() == "old page" and _snapshot(world) == before


def test_explain_of_an_external_set_labels_its_images_by_their_stated_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = np.eye(3)[[1, 2, 0]] * 0.1 + ROWS * 0.01  # every row's argmax is another class than its image's
    file = _npz(tmp_path, x=X, y=rows, classes=Y)
    result = _evaluate(file, tmp_path / "r.sqlite", "--name", "solved", "-q")
    assert result.exit_code == 0, result.output
    reader = open_existing(tmp_path / "r.sqlite")
    (row,) = list(reader.records())
    reader.close()
    result = _explain(tmp_path, row.run_id, "-o", str(tmp_path / "e.html"))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert [s["label"] for s in doc["support"]] == [0, 1, 2]
