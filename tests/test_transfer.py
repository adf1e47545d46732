"""``report --transfer``: distilled with x evaluated with, per dataset and images per class."""

import json

import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.reports.leaderboard import StoredRun, build_leaderboard
from distillbench.reports.transfer import RANDOM, build_transfer, to_markdown
from distillbench.records import Metrics, RunConfig, RunRecord, Timings
from distillbench.store.database import ResultStore


def _config(objective, arch, evaluator, eval_arch, seed, ipc=1):
    kernel = "ntk" if objective == "kip" else "rf-nngp"
    return {"dataset": {"name": "digits", "params": {}}, "kernel": {"name": kernel, "params": {"arch": arch}},
            "loss": {"name": "mse", "params": {}}, "objective": {"name": objective, "params": {}},
            "evaluator": {"name": evaluator, "params": {"arch": eval_arch}}, "ipc": ipc, "seed": seed}


def _metrics(evaluator, eval_arch, acc):
    return {"acc": acc, "random_acc": 0.5, "eval_kernel": "nngp" if evaluator == "krr" else None,
            "eval_arch": eval_arch}


# (objective, arch) -> (evaluator, eval arch) -> accuracy per seed
ACC = {
    ("kip", "fc1"): {("krr", "fc1"): [0.90, 0.92], ("krr", "convnet3"): [0.60, 0.64], ("nn", "fc1"): [0.85, 0.87]},
    ("rfad", "convnet3"): {("krr", "fc1"): [0.80, 0.82], ("krr", "convnet3"): [0.95, 0.93]},
}


def _runs():
    runs = []
    for (objective, arch), by_eval in ACC.items():
        for (evaluator, eval_arch), accs in by_eval.items():
            for seed, acc in enumerate(accs):
                rid = f"{objective}{arch}{evaluator}{eval_arch}{seed}"
                parent = None if (evaluator, eval_arch) == ("krr", arch) else f"{objective}{arch}krr{arch}{seed}"
                runs.append(StoredRun(RunRecord(rid, "2024-01-01T00:00:00+00:00", "done", None,
                                                RunConfig.from_dict(_config(objective, arch, evaluator, eval_arch, seed)),
                                                Metrics.from_dict(_metrics(evaluator, eval_arch, acc)), Timings(), {},
                                                None,
                                                parent_run_id=parent), None))
    return runs


def test_one_matrix_per_table_with_mean_and_std():
    (table,) = build_transfer(build_leaderboard(_runs()))
    assert table.distilled == ["kip/ntk(fc1)/mse", "rfad/rf-nngp(convnet3)/mse", RANDOM]
    assert table.evaluated == ["krr(nngp, convnet3)", "krr(nngp, fc1)", "nn(fc1)"]
    cell = table.cells[("kip/ntk(fc1)/mse", "krr(nngp, convnet3)")]
    assert cell.mean_pct == pytest.approx(62.0) and cell.std_pct == pytest.approx(2.8284271) and cell.seeds == 2
    assert ("rfad/rf-nngp(convnet3)/mse", "nn(fc1)") not in table.cells
    text = to_markdown([table])
    assert "| rfad/rf-nngp(convnet3)/mse | 94.00 ± 1.41 (n=2) | 81.00 ± 1.41 (n=2) | - |" in text
    # the random subsets under each column's evaluation: every random_acc here is 0.5
    assert f"| {RANDOM} | 50.00 ± 0.00 (n=2) | 50.00 ± 0.00 (n=2) | 50.00 ± 0.00 (n=2) |" in text


def test_an_evaluation_parameter_names_a_column_never_a_row():
    """Two nn evaluations of the same sets that differ in a parameter of the evaluator (the networks'
    normalization) are two columns; the sets stay one row each."""
    runs = []
    for seed in (0, 1):
        config = _config("kip", "fc1", "krr", "fc1", seed)
        runs.append(StoredRun(RunRecord(f"k{seed}", "2024-01-01T00:00:00+00:00", "done", None, RunConfig.from_dict(config),
                                        Metrics.from_dict(_metrics("krr", "fc1", 0.9)), Timings(), {}, None), None))
        for norm, acc in (("none", 0.7), ("instance", 0.8)):
            nn = {**config, "evaluator": {"name": "nn", "params": {"arch": "convnet-dc", "normalization": norm}}}
            runs.append(StoredRun(RunRecord(f"n{norm}{seed}", "2024-01-01T00:00:00+00:00", "done", None,
                                            RunConfig.from_dict(nn), Metrics.from_dict(_metrics("nn", "convnet-dc", acc)),
                                            Timings(), {}, None, parent_run_id=f"k{seed}"), None))
    (table,) = build_transfer(build_leaderboard(runs))
    assert table.distilled == ["kip/ntk(fc1)/mse", RANDOM]
    assert table.evaluated == ["krr(nngp, fc1)", "nn(convnet-dc) evaluator.normalization=instance",
                               "nn(convnet-dc) evaluator.normalization=none"]
    assert table.cells[("kip/ntk(fc1)/mse", "nn(convnet-dc) evaluator.normalization=instance")].mean_pct == \
        pytest.approx(80.0)


def test_report_transfer_cli_json_and_bad_format(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for run in _runs():
            r = run.record
            store.save(r.result())
    result = CliRunner().invoke(main, ["report", "--store", str(path), "--transfer", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    (table,) = doc["tables"]
    assert doc["schema"] == "distillbench.transfer" and table["title"] == "digits · 1 image per class"
    assert len(table["cells"]) == 5 + 3 and len(table["evaluated_with"]) == 3  # 3 random cells
    assert doc["version"] == 2 and table["distilled_with"][-1] == RANDOM
    bad = CliRunner().invoke(main, ["report", "--store", str(path), "--transfer", "--format", "html"])
    assert bad.exit_code == 2 and "--transfer writes rich, md, csv or json" in bad.output
