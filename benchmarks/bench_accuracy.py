"""Bars on digits, 1 image per class (KRR test accuracy on the fixed held-out split, 359 images):

* `objective=kip kernel=ntk kernel.arch=fc1` reaches >= 93%;
* `objective=rfad kernel=rf-nngp loss=platt kernel.arch=convnet3` reaches >= 90%.

Each setting runs over several seeds through the same runner `distillbench run` uses; the mean,
min and max are reported with the random-subset baseline. Runs are stored in a throwaway store.
Usage: python benchmarks/bench_accuracy.py [--seeds 0,1,2] [--only kip|rfad]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner  # noqa: E402

SETTINGS = {
    "kip": (0.93, ["objective=kip", "kernel=ntk", "kernel.arch=fc1", "objective.steps=300", "objective.lr=0.04"]),
    "rfad": (0.90, ["objective=rfad", "kernel=rf-nngp", "loss=platt", "kernel.arch=convnet3",
                    "kernel.width=64", "objective.steps=200", "objective.lr=0.003"]),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", choices=sorted(SETTINGS))
    args = parser.parse_args()
    banner("distilled accuracy on digits, 1 image per class")
    from distillbench.registry import load_registry
    from distillbench.runner.execute import execute
    from distillbench.runner.plan import plan

    registry = load_registry()
    ok = True
    for name, (bar, overrides) in SETTINGS.items():
        if args.only and name != args.only:
            continue
        configs = plan([*overrides, "ipc=1", f"seed={args.seeds}"], registry).configs
        accs, randoms, steps = [], [], []
        for config in configs:
            outcome = execute(config, registry)
            assert outcome.status == "done", outcome.message
            accs.append(outcome.metrics["acc"])
            randoms.append(outcome.metrics["random_acc"])
            steps.append(outcome.timings["step_s"])
        mean = statistics.mean(accs)
        verdict = "PASS" if mean >= bar else "FAIL"
        ok &= verdict == "PASS"
        print(f"distillbench run {' '.join(overrides)} seed={args.seeds}")
        print(f"  acc per seed: {', '.join(f'{100 * a:.2f}' for a in accs)}  mean {100 * mean:.2f}% "
              f"min {100 * min(accs):.2f}% (bar mean >= {100 * bar:.0f}%)  {verdict}")
        print(f"  random subset: mean {100 * statistics.mean(randoms):.2f}%; "
              f"median step {1e3 * statistics.median(steps):.2f} ms")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
