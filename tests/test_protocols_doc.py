"""docs/protocols.md stays true: every `distillbench run` command in it resolves, its parameters give
the reference behaviour (issue 18), and each paper setting's command gets its paper number."""

import re
import shlex
from pathlib import Path

import pytest

from distillbench.registry import load_registry
from distillbench.runner.plan import parse_overrides, plan

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"


def _commands():
    text = DOC.read_text().replace("\\\n", " ")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("distillbench run"):
                yield line


COMMANDS = list(_commands())


def _args(command: str, dataset: str = "digits") -> list[str]:
    """The command's ``key=value`` arguments, runnable here (``dataset=D`` etc. become ``digits``)."""
    args = [a for a in shlex.split(command)[2:] if "=" in a and not a.startswith("...")]
    args = [f"dataset={dataset}" if a.startswith("dataset=") else a for a in args]
    return [a.replace("ipc=N", "ipc=1") for a in args]


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_protocol_commands_parse_against_the_registry(command, registry):
    from distillbench.runner.plan import DEFAULT_COMPONENTS

    overrides = parse_overrides(_args(command))
    for key in overrides:
        head, _, tail = key.partition(".")
        if tail:  # every parameter a protocol sets is declared by the component it names
            name = dict((k, v[0]) for k, v in overrides.items()).get(head)
            component = registry.get(head, name or registry.get("objective", overrides.get("objective", ["kip"])[0])
                                     .defaults.get(head, DEFAULT_COMPONENTS[head]))
            assert component.param(tail) is not None, f"{key} is not a parameter of {head} {component.name}"


def _configs(command, registry):
    args = [a for a in _args(command) if not a.startswith("seed=")]
    return [c.to_dict() for c in plan([*args, "seed=0"], registry).configs]


@pytest.mark.parametrize("command", [c for c in COMMANDS if "seed=0,1,2,3" in c or "dataset=mnist" in c])
def test_protocol_commands_give_the_reference_behaviour(command, registry):
    """Items 1-5 of issue 18, as the resolved parameters of each paper command."""
    from distillbench_builtin.objectives.common import validation_per_class

    for config in _configs(command, registry):
        objective, kernel = config["objective"], config["kernel"]
        op, kp = objective["params"], kernel["params"]
        if objective["name"] == "rfad":
            # model selection: every 40 steps, one kernel of 16 networks, 500 per class, patience 1000
            assert op["val_every"] == 40 and op["patience"] == 1000
            assert op["val_models"] * kp["num_networks"] == 16 and kp["width"] == 256
            assert validation_per_class(10, op["val_per_class"]) == 500
            assert op["lr"] == 1e-3 and op["target_batch"] == 5120 and op["reg"] == 5e-3
            assert config["loss"]["name"] == "platt" and config["loss"]["params"]["learning_rate"] == 1e-2
        if objective["name"] in ("kip", "ls"):  # KIP: sigma_b^2 = 1e-4 in training and evaluation kernels
            assert kp["b_std"] == 0.01 and config["evaluator"]["params"]["b_std"] == 0.01
            assert op["reg"] == 1e-6
        if objective["name"] == "kip":
            assert op["init"] == "real" and op["lr"] == 0.01
        if config["evaluator"]["name"] == "nn":  # the reference's training protocol
            ep = config["evaluator"]["params"]
            assert ep["steps"] == 20000 and ep["val_every"] == 100 and ep["patience"] == 500
            assert ep["width"] == 1024 and ep["arch"] == "convnet3"
            assert validation_per_class(10, ep["val_per_class"]) == 500


def _dataset_extras():
    """``{dataset: (rfad extra args, kip extra args)}`` from the per-dataset table."""
    extras = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in ("mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"):
            extras[cells[0]] = tuple(c.strip("`").split() for c in cells[1:])
    return extras


def _method_command(method: str) -> tuple[str, list[str]]:
    """The doc command a paper method's numbers come from, and the arguments that select the column."""
    def one(*needles, without=()):
        (found,) = [c for c in COMMANDS if all(n in c for n in needles) and not any(w in c for w in without)]
        return found
    if method.startswith("rfad"):
        command = one("objective=rfad", "evaluator.kernel=nngp", without=("evaluator=nn",))
    elif method.startswith("kip-convnet"):
        command = one("objective=kip", "kernel.arch=convnet ")
    elif method == "kip-fc1":
        command = one("objective=kip", "kernel.arch=fc1")
    else:
        command = one("objective=ls")
    learned = "objective.learn_labels=true" if method.endswith("learned-labels") else None
    return command, [learned] if learned else []


def test_each_paper_setting_command_gets_its_paper_number_and_only_it(registry):
    from distillbench.reports.leaderboard import method_fields
    from distillbench.reports.paper import canonical_dataset, find_reference, paper_numbers

    extras = _dataset_extras()
    assert set(extras) == {"mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"}
    for number in paper_numbers():
        command, column = _method_command(number.method)
        (name,) = [d for d in extras if canonical_dataset(d) == number.dataset]
        add = extras[name][0 if number.method.startswith("rfad") else 1]
        args = [a for a in _args(command) if not a.startswith(("ipc=", "seed="))]
        args = [a for a in args if a.partition("=")[0] not in {x.partition("=")[0] for x in [*add, *column]}]
        dataset_args = [a for a in add if a.startswith("dataset.")]
        (config,) = _configs(" ".join(["distillbench run", *args, *column, f"ipc={number.ipc}",
                                       *[a for a in add if not a.startswith("dataset.")]]), registry)
        # the real dataset's parameters: its declared defaults, then what the doc adds
        config["dataset"] = {"name": name, "params": registry.get("dataset", name).default_params()}
        for a in dataset_args:
            key, _, value = a.partition("=")
            config["dataset"]["params"][key.split(".", 1)[1]] = value
        found = find_reference(method_fields(config), config)
        assert found == number, (number.method, number.dataset, number.ipc)
        # one parameter off the protocol, and the paper number is gone
        off = {**config, "objective": {**config["objective"],
                                       "params": {**config["objective"]["params"], "reg": 0.123}}}
        assert find_reference(method_fields(off), off) is None
