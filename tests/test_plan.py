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
    (["kernel.arch=transformer"], "choose from"),
    (["evaluator.kernel=ntx"], "evaluator.kernel=ntx: unknown kernel 'ntx' (did you mean 'ntk'?)"),
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
    fake = "dataset.verify=false"  # tiny files, not the official ones
    (ca,) = plan(["dataset=mnist", f"dataset.data_dir={a}", fake], registry).configs
    (cb,) = plan(["dataset=mnist", f"dataset.data_dir={b}", fake], registry).configs
    assert ca.run_id == cb.run_id
    assert ca.dataset.as_dict()["data_dir"] == str(a) and cb.dataset.as_dict()["data_dir"] == str(b)
    assert ca.dataset.as_dict()["verify"] is False  # recorded with the run
    (other,) = plan(["dataset=mnist", f"dataset.data_dir={a}", "dataset.zca_reg=0.2", fake], registry).configs
    assert other.run_id != ca.run_id


@pytest.mark.parametrize("args, message", [
    (["seed=99999999999999999999"], "seed=99999999999999999999 is out of range (must be <= 4294967295)"),
    (["seed=4294967296"], "out of range"),
    (["dataset.split_seed=4294967296"], "dataset.split_seed=4294967296 is out of range"),
    (["objective.steps=9223372036854775808"], "2**63"),
    (["ipc=100000"], "dataset digits: ipc=100000 is more than its smallest training class holds (139 images"),
    (["ipc=1,140"], "ipc=140 is more than"),
    (["dataset=synthetic", "dataset.n_train=5"], "n_train=5 is below num_classes=10"),
    (["dataset=synthetic", "dataset.n_train=30", "dataset.num_classes=3", "ipc=11"], "choose ipc <= 10"),
    (["dataset=synthetic", "dataset.height=100000", "dataset.width=100000"], "choose smaller sizes"),
])
def test_ranges_the_data_and_the_store_cannot_hold_are_refused_at_plan_time(registry, args, message):
    with pytest.raises(ConfigError) as info:
        plan(args, registry)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_largest_ipc_the_smallest_class_allows_is_planned(registry):
    assert plan(["ipc=139"], registry).configs
    (config,) = plan(["dataset=synthetic", "dataset.n_train=30", "dataset.num_classes=3", "ipc=10"], registry).configs
    assert config.ipc == 10


def _dataset_plugin(describe):
    from distillbench import Component
    from distillbench.registry import Entry, Registry

    builtin = load_registry(entry_points=False)
    entries = [e for e in builtin.entries() if e.component.kind != "dataset"]
    ds = Component("dataset", "ext", "a third-party dataset", build="ext_data:build", describe=describe)
    return Registry([*entries, Entry(ds, "ext-data 0.1", frozenset({"ext_data"}))])


def test_a_dataset_without_describe_is_planned_and_checked_when_built():
    from distillbench import Component
    from distillbench.registry import Entry, Registry

    builtin = load_registry(entry_points=False)
    entries = [e for e in builtin.entries() if e.component.kind != "dataset"]
    ds = Component("dataset", "ext", "a third-party dataset", build="ext_data:build")
    registry = Registry([*entries, Entry(ds, "ext-data 0.1", frozenset({"ext_data"}))])
    (config,) = plan(["dataset=ext", "ipc=100000"], registry).configs
    assert config.ipc == 100000


def test_a_third_party_describe_is_checked_and_its_failures_name_the_package():
    from distillbench.components.datasets import DatasetInfo

    registry = _dataset_plugin(lambda params: DatasetInfo(3, (5, 4, 6)))
    assert plan(["dataset=ext", "ipc=4"], registry).configs
    with pytest.raises(ConfigError, match=r"dataset 'ext' \(ext-data 0.1\): ipc=5 is more than .* \(4 images of class 1\)"):
        plan(["dataset=ext", "ipc=5"], registry)
    with pytest.raises(ConfigError, match=r"class 1 of its 3 have no training example"):
        plan(["dataset=ext"], _dataset_plugin(lambda params: DatasetInfo(3, (5, 0, 6))))

    def broken(params):
        raise OSError("disk on fire")

    with pytest.raises(ConfigError, match=r"^dataset 'ext' \(ext-data 0.1\): describe raised OSError: disk on fire$"):
        plan(["dataset=ext"], _dataset_plugin(broken))
    with pytest.raises(ConfigError, match="describe must return .*DatasetInfo, got dict"):
        plan(["dataset=ext"], _dataset_plugin(lambda params: {"num_classes": 3}))


def test_describe_is_called_once_per_dataset_configuration():
    from distillbench.components.datasets import DatasetInfo

    calls = []

    def describe(params):
        calls.append(dict(params))
        return DatasetInfo(2, (9, 9))

    assert len(plan(["dataset=ext", "seed=0,1,2", "ipc=1,2"], _dataset_plugin(describe)).configs) == 6
    assert len(calls) == 1


def test_only_datasets_may_describe():
    from distillbench import Component

    with pytest.raises(TypeError, match="only datasets"):
        Component("kernel", "k", "a kernel", build="m:f", describe=lambda params: None)



def _plugin(*components):
    """A plugin module registering ``components`` (the way an installed package would)."""
    import types

    from distillbench import hookimpl

    module = types.ModuleType("defaults_plugin")
    module.distillbench_components = hookimpl(lambda: list(components))
    return module


def _evaluator(name, default=False):
    from distillbench import Component

    return Component(kind="evaluator", name=name, summary="an evaluator",
                     build="distillbench_builtin.evaluators.krr:build_krr", default=default)


def test_the_default_of_a_kind_is_the_one_its_plugin_declares(registry):
    from distillbench.runner.plan import default_component

    claims = {kind: [e.component.name for e in registry.entries(kind) if e.component.default]
              for kind in ("dataset", "kernel", "loss", "objective", "evaluator")}
    assert claims == {"dataset": ["digits"], "kernel": ["ntk"], "loss": ["mse"], "objective": ["kip"],
                      "evaluator": ["krr"]}
    assert default_component(registry, "evaluator") == "krr"
    other = load_registry(entry_points=False, extra=(_plugin(_evaluator("plain")),))  # claims nothing
    assert plan([], other).configs[0].evaluator.name == "krr"


def test_two_claims_to_a_default_refuse_only_runs_that_name_none():
    registry = load_registry(entry_points=False, extra=(_plugin(_evaluator("mine", default=True)),))
    with pytest.raises(ConfigError, match=r"^no evaluator given and 2 components claim to be the default "
                                          r"evaluator: evaluator 'krr' \(.*\), evaluator 'mine' \(.*\); "
                                          r"name one, e.g. evaluator=krr$"):
        plan([], registry)
    assert plan(["evaluator=mine"], registry).configs[0].evaluator.name == "mine"
    assert plan(["evaluator=krr"], registry).configs[0].evaluator.name == "krr"


def test_no_default_is_one_line_naming_the_kind():
    from distillbench.registry import Registry
    from distillbench.runner.plan import default_component

    registry = Registry()
    with pytest.raises(ConfigError, match=r"^no evaluator given and no installed plugin declares a default "
                                          r"evaluator; install a plugin that provides one$"):
        default_component(registry, "evaluator")
    registry.add(_evaluator("plain"), "a-plugin 1.0")
    with pytest.raises(ConfigError, match=r"; name one, e.g. evaluator=plain$"):
        default_component(registry, "evaluator")


def test_the_conformance_suite_checks_combinations_with_the_declared_defaults():
    from distillbench import Component
    from distillbench.testing import check_params

    seen = []
    component = Component(kind="loss", name="c", summary="a loss", build=lambda: None,
                          check=lambda choices: seen.append(dict(choices)))
    check_params(component)
    assert seen == [{"dataset": "digits", "kernel": "ntk", "loss": "c", "objective": "kip", "evaluator": "krr"}]


def test_the_default_validation_hold_out_adapts_to_a_small_dataset():
    """``objective.val_per_class=none``: the RFAD reference's 500 (10 classes) or 100, or half the
    smallest class where that holds no more (digits: 139 -> 69), so ``val_every`` works by default."""
    from distillbench_builtin.objectives.common import validation_per_class

    assert validation_per_class(10, None, 5421) == 500
    assert validation_per_class(100, None, 500) == 100
    assert validation_per_class(10, None, 139) == 69
    assert validation_per_class(3, None, 20) == 10
    assert validation_per_class(10, 7, 139) == 7  # a value given is used as given


def test_val_every_runs_on_digits_with_the_default_hold_out_and_records_it(tmp_path):
    from click.testing import CliRunner

    from distillbench.cli import main
    from distillbench.store.database import open_existing

    store = tmp_path / "r.sqlite"
    result = CliRunner().invoke(main, ["run", "-q", "--store", str(store), "objective.val_every=1",
                                       "objective.steps=2"])
    assert result.exit_code == 0, result.output
    reader = open_existing(store)
    try:
        (record,) = list(reader.records())
    finally:
        reader.close()
    assert record.status == "done" and record.metrics["objective_val_per_class"] == 69


@pytest.mark.parametrize("args", [["objective.lr=1e308"], ["objective=rfad", "objective.reg=1e39"],
                                  ["objective=ls", "objective.solve_reg=1e300"], ["objective.loss_lr=3.5e38"]])
def test_an_objective_float_beyond_float32_is_refused_at_plan_time(registry, args):
    with pytest.raises(ConfigError, match="is larger than float32 holds"):
        plan(args, registry)


def test_a_parameter_with_identity_set_joins_the_run_id_only_when_set():
    """``Param(identity="set")`` (the nn evaluator's ``augment``, added after runs were stored):
    at its default the run_id is the one runs had before the parameter existed; set, it differs."""
    from distillbench.params import Param

    registry = load_registry()
    plain, default, dsa = (plan(["dataset=digits", "evaluator=nn", *extra], registry).configs[0]
                           for extra in ([], ["evaluator.augment=none"], ["evaluator.augment=dsa"]))
    assert plain.run_id == default.run_id != dsa.run_id
    assert "augment" not in _identity_params(default) and "augment" in _identity_params(dsa)
    with pytest.raises(TypeError, match="identity must be"):
        Param("x", int, 0, "a doc", identity="sometimes")


def _identity_params(config) -> set[str]:
    choice = config.evaluator
    return {k for k, _ in choice.params if k not in choice.not_identity}
