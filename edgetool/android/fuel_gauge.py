"""Energy per inference on a watch without a power meter: its battery fuel gauge.

The watch samples `current_now` and `voltage_now` from its power-supply directory into a
log file while it idles and while benchmark_model runs (one shell command, so no sampler
outlives a dropped ADB connection); the host pulls the log and compares the mean power of
each run's steady phase with the idle power. It is an estimate, and labelled as one: the
gauge is slow (it averages over its own update period) and sees the whole watch.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgetool.errors import DeviceError
from edgetool.power.energy import mean_ci

METER = "fuel gauge (battery current_now × voltage_now, on the watch)"
MIN_SAMPLES = 3
"""A window's power is the mean of the samples inside it: fewer than this is no mean."""
CURRENT_UA_MIN = 1000
"""|current_now| at idle at or above this is µA, below it mA: a watch draws ~1 mA to
~1 A, i.e. 1 000-1 000 000 in µA but 1-1 000 in mA (1 000 mA at idle is not a watch)."""
VOLTAGE_UV_MIN = 100_000
"""voltage_now at or above this is µV, below it mV (a Li-ion cell: 3.0-4.5 V)."""
VOLTAGE_RANGE_V = (2.5, 5.5)
CHARGING = ("Charging", "Full")
MARK = "edgetool-mark"

# Run as `sh -c SCRIPT sh BATTERY_DIR LOG PERIOD_S IDLE_S REPEATS -- BENCH_ARGV...`.
# POSIX sh only (Android's mksh + toybox, the host's dash in the tests): `read` is a
# builtin, so a sample costs one fork (`date +%s%N`); the sampler writes only to LOG, so
# it never holds the ADB output pipe open; the EXIT trap stops it however the script ends.
SCRIPT = r"""bat=$1 log=$2 period=$3 idle=$4 repeats=$5
shift 5
if [ "$1" = -- ]; then shift; fi
now() { date +%s%N; }
status=$(cat "$bat/status" 2>/dev/null) || status=unknown
echo "edgetool-mark status ${status:-unknown}"
if ! : >> "$log"; then echo "edgetool-mark error cannot write $log"; exit 1; fi
(
  trap - EXIT HUP INT TERM
  while :; do
    t=$(date +%s%N)
    read -r c < "$bat/current_now" || c=NA
    read -r v < "$bat/voltage_now" || v=NA
    echo "$t $c $v"
    sleep "$period"
  done
) >> "$log" 2>/dev/null < /dev/null &
sampler=$!
stop() { kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; }
trap stop EXIT
trap 'stop; exit 129' HUP
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
echo "edgetool-mark idle-start $(now)"
sleep "$idle"
echo "edgetool-mark idle-end $(now)"
rc=0
i=1
while [ "$i" -le "$repeats" ]; do
  echo "edgetool-mark load-start $i $(now)"
  "$@" < /dev/null 2>&1
  st=$?
  echo "edgetool-mark load-end $i $st $(now)"
  if [ "$st" -ne 0 ]; then rc=$st; break; fi
  i=$((i + 1))
done
stop
trap - EXIT
echo "edgetool-mark done $(now)"
exit "$rc"
"""


def fuel_gauge_argv(
    battery_dir: str,
    log: str,
    period_s: float,
    idle_s: float,
    repeats: int,
    bench_argv: Sequence[str],
) -> list[str]:
    """The watch command: values travel as positional arguments, never inside the code."""
    if period_s <= 0 or idle_s <= 0 or repeats < 1 or not bench_argv:
        raise ValueError("period_s and idle_s must be positive, repeats >= 1, bench_argv set")
    return [
        "sh",
        "-c",
        SCRIPT,
        "sh",
        battery_dir,
        log,
        _seconds(period_s),
        _seconds(idle_s),
        str(repeats),
        "--",
        *bench_argv,
    ]


def _seconds(value: float) -> str:
    """A decimal `sleep` accepts (no exponent: toybox sleep does not parse 1e-05)."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


@dataclass(frozen=True)
class LoadWindow:
    index: int
    start_ns: int
    end_ns: int
    exit_status: int


@dataclass(frozen=True)
class Marks:
    """The script's `edgetool-mark` lines (watch clock, ns since the epoch)."""

    status: str | None = None
    idle_start_ns: int | None = None
    idle_end_ns: int | None = None
    loads: tuple[LoadWindow, ...] = ()
    done_ns: int | None = None

    @property
    def idle(self) -> tuple[int, int] | None:
        if self.idle_start_ns is None or self.idle_end_ns is None:
            return None
        return self.idle_start_ns, self.idle_end_ns


def _mark(line: str) -> list[str] | None:
    words = line.strip().split()
    return words[1:] if len(words) >= 2 and words[0] == MARK else None


def parse_marks(lines: Iterable[str]) -> Marks:
    """Marks from the script's stdout; malformed or unknown marks are ignored, and a
    load-start without its load-end (the command died) yields no window."""
    status: str | None = None
    idle_start = idle_end = done = None
    starts: dict[int, int] = {}
    loads: list[LoadWindow] = []
    for line in lines:
        words = _mark(line)
        if not words:
            continue
        kind, args = words[0], words[1:]
        try:
            if kind == "status":
                status = " ".join(args) or None
            elif kind == "idle-start" and len(args) == 1:
                idle_start = int(args[0])
            elif kind == "idle-end" and len(args) == 1:
                idle_end = int(args[0])
            elif kind == "load-start" and len(args) == 2:
                starts[int(args[0])] = int(args[1])
            elif kind == "load-end" and len(args) == 3:
                index = int(args[0])
                if index in starts:
                    loads.append(LoadWindow(index, starts.pop(index), int(args[2]), int(args[1])))
            elif kind == "done" and len(args) == 1:
                done = int(args[0])
        except ValueError:
            continue
    return Marks(status, idle_start, idle_end, tuple(loads), done)


def split_runs(stdout_text: str) -> tuple[Marks, list[str]]:
    """The marks and, per completed load window, the benchmark output printed inside it
    (for `parse_output`), in order."""
    lines = [line.rstrip("\r") for line in stdout_text.splitlines()]
    runs: list[str] = []
    current: list[str] | None = None
    for line in lines:
        words = _mark(line)
        if words and words[0] == "load-start":
            current = []
        elif words and words[0] == "load-end":
            if current is not None:
                runs.append("\n".join(current))
            current = None
        elif current is not None and not words:
            current.append(line)
    return parse_marks(lines), runs


@dataclass(frozen=True)
class GaugeSample:
    """One log line: watch time (ns) and the raw sysfs integers."""

    t_ns: int
    current_raw: int
    voltage_raw: int


class GaugeLog(list[GaugeSample]):
    """Parsed samples; `malformed` counts the lines skipped (e.g. a torn last line, or
    `NA` when a sysfs read failed)."""

    malformed: int = 0


def parse_log(text: str) -> GaugeLog:
    samples = GaugeLog()
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 3:
                raise ValueError(line)
            samples.append(GaugeSample(int(parts[0]), int(parts[1]), int(parts[2])))
        except ValueError:
            samples.malformed += 1
    return samples


@dataclass(frozen=True)
class GaugeUnits:
    """How to read the raw integers: watts = sign × current × current_scale × voltage ×
    voltage_scale, with the sign chosen so the idle (discharging) power is positive."""

    current_scale: float
    voltage_scale: float
    sign: int
    description: str

    def watts(self, sample: GaugeSample) -> float:
        return (
            self.sign
            * sample.current_raw
            * self.current_scale
            * sample.voltage_raw
            * self.voltage_scale
        )


def detect_units(idle: Sequence[GaugeSample]) -> GaugeUnits:
    """Units by magnitude (CURRENT_UA_MIN, VOLTAGE_UV_MIN) and the discharge sign from
    the idle mean: the watch is on battery at idle, so its idle power is positive."""
    if not idle:
        raise DeviceError("fuel gauge: no samples in the idle window")
    mean_current = statistics.fmean(s.current_raw for s in idle)
    if mean_current == 0:
        raise DeviceError(
            "fuel gauge: current_now reads 0 throughout the idle window",
            hint="This watch's gauge does not report current; use an external meter.",
        )
    typical_current = statistics.median(abs(s.current_raw) for s in idle)
    typical_voltage = statistics.median(s.voltage_raw for s in idle)
    micro_amps = typical_current >= CURRENT_UA_MIN
    micro_volts = typical_voltage >= VOLTAGE_UV_MIN
    voltage_scale = 1e-6 if micro_volts else 1e-3
    volts = typical_voltage * voltage_scale
    if not VOLTAGE_RANGE_V[0] <= volts <= VOLTAGE_RANGE_V[1]:
        raise DeviceError(
            f"fuel gauge: voltage_now reads {typical_voltage}, not a battery voltage in µV or mV"
        )
    sign = -1 if mean_current < 0 else 1
    description = (
        f"current_now in {'µA' if micro_amps else 'mA'}, "
        f"{'negative' if sign < 0 else 'positive'} while discharging; "
        f"voltage_now in {'µV' if micro_volts else 'mV'}"
    )
    return GaugeUnits(1e-6 if micro_amps else 1e-3, voltage_scale, sign, description)


@dataclass(frozen=True)
class WindowEstimate:
    """One benchmark run's steady phase: the tail [end − count × avg, end] of its process."""

    index: int
    start_ns: int
    end_ns: int
    seconds: float
    samples: int
    inferences: int
    avg_us: float
    load_w: float
    dynamic_mj: float
    total_mj: float


@dataclass(frozen=True)
class FuelGaugeEstimate:
    units: GaugeUnits
    idle_w: float
    idle_samples: int
    idle_s: float
    load_w: float
    dynamic_mj: float
    dynamic_ci: tuple[float, float] | None
    total_mj: float
    total_ci: tuple[float, float] | None
    windows: tuple[WindowEstimate, ...]
    sample_period_s: float
    malformed_lines: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    method: str = "fuel-gauge estimate"

    @property
    def repeats(self) -> int:
        return len(self.windows)

    def to_dict(self) -> dict[str, Any]:
        """The run summary's `energy` dict: edgetool's usual keys (total_mj / dynamic_mj as
        {mean, ci}, idle_w) plus what the estimate rests on."""
        return {
            "method": self.method,
            "meter": METER,
            "estimate": True,
            "idle_w": self.idle_w,
            "idle_mw": self.idle_w * 1e3,
            "load_mw": self.load_w * 1e3,
            "mean_power_w": self.load_w,
            "total_mj": {"mean": self.total_mj, "ci": _ci(self.total_ci)},
            "dynamic_mj": {"mean": self.dynamic_mj, "ci": _ci(self.dynamic_ci)},
            "confidence": 0.95,
            "inferences": sum(w.inferences for w in self.windows),
            "repeats": self.repeats,
            "window_s": [w.seconds for w in self.windows],
            "idle_s": self.idle_s,
            "idle_samples": self.idle_samples,
            "sample_period_s": self.sample_period_s,
            "units": self.units.description,
            "gauge_units": asdict(self.units),
            "windows": [asdict(w) for w in self.windows],
            "malformed_lines": self.malformed_lines,
            "warnings": list(self.warnings),
            "note": "; ".join(self.warnings) or None,
        }


def _ci(ci: tuple[float, float] | None) -> list[float] | None:
    return list(ci) if ci else None


def _inside(samples: Sequence[GaugeSample], start: int, end: int) -> list[GaugeSample]:
    return [s for s in samples if start <= s.t_ns <= end]


def estimate(
    samples: Sequence[GaugeSample],
    marks: Marks,
    steady_stats: Sequence[tuple[int, float]],
) -> FuelGaugeEstimate:
    """mJ per inference from the gauge log, the marks and, per load window, benchmark_model's
    (steady inference count, avg µs).

    The steady phase of a run is taken as the tail of its process, [load-end − count × avg,
    load-end]: the watch's clock marks only the process, and the timed runs come last
    (after loading and warm-up; only the final report and exit follow them). Power of a
    window = mean V·I of the samples inside it (at least MIN_SAMPLES); per window,
    dynamic = (P_load − P_idle) × avg and total = P_load × avg; the result is the mean
    over windows with a 95 % Student-t interval.
    """
    if marks.status in CHARGING:
        raise DeviceError(
            f"battery status {marks.status!r}: the watch is charging: a fuel-gauge estimate "
            "would measure the charger, not the model",
            hint="Unplug the watch (ADB over Wi-Fi keeps working) and retry.",
        )
    idle_window = marks.idle
    if idle_window is None:
        raise DeviceError("fuel gauge: the output has no idle-start/idle-end marks")
    if len(steady_stats) != len(marks.loads):
        raise DeviceError(
            f"fuel gauge: {len(marks.loads)} load windows but {len(steady_stats)} benchmark results"
        )
    if not marks.loads:
        raise DeviceError("fuel gauge: the output has no completed benchmark run")
    ordered = sorted(samples, key=lambda s: s.t_ns)
    period = _period_s(ordered)
    hint = "Raise num_runs so a run lasts longer, or lower the sample period (meter.period_s)."
    idle = _inside(ordered, *idle_window)
    if len(idle) < MIN_SAMPLES:
        raise DeviceError(
            f"fuel gauge: the idle window holds {len(idle)} samples (need {MIN_SAMPLES})",
            hint="Raise the idle time or lower the sample period (meter.period_s).",
        )
    units = detect_units(idle)
    idle_w = statistics.fmean(units.watts(s) for s in idle)
    warnings: list[str] = []
    windows: list[WindowEstimate] = []
    for load, (count, avg_us) in zip(marks.loads, steady_stats, strict=True):
        if load.exit_status != 0:
            raise DeviceError(f"benchmark run {load.index} exited with status {load.exit_status}")
        if count <= 0 or not avg_us > 0:
            raise DeviceError(f"benchmark run {load.index} timed no inference (count={count})")
        start = load.end_ns - round(count * avg_us * 1e3)
        if start < load.start_ns:
            warnings.append(
                f"run {load.index}: its timed inferences outlast the process; window clipped"
            )
            start = load.start_ns
        inside = _inside(ordered, start, load.end_ns)
        seconds = (load.end_ns - start) / 1e9
        if len(inside) < MIN_SAMPLES:
            raise DeviceError(
                f"fuel gauge: benchmark run {load.index}'s steady phase ({seconds:.3g} s) holds "
                f"{len(inside)} gauge samples (need {MIN_SAMPLES})",
                hint=hint,
            )
        load_w = statistics.fmean(units.watts(s) for s in inside)
        avg_s = avg_us / 1e6
        windows.append(
            WindowEstimate(
                index=load.index,
                start_ns=start,
                end_ns=load.end_ns,
                seconds=seconds,
                samples=len(inside),
                inferences=count,
                avg_us=avg_us,
                load_w=load_w,
                dynamic_mj=(load_w - idle_w) * avg_s * 1e3,
                total_mj=load_w * avg_s * 1e3,
            )
        )
    if all(w.load_w <= idle_w for w in windows):
        warnings.append(
            "dynamic energy not resolved above the gauge's noise "
            "(load power ≤ idle power in every window)"
        )
    update_s = _update_period_s(ordered)
    shortest = min(w.seconds for w in windows)
    if update_s is not None and shortest < MIN_SAMPLES * update_s:
        warnings.append(
            f"the gauge's reading changes only every ~{update_s:.2g} s: windows of "
            f"{shortest:.2g} s see fewer than {MIN_SAMPLES} fresh readings"
        )
    malformed = getattr(samples, "malformed", 0)
    if malformed:
        warnings.append(f"{malformed} malformed gauge log lines skipped")
    dynamic, dynamic_ci = mean_ci([w.dynamic_mj for w in windows])
    total, total_ci = mean_ci([w.total_mj for w in windows])
    return FuelGaugeEstimate(
        units=units,
        idle_w=idle_w,
        idle_samples=len(idle),
        idle_s=(idle_window[1] - idle_window[0]) / 1e9,
        load_w=statistics.fmean(w.load_w for w in windows),
        dynamic_mj=dynamic,
        dynamic_ci=dynamic_ci,
        total_mj=total,
        total_ci=total_ci,
        windows=tuple(windows),
        sample_period_s=period,
        malformed_lines=int(malformed),
        warnings=tuple(warnings),
    )


def _period_s(ordered: Sequence[GaugeSample]) -> float:
    """Median spacing of the log's timestamps (the achieved, not the requested, period)."""
    if len(ordered) < 2:
        return math.nan
    return statistics.median(b.t_ns - a.t_ns for a, b in itertools.pairwise(ordered)) / 1e9


def _update_period_s(ordered: Sequence[GaugeSample]) -> float | None:
    """How often the gauge's current reading actually changes (None: it never changes)."""
    changes = sum(1 for a, b in itertools.pairwise(ordered) if a.current_raw != b.current_raw)
    if changes == 0 or len(ordered) < 2:
        return None
    return (ordered[-1].t_ns - ordered[0].t_ns) / 1e9 / changes
