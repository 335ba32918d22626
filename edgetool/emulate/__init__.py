"""Emulated devices: each starts and stops like a device and is then used as one.

`EMULATORS` maps a target's `[emulator] type` to an EmulatorFactory (see base.py);
third parties add more through the `edgetool.emulators` entry point group. Built-ins
are imported only when a target names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetool.emulate.base import Emulator, EmulatorFactory, ImageBuilder
from edgetool.errors import ConfigError
from edgetool.registry import Registry

if TYPE_CHECKING:
    from edgetool.targets import Target

EMULATORS: Registry[EmulatorFactory] = Registry(
    "emulator type",
    "edgetool.emulators",
    {
        "sshd": "edgetool.emulate.sshd:for_target",
        "qemu-m": "edgetool.emulate.qemu_m:for_target",
        "qemu-aarch64": "edgetool.emulate.qemu_a:for_target",
    },
)


def open_emulator(target: Target) -> Emulator:
    """The emulator behind TARGET; a ConfigError for real devices and unknown types."""
    if target.emulator is None:
        raise ConfigError(f"target {target.name} is a real device (no [emulator] section)")
    kind = target.emulator.type
    if kind not in EMULATORS:
        raise ConfigError(
            f"{target.source}: emulator type '{kind}' is not supported "
            f"(supported: {', '.join(EMULATORS.names())})"
        )
    return EMULATORS.get(kind)(target)


def image_builder(target: Target) -> ImageBuilder:
    """TARGET's emulator, when it has a disk image to build."""
    emulator = open_emulator(target)
    if not isinstance(emulator, ImageBuilder):
        raise ConfigError(f"target {target.name}'s emulator has no image to build")
    return emulator
