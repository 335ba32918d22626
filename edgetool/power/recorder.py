"""A meter beside one deploy: idle window, clock alignment, samples journaled, energy.

The session calls before() once the device is ready, on_event() for each runner event,
and after() when the runner is done; energy() turns what was recorded into the run's
energy figures. Samples are written to the run directory as they arrive, so a failed
energy computation never loses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from edgetool import events
from edgetool.errors import DeviceError
from edgetool.events import PowerSample
from edgetool.power.align import Alignment, OffsetEstimate, estimate_offset, probe_clock
from edgetool.power.base import PowerMeter, host_ns
from edgetool.power.energy import EnergyResult, energy_from_model, energy_from_trace
from edgetool.results.manifest import AlignmentInfo, PowerInfo
from edgetool.transport.base import Process

CLOCK_ROUNDS = 32


@runtime_checkable
class DeviceMeter(Protocol):
    """A meter the runner reads on the device (hwmon): its samples arrive as events."""

    def runner_args(self) -> list[str]: ...

    def feed(self, event: events.Power) -> None: ...


class EnergyRecorder:
    def __init__(
        self,
        meter: PowerMeter,
        idle_seconds: float,
        write: Callable[[list[PowerSample]], None],
        start_clock: Callable[[], Process] | None,
    ) -> None:
        """`start_clock` starts the runner's `clock` command on the device (round trips);
        None when the windows are taken on the host's clock already (split runs)."""
        self.meter = meter
        self.idle_seconds = idle_seconds
        self._write = write
        self._start_clock = start_clock
        self.idle_window: tuple[int, int] | None = None
        self.measure_window: tuple[int, int] | None = None
        self._before: OffsetEstimate | None = None
        self._after: OffsetEstimate | None = None
        self.starts: list[int] = []
        self.durations: list[int] = []
        self.count = 0

    @property
    def clock(self) -> str:
        return self.meter.capabilities.clock

    def runner_args(self) -> list[str]:
        if isinstance(self.meter, DeviceMeter):
            return [*self.meter.runner_args(), "--idle-seconds", repr(self.idle_seconds)]
        return []

    def before(self) -> None:
        """Host-side meters: start sampling, watch the idle device, align the clocks."""
        if self.clock != "host":
            return
        self.meter.start()
        self._wait_for_sample_after(host_ns())
        start = host_ns()
        time.sleep(self.idle_seconds)
        self.idle_window = (start, host_ns())
        if self._start_clock is not None:
            self._before = estimate_offset(probe_clock(self._start_clock(), CLOCK_ROUNDS))
        self.drain()

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Samples):
            if event.starts is not None:
                self.starts.extend(event.starts)
                self.durations.extend(event.ns)
            self.drain()
        elif isinstance(event, events.Power) and isinstance(self.meter, DeviceMeter):
            self.meter.feed(event)
            self.drain()
        elif isinstance(event, events.Phase) and self.clock == "device":
            window = (event.start, event.end)
            if event.name == "idle":
                self.idle_window = window
            elif event.name == "measure":
                self.measure_window = window

    def drain(self) -> list[PowerSample]:
        """Journal what the meter collected since the last drain; returns it."""
        samples = self.meter.samples()
        self.count += len(samples)
        self._write(samples)
        return samples

    def _wait_for_sample_after(self, mark_ns: int, timeout: float = 10.0) -> None:
        """Block until the meter has a sample later than mark_ns, so every window before
        the mark lies inside the sampled span (a slow meter polls every few 100 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            if any(s.t_ns > mark_ns for s in self.drain()):
                return
            if time.monotonic() > deadline:
                raise DeviceError(
                    f"{self.meter.label} delivered no samples for {timeout:.0f} s: "
                    "is the meter connected and powered?"
                )
            time.sleep(0.005)

    def after(self) -> None:
        if self.clock == "host":
            if self._start_clock is not None:
                self._after = estimate_offset(probe_clock(self._start_clock(), CLOCK_ROUNDS))
            self._wait_for_sample_after(host_ns())
        self.meter.stop()
        self.drain()

    def alignment(self) -> Alignment | None:
        if self.clock == "device" or (self.clock == "host" and self._start_clock is None):
            return Alignment.same_clock()
        if self._before is None:
            return None
        return Alignment.from_probes(self._before, self._after)

    def manifest_entry(self) -> PowerInfo:
        alignment = self.alignment()
        entry = PowerInfo(
            meter=self.meter.label,
            meter_type=type(self.meter).__name__,
            clock=self.clock,
            estimate=self.meter.capabilities.estimate,
            rate_hz=self.meter.capabilities.rate_hz,
            alignment=AlignmentInfo.from_dict(alignment.to_dict()) if alignment else None,
            idle_window=list(self.idle_window) if self.idle_window else None,
            measure_window=self._measure_on_meter(alignment),
            samples=self.count,
        )
        entry.keep_null("rate_hz", "idle_window", "measure_window")  # a meter's entry has all
        return entry

    def _measure_on_meter(self, alignment: Alignment | None) -> list[float] | None:
        if self.measure_window is not None:
            return list(self.measure_window)
        if alignment is None or not self.starts:
            return None
        return [
            alignment.to_meter(self.starts[0]),
            alignment.to_meter(self.starts[-1] + self.durations[-1]),
        ]

    def energy(self, samples: Sequence[PowerSample]) -> EnergyResult:
        """Energy per inference from everything recorded (samples read back from the run)."""
        from edgetool.power.estimate import EstimateMeter

        if isinstance(self.meter, EstimateMeter):
            if not self.durations:
                raise DeviceError("no inferences to estimate energy for")
            return energy_from_model(
                self.meter.label, self.durations, self.meter.idle_w, self.meter.active_w
            )
        alignment = self.alignment()
        if alignment is None or not self.starts:
            raise DeviceError(f"{self.meter.label}: no inference windows to integrate")
        windows = [
            (alignment.to_meter(s), alignment.to_meter(s + d))
            for s, d in zip(self.starts, self.durations, strict=True)
        ]
        return energy_from_trace(self.meter.label, samples, windows, self.idle_window)
