"""A built-in fully connected network has no instance normalization: the components that train
networks (the ``frepo-pool`` kernel, the ``nn`` evaluator) refuse it at plan time, one line, exit 2,
nothing written."""

import pytest

from helpers import run_cli


@pytest.mark.parametrize("args,owner", [
    (["objective=kip", "kernel=frepo-pool", "kernel.arch=fc1", "kernel.normalization=instance"], "kernel frepo-pool"),
    (["evaluator=nn", "evaluator.arch=fc3", "evaluator.normalization=instance"], "evaluator nn"),
])
def test_instance_norm_on_a_builtin_fc_network_is_refused_before_compute(tmp_path, args, owner):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), "dataset=digits", *args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].endswith(f"{owner}: normalization=instance: {args[-2].split('=')[1]}'s network has no "
                             "instance normalization (choose from: none, batch)"), result.stderr
    assert not store.exists()
