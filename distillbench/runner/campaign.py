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

Each grid goes through ``runner.plan.plan`` exactly as its command line would; the cells of all grids
are concatenated and a cell in several grids runs once. Command-line ``KEY=VALUE`` arguments replace
that key in every grid, and keys this module does not know (``launcher=``...) pass through to the
planner unchanged. Every problem is one ``ConfigError`` line naming the file and, where it comes from
the file, its line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from distillbench.errors import ConfigError, did_you_mean
from distillbench.registry import Registry
from distillbench.runner.plan import Plan, parse_overrides, plan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the same parser, from PyPI (a conditional dependency)
    import tomli as tomllib

GRID_TABLE = "grid"
EXTENDS = "extends"
LAUNCHER = "launcher"


@dataclass(frozen=True)
class Grid:
    """One named grid: its settings as command-line text, in the file's order (``extends`` applied)."""

    name: str
    settings: tuple[tuple[str, tuple[str, ...]], ...]

    def args(self, overrides: Mapping[str, list[str]] | None = None) -> list[str]:
        """The ``key=v1,v2`` arguments of this grid, each override replacing its key."""
        merged = {key: list(values) for key, values in self.settings}
        merged.update(overrides or {})
        return [f"{key}={','.join(values)}" for key, values in merged.items()]


@dataclass(frozen=True)
class Campaign:
    """A campaign file's grids, and where each grid and key is in it (for error lines)."""

    path: Path
    grids: tuple[Grid, ...]
    #: ``(grid, key) -> line`` (1-based) and ``grid -> line of its [grid.NAME] header``
    lines: Mapping[tuple[str, str], int]
    headers: Mapping[str, int]

    def where(self, grid: str, key: str | None = None) -> str:
        """``FILE:LINE`` of a grid's key (or of its header when the key has no line of its own)."""
        parts = key.split(".") if key else []
        while parts:
            line = self.lines.get((grid, ".".join(parts)))
            if line:
                return f"{self.path}:{line}"
            parts.pop()
        line = self.headers.get(grid)
        return f"{self.path}:{line}" if line else str(self.path)


def read_campaign(path: str | Path) -> Campaign:
    """Parse and check a campaign file's structure (not yet its keys: the planner does that)."""
    path = Path(path)
    data, text = _load_toml(path)
    lines, headers = _key_lines(text)
    located = Campaign(path, (), lines, headers)
    unknown = [k for k in data if k != GRID_TABLE]
    if unknown:
        raise ConfigError(f"{_top_where(path, text, unknown[0])}: unknown top-level key {unknown[0]!r}"
                          f"{did_you_mean(unknown[0], [GRID_TABLE])}; a campaign holds [{GRID_TABLE}.NAME] tables")
    tables = data.get(GRID_TABLE)
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: holds no [{GRID_TABLE}.NAME] table; add one, e.g. [{GRID_TABLE}.main] "
                          'then dataset = "digits" and seed = [0, 1]')
    raw: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{located.where(name)}: {GRID_TABLE}.{name} is a value, not a table: write the "
                              f"settings of a grid under a [{GRID_TABLE}.NAME] header")
        raw[name] = _flatten(table, located, name)
        if not [k for k in raw[name] if k != EXTENDS]:
            raise ConfigError(f"{located.where(name)}: grid {name!r} is empty: give it at least one setting, "
                              'e.g. dataset = "digits"')
    grids = tuple(Grid(name, _resolve_extends(name, raw, located)) for name in raw)
    return Campaign(path, grids, lines, headers)


def _load_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such campaign file; pass --config PATH to a .toml file "
                          "(examples in campaigns/)") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError, OSError) as exc:
        reason = "a directory" if isinstance(exc, IsADirectoryError) else f"unreadable ({type(exc).__name__})"
        raise ConfigError(f"{path}: the campaign file is {reason}; pass --config PATH to a UTF-8 .toml file") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"at line (\d+)", message)
        where = f"{path}:{found.group(1)}" if found else str(path)
        hint = ""
        if "overwrite" in message.lower():  # kernel = "ntk" then kernel.arch = ...: a string, then a table
            hint = '; quote dotted keys, e.g. "kernel.arch" = "convnet3", or set each key once'
        raise ConfigError(f"{where}: TOML syntax: {message}{hint}") from None


def _flatten(table: Mapping[str, Any], campaign: Campaign, grid: str, prefix: str = "") -> dict[str, Any]:
    """``{"kernel": {"arch": ...}}`` (nested or inline tables) -> ``{"kernel.arch": ...}``; values as text."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, campaign, grid, f"{full}."))
        elif full == EXTENDS:
            if not isinstance(value, str):
                raise ConfigError(f"{campaign.where(grid, full)}: grid {grid!r}: {EXTENDS} takes the name of "
                                  f'another grid, e.g. {EXTENDS} = "main"')
            out[full] = value
        elif full.partition(".")[0] == LAUNCHER:
            raise ConfigError(f"{campaign.where(grid, full)}: grid {grid!r}: {full} belongs on the command line "
                              f"(e.g. --config {campaign.path} launcher=ray launcher.gpus_per_run=1): a launcher "
                              "runs the whole campaign and is not part of a cell")
        else:
            if not full.strip() or any(c.isspace() or c in ",=" for c in full):
                raise ConfigError(f"{campaign.where(grid, full)}: grid {grid!r}: malformed key {full!r}: keys "
                                  "are the command line's, e.g. ipc or objective.steps")
            out[full] = tuple(_texts(value, campaign.where(grid, full), grid, full))
    return out


def _texts(value: Any, where: str, grid: str, key: str) -> list[str]:
    """A TOML value (or list of values) as the command-line text the planner parses."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{where}: grid {grid!r}: {key} = [] sweeps nothing; give a value or a list of values")
    return [_text(v, where, grid, key) for v in values]


def _text(value: Any, where: str, grid: str, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{where}: grid {grid!r}: {key} has an empty value; give a value, e.g. {key} = ...")
        if "," in value:
            raise ConfigError(f"{where}: grid {grid!r}: {key} = {value!r}: a comma list is a command-line "
                              f"form; in a file write a list, e.g. {key} = {_as_list(value)}")
        return value
    kind = "a list inside a list" if isinstance(value, list) else f"a TOML {type(value).__name__}"
    raise ConfigError(f"{where}: grid {grid!r}: {key} is {kind}; a setting is a string, a number, a boolean "
                      "or a list of them")


def _as_list(text: str) -> str:
    items = [item.strip() for item in text.split(",") if item.strip()]
    return "[" + ", ".join(item if re.fullmatch(r"-?[\d.eE+-]+|true|false", item) else f'"{item}"'
                           for item in items) + "]"


def _resolve_extends(name: str, raw: Mapping[str, Mapping[str, Any]], campaign: Campaign,
                     chain: tuple[str, ...] = ()) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A grid's settings: those of the grid it extends (recursively), then its own on top."""
    table = raw[name]
    settings: dict[str, tuple[str, ...]] = {}
    base = table.get(EXTENDS)
    if base is not None:
        where = campaign.where(name, EXTENDS)
        if base not in raw:
            raise ConfigError(f"{where}: grid {name!r} extends {base!r}, which is not a grid of this file"
                              f"{did_you_mean(base, raw)}")
        if base in (*chain, name):
            cycle = " -> ".join((*chain, name, base))
            raise ConfigError(f"{where}: grid {name!r}: {EXTENDS} makes a cycle ({cycle}); one grid must "
                              "start from no other")
        settings.update(_resolve_extends(base, raw, campaign, (*chain, name)))
    settings.update((k, v) for k, v in table.items() if k != EXTENDS)
    return tuple(settings.items())


_PART_TEXT = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)"""
_KEY_LINE = re.compile(rf"\s*({_PART_TEXT}(?:\s*\.\s*{_PART_TEXT})*)\s*=")
_HEADER = re.compile(r"""\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$""")
_PART = re.compile(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""")


def _parts(dotted: str) -> list[str]:
    return [a or b or c for a, b, c in _PART.findall(dotted)]


def _key_lines(text: str) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Where each grid's keys and headers are, for error lines (tomllib reports lines for syntax only).

    A line-by-line reading good enough for the files TOML people write: headers, ``key = value``
    lines, quoted and dotted keys. Lines inside multi-line arrays are not key lines and are skipped.
    """
    lines: dict[tuple[str, str], int] = {}
    headers: dict[str, int] = {}
    table: list[str] = []
    depth = 0  # open brackets of a multi-line array
    for number, line in enumerate(text.splitlines(), start=1):
        rest = line
        if depth == 0:
            header = _HEADER.match(line)
            key = None if header else _KEY_LINE.match(line)
            if header:
                table = _parts(header.group(1))
                if len(table) == 2 and table[0] == GRID_TABLE:
                    headers.setdefault(table[1], number)
            elif key and len(table) >= 2 and table[0] == GRID_TABLE:
                full = ".".join(table[2:] + _parts(key.group(1)))
                lines.setdefault((table[1], full), number)
            elif key and not table and _parts(key.group(1))[:1] == [GRID_TABLE]:
                parts = _parts(key.group(1))  # grid.NAME.key = value at the top level
                if len(parts) >= 3:
                    lines.setdefault((parts[1], ".".join(parts[2:])), number)
            rest = "" if header else line[key.end():] if key else line
        depth = max(0, depth + _open_brackets(rest))
    return lines, headers


_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def _open_brackets(value: str) -> int:
    """Brackets a value's text opens minus those it closes, outside its strings and its comment."""
    bare = _STRING.sub('""', value).split("#")[0]
    return bare.count("[") - bare.count("]")


def _top_where(path: Path, text: str, key: str) -> str:
    """``FILE:LINE`` of the first header or key line that starts with the top-level ``key``."""
    for number, line in enumerate(text.splitlines(), start=1):
        match = _HEADER.match(line) or _KEY_LINE.match(line)
        if match and _parts(match.group(1))[:1] == [key]:
            return f"{path}:{number}"
    return str(path)


def plan_campaign(path: str | Path, overrides: Iterable[str], registry: Registry, *,
                  check_data: bool = True) -> Plan:
    """Every grid of the file planned with the command-line ``overrides`` on top, as one ``Plan``.

    ``check_data`` as in :func:`distillbench.runner.plan.plan` (``False`` for a dry run).
    """
    campaign = read_campaign(path)
    extra = parse_overrides(overrides)
    plans: list[tuple[str, Plan]] = []
    for grid in campaign.grids:
        try:
            plans.append((grid.name, plan(grid.args(extra), registry, check_data=check_data)))
        except ConfigError as exc:
            raise ConfigError(_located(campaign, grid, str(exc), extra)) from None
    return _merge(campaign, plans)


def _located(campaign: Campaign, grid: Grid, message: str, extra: Mapping[str, list[str]]) -> str:
    """The planner's message with the file line of the key it is about: the key it names first (a
    did-you-mean names other keys after it), the longest one where two start at the same place."""
    found = []
    for key in {k for k, _ in grid.settings} | set(extra):
        match = re.search(rf"(?<![\w.-]){re.escape(key)}(?![\w-]|\.\w)", message)
        if match:
            found.append((match.start(), -len(key), key))
    named = min(found)[2] if found else None
    if named in extra:
        return f"{campaign.path}: grid {grid.name!r}, {named}= from the command line: {message}"
    return f"{campaign.where(grid.name, named)}: grid {grid.name!r}: {message}"


def _merge(campaign: Campaign, plans: list[tuple[str, Plan]]) -> Plan:
    """One plan: the cells of every grid in order, each run_id once; one set of execution options."""
    first_name, first = plans[0]
    for name, other in plans[1:]:
        for f in fields(Plan):
            if f.name in ("configs", "refused", "notes"):
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
    if isinstance(mine, dict) and isinstance(theirs, dict):
        keys = [k for k in {**mine, **theirs} if mine.get(k) != theirs.get(k)]
        return ", ".join(f"{k} ({mine.get(k)!r} vs {theirs.get(k)!r})" for k in keys)
    return f"{mine!r} vs {theirs!r}"
