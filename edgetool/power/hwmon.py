"""INA219/226/260/3221 boards through Linux hwmon, read on the device by the runner.

The runner samples the chip in a thread on its own clock and sends the samples on the
event stream, so they share a clock with the inference windows (no alignment needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetool import events
from edgetool.events import PowerSample
from edgetool.power.base import Capabilities, SampleBuffer, meter_options, option


class HwmonMeter:
    def __init__(self, options: Mapping[str, Any]) -> None:
        reader = meter_options(options)
        chip = option(reader, "chip", str, None)
        path = option(reader, "path", str, None)
        if bool(chip) == bool(path):
            reader.problem(
                "[meter] type hwmon needs exactly one of chip (the hwmon name, e.g. "
                '"ina260") or path (e.g. "/sys/class/hwmon/hwmon2")'
            )
        self.spec: str = chip or path
        self.channel: int = option(reader, "channel", int, 1)
        self.root: str = option(reader, "root", str, "/sys/class/hwmon")
        rate: float = option(reader, "rate_hz", float, 100.0)
        if not 0 < rate <= 10_000:
            reader.reject("rate_hz", "within (0, 10000]", rate)
        reader.finish()
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

    def feed(self, event: events.Power) -> None:
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
