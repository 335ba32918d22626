"""INA219/226/260/3221 boards through Linux hwmon, read on the device by the runner.

The runner samples the chip in a thread on its own clock and sends the samples on the
event stream, so they share a clock with the inference windows (no alignment needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetool.errors import ConfigError
from edgetool.power.base import Capabilities, PowerSample, SampleBuffer, option
from edgetool.results import schema


class HwmonMeter:
    def __init__(self, options: Mapping[str, Any]) -> None:
        chip = option(options, "chip", str, None)
        path = option(options, "path", str, None)
        if bool(chip) == bool(path):
            raise ConfigError(
                "[meter] type hwmon needs exactly one of chip (the hwmon name, e.g. "
                '"ina260") or path (e.g. "/sys/class/hwmon/hwmon2")'
            )
        self.spec: str = chip or path
        self.channel: int = option(options, "channel", int, 1)
        self.root: str = option(options, "root", str, "/sys/class/hwmon")
        rate: float = option(options, "rate_hz", float, 100.0)
        if not 0 < rate <= 10_000:
            raise ConfigError(f"[meter] rate_hz must be within (0, 10000], not {rate}")
        self.label = f"{chip or path}@hwmon"
        self.capabilities = Capabilities(
            rate_hz=rate, channels=("volts", "amps", "watts"), clock="device"
        )
        self._buffer = SampleBuffer()

    def runner_args(self) -> list[str]:
        return [
            "--hwmon", self.spec, "--hwmon-channel", str(self.channel),
            "--hwmon-root", self.root, "--power-rate", repr(self.capabilities.rate_hz),
        ]  # fmt: skip

    def feed(self, event: schema.Power) -> None:
        self._buffer.extend(
            [
                PowerSample(t, w, v, a)
                for t, w, v, a in zip(event.t, event.watts, event.volts, event.amps, strict=True)
            ]
        )

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def samples(self) -> list[PowerSample]:
        return self._buffer.drain()

    def close(self) -> None: ...
