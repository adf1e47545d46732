import pytest

from distillbench.errors import ConfigError
from distillbench.registry import load_registry
from distillbench.runner.plan import parse_overrides, plan


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


def test_defaults_resolve_to_kip_ntk_fc1_on_digits(registry):
    p = plan([], registry)
    (config,) = p.configs
    assert (config.dataset.name, config.objective.name, config.kernel.name, config.loss.name,
            config.evaluator.name) == ("digits", "kip", "ntk", "mse", "krr")
    assert config.kernel.as_dict()["arch"] == "fc1"
    assert (config.ipc, config.seed) == (1, 0)


def test_objective_preferred_components(registry):
    (config,) = plan(["objective=rfad"], registry).configs
    assert (config.kernel.name, config.loss.name) == ("rf-nngp", "platt")
    (config,) = plan(["objective=rfad", "kernel=ntk"], registry).configs
    assert config.kernel.name == "ntk"


def test_sweep_is_cartesian_and_ids_are_stable(registry):
    p = plan(["loss=mse,platt", "seed=0,1,2"], registry)
    assert len(p.configs) == 6
    assert len({c.run_id for c in p.configs}) == 6
    again = plan(["seed=0,1,2", "loss=mse,platt"], registry)
    assert {c.run_id for c in p.configs} == {c.run_id for c in again.configs}


def test_component_params_are_typed(registry):
    (config,) = plan(["kernel=rf-nngp", "kernel.arch=convnet3", "kernel.width=128", "objective.steps=300"], registry).configs
    assert config.kernel.as_dict()["width"] == 128 and config.kernel.as_dict()["arch"] == "convnet3"
    assert config.objective.as_dict()["steps"] == 300


def test_param_of_some_components_is_ignored_for_others(registry):
    p = plan(["kernel=ntk,rf-nngp", "kernel.width=64"], registry)
    assert len(p.configs) == 2
    assert any("kernel.width" in note for note in p.notes)


def test_ls_with_platt_is_refused_in_a_sweep_and_alone(registry):
    p = plan(["objective=kip,ls", "loss=mse,platt"], registry)
    assert len(p.configs) == 3 and len(p.refused) == 1
    with pytest.raises(ConfigError, match="refused .*ls"):
        plan(["objective=ls", "loss=platt"], registry)


@pytest.mark.parametrize("args, message", [
    (["ipc=0"], "ipc=0 is out of range"),
    (["seed=-1"], "seed=-1 is out of range"),
    (["objective.steps=-5"], "objective.steps=-5 is out of range"),
    (["objective.reg=-1"], "objective.reg=-1.0 is out of range"),
    (["objective.steps=abc"], "not a valid int"),
    (["kernel=ntx"], "unknown kernel 'ntx' (did you mean 'ntk'?)"),
    (["dataset=mnist-full"], "unknown dataset 'mnist-full'"),
    (["objective.stepz=3"], "unknown parameter objective.stepz for objective kip (did you mean 'steps'?)"),
    (["kernal.arch=fc1"], "'kernal' is not a component kind (did you mean 'kernel'?)"),
    (["ipcs=1"], "unknown key 'ipcs' (did you mean 'ipc'?)"),
    (["kernel"], "malformed argument 'kernel'"),
    (["seed=1,,2"], "empty value"),
    (["seed=1", "seed=2"], "given twice"),
    (["timeout=1,2"], "cannot be swept"),
    (["kernel.arch=resnet"], "choose from"),
    (["evaluator.kernel=ntx"], "evaluator.kernel='ntx' is not a registered kernel (did you mean 'ntk'?)"),
])
def test_bad_input_is_one_line(registry, args, message):
    with pytest.raises(ConfigError) as info:
        plan(args, registry)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_overrides_dedupes_values():
    assert parse_overrides(["seed=0,1,0"]) == {"seed": ["0", "1"]}


def test_data_dir_is_recorded_but_not_part_of_the_run_id(registry, tmp_path):
    from tests_support_mnist import make_tiny_mnist

    a, b = make_tiny_mnist(tmp_path / "a"), make_tiny_mnist(tmp_path / "b")
    (ca,) = plan(["dataset=mnist", f"dataset.data_dir={a}"], registry).configs
    (cb,) = plan(["dataset=mnist", f"dataset.data_dir={b}"], registry).configs
    assert ca.run_id == cb.run_id
    assert ca.dataset.as_dict()["data_dir"] == str(a) and cb.dataset.as_dict()["data_dir"] == str(b)
    (other,) = plan(["dataset=mnist", f"dataset.data_dir={a}", "dataset.zca_reg=0.2"], registry).configs
    assert other.run_id != ca.run_id
