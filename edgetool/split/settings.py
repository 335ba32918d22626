"""What a split run measures, and what it reports as it goes: light (no numpy), so the
CLI and the API read the defaults without loading the measuring code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edgetool.errors import UsageError
from edgetool.flows.base import Observer

DEFAULT_CODECS = ("fp32", "fp16", "int8", "sgq4", "fp32+zstd", "int8+zstd", "sgq4+zstd")


@dataclass(frozen=True)
class SplitSettings:
    """`edgetool split`'s knobs; the CLI's defaults are these."""

    points: str = "auto"
    codecs: tuple[str, ...] = DEFAULT_CODECS
    links: tuple[str, ...] = ("none",)
    repeat: int = 3
    inferences: int = 20
    warmup: int = 3
    seed: int = 0
    threads: int = 1
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    baselines: bool = True
    energy: bool = False
    idle_seconds: float = 2.0


SPLIT_DEFAULTS = SplitSettings()


class SplitObserver(Observer):
    """What a split run reports as it goes (the CLI draws it; the API stays quiet)."""

    def stage(self, text: str) -> None: ...

    def measured(self, done: int, total: int, label: str) -> None: ...


def settle_settings(settings: SplitSettings) -> None:
    """Numbers that cannot be measured, refused before anything is exported or pushed."""
    if settings.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if settings.inferences < 1:
        raise UsageError("--inferences must be at least 1")
    if settings.warmup < 0:
        raise UsageError("--warmup must not be negative")
    if not settings.codecs:
        raise UsageError("--codec needs at least one codec")
    if settings.energy and not settings.idle_seconds >= 0.2:
        raise UsageError("--idle-seconds must be at least 0.2")
