"""distillbench.records: the run's types round-trip the stored JSON and survive pickling (launchers)."""

import dataclasses
import json
import pickle
import re
import sqlite3
from pathlib import Path

import pytest

from distillbench.records import (
    STATUSES,
    Artifact,
    ComponentChoice,
    LabeledSet,
    Metrics,
    RunConfig,
    RunRecord,
    RunResult,
    Timings,
    decode_result,
    encode_result,
)

FIXTURE = Path(__file__).parent / "data" / "store_release_0" / "results.sqlite"


def _stored_rows():
    conn = sqlite3.connect(f"{FIXTURE.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT run_id, config, metrics, timings, parent_run_id FROM runs").fetchall()
    finally:
        conn.close()


def test_every_stored_config_decodes_to_a_run_config_with_its_run_id():
    rows = _stored_rows()
    assert len(rows) == 11
    for run_id, config, _, _, parent in rows:
        data = json.loads(config)
        decoded = RunConfig.from_dict(data)
        assert decoded.to_dict() == data
        # a run's id hashes its config; an `evaluate` row's hashes the run it scored and its evaluator
        assert (decoded.run_id == run_id) == (parent is None)


def test_metrics_and_timings_round_trip_the_stored_json_exactly():
    for _, _, metrics, timings, _ in _stored_rows():
        for cls, text in ((Metrics, metrics), (Timings, timings)):
            data = json.loads(text)
            typed = cls.from_dict(data)
            assert typed.to_dict() == data and json.dumps(typed.to_dict(), sort_keys=True) == \
                json.dumps(data, sort_keys=True)


def test_named_fields_and_the_extra_mapping():
    m = Metrics.from_dict({"acc": 0.9, "eval_arch": "fc1", "loss_param_log_scale": 0.06, "mia_auc": 0.5})
    assert m.acc == 0.9 and m.eval_arch == "fc1" and m.eval_kernel is None
    assert m.extra == {"loss_param_log_scale": 0.06, "mia_auc": 0.5}
    assert m["acc"] == 0.9 and m.get("eval_kernel") is None and "eval_kernel" not in m and "mia_auc" in m
    with pytest.raises(KeyError):
        m["gain"]
    # a known key stored as null stays a null (a one-step run's steps_per_s)
    t = Timings.from_dict({"steps_per_s": None, "wall_s": 2.0})
    assert t.steps_per_s is None and t.to_dict() == {"steps_per_s": None, "wall_s": 2.0} and "steps_per_s" in t
    assert Metrics() == {} and Metrics(acc=0.5) == {"acc": 0.5} and Metrics(acc=0.5) != {"acc": 0.6}


def _config() -> RunConfig:
    choice = {kind: ComponentChoice(kind, name, params) for kind, name, params in (
        ("dataset", "digits", (("split_seed", 0),)), ("kernel", "ntk", (("arch", "fc1"),)), ("loss", "mse", ()),
        ("objective", "kip", (("lr", 0.01), ("steps", 5))), ("evaluator", "krr", (("kernel", "nngp"),)))}
    return RunConfig(**choice, ipc=1, seed=3, tag="objective.steps=5")


def test_everything_a_launcher_ships_pickles():
    import numpy as np

    config = _config()
    result = RunResult(config, "timeout", "stopped after 2 of 5 steps", Metrics(steps_run=2),
                       Timings(wall_s=1.5, extra={"queue_s": 0.1}), Artifact(loss_history=np.zeros((2, 2))),
                       data_fingerprint="ab" * 16, plain="stopped")
    back = pickle.loads(pickle.dumps(result))
    assert back.config == config and back.config.run_id == config.run_id and back.config.tag == config.tag
    assert back.metrics == result.metrics and back.timings.extra == {"queue_s": 0.1}
    np.testing.assert_array_equal(back.artifact.loss_history, result.artifact.loss_history)
    record = RunRecord("r", "2024-01-01T00:00:00+00:00", "done", None, config, Metrics(acc=0.5), Timings(), {}, None)
    assert pickle.loads(pickle.dumps(record)) == record


def test_a_result_has_a_known_status_and_a_record_becomes_a_cached_result():
    with pytest.raises(ValueError, match="unknown run status 'finished'"):
        RunResult(_config(), "finished")
    assert STATUSES[0] == "done"
    record = RunRecord("r", "t", "done", None, _config(), Metrics(acc=0.5), Timings(wall_s=1.0), {}, None,
                       data_fingerprint="f")
    cached = record.result()
    assert cached.cached and cached.metrics.acc == 0.5 and cached.data_fingerprint == "f" and cached.artifact is None


def test_the_run_id_ignores_what_is_not_identity_and_the_tag():
    a = _config()
    marked = ComponentChoice("objective", "kip", a.objective.params + (("val_every", 0),), not_identity=("val_every",))
    b = RunConfig(a.dataset, a.kernel, a.loss, marked, a.evaluator, a.ipc, a.seed)
    assert b.run_id == a.run_id and b.to_dict()["objective"]["params"]["val_every"] == 0
    assert RunConfig.from_dict(a.to_dict()) == a and a.flat()["kernel.arch"] == "fc1"


def test_one_codec_round_trips_a_result_and_its_artifact():
    import numpy as np

    config = _config()
    artifact = Artifact(LabeledSet(np.ones((2, 3)), np.zeros((2, 2)), np.array([0, 1])),
                        LabeledSet(np.full((2, 3), 2.0), np.eye(2)), np.zeros((1, 2)), {"log_scale": np.array(0.5)})
    arrays = artifact.to_arrays()
    assert list(arrays) == ["support_x", "support_y", "baseline_x", "baseline_y", "loss_history",
                            "loss_param_log_scale", "support_classes"]  # the members every release wrote
    back = Artifact.from_arrays(arrays)
    assert back.to_arrays().keys() == arrays.keys()
    assert all(np.array_equal(back.to_arrays()[k], v) for k, v in arrays.items())
    assert Artifact.from_arrays({"support_x": np.ones(2)}).support is None  # half a set is no set
    result = RunResult(config, "done", None, Metrics(acc=0.5, eval_arch="fc1"), Timings(wall_s=1.0), artifact,
                       "fp", environment={"host": "h"}, parent_run_id="p", run_id="e1")
    decoded = decode_result(json.loads(json.dumps(encode_result(result))), config)
    assert decoded == dataclasses.replace(result, artifact=None)
    assert decode_result(encode_result(result)).config.run_id == config.run_id


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("status"), "no 'status' field"),
    (lambda d: d.update(metrics=[1]), "metrics is list, not a JSON object"),
    (lambda d: d.update(status="finished"), "unknown status 'finished'"),
    (lambda d: d.update(metrics={"acc": "high"}), "acc is str 'high', not a number"),
    (lambda d: d.update(config={"dataset": 1}), "its config is malformed"),
])
def test_the_decoder_names_the_first_field_an_encoder_would_not_write(change, message):
    fields = encode_result(RunResult(_config()))
    change(fields)
    with pytest.raises(ValueError, match=re.escape(message)):
        decode_result(fields)
