"""Published reference numbers (``paper_numbers.json``) and how a leaderboard row is matched to them.

The data file ships inside the package. Each *method* there has a ``match``: the setting fields
that must hold for a row to be compared with the paper (a list means "any of"). The fields are
the ones :func:`distillbench.reports.rows.method_fields` computes from a stored config:
``dataset`` (compared after normalisation and aliases), ``ipc``, ``objective``, ``kernel``,
``kernel.arch``, ``loss``, ``objective.learn_labels``, ``evaluator``, ``evaluator.kernel`` and
``evaluator.arch``. A field a method does not name is not constrained. The dotted fields are
columns, not parameter names: what the components declare fills them (the kernel's parameter
naming an architecture, the objective's ``Param(role="learns_labels")``, what the evaluator ran).

Each method also has a ``protocol``: the paper's value of every parameter that changes what is
computed (docs/protocols.md), under its command-line key (``objective.val_every``). A value may be
a list ("any of") or ``{"min": x}`` (at least x: the number of steps). ``protocol_by_dataset``
adds per-dataset values (the preprocessing). With a run's stored ``config``,
``find_reference(fields, config)`` returns a number only when the run follows the protocol in every
one of them; ``protocol_mismatches`` says where it does not.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from distillbench.records import RunConfig

DATA_FILE = "paper_numbers.json"


@dataclass(frozen=True)
class PaperNumber:
    """One published accuracy (percent), with the method setting and the source it comes from."""

    method: str
    description: str
    dataset: str
    ipc: int
    acc: float
    std: float | None
    source: str  # short label, e.g. "RFAD Table 1 (Loo et al. 2022)"
    citation: str
    match: tuple[tuple[str, Any], ...]
    protocol: tuple[tuple[str, Any], ...] = ()

    def matches(self, fields: dict[str, Any]) -> bool:
        for key, wanted in self.match:
            options = wanted if isinstance(wanted, list) else [wanted]
            if fields.get(key) not in options:
                return False
        return True


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    if _number(value) and _number(wanted):
        return math.isclose(value, wanted, rel_tol=1e-12, abs_tol=0.0)
    return value == wanted


def _allowed(wanted: Any, value: Any) -> bool:
    if isinstance(wanted, dict):  # {"min": x}
        return _number(value) and value >= wanted["min"]
    return any(_same(value, option) for option in (wanted if isinstance(wanted, list) else [wanted]))


def protocol_mismatches(number: PaperNumber, config: RunConfig) -> list[str]:
    """``"key=value (paper: wanted)"`` for each protocol parameter where the run departs from the paper."""
    flat = config.flat()
    if "loss.learning_rate" in flat and "objective.loss_lr" not in flat:  # stored before plugin API 2 moved it
        flat["objective.loss_lr"] = flat.pop("loss.learning_rate")
    out = []
    for key, wanted in number.protocol:
        value = flat.get(key, "<absent>")
        if not _allowed(wanted, value):
            out.append(f"{key}={value} (paper: {wanted})")
    return out


def normalize_dataset(name: str) -> str:
    """``"CIFAR_10"``, ``"cifar-10"``, ``"Cifar10"`` -> ``"cifar10"``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, str], tuple[PaperNumber, ...]]:
    text = resources.files("distillbench.reports").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return parse(json.loads(text))


def parse(data: dict[str, Any]) -> tuple[dict[str, str], tuple[PaperNumber, ...]]:
    """(normalised alias -> canonical dataset, numbers) from the decoded data file."""
    if data.get("schema") != "distillbench.paper_numbers" or data.get("version") != 1:
        raise ValueError("not a distillbench.paper_numbers version 1 file")
    aliases: dict[str, str] = {}
    for canonical, others in data["dataset_aliases"].items():
        for name in [canonical, *others]:
            aliases[normalize_dataset(name)] = canonical
    numbers = []
    for entry in data["numbers"]:
        method = data["methods"][entry["method"]]
        source = data["sources"][method["source"]]
        if entry["dataset"] not in data["dataset_aliases"]:
            raise ValueError(f"paper number for unknown dataset {entry['dataset']!r}")
        protocol = {**method.get("protocol", {}), **method.get("protocol_by_dataset", {}).get(entry["dataset"], {})}
        numbers.append(PaperNumber(
            method=entry["method"], description=method["description"], dataset=entry["dataset"],
            ipc=int(entry["ipc"]), acc=float(entry["acc"]), std=entry.get("std"), source=source["label"],
            citation=source["citation"], match=tuple(method["match"].items()),
            protocol=tuple(sorted(protocol.items())),
        ))
    return aliases, tuple(numbers)


def paper_numbers() -> tuple[PaperNumber, ...]:
    return _load()[1]


def canonical_dataset(name: str) -> str | None:
    """The data file's name for dataset ``name`` (``"fashion_mnist"`` -> ``"fashion-mnist"``), or None."""
    return _load()[0].get(normalize_dataset(name))


def find_reference(fields: dict[str, Any], config: RunConfig | None = None) -> PaperNumber | None:
    """The published number for a row's setting ``fields`` (see the module docstring), or None.

    ``fields`` must hold ``dataset`` and ``ipc``; the methods' match conditions are mutually
    exclusive (a test checks it), so at most one number matches. With the row's stored ``config``,
    the number is returned only if the run also follows the method's protocol in every parameter.
    """
    dataset = canonical_dataset(str(fields.get("dataset", "")))
    if dataset is None:
        return None
    for number in paper_numbers():
        if number.dataset == dataset and number.ipc == fields.get("ipc") and number.matches(fields):
            if config is not None and protocol_mismatches(number, config):
                return None
            return number
    return None
