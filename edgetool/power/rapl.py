"""Intel RAPL on a local x86 host: package energy counters under /sys/class/powercap.

The counters are cumulative microjoules that wrap at max_energy_range_uj; power is the
difference between reads over the time between them, stamped at the midpoint. Only
meaningful when the device is this host (the `local` target).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetool.errors import DeviceError
from edgetool.events import PowerSample
from edgetool.power.base import (
    Capabilities,
    PollingMeter,
    host_ns,
    meter_options,
    option,
)


def package_domains(root: Path) -> list[Path]:
    """Top-level RAPL domains (one per CPU package: intel-rapl:0, intel-rapl:1, ...)."""
    if not root.is_dir():
        return []
    return sorted(
        d for d in root.iterdir() if d.name.count(":") == 1 and (d / "energy_uj").exists()
    )


class RaplMeter(PollingMeter):
    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__()
        reader = meter_options(options)
        self.root = Path(option(reader, "root", str, "/sys/class/powercap"))
        self.interval: float = option(reader, "interval", float, 0.01)
        if not 0.001 <= self.interval <= 10:
            reader.reject("interval", "within [0.001, 10] s", self.interval)
        reader.finish()
        self.domains = package_domains(self.root)
        if not self.domains:
            raise DeviceError(
                f"no Intel RAPL package domains under {self.root} (not an Intel host, or "
                "powercap not exposed in this container)"
            )
        self._ranges: list[int] = []
        self._fds: list[int] = []
        for domain in self.domains:
            try:
                self._ranges.append(int((domain / "max_energy_range_uj").read_text()))
                self._fds.append(os.open(domain / "energy_uj", os.O_RDONLY))
                int(os.pread(self._fds[-1], 32, 0))
            except (OSError, ValueError) as exc:
                self.close()
                raise DeviceError(
                    f"cannot read {domain}/energy_uj ({exc}); reading RAPL needs root on "
                    "kernels since 5.10"
                ) from exc
        self.label = f"rapl@{','.join(d.name for d in self.domains)}"
        self.capabilities = Capabilities(
            rate_hz=1.0 / self.interval, channels=("watts",), clock="host"
        )
        self._last: tuple[int, list[int]] | None = None

    def _counters(self) -> tuple[int, list[int]]:
        before = host_ns()
        values = [int(os.pread(fd, 32, 0)) for fd in self._fds]
        return (before + host_ns()) // 2, values

    def _on_start(self) -> None:
        self._last = self._counters()

    def _read(self) -> list[PowerSample]:
        time.sleep(self.interval)
        assert self._last is not None
        t, values = self._counters()
        t0, previous = self._last
        self._last = (t, values)
        joules = 0.0
        for now, then, wrap in zip(values, previous, self._ranges, strict=True):
            delta = now - then
            if delta < 0:  # the counter wrapped
                delta += wrap
            joules += delta / 1e6
        if t <= t0:
            return []
        return [PowerSample((t + t0) // 2, joules / ((t - t0) / 1e9))]

    def close(self) -> None:
        super().close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []
