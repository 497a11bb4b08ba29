"""The plugin manager and the registry of stages the plugins offer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import pluggy

from facetools_dapfsr.pipeline import hookspecs
from facetools_dapfsr.pipeline.config import PipelineConfig
from facetools_dapfsr.pipeline.hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME, StageFactory
from facetools_dapfsr.pipeline.stages import STAGE_KINDS, STAGE_PROTOCOLS

DISABLE_AUTOLOAD_ENV = "FACETOOLS_DISABLE_PLUGIN_AUTOLOAD"
"""Set to a non-empty value (other than ``0``) to skip loading plugins from entry points; the
built-in stages are registered anyway."""

BUILTIN_PLUGIN_NAME = "dapfsr"
"""Name of the built-in plugin, the same as its entry point in ``pyproject.toml``."""


class PluginError(ValueError):
    """A plugin registered something invalid, or a configuration names an unknown stage."""


def autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("", "0")


def make_plugin_manager(autoload: bool | None = None, plugins: Sequence[object] = ()) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs, the installed plugins and the built-in stages.

    Args:
        autoload: load plugins from the ``facetools`` entry-point group; ``None`` means yes
            unless ``FACETOOLS_DISABLE_PLUGIN_AUTOLOAD`` is set.
        plugins: more plugin objects or modules to register (e.g. from application code).
    Raises:
        pluggy.PluginValidationError: a plugin implements a hook that does not exist (a
            misspelled hook name) or with wrong arguments.
    """
    from facetools_dapfsr.pipeline import builtin

    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = not autoload_disabled()
    if autoload:
        # Registers this package's own entry point too when it is installed.
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if not manager.is_registered(builtin):
        # Running from a source tree that was not installed, or autoload disabled.
        manager.register(builtin, name=BUILTIN_PLUGIN_NAME)
    for plugin in plugins:
        manager.register(plugin)
    manager.check_pending()
    return manager


@dataclass(frozen=True)
class StageEntry:
    kind: str
    name: str
    factory: StageFactory
    plugin: str
    """Name of the plugin that registered the stage."""


class StageRegistry:
    """All stages the registered plugins offer, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, StageEntry]] = {kind: {} for kind in STAGE_KINDS}

    @classmethod
    def from_plugin_manager(cls, manager: pluggy.PluginManager) -> StageRegistry:
        registry = cls()
        # Call each implementation separately so that every stage is attributed to its plugin.
        for impl in manager.hook.register_stages.get_hookimpls():
            plugin_name = manager.get_name(impl.plugin) or repr(impl.plugin)

            def register(kind: str, name: str, factory: StageFactory, _plugin: str = plugin_name) -> None:
                registry.add(StageEntry(kind, name, factory, _plugin))

            impl.function(register=register)
        return registry

    def add(self, entry: StageEntry) -> None:
        if entry.kind not in self._entries:
            raise PluginError(
                f"plugin {entry.plugin!r} registered stage {entry.name!r} of unknown kind {entry.kind!r}; "
                f"kinds are {', '.join(STAGE_KINDS)}"
            )
        if not callable(entry.factory):
            raise PluginError(f"plugin {entry.plugin!r} registered stage {entry.name!r} with a non-callable factory")
        existing = self._entries[entry.kind].get(entry.name)
        if existing is not None:
            raise PluginError(
                f"{entry.kind} stage {entry.name!r} is registered twice (plugins {existing.plugin!r} and "
                f"{entry.plugin!r}); give one of them another name and choose it in the configuration"
            )
        self._entries[entry.kind][entry.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def get(self, kind: str, name: str) -> StageEntry:
        try:
            return self._entries[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise PluginError(f"no {kind} stage named {name!r}; registered: {known}") from None

    def build(self, kind: str, name: str, config: PipelineConfig) -> object:
        """Instantiate stage ``name`` of ``kind`` and check it provides what its kind needs."""
        entry = self.get(kind, name)
        stage = entry.factory(config)
        protocol = STAGE_PROTOCOLS[kind]
        if not isinstance(stage, protocol):
            raise PluginError(
                f"{kind} stage {name!r} from plugin {entry.plugin!r} built a {type(stage).__name__}, "
                f"which does not provide the {protocol.__name__} interface"
            )
        return stage
