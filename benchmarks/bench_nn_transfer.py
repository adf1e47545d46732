"""Issue 18's finite-network bar: an RFAD support on ``mnist-t10k`` (10 images per class), scored by
the ``nn`` evaluator under the RFAD reference's protocol (loss ``mean((f − α·y)²)/α²`` over all
``n·C`` entries, SGD momentum 0.9 at the protocol's lr 1e-3 and α 2, at most 20,000 steps,
validation accuracy on 500 training images per class every 100 steps, best network kept,
patience 500), next to the evaluator as it was before issue 18 (``sum`` over classes, i.e. the
same loss ×C: lr 1e-3 there is lr 1e-2 here; 1000 steps, last network kept).

The components are called directly (dataset, kernel, loss, objective, evaluator), so the script
runs wherever JAX, flax and optax do, a GPU included; widths and steps are arguments (stated in
the output). The random real subset of the same size (``balanced_subset`` with the run seed, the
set RFAD starts from) gets the same evaluation.

Usage: python benchmarks/bench_nn_transfer.py [--seeds 0] [--rfad-steps 200] [--nn-width 64] ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=os.environ.get("DISTILLBENCH_DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--rfad-width", type=int, default=64)
    parser.add_argument("--rfad-networks", type=int, default=2)
    parser.add_argument("--rfad-steps", type=int, default=200)
    parser.add_argument("--rfad-lr", type=float, default=0.01)
    parser.add_argument("--target-batch", type=int, default=1280)
    parser.add_argument("--nn-width", type=int, default=64)
    parser.add_argument("--nn-seeds", type=int, default=2)
    parser.add_argument("--nn-lr", type=float, default=1e-3)
    parser.add_argument("--label-scale", type=float, default=2.0)
    parser.add_argument("--nn-max-steps", type=int, default=20000)
    parser.add_argument("--skip-old", action="store_true", help="do not run the pre-issue-18 evaluator")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from distillbench.components.evaluators import EvalContext
    from distillbench.components.objectives import Problem, Support, TrainData
    from distillbench.krr import centered_one_hot
    from distillbench.sampling import balanced_subset
    from distillbench_builtin.datasets.real import build_mnist_t10k
    from distillbench.registry import load_registry
    from distillbench_builtin.evaluators.nn import build_nn
    from distillbench_builtin.kernels.random_features import build_rf_nngp
    from distillbench_builtin.losses.platt import build_platt
    from distillbench_builtin.objectives.rfad import build_rfad

    print(f"devices: {jax.devices()}; jax {jax.__version__}; settings: {vars(args)}", flush=True)
    data = build_mnist_t10k(args.data_dir, "standardize", 0.1, 200, 0, verify=False)
    convnet3 = load_registry().architecture("convnet3")  # as a run's registry hands it to the builders
    kernel = build_rf_nngp(arch=convnet3, num_networks=args.rfad_networks, width=args.rfad_width)
    loss = build_platt()
    train = TrainData(jnp.asarray(data.x_train), centered_one_hot(data.y_train, 10), jnp.asarray(data.y_train))
    protocol = build_nn(arch=convnet3, width=args.nn_width, steps=args.nn_max_steps, lr=args.nn_lr,
                        label_scale=args.label_scale, seeds=args.nn_seeds, val_every=100, patience=500)
    old = build_nn(arch=convnet3, width=args.nn_width, steps=1000, lr=10 * args.nn_lr,
                   label_scale=args.label_scale, seeds=args.nn_seeds)  # = the old loss (x C) at nn_lr
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        t0 = time.time()
        distiller = build_rfad(steps=args.rfad_steps, lr=args.rfad_lr, target_batch=args.target_batch)(
            Problem(data, args.ipc, kernel, loss, seed))
        step = jax.jit(distiller.step)
        state = distiller.init(jax.random.PRNGKey(seed))
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 1), args.rfad_steps)
        for i in range(args.rfad_steps):
            state, value = step(state, train, keys[i])
        support = distiller.support(state)
        jax.block_until_ready(support.x)
        rfad_s = time.time() - t0
        idx = balanced_subset(data.y_train, args.ipc, 10, seed)
        random = Support(data.x_train[idx], np.asarray(centered_one_hot(data.y_train[idx], 10)), {})
        ctx = EvalContext(data, loss, "convnet3", {}, None, seed)
        row = {"seed": seed, "rfad_s": round(rfad_s, 1), "rfad_last_loss": float(value)}
        for name, evaluator in [("protocol", protocol)] + ([] if args.skip_old else [("old", old)]):
            for label, s in [("rfad", support), ("random", random)]:
                t1 = time.time()
                m = evaluator.evaluate(Support(np.asarray(s.x), np.asarray(s.y), s.loss_params), ctx)
                row[f"{name}_{label}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
                row[f"{name}_{label}"]["wall_s"] = round(time.time() - t1, 1)
                print(json.dumps({"seed": seed, name: label, **row[f"{name}_{label}"]}), flush=True)
        results.append(row)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.out) / f"support_seed{seed}.npz", x=np.asarray(support.x), y=np.asarray(support.y))
            (Path(args.out) / "nn_transfer.json").write_text(json.dumps(results, indent=1))
    for name in ["protocol"] + ([] if args.skip_old else ["old"]):
        accs = [100 * r[f"{name}_rfad"]["acc"] for r in results]
        rand = [100 * r[f"{name}_random"]["acc"] for r in results]
        stds = [100 * r[f"{name}_rfad"]["acc_std"] for r in results]
        print(f"{name}: RFAD support {np.mean(accs):.2f}% (network std {np.mean(stds):.2f}) vs random subset "
              f"{np.mean(rand):.2f}% over seeds {args.seeds}", flush=True)


if __name__ == "__main__":
    main()
