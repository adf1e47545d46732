"""Campaign files: named grids of ``distillbench run`` settings in TOML, resolved by the planner.

A campaign is the command line written down, so that a paper protocol of hundreds of cells is one
reviewed file rather than ten shell lines. The shape::

    [grid.rfad]                      # one named grid: the key=value vocabulary of the command line
    dataset = ["mnist", "cifar10"]   # a list sweeps, like a comma list
    ipc = [1, 10, 50]
    "kernel.arch" = "convnet3"       # quote dotted keys (or nest them: [grid.rfad.kernel] arch = ...)

    [grid.rfad-svhn]
    extends = "rfad"                 # start from another grid's settings, then change some
    dataset = "svhn"
    "dataset.preprocess" = "zca-layernorm"

Each grid's settings go to ``runner.plan.plan_parsed`` as parsed values, exactly as its command line
would; the cells of all grids are concatenated and a cell in several grids runs once. Command-line
``KEY=VALUE`` arguments (parsed, the launcher's taken apart by ``runner.plan.plan_launcher``) replace
that key in every grid, and keys this module does not know pass through to the planner unchanged; a
``<kind>.<param>=`` one that a grid's components do not declare is ignored in that grid with a note,
as on the command line, and refused only when no grid declares it. Every problem is one
``ConfigError`` line naming the file, and the grid and key it is about (the planner's
``ConfigError.key``: ``campaigns/x.toml [grid.rfad] kernel.arch: ...``; a TOML syntax error: its
line, from tomllib). The file is read only when it is a regular file of at most ``MAX_BYTES`` (a FIFO
or ``/dev/zero`` is one line, not a hang).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from distillbench.errors import ConfigError, did_you_mean, shown
from distillbench.registry import Registry
from distillbench.runner.plan import LAUNCHER, Options, Plan, plan_parsed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the same parser, from PyPI (a conditional dependency)
    import tomli as tomllib

GRID_TABLE = "grid"
EXTENDS = "extends"
#: Largest campaign file read (the paper protocols are a few KiB): no runaway read of a huge file.
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Grid:
    """One named grid: its settings as command-line text, in the file's order (``extends`` applied)."""

    name: str
    settings: tuple[tuple[str, tuple[str, ...]], ...]

    def values(self, overrides: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
        """This grid's settings as the planner takes them (``{key: [v1, v2]}``), each override replacing its key."""
        merged = {key: list(values) for key, values in self.settings}
        merged.update((key, list(values)) for key, values in (overrides or {}).items())
        return merged


@dataclass(frozen=True)
class Campaign:
    """A campaign file's grids."""

    path: Path
    grids: tuple[Grid, ...]

    def where(self, grid: str | None = None, key: str | None = None) -> str:
        """Where to look for an error: ``FILE``, ``FILE [grid.NAME]`` or ``FILE [grid.NAME] KEY``."""
        place = f"{self.path} [{GRID_TABLE}.{_toml_key(grid)}]" if grid is not None else str(self.path)
        return f"{place} {_toml_key(key)}" if grid is not None and key is not None else place


def _toml_key(key: str) -> str:
    """A key as written in TOML: bare when it can be, else quoted (``[grid."a b"]``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_.-]+", key) and ".." not in key else json.dumps(key)


def read_campaign(path: str | Path) -> Campaign:
    """Parse and check a campaign file's structure (not yet its keys: the planner does that)."""
    if not str(path).strip():
        raise ConfigError("the campaign file name is empty; pass --config PATH to a .toml file (examples in campaigns/)")
    located = Campaign(Path(path), ())
    data = _load_toml(located.path)
    unknown = [k for k in data if k != GRID_TABLE]
    if unknown:
        raise ConfigError(f"{located.where()}: unknown top-level key {unknown[0]!r}"
                          f"{did_you_mean(unknown[0], [GRID_TABLE])}; a campaign holds [{GRID_TABLE}.NAME] tables")
    tables = data.get(GRID_TABLE)
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{located.where()}: holds no [{GRID_TABLE}.NAME] table; add one, e.g. [{GRID_TABLE}.main] "
                          'then dataset = "digits" and seed = [0, 1]')
    raw: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{located.where()}: {GRID_TABLE}.{name} is a value, not a table: write the "
                              f"settings of a grid under a [{GRID_TABLE}.NAME] header")
        raw[name] = _flatten(table, located, name)
        if not raw[name]:  # extends = "a" alone is a grid: its parent's settings
            raise ConfigError(f"{located.where(name)}: the grid is empty: give it at least one setting, "
                              'e.g. dataset = "digits"')
    return replace(located, grids=tuple(Grid(name, _resolve_extends(name, raw, located)) for name in raw))


def _load_toml(path: Path) -> dict[str, Any]:
    """The file's tables; a syntax error is one line with tomllib's ``FILE:LINE``."""
    text = _read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"at line (\d+)", message)
        where = f"{path}:{found.group(1)}" if found else str(path)
        hint = ""
        if "overwrite" in message.lower():  # kernel = "ntk" then kernel.arch = ...: a string, then a table
            hint = '; quote dotted keys, e.g. "kernel.arch" = "convnet3", or set each key once'
        raise ConfigError(f"{where}: TOML syntax: {message}{hint}") from None


def _read_text(path: Path) -> str:
    """The file's text: a regular file of at most ``MAX_BYTES``, checked before it is opened, so a
    FIFO without a writer or ``/dev/zero`` is one line instead of a hang or a runaway read."""
    fix = "pass --config PATH to a UTF-8 .toml file (examples in campaigns/)"
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: the campaign file is a directory; {fix}")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: the campaign file is not a regular file (a FIFO, a device or a socket); {fix}")
        if info.st_size > MAX_BYTES:
            raise ConfigError(f"{path}: the campaign file is {info.st_size} bytes, more than a campaign holds "
                              f"({MAX_BYTES} bytes at most); {fix}")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced between the stat and the open
                raise ConfigError(f"{path}: the campaign file is not a regular file; {fix}")
            data = f.read(MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"{path}: no such campaign file; pass --config PATH to a .toml file "
                          "(examples in campaigns/)") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{path}: the campaign file is unreadable ({type(exc).__name__}: {reason}); {fix}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: the campaign file is larger than a campaign holds ({MAX_BYTES} bytes at most); {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the campaign file is not UTF-8 text (byte {exc.start}); {fix}") from None


def _flatten(table: Mapping[str, Any], campaign: Campaign, grid: str, prefix: str = "") -> dict[str, Any]:
    """``{"kernel": {"arch": ...}}`` (nested or inline tables) -> ``{"kernel.arch": ...}``; values as text."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        where = campaign.where(grid, full)
        if isinstance(value, dict):
            out.update(_flatten(value, campaign, grid, f"{full}."))
        elif full == EXTENDS:
            if not isinstance(value, str):
                raise ConfigError(f'{where}: {EXTENDS} takes the name of another grid, e.g. {EXTENDS} = "main"')
            out[full] = value
        elif full.partition(".")[0] == LAUNCHER:
            raise ConfigError(f"{where}: {full} belongs on the command line (e.g. --config {campaign.path} "
                              "launcher=ray launcher.gpus_per_run=1): a launcher runs the whole campaign and is "
                              "not part of a cell")
        else:
            if not full.strip() or any(c.isspace() or c in ",=" for c in full):
                raise ConfigError(f"{where}: malformed key {full!r}: keys are the command line's, e.g. ipc or "
                                  "objective.steps")
            out[full] = tuple(_texts(value, where, full))
    return out


def _texts(value: Any, where: str, key: str) -> list[str]:
    """A TOML value (or list of values) as the command-line text the planner parses."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{where}: {key} = [] sweeps nothing; give a value or a list of values")
    return [_text(v, where, key) for v in values]


def _text(value: Any, where: str, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{where}: {key} has an empty value; give a value, e.g. {key} = ...")
        if "," in value:
            raise ConfigError(f"{where}: {key} = {shown(value)}: a comma list is a command-line form; in a file "
                              f"write a list, e.g. {key} = {_as_list(value)}")
        return value
    kind = "a list inside a list" if isinstance(value, list) else f"a TOML {type(value).__name__}"
    raise ConfigError(f"{where}: {key} is {kind}; a setting is a string, a number, a boolean or a list of them")


def _as_list(text: str) -> str:
    """``"1,2,3"`` as the TOML list to write instead: ``[1, 2, 3]`` (a long list cut with ``...``)."""
    items = [item.strip() for item in text.split(",", 8) if item.strip()]
    shown_items = [item for item in items[:8] if len(item) <= 40]
    more = ", ..." if len(shown_items) < len(items) or len(items) > 8 else ""
    return "[" + ", ".join(item if re.fullmatch(r"-?[\d.eE+-]+|true|false", item) else f'"{item}"'
                           for item in shown_items) + more + "]"


def _resolve_extends(name: str, raw: Mapping[str, Mapping[str, Any]], campaign: Campaign,
                     chain: tuple[str, ...] = ()) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A grid's settings: those of the grid it extends (recursively), then its own on top."""
    table = raw[name]
    settings: dict[str, tuple[str, ...]] = {}
    base = table.get(EXTENDS)
    if base is not None:
        where = campaign.where(name, EXTENDS)
        if base not in raw:
            raise ConfigError(f"{where}: {base!r} is not a grid of this file{did_you_mean(base, raw)}")
        if base in (*chain, name):
            cycle = " -> ".join((*chain, name, base))
            raise ConfigError(f"{where}: {EXTENDS} makes a cycle ({cycle}); one grid must start from no other")
        settings.update(_resolve_extends(base, raw, campaign, (*chain, name)))
    settings.update((k, v) for k, v in table.items() if k != EXTENDS)
    return tuple(settings.items())


def plan_campaign(path: str | Path, overrides: Mapping[str, Sequence[str]], registry: Registry, *,
                  check_data: bool = True) -> Plan:
    """Every grid of the file planned with the command-line ``overrides`` on top (parsed, ``{key: [values]}``
    as :func:`~distillbench.runner.plan.parse_overrides` returns them), as one ``Plan``.

    ``check_data`` as in :func:`distillbench.runner.plan.plan` (``False`` for a dry run).
    """
    campaign = read_campaign(path)
    optional = [key for key in overrides if "." in key]  # as on the command line: ignored where undeclared
    plans: list[tuple[str, Plan]] = []
    for grid in campaign.grids:
        plans.append((grid.name, _plan_grid(campaign, grid, overrides, registry, check_data, optional)))
    everywhere = set.intersection(*(set(p.unused) for _, p in plans))
    if everywhere:  # no grid declares it: refused with the planner's own line (did-you-mean)
        _plan_grid(campaign, campaign.grids[0], overrides, registry, check_data, sorted(set(optional) - everywhere))
    for name, p in plans:
        p.notes += [f"{key}= from the command line does not apply to grid {name!r}; ignored there"
                    for key in p.unused]
    return _merge(campaign, plans)


def _plan_grid(campaign: Campaign, grid: Grid, overrides: Mapping[str, Sequence[str]], registry: Registry,
               check_data: bool, optional: Sequence[str]) -> Plan:
    try:
        return plan_parsed(grid.values(overrides), registry, check_data=check_data, optional=optional)
    except ConfigError as exc:
        raise ConfigError(_located(campaign, grid, exc, overrides), key=exc.key) from None


def _located(campaign: Campaign, grid: Grid, error: ConfigError, overrides: Mapping[str, Sequence[str]]) -> str:
    """The planner's message with where the key it is about (``error.key``) was set: the command
    line, else the grid and the key in the file (the grid alone for an error about no one key)."""
    if error.key in overrides:
        return f"{campaign.where(grid.name)} {error.key}= from the command line: {error}"
    return f"{campaign.where(grid.name, error.key)}: {error}"


def _merge(campaign: Campaign, plans: list[tuple[str, Plan]]) -> Plan:
    """One plan: the cells of every grid in order, each run_id once; one set of execution options."""
    first_name, first = plans[0]
    for name, other in plans[1:]:
        for f in fields(Plan):
            if f.name in ("configs", "refused", "notes", "unused"):
                continue
            mine, theirs = getattr(first, f.name), getattr(other, f.name)
            if mine != theirs:
                differ = _difference(mine, theirs)
                raise ConfigError(f"{campaign.path}: grids {first_name!r} and {name!r} set {differ} differently: "
                                  "it applies to the whole campaign; give it the same value in every grid, or "
                                  "once on the command line")
    seen: set[str] = set()
    configs, refused, notes, repeated = [], [], [], 0
    for _, p in plans:
        refused += p.refused
        notes += [n for n in p.notes if n not in notes]
        for config in p.configs:
            if config.run_id in seen:
                repeated += 1
                continue
            seen.add(config.run_id)
            configs.append(config)
    if repeated:
        notes.append(f"{repeated} cell{'s' * (repeated != 1)} of {campaign.path} appear in more than one grid; "
                     "each runs once")
    return replace(first, configs=configs, refused=refused, notes=notes)


def _difference(mine: Any, theirs: Any) -> str:
    if isinstance(mine, Options) and isinstance(theirs, Options):
        mine, theirs = vars(mine), vars(theirs)
    if isinstance(mine, dict) and isinstance(theirs, dict):
        keys = [k for k in {**mine, **theirs} if mine.get(k) != theirs.get(k)]
        return ", ".join(f"{k} ({mine.get(k)!r} vs {theirs.get(k)!r})" for k in keys)
    return f"{mine!r} vs {theirs!r}"
