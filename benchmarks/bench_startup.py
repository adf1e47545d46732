"""Bar: `distillbench --help` under 0.5 s and `distillbench list` under 1.5 s (median of runs).

Reference measured in the same run: a bare `python -c pass` start.
Usage: python benchmarks/bench_startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import sys

from common import banner, distillbench_cli, median, time_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    banner("startup time of the distillbench CLI")
    cli = distillbench_cli()
    bare = median(time_command([sys.executable, "-c", "pass"], args.repeats))
    rows = [("python -c pass (reference)", bare, None)]
    for argv, bar in ((["--help"], 0.5), (["list"], 1.5)):
        t = median(time_command(cli + argv, args.repeats))
        rows.append((f"distillbench {' '.join(argv)}", t, bar))
    print(f"{'command':<32} {'median s':>9} {'x python':>9} {'bar s':>6}  verdict")
    ok = True
    for name, t, bar in rows:
        verdict = "" if bar is None else ("PASS" if t < bar else "FAIL")
        ok &= verdict != "FAIL"
        print(f"{name:<32} {t:9.3f} {t / bare:9.1f} {'' if bar is None else bar:>6}  {verdict}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
