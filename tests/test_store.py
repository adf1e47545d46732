from pathlib import Path

import numpy as np
import pytest

from distillbench.store.database import ResultStore

CONFIG = {k: {"name": k[:3], "params": {}} for k in ("dataset", "kernel", "loss", "objective", "evaluator")}
CONFIG.update(ipc=1, seed=0)


def test_roundtrip_and_upsert(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        arrays = {"support_x": np.ones((2, 3, 3, 1), np.float32)}
        record = store.save(run_id="abc", status="error", message="boom", config=CONFIG, metrics={},
                            timings={"wall_s": 1.0}, environment={"jax": "x"}, arrays=arrays)
        assert record.status == "error" and not store.is_done("abc")
        store.save(run_id="abc", status="done", message=None, config=CONFIG, metrics={"acc": 0.5},
                   timings={}, environment={}, arrays=arrays)
        assert store.count() == 1 and store.is_done("abc")
        (only,) = list(store.records())
        assert only.metrics == {"acc": 0.5}
        np.testing.assert_array_equal(store.load_artifact(only)["support_x"], arrays["support_x"])
    assert [f.name for f in (tmp_path / "r.sqlite.artifacts").iterdir()] == [Path(only.artifact).name]


def test_reopen_keeps_rows(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.save(run_id="a", status="done", message=None, config=CONFIG, metrics={"acc": 1.0},
                   timings={}, environment={})
    with ResultStore(path) as store:
        assert store.get("a").metrics["acc"] == 1.0


def test_a_value_the_store_cannot_hold_writes_nothing(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueError, match="seed=18446744073709551616 does not fit"):
            store.save(run_id="a", status="done", message=None, config={**CONFIG, "seed": 2**64}, metrics={},
                       timings={}, environment={}, arrays={"x": np.ones(2)})
        assert store.count() == 0 and not list(store.artifact_dir.glob("*"))


def test_a_commit_that_fails_on_a_full_disk_releases_the_store(tmp_path):
    """A failed COMMIT must roll back: the next save (once space is back) works, nothing is half-written."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource, sqlite3
        from distillbench.store.database import ResultStore
        from test_store import CONFIG

        store = ResultStore({str(tmp_path / "r.sqlite")!r})
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))  # the disk is full: the WAL cannot grow
        try:
            store.save(run_id="a", status="done", message=None, config=CONFIG, metrics={{"acc": 0.5}},
                       timings={{}}, environment={{}})
        except sqlite3.OperationalError as exc:
            print("failed:", exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
        store.save(run_id="b", status="done", message=None, config=CONFIG, metrics={{"acc": 0.7}},
                   timings={{}}, environment={{}})
        print(sorted(r.run_id for r in store.records()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["failed: disk I/O error", "['b']"], result.stdout
