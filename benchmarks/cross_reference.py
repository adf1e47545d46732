"""End-to-end check of distillbench's RFAD against the public reference implementation (issue 33).

Runs ``yolky/RFAD`` (``distillation.distill_dataset``) from a checkout and a Python environment the
user gives (PyTorch, torch_optimizer, scipy, matplotlib, torchvision optional; never a dependency of distillbench,
never in CI), and distillbench, on the same split, from the same start, and scores every set with
the same evaluator through ``distillbench evaluate --support``; prints one table with the random
baseline.

Setting (issue 33): ``mnist-t10k`` (8000/2000, split seed 0, standardized as distillbench does,
handed to the reference as NCHW tensors), 1 ipc, 4 random convnet3 networks of 32 channels
(reference ``ConvNet_wide(net_width=16, k=2)``), 1280 uniform targets per step, AdaBelief lr 1e-3,
Platt, ``--steps`` steps, no model selection (the support after the last step: the reference's
``<steps>.npz``). Start: the reference's ``X_init`` = the distillbench run's ``baseline_x`` (its
``init=real``). Score: ``evaluator=krr evaluator.kernel=nngp evaluator.arch=convnet3
evaluator.reg=0.005 seed=S`` (the same random baseline for every column).

The reference is run from a copy of the checkout in which ``cuda`` is replaced by ``cpu`` and
nothing else is changed.

Usage:
  python benchmarks/cross_reference.py --seeds 0,1,2 [--learn-labels] [--steps 400]
      [--reference PATH/TO/RFAD --reference-python PATH/TO/venv/bin/python] [--work DIR]
Without ``--reference`` only the distillbench columns (with and without the transform) are run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DB = [str(Path(sys.executable).parent / "distillbench")]  # the console script of this environment
SETTING = ["dataset=mnist-t10k", "ipc=1", "objective=rfad", "kernel=rf-nngp", "loss=platt",
           "kernel.arch=convnet3", "kernel.num_networks=4", "kernel.width=32", "objective.target_batch=1280",
           "objective.lr=1e-3"]
EVALUATOR = ["evaluator=krr", "evaluator.kernel=nngp", "evaluator.arch=convnet3", "evaluator.reg=0.005"]


def distill_ours(store: Path, seed: int, steps: int, transform: bool, learn_labels: bool):
    """One distillbench run; returns its record (acc, random_acc, the artifact's x, y, baseline_x)."""
    from distillbench.store.database import open_existing, read_artifact

    flags = [f"seed={seed}", f"objective.steps={steps}", f"objective.transform={str(transform).lower()}",
             f"objective.learn_labels={str(learn_labels).lower()}"]
    subprocess.run([*DB, "run", "--store", str(store), *SETTING, *flags, *EVALUATOR], check=True)
    with open_existing(store) as db:
        for record in db.records():
            params = record.config.objective.as_dict()
            if (record.config.objective.name == "rfad" and record.config.seed == seed and record.status == "done"
                    and params["steps"] == steps and params["transform"] == transform
                    and params["learn_labels"] == learn_labels and record.parent_run_id is None):
                return record, read_artifact(store, record)
    raise RuntimeError(f"no done run for seed {seed} in {store}")


def split_for_reference(work: Path) -> Path:
    """The split distillbench distills (standardized), as NCHW arrays the reference's driver loads."""
    from distillbench.registry import load_registry

    registry = load_registry()
    component = registry.get("dataset", "mnist-t10k")
    split = registry.instantiate("dataset", "mnist-t10k", component.default_params())
    path = work / "split.npz"
    import numpy as np

    np.savez(path, x_train=split.x_train.transpose(0, 3, 1, 2), y_train=split.y_train.astype(np.int64))
    return path


DRIVER = r'''
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


def distill_reference(args, work: Path, split: Path, seed: int, baseline_x) -> Path:
    """The reference's support after ``steps`` steps from ``baseline_x``, as a distillbench .npz (NHWC)."""
    import numpy as np

    code = work / "RFAD-cpu"
    if not code.exists():
        shutil.copytree(args.reference, code, ignore=shutil.ignore_patterns(".git"))
        for path in code.glob("*.py"):
            path.write_text(re.sub(r"cuda:0|cuda", "cpu", path.read_text()))
    start, out = work / f"start_{seed}.npz", work / f"reference_{seed}"
    np.savez(start, x=np.asarray(baseline_x).transpose(0, 3, 1, 2))
    (work / "driver.py").write_text(DRIVER)
    subprocess.run([args.reference_python, str(work / "driver.py"), str(code), str(split), str(start), str(out),
                    str(seed), str(args.steps), "1" if args.learn_labels else "0"], check=True, cwd=code)
    saved = np.load(out / f"{args.steps}.npz")
    support = work / f"reference_{seed}_support.npz"
    np.savez(support, x=saved["images"].transpose(0, 2, 3, 1), y=saved["labels"])
    return support


def score(store: Path, support: Path, seed: int, name: str) -> float:
    """``distillbench evaluate --support`` with the one evaluator; the accuracy it stored (%)."""
    from distillbench.store.database import open_existing

    subprocess.run([*DB, "evaluate", "--store", str(store), "--support", str(support), "--dataset", "mnist-t10k",
                    "--name", name, f"seed={seed}", *EVALUATOR, "-q"], check=True)
    with open_existing(store) as db:
        found = [r for r in db.records() if r.config.seed == seed and r.metrics.acc is not None
                 and r.config.objective.as_dict().get("name") == name]
    return 100 * found[-1].metrics.acc


def one_seed(args, work: Path, store: Path, split: Path | None, seed: int) -> dict:
    """The row of one seed: random baseline, distillbench with and without T, the reference."""
    import numpy as np

    row = {}
    for transform in (True, False):
        record, arrays = distill_ours(store, seed, args.steps, transform, args.learn_labels)
        support = work / f"distillbench_{seed}_{transform}.npz"
        np.savez(support, x=arrays["x"], y=arrays["y"])
        row["random"] = 100 * record.metrics.random_acc
        row[f"distillbench T={'on' if transform else 'off'}"] = score(
            store, support, seed, f"distillbench-{seed}-{'T' if transform else 'noT'}-{args.learn_labels}")
        baseline_x = arrays["baseline_x"]
    if split is not None:
        support = distill_reference(args, work, split, seed, baseline_x)
        row["reference"] = score(store, support, seed, f"reference-{seed}-{args.learn_labels}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--learn-labels", action="store_true", help="the reference's --learn_labels")
    parser.add_argument("--reference", type=Path, help="a checkout of github.com/yolky/RFAD")
    parser.add_argument("--reference-python", help="a Python with torch, torch_optimizer, scipy, matplotlib")
    parser.add_argument("--work", type=Path, default=Path("cross_reference_work"))
    args = parser.parse_args()
    if bool(args.reference) != bool(args.reference_python):
        parser.error("--reference and --reference-python go together")
    if args.steps % 40:
        parser.error("--steps must be a multiple of 40: the reference saves its support every 40 steps")
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "results.sqlite"
    split = split_for_reference(args.work) if args.reference else None
    rows = {int(s): one_seed(args, args.work, store, split, int(s)) for s in args.seeds.split(",")}
    columns = list(next(iter(rows.values())))
    print(f"\nmnist-t10k, 1 ipc, {'learned' if args.learn_labels else 'fixed'} labels, {args.steps} steps, "
          f"KRR exact convnet3 NNGP (reg 0.005), accuracy %")
    print("| seed | " + " | ".join(columns) + " |\n|---" * (len(columns) + 1) + "|")
    for seed, row in rows.items():
        print(f"| {seed} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    print("| mean | " + " | ".join(f"{sum(r[c] for r in rows.values()) / len(rows):.2f}" for c in columns) + " |")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
