"""No meter: a declared power model (idle and active watts), always labelled an estimate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetool.errors import ConfigError
from edgetool.power.base import Capabilities, PowerSample, option


class EstimateMeter:
    def __init__(self, options: Mapping[str, Any]) -> None:
        idle = option(options, "idle_w", float, None)
        active = option(options, "active_w", float, None)
        if idle is None or active is None:
            raise ConfigError("[meter] type estimate needs idle_w and active_w (watts)")
        if not 0 <= idle <= active:
            raise ConfigError(f"[meter] needs 0 <= idle_w <= active_w, got {idle} and {active}")
        self.idle_w: float = float(idle)
        self.active_w: float = float(active)
        self.label = f"estimate ({self.idle_w:g} W idle, {self.active_w:g} W active)"
        self.capabilities = Capabilities(
            rate_hz=0.0, channels=("watts",), clock="none", estimate=True
        )

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def samples(self) -> list[PowerSample]:
        return []

    def close(self) -> None: ...
