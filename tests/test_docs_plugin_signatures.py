"""docs/plugins.md stays true to the code it documents: the ``Component(...)`` and ``Param(...)``
signature lines name every field, in order, and section 3's table has a row for every kind."""

from __future__ import annotations

import dataclasses
import re

import pytest

from distillbench import Component, Param
from distillbench.components.spec import ALL_KINDS
from helpers import DOCS_PLUGINS


def _documented_fields(cls_name: str) -> list[str]:
    """The argument names of the guide's ``Name(a, b, c=None, ...)` from `distillbench`` line."""
    text = DOCS_PLUGINS.read_text()
    match = re.search(rf"`{cls_name}\((.*?)\)` from `distillbench`", text, re.S)
    assert match, f"no `{cls_name}(...)` signature line in docs/plugins.md"
    return [arg.split("=")[0].strip() for arg in match.group(1).replace("\n", " ").split(",")]


@pytest.mark.parametrize("cls", [Component, Param])
def test_signature_lines_name_every_field_in_order(cls):
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    assert _documented_fields(cls.__name__) == fields


def test_the_kind_table_has_a_row_for_every_kind():
    text = DOCS_PLUGINS.read_text()
    table = text[text.index("## 3. The contract of each kind"):text.index("### Kernels")]
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}
    assert set(ALL_KINDS) <= rows, sorted(set(ALL_KINDS) - rows)
