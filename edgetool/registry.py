"""One kind of registry for every seam: transports, deploy flows, meters, emulators, exporters.

Built-ins are named as "module:attribute" strings and imported only when asked for, so
`edgetool --help` stays instant and a target that never uses SSH never imports paramiko.
Third parties add entries through an entry point group (`edgetool.transports`, ...); a
name claimed twice is an error naming both claimants, never a silent override.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from edgetool.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects of one kind: built-ins, run-time registrations, entry points."""

    def __init__(self, what: str, group: str, builtins: Mapping[str, str]) -> None:
        self.what = what
        self.group = group
        self._builtins = dict(builtins)
        self._loaded: dict[str, T] = {}

    def register(self, name: str, value: T) -> T:
        """Add an entry in code (tests, plugins that prefer calling over metadata)."""
        if name in self._loaded or name in self._builtins:
            raise ConfigError(f"{self.what} {name!r} is registered twice")
        self._loaded[name] = value
        return value

    def unregister(self, name: str) -> None:
        """Drop a run-time registration (a test cleaning up after itself)."""
        self._loaded.pop(name, None)

    def _entry_points(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name in self._builtins:
                raise ConfigError(
                    f"{self.what} {ep.name!r} is built in, but the installed distribution "
                    f"{_dist_name(ep)} registers it again ({ep.value})",
                    hint=f"Uninstall {_dist_name(ep)} or rename its {self.group} entry point.",
                )
            if ep.name in found and found[ep.name].value != ep.value:
                raise ConfigError(
                    f"{self.what} {ep.name!r} is registered by two distributions: "
                    f"{_dist_name(found[ep.name])} ({found[ep.name].value}) and "
                    f"{_dist_name(ep)} ({ep.value})"
                )
            found[ep.name] = ep
        return found

    def names(self) -> list[str]:
        return sorted({*self._builtins, *self._loaded, *self._entry_points()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> T:
        """The entry called NAME; a ConfigError listing the known names otherwise."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._builtins:
            module_name, _, attr = self._builtins[name].partition(":")
            value: T = getattr(importlib.import_module(module_name), attr)
        else:
            ep = self._entry_points().get(name)
            if ep is None:
                raise ConfigError(
                    f"unknown {self.what} {name!r} (known: {', '.join(self.names()) or 'none'})"
                )
            try:
                value = ep.load()
            except Exception as exc:  # a broken plugin must not look like an edgetool bug
                raise ConfigError(
                    f"{self.what} {name!r} from {_dist_name(ep)} failed to load: {exc}"
                ) from exc
        self._loaded[name] = value
        return value


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "an installed distribution"
