"""Device energy per split route: the target's meter beside a split run.

A meter read on this host (ppk2, um25c, rapl) samples on the clock each inference's window
is taken on ([t0, t0 + wall]: the device computing its head, encoding, sending, and waiting
for the reply), so nothing needs aligning; what the device spends waiting on the link is
part of what offloading costs it. A declared estimate charges its active watts for the
device's own work (head and encode) and its idle watts for the rest of the path. hwmon is
read by the deploy runner on the device, which a split run does not start."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgetool.errors import ConfigError
from edgetool.events import PowerSample
from edgetool.flows.linux import target_meter
from edgetool.power.energy import PowerTrace, idle_power, integrate_windows, mean_figure
from edgetool.power.estimate import EstimateMeter
from edgetool.power.recorder import EnergyRecorder
from edgetool.results.split import route_groups
from edgetool.targets import Target

WINDOW = "each inference's window on the host clock: head, encode, link and the wait for the reply"


def open_split_meter(
    target: Target, idle_seconds: float, write: Callable[[list[PowerSample]], None]
) -> EnergyRecorder:
    """The target's meter as a recorder whose windows need no alignment (`write` journals
    its samples in the run directory); hwmon refused."""
    meter = target_meter(target)
    if meter.capabilities.clock == "device":
        meter.close()
        raise ConfigError(
            f"split --energy reads a meter on this host (ppk2, um25c, rapl) or a declared "
            f"estimate; {target.name}'s {target.meter.type if target.meter else ''} meter is "
            "read on the device by the deploy runner, which a split run does not start",
            hint="Use edgetool deploy --energy for its whole-model energy.",
        )
    return EnergyRecorder(meter, idle_seconds, write, None)


def _estimated(meter: EstimateMeter, records: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """(total, dynamic) mJ per inference from the declared watts."""
    total = dynamic = 0.0
    for record in records:
        busy_ns = int(record["device_ns"]) + int(record["encode_ns"])
        rest_ns = max(0, int(record["e2e_ns"]) - busy_ns)
        total += (meter.active_w * busy_ns + meter.idle_w * rest_ns) / 1e6
        dynamic += (meter.active_w - meter.idle_w) * busy_ns / 1e6
    return total / len(records), dynamic / len(records)


def _integrated(
    trace: PowerTrace, idle_w: float | None, records: Sequence[Mapping[str, Any]], label: str
) -> tuple[float, float | None]:
    """(total, dynamic) mJ per inference: the trace over this repetition's windows,
    consecutive windows joined where one is shorter than the meter resolves."""
    windows = [(int(r["t0_ns"]), int(r["t0_ns"]) + int(r["wall_ns"])) for r in records]
    groups, joules = integrate_windows(trace, windows, label)
    total = 1e3 * sum(joules) / len(records)
    if idle_w is None:
        return total, None
    span_s = sum(g[1] - g[0] for g in groups) / 1e9
    return total, 1e3 * (sum(joules) - idle_w * span_s) / len(records)


def route_energy(
    recorder: EnergyRecorder, records: Sequence[Mapping[str, Any]], samples: Sequence[PowerSample]
) -> tuple[dict[str, Any], dict[tuple[str, str, str], dict[str, Any]]]:
    """The run's meter facts, and each route's device energy per inference (mJ) over its
    repetitions; an error names what the meter missed rather than reporting less."""
    meter = recorder.meter
    about: dict[str, Any] = {
        "meter": meter.label,
        "estimate": meter.capabilities.estimate,
        "window": WINDOW,
    }
    trace = idle_w = None
    if isinstance(meter, EstimateMeter):
        about.update(
            idle_w=meter.idle_w,
            active_w=meter.active_w,
            window=f"{meter.active_w:g} W during head and encode, {meter.idle_w:g} W for the "
            "rest of the path (the radio is not modelled)",
        )
    else:
        trace = PowerTrace(samples)
        if recorder.idle_window is not None:
            idle_w, idle_ci = idle_power(trace, recorder.idle_window)
            about.update(idle_w=idle_w, idle_w_ci=list(idle_ci) if idle_ci else None)
    figures: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, route in route_groups(records).items():
        reps: dict[int, list[Mapping[str, Any]]] = {}
        for record in route:
            reps.setdefault(int(record["rep"]), []).append(record)
        totals: list[float] = []
        dynamics: list[float] = []
        dynamic: float | None
        for rep in sorted(reps):
            mine = sorted(reps[rep], key=lambda r: int(r["t0_ns"]))
            if isinstance(meter, EstimateMeter):
                total, dynamic = _estimated(meter, mine)
            else:
                assert trace is not None
                total, dynamic = _integrated(trace, idle_w, mine, meter.label)
            totals.append(total)
            if dynamic is not None:
                dynamics.append(dynamic)
        figures[key] = {
            "total_mj": mean_figure(totals),
            "dynamic_mj": mean_figure(dynamics) if dynamics else None,
            "reps": len(totals),
        }
    return about, figures
