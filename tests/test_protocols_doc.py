"""docs/protocols.md stays true: every `distillbench run` command in it resolves, its parameters give
the reference behaviour (issue 18), and each paper setting's command gets its paper number."""

import re
import shlex
from pathlib import Path

import pytest

from distillbench.registry import load_registry
from distillbench.runner.plan import parse_overrides, plan

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"


def _commands(prefix: str = "distillbench run"):
    text = DOC.read_text().replace("\\\n", " ")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith(prefix):
                yield line


COMMANDS = list(_commands())
#: The commands that reproduce a paper's setting (the family table on mnist-t10k is distillbench's own).
PAPER_COMMANDS = [c for c in COMMANDS if "dataset=mnist-t10k" not in c]


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
    from distillbench.runner.plan import default_component

    overrides = parse_overrides(_args(command))
    for key in overrides:
        head, _, tail = key.partition(".")
        if tail:  # every parameter a protocol sets is declared by the component it names
            name = dict((k, v[0]) for k, v in overrides.items()).get(head)
            component = registry.get(head, name or registry.get("objective", overrides.get("objective", ["kip"])[0])
                                     .defaults.get(head) or default_component(registry, head))
            assert component.param(tail) is not None, f"{key} is not a parameter of {head} {component.name}"


def _configs(command, registry):
    args = [a for a in _args(command) if not a.startswith("seed=")]
    return [c.to_dict() for c in plan([*args, "seed=0"], registry).configs]


@pytest.mark.parametrize("command", [c for c in PAPER_COMMANDS if "seed=0,1,2,3" in c or "dataset=mnist" in c])
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
            assert config["loss"]["name"] == "platt" and op["loss_lr"] == 1e-2
        if objective["name"] in ("kip", "ls"):  # KIP: sigma_b^2 = 1e-4 in training and evaluation kernels
            assert kp["b_std"] == 0.01 and config["evaluator"]["params"]["b_std"] == 0.01
            assert op["reg"] == 1e-6
        if objective["name"] == "kip":
            assert op["init"] == "real" and op["lr"] == 0.01
        if config["evaluator"]["name"] == "nn" and objective["name"] == "rfad":  # RFAD Table 2's protocol
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
        (found,) = [c for c in PAPER_COMMANDS if all(n in c for n in needles) and not any(w in c for w in without)]
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
    from distillbench.records import RunConfig
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
        typed = RunConfig.from_dict(config)
        found = find_reference(method_fields(typed), typed)
        assert found == number, (number.method, number.dataset, number.ipc)
        # one parameter off the protocol, and the paper number is gone
        off = {**config, "objective": {**config["objective"],
                                       "params": {**config["objective"]["params"], "reg": 0.123}}}
        off = RunConfig.from_dict(off)
        assert find_reference(method_fields(off), off) is None


# -- campaigns/*.toml: the same cells as the commands of their protocols.md section ------------------

CAMPAIGNS = DOC.parents[1] / "campaigns"
#: campaign file -> the protocols.md section whose commands it writes down
CAMPAIGN_SECTIONS = {"rfad-table1.toml": "RFAD Table 1", "kip-table1.toml": "KIP Table 1",
                     "frepo-table1.toml": "FRePo Table 1", "rcig-table1.toml": "RCIG Table 1",
                     "family-mnist-t10k.toml": "The family on mnist-t10k"}


def official_layout_data(root: Path) -> Path:
    """Tiny files in the official layouts of the five RFAD Table 1 datasets (50 images per class;
    CIFAR-100 100 per class in train, FRePo's 50 ipc; the MNIST test files 250 per class, for
    mnist-t10k's split).

    Enough for the planner's checks (``describe`` reads labels and headers) with ``dataset.verify=false``;
    neither that nor ``dataset.data_dir`` is part of a run_id, so the cells are those of the real files.
    """
    import pickle

    import numpy as np
    import scipy.io

    from tests_support_mnist import write_idx

    for name in ("mnist", "fashion-mnist"):
        (root / name).mkdir(parents=True)
        for prefix, n in (("train", 500), ("t10k", 2500)):  # t10k: mnist-t10k holds out 200 per class
            write_idx(root / name / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
            write_idx(root / name / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    for name, folder, files, key, classes in (
            ("cifar10", "cifar-10-batches-py", [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"], b"labels",
             10),
            ("cifar100", "cifar-100-python", ["train", "test"], b"fine_labels", 100)):
        (root / name / folder).mkdir(parents=True)
        per_file = 2500 if classes == 100 else 100  # cifar100: 50 per class in train (FRePo's 50 ipc)
        for f in files:
            n = per_file * (2 if f == "train" else 1)
            batch = {b"data": np.zeros((n, 3072), np.uint8), key: list(np.arange(n) % classes)}
            (root / name / folder / f).write_bytes(pickle.dumps(batch))
    (root / "svhn").mkdir()
    for f in ("train_32x32.mat", "test_32x32.mat"):
        scipy.io.savemat(root / "svhn" / f, {"X": np.zeros((32, 32, 3, 500), np.uint8),
                                             "y": (np.arange(500) % 10 + 1).reshape(-1, 1)})
    return root


@pytest.fixture(scope="module")
def data_args(tmp_path_factory):
    root = official_layout_data(tmp_path_factory.mktemp("data"))
    return [f"dataset.data_dir={root}", "dataset.verify=false"]


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _section_commands(title: str) -> list[str]:
    return [c for c in COMMANDS if c in _section(title).replace("\\\n", " ")]


def _dataset_ipcs() -> dict[str, list[str]]:
    """``{dataset: ["1", "10", "50"]}`` from the results table (its ipc column)."""
    out = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ("mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"):
            out[cells[0]] = [n.strip() for n in cells[1].split("/")]
    return out


def _expanded(command: str) -> list[list[str]]:
    """The argument lists a doc command stands for: ``dataset=D ipc=N`` once per dataset row with that
    row's ipcs and additions, and the fixed and learned label columns."""
    args = shlex.split(command)[2:]
    if "dataset=D" not in args:
        return [args]
    extras, ipcs = _dataset_extras(), _dataset_ipcs()
    out = []
    for dataset, (rfad_adds, kip_adds) in extras.items():
        adds = rfad_adds if "objective=rfad" in args else kip_adds
        replaced = {a.partition("=")[0] for a in adds} | {"dataset", "ipc", "objective.learn_labels"}
        kept = [a for a in args if a.partition("=")[0] not in replaced]
        out.append([f"dataset={dataset}", f"ipc={','.join(ipcs[dataset])}", *kept, *adds,
                    "objective.learn_labels=false,true"])
    return out


@pytest.mark.parametrize("name", sorted(CAMPAIGN_SECTIONS))
def test_campaign_files_and_protocol_commands_resolve_to_the_same_cells(name, registry, data_args):
    from distillbench.runner.campaign import plan_campaign

    doc_ids = []
    for command in _section_commands(CAMPAIGN_SECTIONS[name]):
        for args in _expanded(command):
            doc_ids += [c.run_id for c in plan([*args, *data_args], registry).configs]
    file_ids = [c.run_id for c in plan_campaign(CAMPAIGNS / name, parse_overrides(data_args), registry).configs]
    assert doc_ids and len(set(doc_ids)) == len(doc_ids) == len(file_ids)
    assert set(file_ids) == set(doc_ids)
    assert f"distillbench run --config campaigns/{name}" in _section(CAMPAIGN_SECTIONS[name])


def test_every_campaign_file_has_its_protocol_section():
    assert sorted(p.name for p in CAMPAIGNS.glob("*.toml")) == sorted(CAMPAIGN_SECTIONS)


def test_rfad_table1_campaign_lists_every_cell_of_the_table(registry, data_args):
    """5 datasets x their ipcs x 4 seeds x fixed and learned labels, for the RFAD and the KIP columns."""
    from distillbench.runner.campaign import plan_campaign

    configs = plan_campaign(CAMPAIGNS / "rfad-table1.toml", parse_overrides(data_args), registry).configs
    cells = {(c.objective.name, c.dataset.name, c.ipc, c.seed, dict(c.objective.params)["learn_labels"])
             for c in configs}
    ipcs = {d: [int(n) for n in v] for d, v in _dataset_ipcs().items()}
    expected = {(method, d, n, seed, learned) for method in ("rfad", "kip") for d in ipcs for n in ipcs[d]
                for seed in range(4) for learned in (False, True)}
    assert cells == expected and len(configs) == len(expected) == 224


EVALUATE_COMMANDS = list(_commands("distillbench evaluate"))


def test_the_doc_has_evaluation_protocol_commands():
    assert len(EVALUATE_COMMANDS) >= 3  # RCIG without and with augmentation, KIP


@pytest.mark.parametrize("command", EVALUATE_COMMANDS)
def test_evaluation_protocol_commands_resolve_as_evaluate_resolves_them(command, registry):
    """Every `distillbench evaluate` protocol command's options exist and its evaluator settings plan
    (declared parameters, valid values), as the command itself would plan them."""
    from distillbench.cli.evaluate import evaluate
    from distillbench.runner.plan import plan_parsed

    words = shlex.split(command)[2:]
    options = {o for p in evaluate.params for o in p.opts}
    assert all(w in options for w in words if w.startswith("--")), command
    overrides = parse_overrides([w for w in words if "=" in w and not w.startswith("--")])
    assert all(key.partition(".")[0] == "evaluator" for key in overrides)
    planned = plan_parsed(overrides, registry)
    assert planned.configs and not planned.refused
