"""Device clock -> meter clock, from round trips (NTP's minimum-delay filter).

Each probe is (host send, device time, host receive). The device read its clock somewhere
inside the round trip, so offset = device - midpoint is exact to within half the round
trip; the probe with the shortest round trip bounds it best. Measured before and after
the run: the difference is the drift, and device times in between are mapped by linear
interpolation of the two offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgetool import events
from edgetool.errors import DeviceError
from edgetool.power.base import host_ns
from edgetool.transport.base import Process

Probe = tuple[int, int, int]
"""(host ns at send, device ns, host ns at receive)"""


@dataclass(frozen=True)
class OffsetEstimate:
    offset_ns: int
    """meter (host) time = device time + offset_ns"""
    uncertainty_ns: int
    at_device_ns: int
    rounds: int


def estimate_offset(probes: Sequence[Probe]) -> OffsetEstimate:
    if not probes:
        raise DeviceError("clock alignment got no answers from the device")
    send, device, receive = min(probes, key=lambda p: p[2] - p[0])
    # device + offset = midpoint  ->  offset = midpoint - device
    midpoint = (send + receive) // 2
    return OffsetEstimate(midpoint - device, (receive - send + 1) // 2, device, len(probes))


@dataclass(frozen=True)
class Alignment:
    """How device times map onto the meter's clock, with what uncertainty."""

    offset_ns: int
    uncertainty_ns: int
    drift_ns: int | None
    method: str
    rounds: int = 0
    after_offset_ns: int | None = None
    before_at_ns: int | None = None
    after_at_ns: int | None = None

    @classmethod
    def same_clock(cls) -> Alignment:
        """The meter reads the clock the windows are on (hwmon on the device; a host meter
        beside a split run, whose windows are host times): nothing to align."""
        return cls(0, 0, 0, "same-clock")

    @classmethod
    def from_probes(cls, before: OffsetEstimate, after: OffsetEstimate | None) -> Alignment:
        if after is None:
            return cls(before.offset_ns, before.uncertainty_ns, None, "round-trip", before.rounds)
        return cls(
            before.offset_ns,
            max(before.uncertainty_ns, after.uncertainty_ns),
            after.offset_ns - before.offset_ns,
            "round-trip",
            before.rounds + after.rounds,
            after.offset_ns,
            before.at_device_ns,
            after.at_device_ns,
        )

    def to_meter(self, device_ns: int) -> int:
        if (
            self.after_offset_ns is None
            or self.before_at_ns is None
            or self.after_at_ns is None
            or self.after_at_ns <= self.before_at_ns
        ):
            return device_ns + self.offset_ns
        fraction = (device_ns - self.before_at_ns) / (self.after_at_ns - self.before_at_ns)
        fraction = min(max(fraction, 0.0), 1.0)
        return device_ns + round(
            self.offset_ns + fraction * (self.after_offset_ns - self.offset_ns)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_clock(process: Process, rounds: int) -> list[Probe]:
    """Round trips through the runner's `clock` command (one stdin line -> one clock line)."""
    lines = process.lines()
    probes: list[Probe] = []
    try:
        for _ in range(rounds):
            send = host_ns()
            process.send(b"t\n")
            for line in lines:
                event = events.parse_event(line)
                if isinstance(event, events.Clock):
                    probes.append((send, event.t, host_ns()))
                    break
                if isinstance(event, events.ErrorEvent):
                    raise DeviceError(f"clock alignment failed on the device: {event.message}")
            else:
                break
        process.send(b"quit\n")
    finally:
        process.kill()
    if len(probes) < rounds:
        raise DeviceError(
            f"clock alignment: the device answered {len(probes)} of {rounds} probes "
            f"({process.stderr_text().strip()[-200:] or 'no error output'})"
        )
    return probes
