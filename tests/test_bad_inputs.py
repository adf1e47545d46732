"""The bad-input sweep: every malformed input is one line on stderr, exit code 2, nothing written.

One table row per input: an id, the command line and a fragment the line must contain. Arguments
are formatted with ``{fake}`` (a folder of tiny, non-official MNIST files), ``{trunc}`` (the same
with a truncated image file), ``{empty}`` (an empty folder), ``{foreign}`` (an SQLite file of
another program), ``{text}`` (a text file), ``{dir}`` (a folder), ``{store}`` (this row's own
results file) and ``{world}`` (the folder holding them all). Rows run in-process through click's
``CliRunner``, a few through a real process, and none reaches JAX: every one fails while planning
or before the store is opened. After each row, the files under ``{world}`` are exactly as before.
"""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from distillbench.cli import main
from tests_support_mnist import make_tiny_mnist

from helpers import run_cli

EXIT_BAD_INPUT = 2
RUN = ("run", "--store", "{store}")
TINY = ("dataset=synthetic", "dataset.n_train=30", "dataset.num_classes=3", "dataset.height=4", "dataset.width=4")

#: (id, argv, fragment of the one stderr line)
CASES: list[tuple[str, tuple[str, ...], str]] = [
    # -- malformed key=value ------------------------------------------------------------------
    ("no equals", (*RUN, "kernel"), "malformed argument 'kernel'"),
    ("no key", (*RUN, "=3"), "malformed argument '=3'"),
    ("empty value", (*RUN, "seed="), "seed= has an empty value"),
    ("empty list item", (*RUN, "seed=1,,2"), "empty value"),
    ("trailing comma", (*RUN, "seed=0,"), "empty value"),
    ("only a comma", (*RUN, "seed=,"), "empty value"),
    ("key twice", (*RUN, "seed=1", "seed=2"), "seed is given twice"),
    ("component twice", (*RUN, "kernel=ntk", "kernel=nngp"), "kernel is given twice"),
    ("space in key", (*RUN, "ke rnel=ntk"), "malformed argument"),
    ("tab in key", (*RUN, "se\ted=1"), "malformed argument"),
    ("dot without param", (*RUN, "kernel.=3"), "malformed key 'kernel.'"),
    ("dot without kind", (*RUN, ".arch=fc1"), "'' is not a component kind"),
    ("unknown key", (*RUN, "ipcs=1"), "unknown key 'ipcs' (did you mean 'ipc'?)"),
    ("unknown kind", (*RUN, "kernal.arch=fc1"), "'kernal' is not a component kind (did you mean 'kernel'?)"),
    ("unknown dotted key", (*RUN, "foo.bar=1"), "'foo' is not a component kind"),
    ("upper-case key", (*RUN, "SEED=1"), "unknown key 'SEED'"),
    ("dashed key", (*RUN, "--seed=1"), "No such option"),
    ("run param dotted", (*RUN, "run.seed=1"), "'run' is not a component kind"),
    ("double dot", (*RUN, "kernel..arch=fc1"), "unknown parameter kernel..arch"),
    ("nested param", (*RUN, "kernel.arch.x=fc1"), "unknown parameter kernel.arch.x"),
    ("timeout swept", (*RUN, "timeout=1,2"), "timeout cannot be swept"),
    ("emoji key", (*RUN, "\U0001F600=1"), "unknown key"),
    ("unicode key", (*RUN, "sëed=1"), "unknown key 'sëed'"),
    ("newline in key", (*RUN, "se\ned=1"), "malformed argument 'se\\ned=1'"),
    ("newline in component", (*RUN, "kernel=nt\nk"), "unknown kernel 'nt\\nk'"),
    # -- unknown components and parameters -----------------------------------------------------
    ("unknown kernel", (*RUN, "kernel=ntx"), "unknown kernel 'ntx' (did you mean 'ntk'?)"),
    ("unknown dataset", (*RUN, "dataset=imagenet"), "unknown dataset 'imagenet'"),
    ("unknown loss", (*RUN, "loss=hinge"), "unknown loss 'hinge'"),
    ("unknown objective", (*RUN, "objective=dc"), "unknown objective 'dc'"),
    ("unknown evaluator", (*RUN, "evaluator=svm"), "unknown evaluator 'svm'"),
    ("component case", (*RUN, "kernel=NTK"), "unknown kernel 'NTK'"),
    ("unknown in a sweep", (*RUN, "kernel=ntk,bogus"), "unknown kernel 'bogus'"),
    ("unknown objective in a sweep", (*RUN, "objective=kip,nope"), "unknown objective 'nope'"),
    ("near dataset name", (*RUN, "dataset=mnist-full"), "unknown dataset 'mnist-full'"),
    ("unicode component", (*RUN, "kernel=ñtk"), "unknown kernel 'ñtk'"),
    ("cjk component", (*RUN, "dataset=数字"), "unknown dataset '数字'"),
    ("zero-width space", (*RUN, "kernel=ntk\u200b"), "unknown kernel"),
    ("padded component", (*RUN, "kernel=nt k"), "unknown kernel 'nt k'"),
    ("evaluator kernel unknown", (*RUN, "evaluator.kernel=ntx"), "unknown kernel 'ntx' (did you mean 'ntk'?)"),
    ("unknown objective param", (*RUN, "objective.stepz=3"), "unknown parameter objective.stepz for objective kip"),
    ("param of another kernel", (*RUN, "kernel.width=3"), "unknown parameter kernel.width for kernel ntk"),
    ("misspelt param", (*RUN, "kernel=rf-nngp", "kernel.widht=3"), "(did you mean 'width'?)"),
    ("loss without params", (*RUN, "loss.scale=2"), "unknown parameter loss.scale for loss mse"),
    ("dataset param of another", (*RUN, "dataset.data_dir=/tmp"), "unknown parameter dataset.data_dir for dataset digits"),
    ("evaluator param unknown", (*RUN, "evaluator.steps=3"), "unknown parameter evaluator.steps for evaluator krr"),
    # -- floats beyond float32 (a run would overflow into numpy warnings and NaN) ----------------
    ("w_std beyond float32", (*RUN, "kernel.w_std=1e308"), "kernel.w_std=1e+308 is larger than float32 holds"),
    ("init_log_scale below -float32", (*RUN, "loss=platt", "loss.init_log_scale=-1e39"),
     "loss.init_log_scale=-1e+39 is larger than float32 holds"),
    ("synthetic noise beyond float32", (*RUN, *TINY, "dataset.noise=1e300"), "dataset.noise=1e+300 is larger than float32"),
    ("evaluator reg beyond float32", (*RUN, "evaluator.reg=4e38"), "evaluator.reg=4e+38 is larger than float32 holds"),
    # -- wrong types ---------------------------------------------------------------------------
    ("int as word", (*RUN, "objective.steps=ten"), "objective.steps='ten' is not a valid int"),
    ("int as float", (*RUN, "objective.steps=1.5"), "is not a valid int"),
    ("int in exponent form", (*RUN, "objective.steps=1e3"), "is not a valid int"),
    ("int in hex", (*RUN, "seed=0x10"), "seed='0x10' is not a valid int"),
    ("ipc as word", (*RUN, "ipc=one"), "ipc='one' is not a valid int"),
    ("ipc as float", (*RUN, "ipc=1.0"), "is not a valid int"),
    ("ipc negative float", (*RUN, "ipc=-0.5"), "is not a valid int"),
    ("float as word", (*RUN, "objective.reg=abc"), "objective.reg='abc' is not a valid float"),
    ("float with unit", (*RUN, "objective.lr=0.01s"), "is not a valid float"),
    ("float with comma decimal", (*RUN, "objective.lr=0;01"), "is not a valid float"),
    ("bool as word", (*RUN, "objective.learn_labels=maybe"), "is not a valid bool (true/false)"),
    ("bool as number", (*RUN, "objective.learn_labels=2"), "is not a valid bool"),
    ("bool in another language", (*RUN, "dataset.standardize=ja"), "is not a valid bool"),
    ("timeout as word", (*RUN, "timeout=soon"), "timeout='soon' is not a valid float"),
    ("width as word", (*RUN, "kernel=rf-nngp", "kernel.width=wide"), "kernel.width='wide' is not a valid int"),
    ("int with spaces inside", (*RUN, "objective.steps=1 0"), "is not a valid int"),
    ("int of 5000 digits", (*RUN, "objective.steps=" + "9" * 5000), "is not a valid int"),
    # -- ranges the method, the store or JAX cannot hold ----------------------------------------
    ("ipc zero", (*RUN, "ipc=0"), "ipc=0 is out of range (must be >= 1)"),
    ("ipc negative", (*RUN, "ipc=-1"), "ipc=-1 is out of range"),
    ("ipc above the smallest class", (*RUN, "ipc=140"), "ipc=140 is more than its smallest training class holds"),
    ("ipc huge on digits", (*RUN, "ipc=100000"), "ipc=100000 is more than its smallest training class holds"),
    ("ipc past int64", (*RUN, "ipc=9223372036854775808"), "2**63"),
    ("ipc too big in a sweep", (*RUN, "ipc=1,10,500"), "ipc=500 is more than"),
    ("seed negative", (*RUN, "seed=-1"), "seed=-1 is out of range (must be >= 0)"),
    ("seed past uint32", (*RUN, "seed=4294967296"), "seed=4294967296 is out of range (must be <= 4294967295)"),
    ("seed of 20 digits", (*RUN, "seed=99999999999999999999"), "seed=99999999999999999999 is out of range"),
    ("seed past int64 in a sweep", (*RUN, "seed=0,18446744073709551616"), "is out of range"),
    ("steps negative", (*RUN, "objective.steps=-5"), "objective.steps=-5 is out of range"),
    ("steps past int64", (*RUN, "objective.steps=9223372036854775808"), "2**63"),
    ("reg negative", (*RUN, "objective.reg=-1"), "objective.reg=-1.0 is out of range"),
    ("reg zero", (*RUN, "objective.reg=0"), "objective.reg=0.0 is out of range (must be > 0)"),
    ("lr zero", (*RUN, "objective.lr=0"), "out of range"),
    ("target batch zero", (*RUN, "objective.target_batch=0"), "objective.target_batch=0 is out of range"),
    ("corruption one", (*RUN, "objective.corruption=1"), "objective.corruption=1.0 is out of range (must be <= 0.999)"),
    ("timeout zero", (*RUN, "timeout=0"), "timeout=0.0 is out of range (must be > 0)"),
    ("timeout negative", (*RUN, "timeout=-3"), "out of range"),
    ("test fraction zero", (*RUN, "dataset.test_fraction=0"), "dataset.test_fraction=0.0 is out of range"),
    ("test fraction too big", (*RUN, "dataset.test_fraction=0.95"), "(must be <= 0.9)"),
    ("split seed negative", (*RUN, "dataset.split_seed=-1"), "dataset.split_seed=-1 is out of range"),
    ("split seed past uint32", (*RUN, "dataset.split_seed=4294967296"), "(must be <= 4294967295)"),
    ("rf width zero", (*RUN, "kernel=rf-nngp", "kernel.width=0"), "kernel.width=0 is out of range"),
    ("rf networks zero", (*RUN, "kernel=rf-nngp", "kernel.num_networks=0"), "kernel.num_networks=0 is out of range"),
    ("block size zero", (*RUN, "kernel.block_size=0"), "kernel.block_size=0 is out of range"),
    ("memory budget tiny", (*RUN, "kernel.memory_budget_mb=0.5"), "kernel.memory_budget_mb=0.5 is out of range"),
    ("w_std zero", (*RUN, "kernel.w_std=0"), "kernel.w_std=0.0 is out of range"),
    ("loss rate negative", (*RUN, "loss=platt", "objective.loss_lr=-0.1"), "objective.loss_lr=-0.1 is out of range"),
    ("nn momentum above one", (*RUN, "evaluator=nn", "evaluator.momentum=1.5"), "evaluator.momentum=1.5 is out of range"),
    ("nn seeds zero", (*RUN, "evaluator=nn", "evaluator.seeds=0"), "evaluator.seeds=0 is out of range"),
    ("synthetic n_train below classes", (*RUN, "dataset=synthetic", "dataset.n_train=5"),
     "n_train=5 is below num_classes=10"),
    ("synthetic one class", (*RUN, "dataset=synthetic", "dataset.num_classes=1"), "dataset.num_classes=1 is out of range"),
    ("synthetic zero height", (*RUN, "dataset=synthetic", "dataset.height=0"), "dataset.height=0 is out of range"),
    ("synthetic zero test", (*RUN, "dataset=synthetic", "dataset.n_test=0"), "dataset.n_test=0 is out of range"),
    ("synthetic huge images", (*RUN, "dataset=synthetic", "dataset.height=100000", "dataset.width=100000"),
     "choose smaller sizes"),
    ("synthetic ipc above class", (*RUN, *TINY, "ipc=11"), "ipc=11 is more than its smallest training class holds (10"),
    ("synthetic data seed past uint32", (*RUN, "dataset=synthetic", "dataset.data_seed=4294967296"), "out of range"),
    # -- NaN and infinity ----------------------------------------------------------------------
    ("reg nan", (*RUN, "objective.reg=nan"), "objective.reg=nan must be a finite number"),
    ("reg inf", (*RUN, "objective.reg=inf"), "must be a finite number"),
    ("reg minus inf", (*RUN, "objective.reg=-inf"), "must be a finite number"),
    ("lr overflowing to inf", (*RUN, "objective.lr=1e309"), "must be a finite number"),
    ("lr NaN spelt", (*RUN, "objective.lr=NaN"), "must be a finite number"),
    ("timeout inf", (*RUN, "timeout=inf"), "timeout=inf must be a finite number"),
    ("timeout nan", (*RUN, "timeout=nan"), "must be a finite number"),
    ("noise infinity", (*RUN, "dataset=synthetic", "dataset.noise=infinity"), "must be a finite number"),
    ("zca reg nan", (*RUN, "dataset=mnist-t10k", "dataset.zca_reg=nan"), "must be a finite number"),
    ("platt scale inf", (*RUN, "loss=platt", "loss.init_log_scale=inf"), "must be a finite number"),
    # -- closed choices ------------------------------------------------------------------------
    ("unknown arch", (*RUN, "kernel.arch=resnet"), "kernel.arch=resnet: unknown architecture 'resnet' (did you mean 'resnet18'?)"),
    ("arch case", (*RUN, "kernel.arch=FC1"), "unknown architecture 'FC1'"),
    ("unknown implementation", (*RUN, "kernel.implementation=gpu"), "kernel.implementation='gpu' is not allowed"),
    ("unknown dtype", (*RUN, "objective.dtype=float16"), "objective.dtype='float16' is not allowed"),
    ("unknown init", (*RUN, "objective.init=zeros"), "objective.init='zeros' is not allowed"),
    ("unknown schedule", (*RUN, "objective.lr_schedule=step"), "objective.lr_schedule='step' is not allowed"),
    ("unknown preprocess", (*RUN, "dataset=mnist-t10k", "dataset.preprocess=pca"), "dataset.preprocess='pca' is not allowed"),
    ("unknown nn arch", (*RUN, "evaluator=nn", "evaluator.arch=vgg"), "evaluator.arch=vgg: unknown architecture 'vgg' (did you mean 'vgg11'?)"),
    ("evaluator kernel empty-ish", (*RUN, "evaluator.kernel=none2"), "unknown kernel 'none2'"),
    ("refused combination", (*RUN, "objective=ls", "loss=platt"), "refused"),
    # -- store paths ---------------------------------------------------------------------------
    ("store empty", ("run", "--store", "", *TINY), "--store is empty"),
    ("store blank", ("run", "--store", "   ", *TINY), "--store is empty"),
    ("store repeated", ("run", "--store", "{world}/a.sqlite", "--store", "{world}/b.sqlite", *TINY),
     "--store is given 2 times"),
    ("store repeated same", ("run", "--store", "{store}", "--store", "{store}", *TINY), "--store is given 2 times"),
    ("store repeated with dry run", ("run", "--dry-run", "--store", "{store}", "--store", "{store}"), "given 2 times"),
    ("store is a folder", ("run", "--store", "{dir}", *TINY), "is a directory"),
    ("store of another program", ("run", "--store", "{foreign}", *TINY), "is not a distillbench results store"),
    ("store is a text file", ("run", "--store", "{text}", *TINY), "is not a distillbench results store"),
    ("store under a file", ("run", "--store", "{text}/results.sqlite", *TINY), "cannot open results store"),
    ("store option without value", ("run", "--store"), "Option '--store' requires an argument"),
    ("report store missing", ("report", "--store", "{world}/missing.sqlite"), "no results store at"),
    ("report store of another program", ("report", "--store", "{foreign}"), "is not a distillbench results store"),
    # -- data directories and data files -------------------------------------------------------
    ("data dir missing", (*RUN, "dataset=mnist", "dataset.data_dir={world}/nowhere"), "missing file"),
    ("data dir empty", (*RUN, "dataset=mnist-t10k", "dataset.data_dir={empty}"), "distillbench data download mnist-t10k"),
    ("data dir empty cifar", (*RUN, "dataset=cifar10", "dataset.data_dir={empty}"), "cifar-10-batches-py/data_batch_1"),
    ("data dir empty svhn", (*RUN, "dataset=svhn", "dataset.data_dir={empty}"), "train_32x32.mat"),
    ("data dir empty kmnist", (*RUN, "dataset=kmnist", "dataset.data_dir={empty}"), "missing file"),
    ("data dir empty fashion", (*RUN, "dataset=fashion-mnist", "dataset.data_dir={empty}"), "missing file"),
    ("data dir empty cifar100", (*RUN, "dataset=cifar100", "dataset.data_dir={empty}"), "cifar-100-python/train"),
    ("data dir is a file", (*RUN, "dataset=mnist", "dataset.data_dir={text}"), "missing file"),
    ("data dir empty string", (*RUN, "dataset=mnist", "dataset.data_dir="), "empty value"),
    ("data dir with a newline", (*RUN, "dataset=mnist", "dataset.data_dir={world}/no\nwhere"), "no\\nwhere/mnist"),
    ("data dir with an escape code", (*RUN, "dataset=mnist", "dataset.data_dir={world}/\x1b[31mred"), "\\x1b[31mred"),
    ("not the official files", (*RUN, "dataset=mnist", "dataset.data_dir={fake}"), "is not the official file"),
    ("not the official files t10k", (*RUN, "dataset=mnist-t10k", "dataset.data_dir={fake}"),
     "t10k-images-idx3-ubyte.gz is not the official file"),
    ("truncated file", (*RUN, "dataset=mnist", "dataset.data_dir={trunc}", "dataset.verify=false"),
     "train-images-idx3-ubyte.gz is truncated or corrupt"),
    ("truncated file verified", (*RUN, "dataset=mnist", "dataset.data_dir={trunc}"), "is not the official file"),
    ("ipc above fake class", (*RUN, "dataset=mnist", "dataset.data_dir={fake}", "dataset.verify=false", "ipc=4"),
     "ipc=4 is more than its smallest training class holds (3 images"),
    ("verify not a bool", (*RUN, "dataset=mnist", "dataset.data_dir={fake}", "dataset.verify=perhaps"),
     "dataset.verify='perhaps' is not a valid bool"),
    ("test per class too big", (*RUN, "dataset=mnist-t10k", "dataset.data_dir={fake}", "dataset.verify=false",
                                "dataset.test_per_class=2"), "not more than test_per_class=2"),
    ("test per class zero", (*RUN, "dataset=mnist-t10k", "dataset.test_per_class=0"), "dataset.test_per_class=0 is out"),
    # -- other commands ------------------------------------------------------------------------
    ("unknown command", ("bogus",), "No such command 'bogus'"),
    ("unknown option", ("run", "--bogus"), "No such option '--bogus'"),
    ("flag with a value", ("run", "--dry-run=yes"), "does not take a value"),
    ("list unknown kind", ("list", "kernals"), "unknown kind 'kernals'"),
    ("list unicode kind", ("list", "ядро"), "unknown kind"),
    ("download unknown dataset", ("data", "download", "imagenet"), "no downloadable dataset 'imagenet'"),
    ("download misspelt dataset", ("data", "download", "mnits"), "did you mean 'mnist'?"),
    ("report unknown format", ("report", "--store", "{foreign}", "--format", "docx"), "--format: unknown value 'docx'"),
]

#: Rows also run in a real process (the console script's own exit path, no in-process shortcuts).
IN_A_PROCESS = {"seed of 20 digits", "ipc huge on digits", "synthetic n_train below classes", "truncated file",
                "store of another program"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_tiny_mnist(root / "fake")
    make_tiny_mnist(root / "trunc")
    images = root / "trunc" / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-7]))
    (root / "empty").mkdir()
    (root / "dir").mkdir()
    (root / "text.csv").write_text("name,score\nalice,3\n")
    with sqlite3.connect(root / "foreign.sqlite") as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.close()
    return root


def _places(world: Path, case: int) -> dict[str, str]:
    return {"fake": str(world / "fake"), "trunc": str(world / "trunc"), "empty": str(world / "empty"),
            "foreign": str(world / "foreign.sqlite"), "text": str(world / "text.csv"), "dir": str(world / "dir"),
            "store": str(world / "stores" / str(case) / "results.sqlite"), "world": str(world)}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _check(code: int, stdout: str, stderr: str, fragment: str) -> None:
    lines = stderr.splitlines()
    assert code == EXIT_BAD_INPUT, (code, stdout, stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in stdout + stderr and not stdout.strip(), stdout


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 130
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)
    assert IN_A_PROCESS <= {case_id for case_id, _, _ in CASES}


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case_id for case_id, _, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, index):
    _, argv, fragment = CASES[index]
    places = _places(world, index)
    before = _snapshot(world)
    result = CliRunner().invoke(main, [arg.format(**places) for arg in argv],
                                env={"DISTILLBENCH_STORE": places["store"], "COLUMNS": "200"})
    _check(result.exit_code, result.stdout, result.stderr, fragment)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _snapshot(world) == before  # no store, no artifact folder, no touched file


@pytest.mark.parametrize("case_id", sorted(IN_A_PROCESS))
def test_bad_input_in_a_real_process(world, tmp_path, case_id):
    index = next(i for i, (name, _, _) in enumerate(CASES) if name == case_id)
    _, argv, fragment = CASES[index]
    places = _places(world, index)
    before = _snapshot(world)
    result = run_cli(*[arg.format(**places) for arg in argv], cwd=tmp_path, timeout=120)
    _check(result.returncode, result.stdout, result.stderr, fragment)
    assert _snapshot(world) == before and not any(tmp_path.iterdir())
