"""Energy per inference: the integral of power over each inference window.

Power is the meter's samples joined by straight lines (trapezoids). A window shorter
than a few sample periods cannot be resolved, so consecutive inferences are batched until
a window spans `MIN_PERIODS` sample periods, as MLPerf Tiny integrates over a window of
many inferences; the result says when it did. Confidence intervals are Student-t
intervals over the windows' per-inference energies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgetool.errors import DeviceError
from edgetool.events import PowerSample

MIN_PERIODS = 10
"""A window must span at least this many sample periods to be integrated on its own."""
IDLE_CHUNKS = 10

# Two-sided 95 % Student-t quantiles for 1..30 degrees of freedom; 1.96 beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float] | None]:
    """Mean and its 95 % Student-t interval (None with fewer than two values)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    half = t * std / math.sqrt(n)
    return mean, (mean - half, mean + half)


class PowerTrace:
    """Samples sorted by time, with the running integral for O(log n) window energy."""

    def __init__(self, samples: Sequence[PowerSample]) -> None:
        import numpy as np

        if len(samples) < 2:
            raise DeviceError(f"the meter delivered {len(samples)} samples: too few to integrate")
        order = sorted(samples, key=lambda s: s.t_ns)
        self.t = np.array([s.t_ns for s in order], dtype=np.float64)
        self.w = np.array([s.watts for s in order], dtype=np.float64)
        dt = np.diff(self.t) / 1e9
        self.cumulative = np.concatenate([[0.0], np.cumsum(dt * (self.w[1:] + self.w[:-1]) / 2)])
        self.period_ns = float(np.median(np.diff(self.t))) if len(self.t) > 1 else 0.0

    @property
    def span(self) -> tuple[int, int]:
        return int(self.t[0]), int(self.t[-1])

    def _integral_to(self, x: Any) -> Any:
        """Joules from the first sample to each time in x (clipped to the covered span)."""
        import numpy as np

        x = np.clip(np.asarray(x, dtype=np.float64), self.t[0], self.t[-1])
        i = np.clip(np.searchsorted(self.t, x, side="right") - 1, 0, len(self.t) - 2)
        t0, t1 = self.t[i], self.t[i + 1]
        w0, w1 = self.w[i], self.w[i + 1]
        frac = np.where(t1 > t0, (x - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0)
        wx = w0 + (w1 - w0) * frac
        return self.cumulative[i] + (x - t0) / 1e9 * (w0 + wx) / 2

    def energy(self, starts: Sequence[int], ends: Sequence[int]) -> Any:
        """Joules in each [start, end] window (numpy array)."""
        return self._integral_to(ends) - self._integral_to(starts)

    def covers(self, start: int, end: int) -> bool:
        return bool(self.t[0] <= start and end <= self.t[-1])

    def mean_power(self, start: int, end: int) -> float:
        return float(self.energy([start], [end])[0]) / ((end - start) / 1e9)


@dataclass(frozen=True)
class EnergyResult:
    meter: str
    estimate: bool
    idle_w: float | None
    idle_w_ci: tuple[float, float] | None
    mean_power_w: float
    total_mj: dict[str, Any]
    dynamic_mj: dict[str, Any] | None
    inferences: int
    groups: int
    per_group: float
    batched: bool
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["idle_w_ci"] = list(self.idle_w_ci) if self.idle_w_ci else None
        return data


def mean_figure(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "ci"}: the mean and its 95 % Student-t interval (None below two values)."""
    mean, ci = mean_ci(values)
    return {"mean": mean, "ci": list(ci) if ci else None}


def group_windows(
    windows: Sequence[tuple[int, int]], min_span_ns: float
) -> list[tuple[int, int, int]]:
    """Consecutive windows joined until each group spans min_span_ns: (start, end, count).
    A short tail joins the last group rather than standing alone."""
    groups: list[tuple[int, int, int]] = []
    start, count = -1, 0
    for a, b in windows:
        if count == 0:
            start = a
        count += 1
        if b - start >= min_span_ns:
            groups.append((start, b, count))
            count = 0
    if count:
        if groups:
            first, _, n = groups.pop()
            groups.append((first, windows[-1][1], n + count))
        else:
            groups.append((start, windows[-1][1], count))
    return groups


def integrate_windows(
    trace: PowerTrace, windows: Sequence[tuple[int, int]], meter: str
) -> tuple[list[tuple[int, int, int]], list[float]]:
    """The trace over consecutive windows (meter clock), joined until each group spans
    MIN_PERIODS sample periods: (groups, joules per group). A meter that missed part of
    the windows is an error, not less energy."""
    run_start, run_end = windows[0][0], windows[-1][1]
    if not trace.covers(run_start, run_end):
        lo, hi = trace.span
        raise DeviceError(
            f"{meter}: samples cover {(hi - lo) / 1e9:.3f} s but not the whole run "
            f"({(run_end - run_start) / 1e9:.3f} s): the meter started late or stopped early"
        )
    groups = group_windows(windows, MIN_PERIODS * trace.period_ns)
    joules = trace.energy([g[0] for g in groups], [g[1] for g in groups])
    return groups, [float(j) for j in joules]


def idle_power(
    trace: PowerTrace, window: tuple[int, int]
) -> tuple[float, tuple[float, float] | None]:
    """Mean power over the idle window, with a CI over IDLE_CHUNKS equal slices."""
    a, b = window
    if not trace.covers(a, b) or b <= a:
        raise DeviceError("the meter's samples do not cover the idle window")
    edges = [a + (b - a) * k // IDLE_CHUNKS for k in range(IDLE_CHUNKS + 1)]
    joules = trace.energy(edges[:-1], edges[1:])
    chunk_s = (b - a) / IDLE_CHUNKS / 1e9
    return trace.mean_power(a, b), mean_ci([float(j) / chunk_s for j in joules])[1]


def energy_from_trace(
    meter: str,
    samples: Sequence[PowerSample],
    windows: Sequence[tuple[int, int]],
    idle_window: tuple[int, int] | None,
) -> EnergyResult:
    """Per-inference energy from a meter's samples; windows are on the meter's clock."""
    if not windows:
        raise DeviceError("no inference windows to integrate")
    trace = PowerTrace(samples)
    run_start, run_end = windows[0][0], windows[-1][1]
    groups, joules = integrate_windows(trace, windows, meter)
    min_span = MIN_PERIODS * trace.period_ns
    counts = [g[2] for g in groups]
    total = [1e3 * float(j) / n for j, n in zip(joules, counts, strict=True)]
    idle_w, idle_ci = idle_power(trace, idle_window) if idle_window else (None, None)
    dynamic = None
    if idle_w is not None:
        dynamic = mean_figure(
            [
                1e3 * (float(j) - idle_w * (g[1] - g[0]) / 1e9) / g[2]
                for j, g in zip(joules, groups, strict=True)
            ]
        )
    batched = max(counts) > 1
    note = None
    if batched:
        rate = 1e9 / trace.period_ns if trace.period_ns else 0.0
        note = (
            f"inferences batched {len(windows) / len(groups):.1f} per window: the meter "
            f"samples at {rate:.4g} Hz, so windows are at least {min_span / 1e6:.3g} ms"
        )
    return EnergyResult(
        meter=meter,
        estimate=False,
        idle_w=idle_w,
        idle_w_ci=idle_ci,
        mean_power_w=trace.mean_power(run_start, run_end),
        total_mj=mean_figure(total),
        dynamic_mj=dynamic,
        inferences=len(windows),
        groups=len(groups),
        per_group=len(windows) / len(groups),
        batched=batched,
        note=note,
    )


def energy_from_model(
    meter: str, durations_ns: Sequence[int], idle_w: float, active_w: float
) -> EnergyResult:
    """A declared power model: active_w while inferring, idle_w otherwise. An estimate."""
    total = [active_w * d / 1e6 for d in durations_ns]
    dynamic = [(active_w - idle_w) * d / 1e6 for d in durations_ns]
    return EnergyResult(
        meter=meter,
        estimate=True,
        idle_w=idle_w,
        idle_w_ci=None,
        mean_power_w=active_w,
        total_mj=mean_figure(total),
        dynamic_mj=mean_figure(dynamic),
        inferences=len(durations_ns),
        groups=len(durations_ns),
        per_group=1.0,
        batched=False,
        note="estimate from a declared power model (idle and active watts), not a measurement",
    )
