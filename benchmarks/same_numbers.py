"""The same sweep on a git revision and on the working tree: bit-identical stored numbers?

Issue 28's bar ("the same command gives bit-identical stored metrics and artifacts before and
after"). The revision is checked out in a temporary worktree and run with ``PYTHONPATH`` on it
(the same environment and console script); each side writes a fresh store:

  distillbench run dataset=digits objective=kip,ls,rfad objective.steps=5 seed=0,1
  distillbench evaluate evaluator=krr evaluator.kernel=ntk --dataset digits
  distillbench run dataset=digits objective=kip objective.steps=4 seed=2 launcher=ray   (own store)

Then every row of the two stores is compared: the same run_ids, equal status, config, metrics
and parent, and every artifact array equal byte for byte (dtype and shape included). Timings and
environments are not compared (they are measurements of the machine).

Usage: python benchmarks/same_numbers.py --rev 3a159c8 [--work DIR] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DB = str(Path(sys.executable).parent / "distillbench")


def sweep(code: Path, out: Path, ray: bool) -> None:
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{code / 'plugins'}"}
    out.mkdir(parents=True)
    store = str(out / "results.sqlite")
    commands = [[DB, "run", "--store", store, "dataset=digits", "objective=kip,ls,rfad", "objective.steps=5",
                 "seed=0,1", "-q"],
                [DB, "evaluate", "--store", store, "evaluator=krr", "evaluator.kernel=ntk", "--dataset", "digits", "-q"]]
    if ray:
        commands.append([DB, "run", "--store", str(out / "ray.sqlite"), "dataset=digits", "objective=kip",
                         "objective.steps=4", "seed=2", "launcher=ray", "-q"])
    for command in commands:
        subprocess.run(command, env=env, cwd=out, check=True, stdout=subprocess.DEVNULL)


def rows(store: Path) -> dict:
    with sqlite3.connect(store) as db:
        found = db.execute("select run_id, status, config, metrics, artifact, parent_run_id from runs").fetchall()
    return {r[0]: {"status": r[1], "config": json.loads(r[2]), "metrics": json.loads(r[3] or "{}"),
                   "artifact": r[4], "parent": r[5]} for r in found}


def differences(a: Path, b: Path) -> tuple[list[str], int]:
    """What differs between stores ``a`` and ``b``, and how many arrays were compared."""
    ra, rb, problems, arrays = rows(a), rows(b), [], 0
    if set(ra) != set(rb):
        problems.append(f"{a.name}: run_ids differ: {sorted(set(ra) ^ set(rb))}")
    for run_id in sorted(set(ra) & set(rb)):
        x, y = ra[run_id], rb[run_id]
        problems += [f"{a.name} {run_id}: {key} differs" for key in ("status", "config", "metrics", "parent")
                     if x[key] != y[key]]
        if bool(x["artifact"]) != bool(y["artifact"]):
            problems.append(f"{a.name} {run_id}: artifact in one store only")
        elif x["artifact"]:
            with np.load(a.parent / x["artifact"]) as na, np.load(b.parent / y["artifact"]) as nb:
                if set(na.files) != set(nb.files):
                    problems.append(f"{a.name} {run_id}: artifact members differ")
                for key in set(na.files) & set(nb.files):
                    arrays += 1
                    u, v = na[key], nb[key]
                    if u.dtype != v.dtype or u.shape != v.shape or u.tobytes() != v.tobytes():
                        problems.append(f"{a.name} {run_id}: array {key} differs")
    return problems, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", required=True, help="the git revision to compare with, e.g. HEAD~3")
    parser.add_argument("--work", type=Path, default=None, help="folder for the worktree and stores")
    parser.add_argument("--no-ray", action="store_true", help="skip the launcher=ray run")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="same-numbers-"))
    base = work / "revision"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.rev], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        sweep(base, work / "before", not args.no_ray)
        sweep(ROOT, work / "after", not args.no_ray)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    problems, arrays, count = [], 0, 0
    for name in ("results.sqlite",) + (() if args.no_ray else ("ray.sqlite",)):
        found, n = differences(work / "before" / name, work / "after" / name)
        problems, arrays, count = problems + found, arrays + n, count + len(rows(work / "before" / name))
    print(f"{count} rows, {arrays} artifact arrays compared ({args.rev} vs the working tree; stores in {work})")
    print("\n".join(problems) if problems else "IDENTICAL")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
