"""The Emulator protocol: what `edgetool emulate` and the deploy flows need from one.

An emulator is a device this host brings up. `start()` returns the state it published
(`targets.emulator_state_file`): the transport settings there overlay the target's, so a
started emulator is then used exactly like hardware. `stop()` and `status()` must also
find one left behind by a killed process, which is why they read that file rather than
remember anything in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from edgetool.targets import Target

Stage = Callable[[str], None]
"""Told each step of a long start or build ("booting (42 s): ..."), for a spinner."""


def no_stage(_text: str) -> None:
    """The Stage of a caller that shows no progress."""


class _Status(TypedDict):
    status: Literal["running", "booting", "stale", "stopped"]


class EmulatorStatus(_Status, total=False):
    """What `emulate status` reports; `--json` prints it as is, so keys are optional
    rather than null where an emulator has nothing to say."""

    state: dict[str, Any] | None
    """The published state (None when nothing is published)."""
    reason: str
    """Why it is stale, or why a dead one's state was cleaned up."""
    orphans: list[int]
    """Emulator processes no state file accounts for (a killed run's)."""


class Emulator(Protocol):
    """One emulated device, named like its target."""

    name: str

    def start(self, *, fresh: bool = False, stage: Stage = no_stage) -> dict[str, Any]:
        """Bring it up (or return the running one's state) and publish its state.

        The state holds at least `pid` and `transport` (the settings that overlay the
        target's: `host`/`port` for SSH, `url` for a UART); `emulate start` shows them.
        `fresh` discards what persists between starts (a disk overlay); an emulator that
        keeps nothing ignores it.
        """
        ...

    def stop(self) -> bool:
        """Stop it, and a stale one left by a killed run; True if something was running."""
        ...

    def state(self) -> dict[str, Any] | None:
        """The published state of a running, ready emulator; None otherwise."""
        ...

    def status(self) -> EmulatorStatus: ...


@dataclass(frozen=True)
class BuiltImage:
    """A disk image in the cache, built by this call or found there."""

    dir: Path
    disk: Path
    disk_format: str
    """"qcow2", ...: `--json` reports the size as `<disk_format>_bytes`."""
    cached: bool
    description: str
    """One phrase for humans: "Debian bookworm arm64, kernel 6.1.0-31-arm64"."""
    facts: Mapping[str, Any]
    """The image's own record (recipe, versions, hashes), for `--json`."""


@runtime_checkable
class ImageBuilder(Protocol):
    """An emulator whose device needs a disk image built before its first start."""

    def build_image(self, stage: Stage = no_stage) -> BuiltImage: ...


EmulatorFactory = Callable[["Target"], Emulator]
"""What the `edgetool.emulators` registry holds: target (with its `[emulator]` table) →
emulator. An Emulator class whose constructor takes the Target is one."""


def status_of(state: dict[str, Any] | None) -> EmulatorStatus:
    """Status of an emulator whose only evidence is a live published state."""
    return {"status": "running" if state else "stopped", "state": state}
