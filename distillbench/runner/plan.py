"""From ``key=value`` overrides to fully resolved, validated run configurations.

Grammar (``distillbench run`` arguments):

* ``dataset=``, ``kernel=``, ``loss=``, ``objective=``, ``evaluator=`` choose components; a kind
  left out is the objective's preferred one (its ``defaults``), else the one whose plugin declares
  it ``default=True`` (:func:`default_component`);
* ``<kind>.<param>=value`` sets a component parameter (``kernel.arch=convnet3``);
* ``ipc=``, ``seed=`` set run parameters; ``timeout=`` (seconds per run) is an execution option;
* a comma list sweeps: every key with several values spans the cartesian product.

Everything is validated here, before any compute and before the results store is touched, so
bad input is one ``ConfigError`` line. A parameter that some component chosen in the sweep
declares but this cell's component does not is ignored for this cell (and said so in notes).
"""

from __future__ import annotations

import inspect

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from distillbench.components.spec import KINDS
from distillbench.errors import ConfigError, did_you_mean
from distillbench.params import AUTO, SEED_MAX, Param, format_value
from distillbench.records import ComponentChoice, RunConfig
from distillbench.registry import Registry

RUN_PARAMS = (
    Param("ipc", int, 1, "images per class in the distilled support set", min=1),
    Param("seed", int, 0, "run seed: support init, sampling, random kernels, baseline subset (a uint32)",
          min=0, max=SEED_MAX),
)
OPTION_PARAMS = (
    Param("timeout", float, None, "seconds after which a run stops with status timeout", min=0.0,
          min_open=True, nullable=True),
)
_RUN = {p.name: p for p in RUN_PARAMS}
#: The kind whose choice says where a sweep's cells run (:func:`plan_launcher`): not a cell's component.
LAUNCHER = "launcher"
_OPTIONS = {p.name: p for p in OPTION_PARAMS}


@dataclass(frozen=True)
class Options:
    """A plan's execution options (:data:`OPTION_PARAMS`): one value each, never swept, not identity."""

    timeout: float | None = None  # seconds after which a run stops with status timeout


@dataclass
class Plan:
    configs: list[RunConfig]
    options: Options
    refused: list[tuple[str, str]] = field(default_factory=list)  # (cell label, reason)
    notes: list[str] = field(default_factory=list)
    #: ``optional`` keys (see :func:`plan`) that no chosen component declares: ignored in every cell
    unused: list[str] = field(default_factory=list)


def parse_overrides(args: Iterable[str]) -> dict[str, list[str]]:
    """``["loss=mse,platt", "seed=0"]`` -> ``{"loss": ["mse", "platt"], "seed": ["0"]}``."""
    parsed: dict[str, list[str]] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise ConfigError(f"malformed argument {arg!r}: expected key=value, e.g. kernel=ntk or objective.steps=100")
        values = [v.strip() for v in value.split(",")]
        if any(v == "" for v in values):
            raise ConfigError(f"{key}= has an empty value in {arg!r}: give a value, or a comma list like seed=0,1,2",
                              key=key)
        if key in parsed:
            raise ConfigError(f"{key} is given twice; use one comma list instead, e.g. {key}={','.join(parsed[key] + values)}",
                              key=key)
        parsed[key] = list(dict.fromkeys(values))
    return parsed


def _known_top_keys() -> list[str]:
    return list(KINDS) + list(_RUN) + list(_OPTIONS)


def plan(args: Iterable[str], registry: Registry, *, check_data: bool = True,
         optional: Iterable[str] = ()) -> Plan:
    """Resolve ``key=value`` arguments into a validated ``Plan``: :func:`plan_parsed` of :func:`parse_overrides`."""
    return plan_parsed(parse_overrides(args), registry, check_data=check_data, optional=optional)


def plan_parsed(values: Mapping[str, Sequence[str]], registry: Registry, *, check_data: bool = True,
                optional: Iterable[str] = ()) -> Plan:
    """Resolve parsed overrides (``{"seed": ["0", "1"]}``, as :func:`parse_overrides` returns them, or a
    campaign grid's settings) into a validated ``Plan``; raise ``ConfigError`` on any bad input.

    Values are stripped and each taken once, as on the command line.

    ``check_data=False`` (a dry run) lists the cells even where a dataset's files are missing or do
    not hold ``ipc`` images per class: each such problem becomes one note instead of an error, so a
    campaign can be reviewed on a machine without its data. ``optional``: ``<kind>.<param>`` keys
    that may apply to none of the chosen components (a campaign's command-line override on a grid
    whose components do not declare it): listed in ``Plan.unused`` instead of refused.
    """
    overrides = {key: list(dict.fromkeys(v.strip() for v in given)) for key, given in values.items()}
    dotted = _component_keys(overrides)
    options = _options(overrides)
    for kind in KINDS:  # validate chosen names up front, with did-you-mean
        for name in overrides.get(kind, []):
            registry.get(kind, name)

    sweep_keys = [k for k in overrides if k not in _OPTIONS and "." not in k]
    sweep_keys += [f"{kind}.{p}" for kind in KINDS for p in dotted[kind]]
    value_lists = [overrides[k] for k in sweep_keys]
    cells = [dict(zip(sweep_keys, combo)) for combo in itertools.product(*value_lists)]

    chosen = [_choose_components(cell, registry) for cell in cells]
    unused = _check_params_declared(dotted, chosen, registry, set(optional))

    result = Plan(configs=[], options=options, unused=unused)
    ignored = _resolve_cells(result, cells, chosen, registry, check_data)
    _tag_varying_params(result, registry, {f"{kind}.{p}" for kind in KINDS for p in dotted[kind]})
    notes = [f"{key} does not apply to every chosen {key.split('.')[0]}; ignored where undeclared"
             for key in sorted(ignored - set(unused))]
    result.notes[:0] = notes
    if not result.configs:
        label, reason = result.refused[0]
        raise ConfigError(f"refused {label}: {reason}")
    return result


def _component_keys(overrides: Mapping[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """``{kind: {param: values}}`` of the ``<kind>.<param>=`` keys; an unknown key is a ``ConfigError``."""
    dotted: dict[str, dict[str, list[str]]] = {kind: {} for kind in KINDS}
    for key, values in overrides.items():
        head, dot, tail = key.partition(".")
        if dot:
            if head not in KINDS:
                raise ConfigError(f"unknown key {key!r}: {head!r} is not a component kind{did_you_mean(head, KINDS)}",
                                  key=key)
            if not tail:
                raise ConfigError(f"malformed key {key!r}: expected {head}.<parameter>", key=key)
            dotted[head][tail] = values
        elif key not in _known_top_keys():
            raise ConfigError(f"unknown key {key!r}{did_you_mean(key, _known_top_keys())}", key=key)
    return dotted


def _options(overrides: Mapping[str, list[str]]) -> Options:
    """The execution options (``timeout=``): one value each, never swept."""
    options = {name: p.default for name, p in _OPTIONS.items()}
    for name, p in _OPTIONS.items():
        if name in overrides:
            if len(overrides[name]) > 1:
                raise ConfigError(f"{name} cannot be swept (one value, e.g. {name}={overrides[name][0]})", key=name)
            options[name] = p.parse(overrides[name][0])
    return Options(**options)


def _resolve_cells(result: Plan, cells, chosen, registry: Registry, check_data: bool) -> set[str]:
    """Resolve every cell into ``result`` (configs, refused, data notes); return the parameters skipped."""
    seen: set[str] = set()
    ignored: set[str] = set()
    described: dict[tuple, Any] = {}  # one describe() per dataset configuration, not per cell
    data_notes: dict[str, None] = {}
    for cell, names in zip(cells, chosen):
        config, reason, skipped = _resolve_cell(cell, names, registry, None if check_data else data_notes)
        if not reason and not any(note.startswith(f"dataset {config.dataset.name}") for note in data_notes):
            try:
                _check_dataset(config, registry, described)
            except ConfigError as exc:
                if check_data:
                    raise
                data_notes[f"{exc} (not checked further in this dry run; a real run refuses it)"] = None
        ignored.update(skipped)
        if reason:
            result.refused.append((with_arch(config, registry).label(), reason))
            continue
        if config.run_id not in seen:
            seen.add(config.run_id)
            result.configs.append(config)
    result.notes.extend(data_notes)
    return ignored


def _check_dataset(config: RunConfig, registry: Registry, described: dict[tuple, Any]) -> None:
    """Check ``ipc`` and the classes against the dataset's ``describe`` (when it has one).

    Any exception from ``describe`` (a truncated file, labels out of range) is bad input: one line
    naming the dataset, and for third-party ones their package.
    """
    from distillbench.components.datasets import DatasetInfo, info_problem

    entry = registry.entry("dataset", config.dataset.name)
    describe = entry.component.describe
    if describe is None:
        return  # a dataset without metadata is checked when it is built
    label = f"dataset {config.dataset.name}" if entry.builtin else entry.label()
    key = (config.dataset.name, config.dataset.params)
    if key not in described:
        try:
            described[key] = describe(config.dataset.as_dict())
        except Exception as exc:
            text = (str(exc).strip().splitlines() or [""])[0]
            shown = text if entry.builtin and text else f"describe raised {type(exc).__name__}: {text}"
            raise ConfigError(f"{label}: {shown}", key="dataset") from None
    info = described[key]
    if not isinstance(info, DatasetInfo):
        raise ConfigError(f"{label}: describe must return distillbench.components.datasets.DatasetInfo, "
                          f"got {type(info).__name__}", key="dataset")
    problem = info_problem(info, config.ipc)
    if problem:
        raise ConfigError(f"{label}: {problem}", key="ipc" if problem.startswith("ipc=") else "dataset")
    problem = _objective_data_problem(config, registry, info)
    if problem:
        raise ConfigError(problem, key="objective")


def _takes_ipc(check) -> bool:
    """Whether a ``check_data`` also takes the run's ``ipc`` (as a keyword; the older form does not)."""
    try:
        inspect.signature(check).bind({}, None, ipc=1)
    except (TypeError, ValueError):
        return False
    return True


def _objective_data_problem(config: RunConfig, registry: Registry, info) -> str | None:
    """The objective's own check of the data it will see (``Component.check_data``: e.g. the memory
    a learned support transform needs for these images), one line naming the objective, or None."""
    entry = registry.entry("objective", config.objective.name)
    check = entry.component.check_data
    if check is None:
        return None
    try:
        if _takes_ipc(check):
            problem = check(config.objective.as_dict(), info, ipc=config.ipc)
        else:
            problem = check(config.objective.as_dict(), info)
    except Exception as exc:  # a third party's check that raises refuses, naming it
        problem = f"check_data raised {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    label = f"objective {config.objective.name}" if entry.builtin else entry.label()
    return f"{label}: {problem}" if problem else None


def _tag_varying_params(result: Plan, registry: Registry, explicit: set[str] = frozenset()) -> None:
    """Label each cell with the parameters the user set (``explicit``, swept or not) and those that
    vary across the sweep where the cell's value is not its component's default.

    Two cells that differ in any parameter thus get different labels, and a sweep over components
    with many parameters does not list every default of each.
    """
    flats = [c.flat() for c in result.configs]
    keys = sorted({k for f in flats for k in f})
    varying = {k for k in keys if len({repr(f.get(k)) for f in flats}) > 1}
    for i, (config, flat) in enumerate(zip(result.configs, flats)):
        config, shown = with_arch(config, registry), []
        arch_keys = {f"kernel.{p.name}" for p in _arch_params(config.kernel, registry)}
        for k in keys:
            if k in arch_keys or k not in flat:  # the arch is part of the label already
                continue
            kind, _, name = k.partition(".")
            if k not in explicit:
                if k not in varying:
                    continue
                param = registry.get(kind, config.choice(kind).name).param(name)
                if param is not None and repr(param.default) == repr(flat[k]):
                    continue
            shown.append(f"{k}={format_value(flat[k])}")
        result.configs[i] = replace(config, tag=" ".join(shown))


def _arch_params(kernel: ComponentChoice, registry: Registry) -> list[Param]:
    """The kernel's parameters naming an architecture (``Param(component="architecture")``)."""
    if kernel.name not in registry.names("kernel"):
        return []
    return [p for p in registry.get("kernel", kernel.name).params if p.component == "architecture"]


def with_arch(config: RunConfig, registry: Registry) -> RunConfig:
    """``config`` with its kernel's architecture for its label (``RunConfig.arch``): the value of the
    kernel's parameter declared as naming one, whatever its name; none for a kernel not installed."""
    values = [config.kernel.as_dict().get(p.name) for p in _arch_params(config.kernel, registry)]
    return replace(config, arch=next((str(v) for v in values if v is not None), None))


def _choose_components(cell: Mapping[str, str], registry: Registry) -> dict[str, str]:
    """The cell's names, else the objective's preferred ones (its ``defaults``), else the default of the kind."""
    names = {"objective": cell.get("objective") or default_component(registry, "objective")}
    preferred = registry.get("objective", names["objective"]).defaults
    for kind in KINDS:
        if kind != "objective":
            names[kind] = cell.get(kind) or preferred.get(kind) or default_component(registry, kind)
            registry.get(kind, names[kind])
    return names


def default_component(registry: Registry, kind: str) -> str:
    """The component of ``kind`` a run uses when it names none: the one declared ``default=True``.

    The core names no component itself; the plugin that provides one declares it. Exactly one
    installed component of a kind may claim it. None, or several (a plugin claiming the default
    of a kind that already has one), is bad input for a run that names none of that kind.
    """
    claims = [entry for entry in registry.entries(kind) if entry.component.default]
    if len(claims) == 1:
        return claims[0].component.name
    names = registry.names(kind)
    example = f"{kind}={claims[0].component.name if claims else names[0]}" if claims or names else None
    if not claims:
        why = f"no installed plugin declares a default {kind}"
    else:
        why = f"{len(claims)} components claim to be the default {kind}: " + ", ".join(e.label() for e in claims)
    fix = f"name one, e.g. {example}" if example else "install a plugin that provides one"
    raise ConfigError(f"no {kind} given and {why}; {fix}", key=kind)


def _check_params_declared(dotted, chosen, registry: Registry, optional: set[str]) -> list[str]:
    """Refuse a ``<kind>.<param>`` that no chosen component declares; return the ``optional`` ones."""
    unused = []
    for kind, params in dotted.items():
        components = {names[kind] for names in chosen}
        declared = {p.name for name in components for p in registry.get(kind, name).params}
        for pname in params:
            if pname not in declared and f"{kind}.{pname}" in optional:
                unused.append(f"{kind}.{pname}")
            elif pname not in declared:
                which = " or ".join(sorted(components))
                raise ConfigError(f"unknown parameter {kind}.{pname} for {kind} {which}{did_you_mean(pname, declared)}",
                                  key=f"{kind}.{pname}")
    return unused


def auto_reference(config: RunConfig, param: Param, registry: Registry) -> str:
    """The component a reference set to ``auto`` names in the run ``config`` (the one rule):
    the run kernel's component of that kind (its parameter naming one, e.g. ``kernel.arch``),
    else the reference's declared fallback (``Param.auto``): for a set made without a kernel, by a
    kernel whose networks learn, or when the run kernel's component is one that exists only as
    finite networks to train (both ``Component.learning``: FRePo's pool and ``frepo-conv`` have no
    infinite-width form for an evaluation kernel)."""
    kernel = config.kernel
    if kernel.name in registry.names("kernel") and not registry.get("kernel", kernel.name).learning:
        values = kernel.as_dict()
        for declared in registry.get("kernel", kernel.name).params:
            value = values.get(declared.name)
            if declared.component == param.component and value is not None:
                usable = value not in registry.names(param.component) or not registry.get(param.component, value).learning
                return value if usable else param.auto
    return param.auto


def builder_params(choice: ComponentChoice, config: RunConfig, registry: Registry) -> dict[str, Any]:
    """``choice``'s parameters as its builder takes them in the run ``config``: each reference set to
    ``auto`` replaced by the name it stands for (:func:`auto_reference`). ``Registry.instantiate``
    then builds the architectures they name."""
    params = choice.as_dict()
    for param in registry.get(choice.kind, choice.name).params:
        if param.auto is not None and params.get(param.name) == AUTO:
            params[param.name] = auto_reference(config, param, registry)
    return params


def _check_reference(param: Param, value: Any, key: str, registry: Registry) -> None:
    """Refuse a value of a parameter naming another component (``Param.component``) that names no
    usable one: unknown (with a did-you-mean) or registered twice. ``auto`` passes where declared."""
    kind = param.component
    if kind is None or not registry.names(kind) or (param.auto is not None and value == AUTO):
        return
    if registry.ambiguity(kind, value):
        raise ConfigError(registry.ambiguity(kind, value), key=key)
    if value not in registry.names(kind):
        raise ConfigError(f"{key}={value}: unknown {kind} {value!r}{did_you_mean(value, registry.names(kind))}",
                          key=key)


def _resolve_cell(cell, names, registry: Registry, data_notes: dict[str, None] | None = None):
    """The cell's ``RunConfig``, the reason it is refused (or ``None``) and the parameters skipped.

    With ``data_notes`` (a dry run), a dataset's ``validate`` problem is noted there, not raised.
    """
    choices = {}
    skipped = []
    for kind in KINDS:
        component = registry.get(kind, names[kind])
        params, undeclared = _component_params(kind, component, cell, registry)
        skipped += undeclared
        problem = _invalid(kind, component, params)
        if problem and kind == "dataset" and data_notes is not None:
            data_notes[f"{problem} (a real run refuses it)"] = None
        elif problem:
            raise ConfigError(problem, key=kind)
        choices[kind] = ComponentChoice(kind, component.name, tuple(sorted(params.items())),
                                        tuple(p.name for p in component.params
                                              if not p.in_identity(params.get(p.name, p.default))))
    run_values = {name: p.default for name, p in _RUN.items()}
    for name, p in _RUN.items():
        if name in cell:
            run_values[name] = p.parse(cell[name])
    config = RunConfig(**choices, **run_values)
    return config, _combination_refused(registry, names), skipped


def _component_params(kind: str, component, settings: Mapping[str, str], registry: Registry):
    """``(params, undeclared)``: ``component``'s defaults with each ``<kind>.<param>`` text of ``settings``
    it declares parsed and checked on top, and the ``<kind>.<param>`` keys it does not declare."""
    params = component.default_params()
    undeclared = []
    for key, text in settings.items():
        head, dot, pname = key.partition(".")
        if head != kind or not dot:
            continue
        param = component.param(pname)
        if param is None:
            undeclared.append(key)
            continue
        params[pname] = param.parse(text, owner=kind)
        _check_reference(param, params[pname], key, registry)
    return params, undeclared


def _invalid(kind: str, component, params: Mapping[str, Any]) -> str | None:
    """The component's own rules (``Component.validate``) on ``params``: the problem as one line, or None."""
    problem = component.validate(params) if component.validate is not None else None
    return f"{kind} {component.name}: {problem}" if problem else None


def plan_launcher(overrides: Mapping[str, Sequence[str]],
                  registry: Registry) -> tuple[ComponentChoice, dict[str, list[str]]]:
    """The launcher that ``launcher=`` and ``launcher.<param>=`` choose (the declared default when none
    is named), its parameters parsed and validated as any component's; and the other overrides.

    Planned apart from the cells: where cells run is an execution option, never part of a run_id.
    """
    given = {k: list(v) for k, v in overrides.items() if k.partition(".")[0] == LAUNCHER}
    for key, values in given.items():
        if len(values) > 1:
            raise ConfigError(f"{key} cannot be swept: one launcher runs a sweep (e.g. {key}={values[0]})", key=key)
    name = given.pop(LAUNCHER, [default_component(registry, LAUNCHER)])[0]
    component = registry.get(LAUNCHER, name)
    declared = [p.name for p in component.params]
    for key in given:
        pname = key.partition(".")[2]
        if pname not in declared:
            raise ConfigError(f"unknown parameter {key} for launcher {name}{did_you_mean(pname, declared)}", key=key)
    params, _ = _component_params(LAUNCHER, component, {k: v[0] for k, v in given.items()}, registry)
    problem = _invalid(LAUNCHER, component, params)  # the launcher's own rules, on --dry-run too
    if problem:
        raise ConfigError(problem, key=LAUNCHER)
    rest = {k: list(v) for k, v in overrides.items() if k.partition(".")[0] != LAUNCHER}
    return ComponentChoice(LAUNCHER, name, tuple(params.items())), rest


def _combination_refused(registry, names) -> str | None:
    """Why these components cannot run together (their ``check``s, and a learning kernel with an
    objective that cannot train its networks), or ``None``."""
    for kind in KINDS:
        check = registry.get(kind, names[kind]).check
        reason = check(dict(names)) if check is not None else None
        if reason:
            return reason
    kernel, objective = registry.get("kernel", names["kernel"]), registry.get("objective", names["objective"])
    if kernel.learning and not objective.learning:
        learners = [e.component.name for e in registry.entries("objective") if e.component.learning]
        return (f"kernel {kernel.name}'s networks learn during distillation, and objective {objective.name} "
                f"does not train them; use an objective that does: {', '.join(learners) or 'none installed'}")
    if objective.requires_learning and not kernel.learning:
        pools = [e.component.name for e in registry.entries("kernel") if e.component.learning]
        return (f"objective {objective.name} works on the networks of a kernel that trains them, and kernel "
                f"{kernel.name} has none; use kernel={' or kernel='.join(pools) or '(none installed)'}")
    return None
