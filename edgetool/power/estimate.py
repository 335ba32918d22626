"""No meter: a declared power model (idle and active watts), always labelled an estimate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetool.events import PowerSample
from edgetool.power.base import Capabilities, meter_options, option


class EstimateMeter:
    def __init__(self, options: Mapping[str, Any]) -> None:
        reader = meter_options(options)
        idle = option(reader, "idle_w", float, None)
        active = option(reader, "active_w", float, None)
        if idle is None or active is None:
            reader.problem("[meter] type estimate needs idle_w and active_w (watts)")
        elif not 0 <= idle <= active:
            reader.problem(f"[meter] needs 0 <= idle_w <= active_w, got {idle} and {active}")
        reader.finish()
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
