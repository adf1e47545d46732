"""Every `distillbench run` command in docs/protocols.md resolves (dry run), so the doc stays true."""

import re
import shlex
from pathlib import Path

import pytest

from distillbench.registry import load_registry
from distillbench.runner.plan import parse_overrides

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"


def _commands():
    text = DOC.read_text().replace("\\\n", " ")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("distillbench run"):
                yield line


@pytest.mark.parametrize("command", list(_commands()))
def test_protocol_commands_parse_against_the_registry(command):
    args = [a for a in shlex.split(command)[2:] if "=" in a and not a.startswith("...")]
    args = [a.replace("dataset=D", "dataset=digits").replace("ipc=N", "ipc=1") for a in args]
    registry = load_registry(entry_points=False)
    overrides = parse_overrides(args)
    for key in overrides:
        head, _, tail = key.partition(".")
        if tail:  # every parameter a protocol sets is declared by the component it names
            name = dict((k, v[0]) for k, v in overrides.items()).get(head)
            from distillbench.runner.plan import DEFAULT_COMPONENTS

            component = registry.get(head, name or registry.get("objective", overrides.get("objective", ["kip"])[0])
                                     .defaults.get(head, DEFAULT_COMPONENTS[head]))
            assert component.param(tail) is not None, f"{key} is not a parameter of {head} {component.name}"
