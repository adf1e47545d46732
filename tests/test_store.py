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
