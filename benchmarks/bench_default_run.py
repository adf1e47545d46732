"""Bar: `distillbench run` (no arguments) takes <= 90 s wall including JAX start on the 2-core
machine, and the distilled accuracy is >= random-subset accuracy + 15 points.

Each repeat uses a fresh store so nothing is cached. Usage: python benchmarks/bench_default_run.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

from common import banner, distillbench_cli, median, time_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    banner("`distillbench run` with no arguments (the README's main job)")
    walls, gains = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            walls += time_command(distillbench_cli() + ["run", "-q"], 1, cwd=tmp)
            with sqlite3.connect(Path(tmp) / "distillbench_results" / "results.sqlite") as conn:
                acc, random_acc = conn.execute("SELECT acc, random_acc FROM runs").fetchone()
            gains.append((acc, random_acc))
    wall = median(walls)
    acc, random_acc = gains[0]
    print(f"wall times (s): {', '.join(f'{w:.2f}' for w in walls)}; median {wall:.2f} s (bar <= 90 s)")
    print(f"accuracy: distilled {100 * acc:.2f}%, random subset {100 * random_acc:.2f}%, "
          f"gain {100 * (acc - random_acc):+.2f} points (bar >= +15)")
    same = all(g == gains[0] for g in gains)
    print(f"identical accuracy across the {args.repeats} runs (same seed): {same}")
    ok = wall <= 90 and acc - random_acc >= 0.15 and same
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
