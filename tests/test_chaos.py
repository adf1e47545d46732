"""Chaos: SIGKILL at random moments across a sweep, and a full disk; the store stays whole.

Each round starts the same sweep (every other one with ``--force``, so that rows and artifacts
are replaced while the kills land) and kills it after a random number of its cells were saved
plus a random delay (or, in some rounds, at any moment from the start). After every round: the
SQLite integrity check passes, every row's artifact exists, no done result was lost or changed,
and once the store is opened again (which removes a killed writer's leftovers) every artifact has
its row and no temporary file remains. Two rounds run with ``RLIMIT_FSIZE`` (a full disk): each
cell that cannot be saved gets one line and the sweep goes on. A final run completes the sweep.
"""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from distillbench.store.database import ResultStore

from helpers import run_cli, tiny

SWEEP = tiny("seed=0,1,2", "objective.steps=3")
CELLS = 3
FULL_DISK_SWEEP = tiny("seed=0,1", "objective.steps=3")  # two of the same cells, re-run with --force
ROUNDS = 10
SEED = 20240513  # the kill moments are random, and reproducible


def _start(store, *extra, sweep=SWEEP, fsize_limit=None):
    """The sweep in a child process; ``fsize_limit``: RLIMIT_FSIZE bytes, a disk that is full past it.

    The limit is set by a small Python that then execs the CLI, not by ``preexec_fn`` (Python code
    between fork and exec is unsafe in this multithreaded, JAX-importing test process). CPython
    ignores SIGXFSZ, so a write past the limit fails with EFBIG, as on a full disk.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="200")
    command = [sys.executable, "-m", "distillbench.cli", "run", "-q", "--store", str(store), *extra, *sweep]
    if fsize_limit is not None:
        command = [sys.executable, "-c", LIMITED, str(fsize_limit), *command]
    return subprocess.Popen(command, cwd=store.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


LIMITED = ("import os, resource, sys; limit = int(sys.argv[1]); "
           "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); os.execv(sys.argv[2], sys.argv[2:])")


def _artifacts(store):
    folder = store.parent / f"{store.name}.artifacts"
    return set(os.listdir(folder)) if folder.exists() else set()


def _rows(store):
    with sqlite3.connect(store, timeout=30) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {run_id: (status, artifact, acc) for run_id, status, artifact, acc in
                conn.execute("SELECT run_id, status, artifact, json_extract(metrics, '$.acc') FROM runs")}


def _check(store, done_before):
    """The invariants after a kill; returns the done results now stored."""
    if not store.exists():
        return done_before
    rows = _rows(store)
    for run_id, (status, artifact, _) in rows.items():
        if artifact is not None or status == "done":
            assert (store.parent / artifact).is_file(), f"row {run_id} points to a missing artifact"
    done = {run_id: acc for run_id, (status, _, acc) in rows.items() if status == "done"}
    for run_id, acc in done_before.items():  # nothing lost, nothing changed
        assert done.get(run_id) == acc, run_id
    ResultStore(store).close()  # what the next run does first: removes a killed writer's leftovers
    rows = _rows(store)
    folder = store.parent / f"{store.name}.artifacts"
    files = sorted(f.name for f in folder.iterdir()) if folder.exists() else []
    referenced = sorted(os.path.basename(a) for _, a, _ in rows.values() if a is not None)
    assert files == referenced, "every artifact has its row and every row its own artifact"
    assert len(set(referenced)) == len(referenced)
    strays = [p.name for p in store.parent.rglob("*") if p.name.endswith(".tmp")]
    assert strays == [], strays
    return done


@pytest.mark.slow
def test_random_kills_and_a_full_disk_lose_nothing(tmp_path):
    rng = random.Random(SEED)
    store = tmp_path / "results.sqlite"
    done: dict[str, float] = {}
    mid_sweep = 0  # rounds killed after at least one of their cells was saved
    for round_ in range(ROUNDS):
        force = round_ % 2 == 1 or CELLS - len(done) < 2
        cells = CELLS if force else CELLS - len(done)
        # three draws a round, so the same rounds are "at any moment" whatever the timing was
        anytime, fraction, delay = rng.random() < 0.2, rng.random(), rng.random()
        saves = 1 + int(fraction * (cells - 1))  # kill after 1 .. cells-1 saves of this round
        before = _artifacts(store)
        proc = _start(store, *(["--force"] if force else []))
        if anytime:
            time.sleep(0.3 + 2.7 * delay)
        else:
            deadline = time.monotonic() + 240
            while len(_artifacts(store) - before) < saves and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.8 * delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        mid_sweep += bool(_artifacts(store) - before)
        done = _check(store, done)
    assert mid_sweep >= ROUNDS // 2, mid_sweep

    # The disk fills once the store is open: another connection keeps its WAL and shared-memory
    # files in place (as a concurrent `report` would), so only what a save writes can fail.
    keeper = sqlite3.connect(store)
    keeper.execute("SELECT COUNT(*) FROM runs").fetchone()
    for limit in (1024, 2048):  # no artifact fits; an artifact (1.7 kB) fits but perhaps not its row
        proc = _start(store, "--force", sweep=FULL_DISK_SWEEP, fsize_limit=limit)
        stdout, stderr = proc.communicate(timeout=300)
        lines = stderr.splitlines()
        assert all(line.startswith("error: synthetic kip/ntk(fc1)/mse ipc=1 seed=") and "not saved" in line
                   for line in lines), stderr
        assert "Traceback" not in stderr and "distillbench results" in stdout  # every cell tried, the sweep finished
        if limit == 1024:
            assert proc.returncode == 1 and len(lines) == 2, stderr
        else:
            assert proc.returncode == (1 if lines else 0) and len(lines) <= 2, stderr
        done = _check(store, done)
    keeper.close()

    final = run_cli("run", "--store", str(store), *SWEEP, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    done = _check(store, done)
    assert len(done) == CELLS
