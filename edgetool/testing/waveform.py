"""Synthetic current waveforms on the host clock, with exact integrals.

The meter peers (edgetool.testing.meters) play these back through the real wire protocols,
and tests and benchmarks compare what a driver reports against `charge()`, which is a
closed form rather than a numerical integral, so the ground truth has no error of its own.
All times are absolute host_ns() values (CLOCK_MONOTONIC), so a peer in another process
and the test that checks it agree on where every pulse is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgetool.errors import ConfigError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Waveform:
    """A current in amps as a function of absolute host time in ns."""

    def amps(self, t_ns: int) -> float:
        return float(self.amps_array(np.array([t_ns], dtype=np.int64))[0])

    def amps_array(self, t_ns: IntArray) -> FloatArray:
        """Vectorised amps(): the PPK2 peer evaluates 100 000 points a second."""
        raise NotImplementedError

    def charge(self, t0_ns: int, t1_ns: int) -> float:
        """The exact integral of amps over [t0, t1] in coulombs (negative if t1 < t0)."""
        raise NotImplementedError

    def mean(self, t0_ns: int, t1_ns: int) -> float:
        """Mean current over [t0, t1]: what an averaging meter reports for that span."""
        if t1_ns == t0_ns:
            return self.amps(t0_ns)
        return self.charge(t0_ns, t1_ns) / ((t1_ns - t0_ns) * 1e-9)

    def logic_array(self, t_ns: IntArray) -> npt.NDArray[np.uint8]:
        """The PPK2 digital inputs at t: bit 0 is the GPIO trigger (none by default)."""
        return np.zeros(t_ns.shape, dtype=np.uint8)

    @property
    def spec(self) -> str:
        """The parse_waveform() string that rebuilds this waveform (for a peer's argv)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Waveform):
    level: float

    def amps_array(self, t_ns: IntArray) -> FloatArray:
        return np.full(t_ns.shape, self.level, dtype=np.float64)

    def charge(self, t0_ns: int, t1_ns: int) -> float:
        return self.level * (t1_ns - t0_ns) * 1e-9

    @property
    def spec(self) -> str:
        return f"constant:{self.level!r}"


@dataclass(frozen=True)
class Pulses(Waveform):
    """Square pulses: high during [phase + n*period, phase + n*period + width), else low.

    Stands in for inference bursts on an idle device; bit 0 of logic_array() is high
    during a pulse, as a DUT would raise a GPIO around each inference.
    """

    period_ns: int
    width_ns: int
    high: float
    low: float
    phase_ns: int = 0

    def __post_init__(self) -> None:
        if self.period_ns <= 0 or not 0 <= self.width_ns <= self.period_ns:
            raise ConfigError(
                f"pulses need 0 < width <= period, not width={self.width_ns} ns, "
                f"period={self.period_ns} ns"
            )

    def _high_time(self, t_ns: int) -> int:
        """Total ns spent high in [phase, t]: an integer, so charge() stays exact."""
        n, r = divmod(t_ns - self.phase_ns, self.period_ns)
        return n * self.width_ns + min(r, self.width_ns)

    def amps_array(self, t_ns: IntArray) -> FloatArray:
        return np.where(self.logic_array(t_ns) == 1, self.high, self.low).astype(np.float64)

    def logic_array(self, t_ns: IntArray) -> npt.NDArray[np.uint8]:
        inside = np.mod(t_ns - self.phase_ns, self.period_ns) < self.width_ns
        return inside.astype(np.uint8)

    def charge(self, t0_ns: int, t1_ns: int) -> float:
        high_ns = self._high_time(t1_ns) - self._high_time(t0_ns)
        return (self.low * (t1_ns - t0_ns) + (self.high - self.low) * high_ns) * 1e-9

    def pulse_windows(self, t0_ns: int, t1_ns: int) -> list[tuple[int, int]]:
        """The whole pulses inside [t0, t1], as (start, end) ns: ideal inference windows."""
        first = -((self.phase_ns - t0_ns) // self.period_ns)  # ceil((t0 - phase) / period)
        windows = []
        start = self.phase_ns + first * self.period_ns
        while start + self.width_ns <= t1_ns:
            windows.append((start, start + self.width_ns))
            start += self.period_ns
        return windows

    @property
    def spec(self) -> str:
        return (
            f"pulses:period={self.period_ns}ns,width={self.width_ns}ns,high={self.high!r},"
            f"low={self.low!r},phase={self.phase_ns}ns"
        )


@dataclass(frozen=True)
class Sine(Waveform):
    """mean + amplitude*sin(2π(t - phase)/period): a slowly varying load for slow meters."""

    period_ns: int
    mean_amps: float
    amplitude: float
    phase_ns: int = 0

    def __post_init__(self) -> None:
        if self.period_ns <= 0:
            raise ConfigError(f"sine needs a positive period, not {self.period_ns} ns")

    def _angle(self, t_ns: int) -> float:
        # Reduce in integers first: float64 cannot hold host_ns() * 2π precisely.
        return 2 * math.pi * ((t_ns - self.phase_ns) % self.period_ns) / self.period_ns

    def amps_array(self, t_ns: IntArray) -> FloatArray:
        reduced = np.mod(t_ns - self.phase_ns, self.period_ns).astype(np.float64)
        return self.mean_amps + self.amplitude * np.sin(2 * np.pi * reduced / self.period_ns)

    def charge(self, t0_ns: int, t1_ns: int) -> float:
        w = 2 * math.pi / (self.period_ns * 1e-9)
        swing = (math.cos(self._angle(t0_ns)) - math.cos(self._angle(t1_ns))) / w
        return self.mean_amps * (t1_ns - t0_ns) * 1e-9 + self.amplitude * swing

    @property
    def spec(self) -> str:
        return (
            f"sine:period={self.period_ns}ns,mean={self.mean_amps!r},"
            f"amplitude={self.amplitude!r},phase={self.phase_ns}ns"
        )


_DURATION = re.compile(r"^\s*([0-9.eE+-]+)\s*(ns|us|µs|ms|s)\s*$")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_CURRENT = re.compile(r"^\s*([0-9.eE+-]+)\s*(ua|µa|ma|a)?\s*$", re.IGNORECASE)
_UNIT_A = {"ua": 1e-6, "µa": 1e-6, "ma": 1e-3, "a": 1.0}


def parse_duration_ns(text: str) -> int:
    """ "10ms" -> 10_000_000: units are required, a bare number is too easy to misread."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"bad duration {text!r}: write a number with ns, us, ms or s")
    try:
        return round(float(match.group(1)) * _UNIT_NS[match.group(2)])
    except ValueError:
        raise ConfigError(f"bad duration {text!r}: write a number with ns, us, ms or s") from None


def parse_current(text: str) -> float:
    """ "0.5", "0.5A" or "500mA" -> amps."""
    match = _CURRENT.match(text)
    if not match:
        raise ConfigError(f"bad current {text!r}: write amps, e.g. 0.5 or 500mA")
    try:
        return float(match.group(1)) * _UNIT_A[(match.group(2) or "a").lower()]
    except ValueError:
        raise ConfigError(f"bad current {text!r}: write amps, e.g. 0.5 or 500mA") from None


def _fields(kind: str, body: str, required: set[str], optional: set[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in required | optional:
            raise ConfigError(
                f"bad {kind} field {item!r}: expected key=value with keys "
                f"{', '.join(sorted(required | optional))}"
            )
        fields[key.strip()] = value.strip()
    missing = required - fields.keys()
    if missing:
        raise ConfigError(f"{kind} waveform is missing {', '.join(sorted(missing))}")
    return fields


def parse_waveform(spec: str) -> Waveform:
    """ "constant:0.2", "pulses:period=10ms,width=4ms,high=0.5,low=0.05[,phase=1ms]",
    "sine:period=1s,mean=0.2,amplitude=0.1[,phase=0s]": a waveform for a peer's argv."""
    kind, _, body = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "constant":
        return Constant(parse_current(body))
    if kind == "pulses":
        f = _fields(kind, body, {"period", "width", "high", "low"}, {"phase"})
        return Pulses(
            period_ns=parse_duration_ns(f["period"]),
            width_ns=parse_duration_ns(f["width"]),
            high=parse_current(f["high"]),
            low=parse_current(f["low"]),
            phase_ns=parse_duration_ns(f.get("phase", "0ns")),
        )
    if kind == "sine":
        f = _fields(kind, body, {"period", "mean", "amplitude"}, {"phase"})
        return Sine(
            period_ns=parse_duration_ns(f["period"]),
            mean_amps=parse_current(f["mean"]),
            amplitude=parse_current(f["amplitude"]),
            phase_ns=parse_duration_ns(f.get("phase", "0ns")),
        )
    raise ConfigError(f"unknown waveform {spec!r}: use constant:, pulses: or sine:")
