"""End-to-end check of distillbench's methods against their public reference implementations.

Runs a reference implementation from a copy the user gives (and, for RFAD, a Python environment for
it; never a dependency of distillbench, never in CI) and distillbench, on the same split, from the
same start, and scores every set with the same evaluator through ``distillbench evaluate --support``
(so the random baseline is one for every column); prints one table.

``--method rfad`` (issue 33): ``yolky/RFAD`` (``distillation.distill_dataset``), run from a copy of
its checkout in which ``cuda`` is replaced by ``cpu`` and nothing else is changed, in
``--reference-python`` (PyTorch, torch_optimizer, scipy, matplotlib; torchvision optional).
Setting: ``mnist-t10k`` (8000/2000, split seed 0, standardized as distillbench does, handed to the
reference as NCHW tensors), 1 ipc, 4 random convnet3 networks of 32 channels (reference
``ConvNet_wide(net_width=16, k=2)``), 1280 uniform targets per step, AdaBelief lr 1e-3, Platt,
``--steps`` steps (400), no model selection (the support after the last step: the reference's
``<steps>.npz``). Score: ``evaluator=krr evaluator.kernel=nngp evaluator.arch=convnet3
evaluator.reg=0.005``.

``--method kip``: the KIP notebook (``kip/KIP.ipynb`` of google-research/google-research): the
harness executes the notebook's own code cells that define ``get_kernel_fn``, ``KERNEL_FN``,
``class_balanced_sample``, ``make_loss_acc_fn`` and ``get_update_functions`` (cells with shell or
magic lines, data loading and plotting are not run) with the notebook's parameters set to the
setting, then runs ``train``'s loop from distillbench's start: ``update_fn(i, ...)`` for i = 1..steps
with ``class_balanced_sample(TARGET_BATCH_SIZE, ...)`` targets drawn by numpy (seeded with the run
seed, as ``train`` seeds it). Setting: ``mnist-t10k``, fc1 NTK (NTK parameterisation, W_std sqrt 2,
b_std 0.1), 10 ipc, 5000 class-balanced targets, Adam lr 0.04, reg 1e-6, float64, ``--steps`` (300,
the notebook's ``train(300)``). Score: ``evaluator=krr evaluator.kernel=ntk evaluator.arch=fc1
evaluator.reg=1e-6`` (the notebook's own test accuracy).

``--method frepo`` (issue 29, issue 33 item 3): ``yongchao97/FRePo``'s own distillation loop
(``frepo_reference_loop.py``, in its own process: the reference's functions imported from
``--reference``, the loop of ``lib/datadistillation/frepo.py:proto_train_and_evaluate``
transcribed around them, arrays fed directly instead of its tf.data pipeline; what differs is in
that module's docstring). One CPU-sized setting both sides run (reference source in brackets):
1 ipc; the online network ``conv``, depth 3, batch norm, ``feat_fc`` features (README's
``--arch=conv --depth=3 --normalization=batch``), ``--width`` 32 (the reference: 128); pool of 10
networks reset after 100 online updates, staggered ages (``script/distill.py:main``
``num_nn_state=10, max_online_updates=100``; ``proto_train_and_evaluate``); online Adam 3e-4 on the
whole support (``get_config``: ``online.optimizer``, ``online.learning_rate``; ``get_sample_proto``
with ``kernel.eval_batch_size`` 1000); 1024 targets a step (``kernel.batch_size``); the support's
LAMB, cosine-decayed over the steps to a tenth (``create_proto_state``, ``proto_train_and_evaluate``)
at lr 1e-2 and 300 steps, distillbench's CPU defaults of ``objective=frepo`` (the reference: 3e-4
over 500,000 steps); ridge 1e-6 · tr(K)/n (``nfr``); no flips (MNIST in ``main``); learned labels
with the label margin (``main``'s ``learn_label=True``, ``proto_train_step``), started as
``init_proto(scale_y=True)`` makes them from the starting images' classes; ``--fixed-labels``:
``learn_label=False`` and ``objective.learn_labels=false``. Score: the RFAD row's evaluator, each set
with the labels it learned.

``--method rcig`` (issue 31, issue 33 item 3): ``yolky/RCIG``'s own ``algorithms.run_rcig``, tuning
included, called as its ``distill_dataset.py:main`` calls it with ``configs_final/depth_3_no_flip.txt``
(``rcig_reference_loop.py``, in its own process and environment: ``--reference-python``, jax with
flax, optax, ml_collections, absl-py, einops; what differs is in that module's docstring). One
CPU-sized setting both sides run: the embedded ``digits`` (8x8, 1438 training images), 1 ipc, a pool
of 30 depth-3 ``Conv`` networks (softplus 60, no normalization) of ``--width`` 32 (the reference:
128), pool Adam 5e-5 reset after 100 updates and trained 1..15 steps per step, 20 inner and 20
Hessian-inverse steps, l2 = 5e-4 x support size, 1024 targets, learned labels, no flips (the
config's values); AdaBelief at lr 0.1 for 50 steps, distillbench's digits defaults of
``objective=rcig`` (the reference: 3e-3 over 10,000 steps). The set each side keeps is its moving
average (the reference's ``ema_average``). Score: ``distillbench run objective=rcig``'s default
evaluator (``krr``, fc1 NNGP, reg 1e-6), each set with the labels it learned.

Start: the reference's initial support = the distillbench run's ``baseline_x`` (its ``init=real``).

Usage:
  python benchmarks/cross_reference.py --method rfad --seeds 0,1,2 [--learn-labels] [--steps 400]
      [--transform both|on|off] [--reference PATH/TO/RFAD --reference-python PATH/TO/venv/bin/python]
  python benchmarks/cross_reference.py --method kip --seeds 0,1,2 [--learn-labels]
      [--reference PATH/TO/KIP.ipynb]
  python benchmarks/cross_reference.py --method frepo --seeds 0,1,2 [--fixed-labels] [--steps 300] [--width 32]
      [--reference PATH/TO/FRePo]       (git clone https://github.com/yongchao97/FRePo PATH/TO/FRePo)
  python benchmarks/cross_reference.py --method rcig --seeds 0,1,2 [--fixed-labels] [--steps 50] [--width 32]
      [--reference PATH/TO/RCIG --reference-python PATH/TO/venv/bin/python]   (github.com/yolky/RCIG)
Without ``--reference`` only the distillbench columns are run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

DB = [str(Path(sys.executable).parent / "distillbench")]  # the console script of this environment


class Method(NamedTuple):
    setting: list[str]  # distillbench run overrides (seed, steps, labels, transform added per run)
    evaluator: list[str]  # the one evaluator every column is scored with
    steps: int  # default steps
    transform: bool  # whether the method has the learned support transform to switch
    width: str | None = None  # the override --width sets (both sides' networks), if the method has one
    learn_labels: bool = False  # default labels: learned (--fixed-labels) or fixed (--learn-labels)
    dataset: str = "mnist-t10k"  # the dataset both sides distill (the setting's dataset=)


METHODS = {
    "rfad": Method(["dataset=mnist-t10k", "ipc=1", "objective=rfad", "kernel=rf-nngp", "loss=platt",
                    "kernel.arch=convnet3", "kernel.num_networks=4", "kernel.width=32",
                    "objective.target_batch=1280", "objective.lr=1e-3"],
                   ["evaluator=krr", "evaluator.kernel=nngp", "evaluator.arch=convnet3", "evaluator.reg=0.005"],
                   400, True),
    "kip": Method(["dataset=mnist-t10k", "ipc=10", "objective=kip", "kernel=ntk", "loss=mse", "kernel.arch=fc1",
                   "objective.target_batch=5000", "objective.lr=0.04", "objective.reg=1e-6",
                   "objective.dtype=float64"],
                  ["evaluator=krr", "evaluator.kernel=ntk", "evaluator.arch=fc1", "evaluator.reg=1e-6"],
                  300, False),
    "frepo": Method(["dataset=mnist-t10k", "ipc=1", "objective=frepo", "kernel=frepo-pool", "loss=mse",
                     "kernel.arch=frepo-conv", "kernel.normalization=batch", "kernel.num_networks=10",
                     "kernel.max_updates=100", "kernel.lr=3e-4", "kernel.batch=1000", "objective.target_batch=1024",
                     "objective.lr=1e-2", "objective.reg=1e-6", "objective.flip=false", "objective.dtype=float32"],
                    ["evaluator=krr", "evaluator.kernel=nngp", "evaluator.arch=convnet3", "evaluator.reg=0.005"],
                    300, False, width="kernel.width", learn_labels=True),
    "rcig": Method(["dataset=digits", "ipc=1", "objective=rcig", "kernel=rcig-pool", "loss=platt",
                    "kernel.arch=frepo-conv", "kernel.num_networks=30", "kernel.max_updates=100", "kernel.max_steps=16",
                    "kernel.lr=5e-5", "kernel.softplus_temp=60", "objective.target_batch=1024", "objective.lr=0.1",
                    "objective.inner_steps=20", "objective.hinv_steps=20", "objective.l2_rate=5e-4",
                    "objective.flip=false"],
                   ["evaluator=krr", "evaluator.kernel=nngp", "evaluator.arch=fc1", "evaluator.reg=1e-6"],
                   50, False, width="kernel.width", learn_labels=True, dataset="digits"),
}


def distill_ours(args, store: Path, seed: int, transform: bool):
    """One distillbench run; returns its record and its artifact's arrays."""
    from distillbench.store.database import open_existing, read_artifact

    method = METHODS[args.method]
    flags = [f"seed={seed}", f"objective.steps={args.steps}", f"objective.learn_labels={str(args.learn_labels).lower()}"]
    if method.transform:
        flags.append(f"objective.transform={str(transform).lower()}")
    if method.width:
        flags.append(f"{method.width}={args.width}")
    subprocess.run([*DB, "run", "--store", str(store), *method.setting, *flags, *method.evaluator], check=True)
    objective = next(o.split("=")[1] for o in method.setting if o.startswith("objective="))
    with open_existing(store) as db:
        for record in db.records():
            params = record.config.objective.as_dict()
            if (record.config.objective.name == objective and record.config.seed == seed
                    and record.status == "done" and params["steps"] == args.steps
                    and params.get("transform", False) == transform and params["learn_labels"] == args.learn_labels
                    and (not method.width or record.config.flat()[method.width] == args.width)
                    and record.parent_run_id is None):
                return record, read_artifact(store, record).to_arrays()
    raise RuntimeError(f"no done run for seed {seed} in {store}")


def save_split(work: Path, nchw: bool, dataset: str = "mnist-t10k") -> Path:
    """The split distillbench distills (standardized) as an .npz the reference's driver loads."""
    import numpy as np

    from distillbench.registry import load_registry

    registry = load_registry()
    component = registry.get("dataset", dataset)
    split = registry.instantiate("dataset", dataset, component.default_params())
    path = work / (f"split_{dataset}_nchw.npz" if nchw else f"split_{dataset}.npz")
    x = split.x_train.transpose(0, 3, 1, 2) if nchw else split.x_train
    np.savez(path, x_train=x, y_train=split.y_train.astype(np.int64))
    return path


RFAD_DRIVER = r'''
import sys, types, numpy as np, torch
from functools import partial
sys.path.insert(0, sys.argv[1])
try:
    import torchvision
except Exception:  # PyPI's torchvision is built for its CUDA torch; only these names are imported, never used here
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
        del sys.modules[name]
    tv = types.ModuleType("torchvision")
    tv.datasets, tv.transforms = types.ModuleType("torchvision.datasets"), types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets, "torchvision.transforms": tv.transforms})
import distillation, models
split, start, out, seed, steps, learn = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] == "1"
d = np.load(split)
x, y = torch.tensor(d["x_train"]), torch.tensor(d["y_train"])
x_init = torch.tensor(np.load(start)["x"])
model_class = partial(models.ConvNet_wide, 1, net_norm="none", im_size=(28, 28), k=2, net_width=16, chopped_head=True)
np.random.seed(seed); torch.manual_seed(seed)
valid = np.arange(10)  # no model selection: the support after the last step is the one scored
distillation.distill_dataset(x, y, model_class, 1e-3, 4, 1, iters=steps + 1, platt=True, schedule=[(0, 4, 1)],
                             save_location=out, samples_per_class=1, n_classes=10, learn_labels=learn,
                             X_valid=x[valid], y_valid=y[valid], n_channels=1, im_size=28, X_init=x_init,
                             jit=5e-3, seed=seed)
'''



KIP_DRIVER = r"""
import functools, json, sys
from typing import Callable, Optional
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
from jax import numpy as jnp
from jax import scipy as sp
from jax.example_libraries import optimizers
from distillbench.compat.neural_tangents import import_neural_tangents  # neural-tangents without TensorFlow
nt = import_neural_tangents()
stax = nt.stax

notebook, split, start, out, settings = sys.argv[1:6]
settings = json.loads(settings)
ARCHITECTURE, DEPTH, WIDTH, PARAMETERIZATION = "FC", 1, 1024, "ntk"  # the notebook's FC1 defaults
LEARNING_RATE, SUPPORT_SIZE = settings["lr"], settings["support_size"]
TARGET_BATCH_SIZE, LEARN_LABELS = settings["target_batch"], settings["learn_labels"]
wanted = ("def get_kernel_fn", "KERNEL_FN =", "def class_balanced_sample", "def get_update_functions")
for cell in json.load(open(notebook))["cells"]:
    code = "".join(cell["source"])
    if cell["cell_type"] == "code" and any(w in code for w in wanted):
        exec(compile(code, f"{notebook}:{cell['metadata'].get('id')}", "exec"), globals())
d = np.load(split)
X_TRAIN, LABELS_TRAIN = d["x_train"].astype(np.float64), d["y_train"]
Y_TRAIN = np.eye(10)[LABELS_TRAIN] - 1.0 / 10  # the notebook's one_hot(..., center=True), float64 here
s = np.load(start)
params_init = {"x": s["x"].astype(np.float64), "y": np.eye(10)[s["labels"]] - 1.0 / 10}
opt_state, get_params, update_fn = get_update_functions(params_init, KERNEL_FN, LEARNING_RATE)
params = get_params(opt_state)
np.random.seed(settings["seed"])  # train() seeds numpy's global state through its first sample
for i in range(1, settings["steps"] + 1):
    _, _, x_target_batch, y_target_batch = class_balanced_sample(TARGET_BATCH_SIZE, LABELS_TRAIN, X_TRAIN, Y_TRAIN)
    opt_state, aux = update_fn(i, opt_state, params, x_target_batch, y_target_batch)
    params = get_params(opt_state)
    if i % 100 == 0:
        print(f"reference step {i}: train loss {float(aux[0]):.6g} acc {float(aux[1]):.4f}", flush=True)
np.savez(out, x=np.asarray(params["x"]), y=np.asarray(params["y"]))
"""


def reference_rfad(args, work: Path, seed: int, arrays) -> Path:
    """The RFAD reference's support after ``steps`` steps from ``baseline_x``, as an .npz (NHWC)."""
    import numpy as np

    code = work / "RFAD-cpu"
    if not code.exists():
        shutil.copytree(args.reference, code, ignore=shutil.ignore_patterns(".git"))
        for path in code.glob("*.py"):
            path.write_text(re.sub(r"cuda:0|cuda", "cpu", path.read_text()))
    split = save_split(work, nchw=True)
    labels = "learned" if args.learn_labels else "fixed"
    start, out = work / f"rfad_start_{seed}.npz", work / f"rfad_reference_{seed}_{labels}"
    np.savez(start, x=np.asarray(arrays["baseline_x"]).transpose(0, 3, 1, 2))
    (work / "rfad_driver.py").write_text(RFAD_DRIVER)
    subprocess.run([args.reference_python, str(work / "rfad_driver.py"), str(code), str(split), str(start),
                    str(out), str(seed), str(args.steps), "1" if args.learn_labels else "0"], check=True, cwd=code)
    saved = np.load(out / f"{args.steps}.npz")
    support = work / f"rfad_reference_{seed}_{labels}_support.npz"
    np.savez(support, x=saved["images"].transpose(0, 2, 3, 1), y=saved["labels"])
    return support


def baseline_labels(arrays):
    """The integer classes of the run's starting images (``baseline_y``: one-hot rows or classes)."""
    import numpy as np

    y = np.asarray(arrays["baseline_y"])
    return y.argmax(-1) if y.ndim == 2 else y


def reference_kip(args, work: Path, seed: int, arrays) -> Path:
    """The KIP notebook's support after ``steps`` steps from ``baseline_x``, as an .npz."""
    import numpy as np

    split = save_split(work, nchw=False)
    labels = "learned" if args.learn_labels else "fixed"
    start, out = work / f"kip_start_{seed}.npz", work / f"kip_reference_{seed}_{labels}.npz"
    np.savez(start, x=arrays["baseline_x"], labels=baseline_labels(arrays))
    (work / "kip_driver.py").write_text(KIP_DRIVER)
    settings = dict(lr=0.04, support_size=len(arrays["baseline_x"]), target_batch=5000,
                    learn_labels=args.learn_labels, seed=seed, steps=args.steps)
    python = args.reference_python or sys.executable
    subprocess.run([python, str(work / "kip_driver.py"), str(args.reference), str(split), str(start), str(out),
                    json.dumps(settings)], check=True)
    return out


def frepo_settings(args, seed: int) -> dict:
    """The reference loop's settings, read from the distillbench run's own overrides (one setting)."""
    given = dict(o.split("=", 1) for o in METHODS["frepo"].setting)
    if float(given["objective.reg"]) != 1e-6 or given["objective.flip"] != "false":
        raise SystemExit("the FRePo reference's nfr takes reg 1e-6 and MNIST no flips: keep them in the setting")
    return dict(seed=seed, steps=args.steps, width=args.width, learn_labels=args.learn_labels, num_classes=10,
                normalization=given["kernel.normalization"], pool=int(given["kernel.num_networks"]),
                max_updates=int(given["kernel.max_updates"]), online_lr=float(given["kernel.lr"]),
                sample_batch=int(given["kernel.batch"]), targets=int(given["objective.target_batch"]),
                lr=float(given["objective.lr"]))


def reference_frepo(args, work: Path, seed: int, arrays) -> Path:
    """The FRePo reference's support and labels after ``steps`` steps of its own loop from
    ``baseline_x`` (``frepo_reference_loop.py``, in its own process), as an .npz."""
    import numpy as np

    settings = frepo_settings(args, seed)
    split = save_split(work, nchw=False)
    labels = "learned" if args.learn_labels else "fixed"
    start, out = work / f"frepo_start_{seed}.npz", work / f"frepo_reference_{seed}_{labels}_w{args.width}.npz"
    np.savez(start, x=arrays["baseline_x"], labels=baseline_labels(arrays))
    loop = Path(__file__).with_name("frepo_reference_loop.py")
    python = args.reference_python or sys.executable
    subprocess.run([python, str(loop), str(args.reference), str(split), str(start), str(out), json.dumps(settings)],
                   check=True)
    return out


def rcig_settings(args, seed: int) -> dict:
    """The reference's config overrides, read from the distillbench run's own overrides (one setting)."""
    given = dict(o.split("=", 1) for o in METHODS["rcig"].setting)
    fixed = {"kernel.max_updates": "100", "kernel.max_steps": "16", "kernel.lr": "5e-5", "kernel.softplus_temp": "60",
             "objective.flip": "false"}
    if any(given[k] != v for k, v in fixed.items()):
        raise SystemExit(f"the RCIG reference's config (depth_3_no_flip) fixes {fixed}: keep them in the setting")
    return dict(random_seed=seed, max_steps=args.steps, width=args.width, learn_labels=args.learn_labels,
                num_classes=10, pool_model_count=int(given["kernel.num_networks"]),
                target_batch=int(given["objective.target_batch"]), proto_learning_rate=float(given["objective.lr"]),
                n_inner_steps=int(given["objective.inner_steps"]), n_hinv_steps=int(given["objective.hinv_steps"]),
                l2_rate=float(given["objective.l2_rate"]))


def reference_rcig(args, work: Path, seed: int, arrays) -> Path:
    """The RCIG reference's kept support (its moving average) and labels after ``steps`` steps of its
    own ``run_rcig`` from ``baseline_x`` (``rcig_reference_loop.py``, in its own process), as an .npz."""
    import numpy as np

    settings = rcig_settings(args, seed)
    split = save_split(work, nchw=False, dataset=METHODS["rcig"].dataset)
    labels = "learned" if args.learn_labels else "fixed"
    start, out = work / f"rcig_start_{seed}.npz", work / f"rcig_reference_{seed}_{labels}_w{args.width}.npz"
    np.savez(start, x=arrays["baseline_x"], labels=baseline_labels(arrays))
    loop = Path(__file__).with_name("rcig_reference_loop.py")
    subprocess.run([args.reference_python or sys.executable, str(loop), str(args.reference), str(split), str(start),
                    str(out), json.dumps(settings)], check=True)
    return out


REFERENCES = {"rfad": reference_rfad, "kip": reference_kip, "frepo": reference_frepo, "rcig": reference_rcig}


def score(args, store: Path, support: Path, seed: int, name: str) -> float:
    """``distillbench evaluate --support`` with the method's evaluator; the accuracy it stored (%)."""
    from distillbench.store.database import open_existing

    subprocess.run([*DB, "evaluate", "--store", str(store), "--support", str(support), "--dataset",
                    METHODS[args.method].dataset,
                    "--name", name, f"seed={seed}", *METHODS[args.method].evaluator, "-q"], check=True)
    with open_existing(store) as db:
        found = [r for r in db.records() if r.config.seed == seed and r.metrics.acc is not None
                 and r.config.objective.as_dict().get("name") == name]
    return 100 * found[-1].metrics.acc


def one_seed(args, work: Path, store: Path, seed: int) -> dict:
    """The row of one seed: random baseline, distillbench (with/without T for RFAD), the reference."""
    import numpy as np

    row, labels = {}, "learned" if args.learn_labels else "fixed"
    switch = {"both": (True, False), "on": (True,), "off": (False,)}[args.transform]
    for transform in switch if METHODS[args.method].transform else (False,):
        record, arrays = distill_ours(args, store, seed, transform)
        tag = f"{args.method}-{seed}-{labels}" + (f"-T{'on' if transform else 'off'}" if METHODS[args.method].transform else "")
        support = work / f"distillbench_{tag}.npz"
        np.savez(support, x=arrays["support_x"], y=arrays["support_y"])
        row["random"] = 100 * record.metrics.random_acc
        column = f"distillbench T={'on' if transform else 'off'}" if METHODS[args.method].transform else "distillbench"
        row[column] = score(args, store, support, seed, f"distillbench-{tag}")
    if args.reference:
        support = REFERENCES[args.method](args, work, seed, arrays)
        row["reference"] = score(args, store, support, seed, f"reference-{args.method}-{seed}-{labels}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(METHODS), default="rfad")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, help="distillation steps (rfad 400, kip 300, frepo 300, rcig 50)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--learn-labels", action="store_true", default=None, help="learned labels (RFAD's "
                        "--learn_labels, the notebook's LEARN_LABELS; frepo's default)")
    labels.add_argument("--fixed-labels", dest="learn_labels", action="store_false", default=None,
                        help="fixed labels (rfad's and kip's default; frepo: the reference's learn_label=False)")
    parser.add_argument("--width", type=int, help="frepo, rcig: the networks' width, both sides (32)")
    parser.add_argument("--transform", choices=("both", "on", "off"), default="both",
                        help="rfad: distillbench with the learned support transform, without, or both")
    parser.add_argument("--reference", type=Path, help="rfad: a checkout of github.com/yolky/RFAD; "
                        "kip: a copy of kip/KIP.ipynb; frepo: a checkout of github.com/yongchao97/FRePo; "
                        "rcig: a checkout of github.com/yolky/RCIG")
    parser.add_argument("--reference-python", help="the reference's Python (rfad: torch, torch_optimizer, scipy, "
                        "matplotlib; kip: jax and neural-tangents; frepo: one that also imports distillbench; "
                        "rcig: jax, flax, optax, ml_collections, absl-py, einops; default this one)")
    parser.add_argument("--work", type=Path, default=Path("cross_reference_work"))
    args = parser.parse_args()
    method = METHODS[args.method]
    args.steps = args.steps or method.steps
    if args.learn_labels is None:
        args.learn_labels = method.learn_labels
    if args.width is not None and not method.width:
        parser.error(f"--width is for frepo and rcig; {args.method}'s networks are fixed by its setting")
    args.width = args.width or 32
    if args.method in ("rfad", "rcig") and bool(args.reference) != bool(args.reference_python):
        parser.error(f"--reference and --reference-python go together for {args.method}")
    if args.method == "rfad" and args.steps % 40:
        parser.error("--steps must be a multiple of 40: the RFAD reference saves its support every 40 steps")
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "results.sqlite"
    rows = {int(s): one_seed(args, args.work, store, int(s)) for s in args.seeds.split(",")}
    columns = list(next(iter(rows.values())))
    evaluator = " ".join(METHODS[args.method].evaluator)
    print(f"\n{args.method}, mnist-t10k, {'learned' if args.learn_labels else 'fixed'} labels, {args.steps} steps, "
          f"scored by {evaluator}, accuracy %")
    print("| seed | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for seed, row in rows.items():
        print(f"| {seed} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    print("| mean | " + " | ".join(f"{sum(r[c] for r in rows.values()) / len(rows):.2f}" for c in columns) + " |")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
