from pathlib import Path

import numpy as np
import pytest

from distillbench.records import Artifact, LabeledSet, Metrics, RunConfig, RunResult, Timings
from distillbench.store.database import ResultStore

CONFIG = {k: {"name": k[:3], "params": {}} for k in ("dataset", "kernel", "loss", "objective", "evaluator")}
CONFIG.update(ipc=1, seed=0)


def result(run_id: str, status: str = "done", config: dict = CONFIG, **fields) -> RunResult:
    """A result of the stored ``config`` under ``run_id``; ``fields``: any other ``RunResult`` field."""
    return RunResult(RunConfig.from_dict(config), status, run_id=run_id, **fields)


def support(x) -> Artifact:
    return Artifact(LabeledSet(x, x[:, :1]))


def test_roundtrip_and_upsert(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        artifact = support(np.ones((2, 3, 3, 1), np.float32))
        record = store.save(result("abc", "error", message="boom", timings=Timings(wall_s=1.0),
                                   environment={"jax": "x"}, artifact=artifact))
        assert record.status == "error" and not store.is_done("abc")
        store.save(result("abc", metrics=Metrics(acc=0.5), artifact=artifact))
        assert store.count() == 1 and store.is_done("abc")
        (only,) = list(store.records())
        assert only.metrics == {"acc": 0.5}
        np.testing.assert_array_equal(store.load_artifact(only).support.x, artifact.support.x)
    assert [f.name for f in (tmp_path / "r.sqlite.artifacts").iterdir()] == [Path(only.artifact).name]


def test_reopen_keeps_rows(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.save(result("a", metrics=Metrics(acc=1.0)))
    with ResultStore(path) as store:
        assert store.get("a").metrics["acc"] == 1.0


def test_a_value_the_store_cannot_hold_writes_nothing(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueError, match="seed=18446744073709551616 does not fit"):
            store.save(result("a", config={**CONFIG, "seed": 2**64}, artifact=support(np.ones((2, 2)))))
        assert store.count() == 0 and not list(store._artifact_dir.glob("*"))


def test_a_commit_that_fails_on_a_full_disk_releases_the_store(tmp_path):
    """A failed COMMIT must roll back: the next save (once space is back) works, nothing is half-written."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource, sqlite3
        from distillbench.store.database import ResultStore
        from distillbench.records import Metrics
        from test_store import result

        store = ResultStore({str(tmp_path / "r.sqlite")!r})
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))  # the disk is full: the WAL cannot grow
        try:
            store.save(result("a", metrics=Metrics(acc=0.5)))
        except sqlite3.OperationalError as exc:
            print("failed:", exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
        store.save(result("b", metrics=Metrics(acc=0.7)))
        print(sorted(r.run_id for r in store.records()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["failed: disk I/O error", "['b']"], result.stdout


def test_a_run_result_is_stored_and_read_back_typed(tmp_path):
    config = RunConfig.from_dict(CONFIG)
    made = RunResult(config, metrics=Metrics(acc=0.75, random_acc=0.5, extra={"loss_param_scale": 2.0}),
                     timings=Timings(wall_s=3.0, steps_per_s=None), artifact=support(np.zeros((1, 2))),
                     data_fingerprint="f" * 32, environment={"host": "h"}, parent_run_id="p")
    with ResultStore(tmp_path / "r.sqlite") as store:
        record = store.save(made)
        assert np.array_equal(store.load_artifact(record).support.x, made.artifact.support.x)
    assert record.run_id == config.run_id and record.config == config and record.parent_run_id == "p"
    assert record.metrics.acc == 0.75 and record.metrics["loss_param_scale"] == 2.0 and record.timings.wall_s == 3.0
    assert record.environment == {"host": "h"} and record.data_fingerprint == "f" * 32


def test_the_support_size_is_read_from_the_labels_alone(tmp_path):
    from distillbench.store.database import support_size

    with ResultStore(tmp_path / "r.sqlite") as store:
        with_set = store.save(result("a", artifact=support(np.ones((4, 3)))))
        without = store.save(result("b", artifact=Artifact(loss_history=np.zeros((1, 2)))))
        bare = store.save(result("c"))
        assert [support_size(store.path, r) for r in (with_set, without, bare)] == [4, None, None]
        store.artifact_path(with_set).unlink()  # not copied with the store
        assert support_size(store.path, with_set) is None


def test_a_store_from_a_newer_release_is_refused_untouched(tmp_path):
    import sqlite3

    from distillbench.records import SCHEMA_VERSION
    from distillbench.store.database import NotAStoreError, open_existing

    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(NotAStoreError, match="newer distillbench"):
        ResultStore(path)
    with pytest.raises(NotAStoreError, match="newer distillbench"):
        open_existing(path)  # what `report` and `evaluate` open
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION + 1)
