"""The registry: every component by (kind, name), with the package that provides it.

Built from the ``distillbench_components`` hook, calling each plugin's implementation on its
own so that one plugin raising during registration is reported and skipped. Two components of
the same kind and name make that name ambiguous: silently picking one would make results depend
on installation order. The name is then blocked (looking it up is an error naming both
providers) while every other component stays usable, so one clash does not stop every run.

The registry builds what a component's parameters reference: a parameter naming an architecture
(``Param(component="architecture")``) reaches its builder as the ``Architecture`` this registry
built (once, :meth:`Registry.architecture`), so a registry made with extra plugins serves their
architectures and no process-wide lookup exists.

The registry also attributes run-time failures (``describe_failure``): a run that fails inside a
third-party component names that component and its package in the stored message.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillbench.components.architectures import Architecture, complete
from distillbench.components.spec import ALL_KINDS, Component
from distillbench.errors import ConfigError, ContractError, did_you_mean
from distillbench.plugins import (
    BUILTIN_SOURCE,
    LoadedPlugins,
    PluginFailure,
    PluginInfo,
    Tracer,
    load_plugins,
    one_line,
)


@dataclass(frozen=True)
class Entry:
    component: Component
    source: str
    #: Top-level modules holding the component's code (its plugin module and its builder).
    packages: frozenset[str] = field(default=frozenset())
    #: The manager name of the plugin that registered it ("" when added by hand).
    plugin: str = ""

    @property
    def builtin(self) -> bool:
        return self.source == BUILTIN_SOURCE

    def label(self) -> str:
        """``kernel 'rbf' (distillbench-rbf 0.1.0)``."""
        return f"{self.component.kind} {self.component.name!r} ({self.source})"


def _builder_package(component: Component) -> set[str]:
    build = component.build
    module = build.partition(":")[0] if isinstance(build, str) else getattr(build, "__module__", None)
    return {module.split(".")[0]} if module else set()


class Registry:
    """Name -> component per kind, plus the plugins met and the failures met while building it.

    A duplicate name is recorded in ``conflicts``. By default (``strict=True``) the name is then
    blocked: ``entry``/``get`` raise ``ConfigError`` naming every provider. ``strict=False`` keeps
    the first provider instead; ``distillbench plugins`` and the conformance suite use it.
    """

    def __init__(self, entries: Iterable[Entry] = (), failures: Iterable[PluginFailure] = (),
                 plugins: Iterable[PluginInfo] = (), tracer: Tracer | None = None, strict: bool = True):
        self._entries: dict[tuple[str, str], Entry] = {}
        self.failures: list[PluginFailure] = list(failures)
        self.plugins: list[PluginInfo] = list(plugins)
        self.conflicts: list[str] = []  # (strict=False) one message per duplicate name
        self.conflicting: list[tuple[str, str, str]] = []  # (plugin, kind, name) left out by a conflict
        self._clashes: dict[tuple[str, str], list[str]] = {}  # name -> every provider, first one first
        self._ambiguous: dict[tuple[str, str], list[str]] = {}  # (strict) the blocked names among them
        self.tracer = tracer or Tracer()
        self.strict = strict
        self._architectures: dict[str, Architecture] = {}  # built once each (Registry.architecture)
        for entry in entries:
            self.add(entry.component, entry.source, entry.packages, entry.plugin)

    def add(self, component: Component, source: str, packages: Iterable[str] = (), plugin: str = "") -> None:
        key = (component.kind, component.name)
        if key in self._entries or key in self._ambiguous:
            earlier = self._clashes.get(key) or [self._entries[key].source]
            providers = [*earlier, source]
            if key in self._clashes:  # one message per name, naming every provider
                self.conflicts[self.conflicts.index(_clash_message(key, self._clashes[key]))] = _clash_message(key, providers)
            else:
                self.conflicts.append(_clash_message(key, providers))
            self._clashes[key] = providers
            self.conflicting.append((plugin, component.kind, component.name))
            if self.strict:
                self._ambiguous[key] = providers
                self._entries.pop(key, None)
            return
        packages = frozenset(packages) | _builder_package(component)
        if source != BUILTIN_SOURCE:
            component = _guarded(component, source)
        self._entries[key] = Entry(component, source, packages, plugin)

    @classmethod
    def from_plugins(cls, loaded: LoadedPlugins, strict: bool = True) -> Registry:
        registry = cls(failures=loaded.failures, plugins=loaded.plugins, tracer=loaded.tracer, strict=strict)
        tracer = loaded.tracer
        for impl in loaded.manager.hook.distillbench_components.get_hookimpls():  # registration order
            info = loaded.info_of(impl.plugin)
            source = info.source
            t = time.perf_counter()
            try:
                items = list(impl.function() or ())
                bad = [item for item in items if not isinstance(item, Component)]
                if bad:
                    raise TypeError(f"hook returned {type(bad[0]).__name__}, expected distillbench.Component")
            except (Exception, SystemExit) as exc:  # one plugin's bug must not hide the others
                failure = PluginFailure(source, "registration", one_line(exc))
                registry.failures.append(failure)
                info.status, info.failure = "failed", failure
                tracer(failure.line())
                continue
            names = ", ".join(f"{c.kind}:{c.name}" for c in items) or "nothing"
            tracer(f"distillbench_components() of {source} -> {names} ({(time.perf_counter() - t) * 1e3:.1f} ms)")
            for component in items:
                registry.add(component, source, info.packages, info.name)
        return registry

    # -- lookups -----------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self._entries if k == kind)

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(ALL_KINDS)
        return [self._entries[(k, n)] for k in kinds for n in self.names(k)]

    def ambiguity(self, kind: str, name: str) -> str | None:
        """Why ``name`` cannot be used (two plugins register it), or ``None``."""
        providers = self._ambiguous.get((kind, name))
        return _clash_message((kind, name), providers) if providers else None

    def entry(self, kind: str, name: str) -> Entry:
        entry = self._entries.get((kind, name))
        if entry is None and (kind, name) in self._ambiguous:
            raise ConfigError(self.ambiguity(kind, name), key=kind)
        if entry is None:
            raise ConfigError(f"unknown {kind} {name!r}{did_you_mean(name, self.names(kind))}", key=kind)
        return entry

    def get(self, kind: str, name: str) -> Component:
        return self.entry(kind, name).component

    def source(self, kind: str, name: str) -> str:
        return self._entries[(kind, name)].source

    def provided_by(self, plugin: str) -> list[Entry]:
        """The components the plugin registered under manager name ``plugin``, in kind order."""
        return [entry for entry in self.entries() if entry.plugin == plugin]

    def instantiate(self, kind: str, name: str, params: Mapping[str, Any]) -> Any:
        """Build the component and check the value meets its kind's contract (``components.contracts``).

        A wrong type or a missing field raises ``ContractError`` naming the component and its
        package here, before any compute; a third-party kernel's shapes are checked when traced.
        A dataset's split must hold what its ``describe`` promised the planner.
        """
        entry = self.entry(kind, name)
        if self.tracer.enabled:
            shown = " ".join(f"{k}={v!r}" for k, v in params.items())
            self.tracer(f"build {entry.label()}{': ' + shown if shown else ''}")
        from distillbench.components.contracts import check_described, checked

        built = entry.component.instantiate(self.with_architectures(entry.component, params))
        value = checked(kind, built, entry.label(), third_party=not entry.builtin)
        if entry.component.describe is not None:
            check_described(value, entry.component.describe(params), entry.label())
        return value

    def architecture(self, name: str) -> Architecture:
        """The ``Architecture`` registered as ``name``, built once by this registry (its declared
        defaults), named, with the optional shape helpers completed (``components.architectures``)."""
        if name not in self._architectures:
            params = self.get("architecture", name).default_params()
            built = self.instantiate("architecture", name, params)
            self._architectures[name] = complete(built)._replace(name=name)
        return self._architectures[name]

    def with_architectures(self, component: Component, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with each architecture a parameter names (``Param(component="architecture")``)
        built: the builder receives the ``Architecture``, the run records its name."""
        resolved = dict(params)
        for param in component.params:
            if param.component == "architecture" and isinstance(resolved.get(param.name), str):
                resolved[param.name] = self.architecture(resolved[param.name])
        return resolved

    # -- run-time failures -------------------------------------------------------------------
    def describe_failure(self, exc: BaseException, involved: Sequence[tuple[str, str]]) -> str:
        """One line for a run that failed while the ``involved`` (kind, name) components ran.

        The innermost traceback frame that belongs to an involved component's package names the
        culprit. A third-party culprit prefixes the message with it (``kernel 'rbf'
        (distillbench-rbf 0.1.0): ValueError: ...``). When the culprit is unknown or built-in but
        third-party components were involved (e.g. an error inside the jitted step), they are
        named: ``involving kernel 'rbf' (distillbench-rbf 0.1.0): ...``. Built-in-only failures
        keep their plain message.
        """
        if isinstance(exc, ContractError):
            return str(exc)  # already names the component and its package
        message = one_line(exc)
        entries = []
        for kind, name in involved:
            entry = self._entries.get((kind, name))
            if entry is not None and entry not in entries:
                entries.append(entry)
        if not entries:
            return message
        culprits = _culprits(exc, entries)
        if culprits and not any(e.builtin for e in culprits):
            return f"{' / '.join(e.label() for e in culprits)}: {message}"
        third_party = [e for e in entries if not e.builtin]
        if not third_party:
            return message
        if len(entries) == 1:
            return f"{third_party[0].label()}: {message}"
        return f"involving {', '.join(e.label() for e in third_party)}: {message}"


def _clash_message(key: tuple[str, str], providers: Sequence[str]) -> str:
    kind, name = key
    count = {2: "twice"}.get(len(providers), f"{len(providers)} times")
    who = ", by ".join(providers[:-1]) + f" and by {providers[-1]}"
    return (f"{kind} {name!r} is registered {count}: by {who}; uninstall one, or disable it with "
            "DISTILLBENCH_DISABLE_PLUGINS")


def _guarded(component: Component, source: str) -> Component:
    """A third-party component whose ``check``/``validate`` cannot crash planning.

    An exception in ``check`` refuses that combination (the other cells of a sweep still run); one
    in ``validate`` becomes a one-line bad-input error. Both name the component and its package.
    """
    label = f"{component.kind} {component.name!r} ({source})"
    changes: dict[str, Any] = {}
    for attr in ("check", "validate"):
        fn = getattr(component, attr, None)
        if fn is None:
            continue

        def guarded(arg, fn=fn, attr=attr):
            try:
                return fn(arg)
            except Exception as exc:
                return f"{attr} of {label} raised {one_line(exc)}"

        changes[attr] = guarded
    return dataclasses.replace(component, **changes) if changes else component


def _frames(exc: BaseException) -> list[str]:
    """Module names of the traceback frames, innermost first (following ``raise ... from``)."""
    names: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain = []
        tb = current.__traceback__
        while tb is not None:
            chain.append(tb.tb_frame.f_globals.get("__name__") or "")
            tb = tb.tb_next
        names.extend(reversed(chain))
        current = current.__cause__
    return names


def _culprits(exc: BaseException, entries: list[Entry]) -> list[Entry]:
    for module in _frames(exc):
        top = module.split(".")[0]
        found = [e for e in entries if top in e.packages]
        if found:
            return found
    return []


def load_registry(*, entry_points: bool = True, extra: tuple[Any, ...] = (), strict: bool = True,
                  trace: bool | None = None) -> Registry:
    """Discover plugins and build the registry (no JAX import)."""
    return Registry.from_plugins(load_plugins(entry_points=entry_points, extra=extra, trace=trace), strict=strict)
