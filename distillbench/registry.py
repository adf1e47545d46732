"""The registry: every component by (kind, name), with the package that provides it.

Built from the ``distillbench_components`` hook, calling each plugin's implementation on its
own so that one plugin raising during registration is reported and skipped. Two components of
the same kind and name are an error naming both providers: silently picking one would make
results depend on installation order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from distillbench.components.spec import KINDS, Component
from distillbench.errors import ConfigError, PluginError, did_you_mean
from distillbench.plugins import LoadedPlugins, PluginFailure, load_plugins, one_line


@dataclass(frozen=True)
class Entry:
    component: Component
    source: str


class Registry:
    """Name -> component per kind, plus the plugin failures met while building it."""

    def __init__(self, entries: Iterable[Entry] = (), failures: Iterable[PluginFailure] = ()):
        self._entries: dict[tuple[str, str], Entry] = {}
        self.failures: list[PluginFailure] = list(failures)
        for entry in entries:
            self.add(entry.component, entry.source)

    def add(self, component: Component, source: str) -> None:
        key = (component.kind, component.name)
        if key in self._entries:
            other = self._entries[key].source
            raise PluginError(
                f"{component.kind} {component.name!r} is registered twice: by {other} and by {source}; "
                f"uninstall one, or disable it with DISTILLBENCH_DISABLE_PLUGINS"
            )
        self._entries[key] = Entry(component, source)

    @classmethod
    def from_plugins(cls, loaded: LoadedPlugins) -> Registry:
        registry = cls(failures=loaded.failures)
        for impl in loaded.manager.hook.distillbench_components.get_hookimpls():  # registration order
            source = loaded.source_of(impl.plugin)
            try:
                items = list(impl.function() or ())
                bad = [item for item in items if not isinstance(item, Component)]
                if bad:
                    raise TypeError(f"hook returned {type(bad[0]).__name__}, expected distillbench.Component")
            except Exception as exc:
                registry.failures.append(PluginFailure(source, "registration", one_line(exc)))
                continue
            for component in items:
                registry.add(component, source)
        return registry

    # -- lookups -----------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self._entries if k == kind)

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [self._entries[(k, n)] for k in kinds for n in self.names(k)]

    def get(self, kind: str, name: str) -> Component:
        entry = self._entries.get((kind, name))
        if entry is None:
            raise ConfigError(f"unknown {kind} {name!r}{did_you_mean(name, self.names(kind))}")
        return entry.component

    def source(self, kind: str, name: str) -> str:
        return self._entries[(kind, name)].source

    def instantiate(self, kind: str, name: str, params: Mapping[str, Any]) -> Any:
        return self.get(kind, name).instantiate(params)


def load_registry(*, entry_points: bool = True, extra: tuple[Any, ...] = ()) -> Registry:
    """Discover plugins and build the registry (no JAX import)."""
    return Registry.from_plugins(load_plugins(entry_points=entry_points, extra=extra))
