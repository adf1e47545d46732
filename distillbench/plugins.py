"""Plugin discovery: built-ins by name, then entry points one by one, each isolated.

``load_plugins()`` builds a fresh pluggy manager (a factory, so tests get fresh managers). The
built-in components register through the same ``distillbench_components`` hook as third-party
ones. A third-party module that fails to import is recorded as a ``PluginFailure`` (one warning
line for the user) instead of aborting discovery, unlike ``load_setuptools_entrypoints``.
``DISTILLBENCH_DISABLE_PLUGINS=name1,name2`` skips entry points by name or distribution.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from distillbench import hookspecs

#: Modules registered before any entry point, in this order (like pytest's default_plugins).
BUILTIN_PLUGINS = ("distillbench_builtin",)
BUILTIN_SOURCE = "distillbench (built-in)"
DISABLE_ENV = "DISTILLBENCH_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used: its package, the stage that failed and the error."""

    plugin: str
    stage: str
    error: str

    def line(self) -> str:
        return f"plugin {self.plugin!r} failed at {self.stage} and was skipped: {self.error}"


@dataclass
class LoadedPlugins:
    """A plugin manager plus where each registered plugin came from."""

    manager: pluggy.PluginManager
    sources: dict[int, str] = field(default_factory=dict)  # id(plugin object) -> "dist version"
    failures: list[PluginFailure] = field(default_factory=list)

    def source_of(self, plugin: Any) -> str:
        return self.sources.get(id(plugin), self.manager.get_name(plugin) or repr(plugin))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins(*, entry_points: bool = True, extra: tuple[Any, ...] = ()) -> LoadedPlugins:
    """Return a fresh manager with built-ins, ``extra`` plugin objects, then entry points."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(manager)
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        manager.register(module, name=module_name)
        loaded.sources[id(module)] = BUILTIN_SOURCE
    for plugin in extra:
        manager.register(plugin)
        loaded.sources[id(plugin)] = getattr(plugin, "__name__", repr(plugin))
    if entry_points:
        _load_entry_points(loaded)
    return loaded


def _load_entry_points(loaded: LoadedPlugins) -> None:
    disabled = disabled_names()
    for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else ep.value.split(":")[0]
        source = f"{dist_name} {dist.version}" if dist is not None else dist_name
        if ep.name in disabled or dist_name in disabled:
            continue
        if loaded.manager.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            loaded.manager.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            loaded.failures.append(PluginFailure(dist_name, "import", one_line(exc)))
            continue
        loaded.sources[id(plugin)] = source
