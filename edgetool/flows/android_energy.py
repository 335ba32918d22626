"""`deploy --energy` on an Android watch: its battery fuel gauge, sampled on the watch.

One shell command on the watch runs the sampler, the idle window and the benchmark runs
(so no sampler outlives a dropped connection), the log is pulled afterwards and the
estimate is computed on the host by `fuel_gauge.estimate`.
"""

from __future__ import annotations

import posixpath
from typing import Any

from edgetool.android.benchmark_model import BenchmarkOutput, parse_output
from edgetool.android.fuel_gauge import (
    METER,
    GaugeSample,
    GaugeUnits,
    Marks,
    estimate,
    fuel_gauge_argv,
    parse_log,
    split_runs,
)
from edgetool.config import TableReader
from edgetool.errors import DeviceError
from edgetool.events import PowerSample
from edgetool.flows.base import Observer, RunSettings
from edgetool.results.manifest import PowerInfo
from edgetool.results.store import RunWriter
from edgetool.targets import Target, device_path
from edgetool.transport.adb import AdbTransport

DEFAULTS = {"path": "/sys/class/power_supply/battery", "period_s": 0.1, "repeats": 3}


def meter_options(target: Target) -> tuple[str, float, int]:
    """[meter] type = "fuel-gauge": path, period_s, repeats (unknown keys are errors;
    every problem of the section is reported at once)."""
    assert target.meter is not None
    reader = TableReader(target.source, target.meter.options, "meter.")
    path = reader.get("path", str, "an absolute path", DEFAULTS["path"])
    if not path.startswith("/"):
        reader.reject("path", "an absolute path", path)
    period = reader.get("period_s", (int, float), "a positive number", DEFAULTS["period_s"])
    if period <= 0:
        reader.reject("period_s", "a positive number", period)
    repeats = reader.get("repeats", int, "a positive integer", DEFAULTS["repeats"])
    if repeats < 1:
        reader.reject("repeats", "a positive integer", repeats)
    reader.finish()
    return path, float(period), repeats


def measure_with_fuel_gauge(
    transport: AdbTransport,
    target: Target,
    settings: RunSettings,
    bench: list[str],
    writer: RunWriter,
    obs: Observer,
) -> tuple[list[BenchmarkOutput], dict[str, Any]]:
    battery, period, repeats = meter_options(target)
    status = transport.run_checked(["cat", posixpath.join(battery, "status")]).strip()
    if status in ("Charging", "Full"):
        raise DeviceError(
            f"{transport.description}: the watch is {status.lower()}: a fuel-gauge estimate "
            "would measure the charger, not the model.",
            hint="Take the watch off its charger (ADB over Wi-Fi keeps working) and retry.",
        )
    log_remote = device_path(target.workdir, "energy", f"{writer.run_id}.log")
    transport.makedirs(posixpath.dirname(log_remote))
    obs.metering(METER, settings.idle_seconds)
    argv = fuel_gauge_argv(battery, log_remote, period, settings.idle_seconds, repeats, bench)
    process = transport.run(argv)
    text = "\n".join(process.lines())
    exit_status = process.wait()
    (writer.dir / "benchmark_model.txt").write_text(text)
    marks, run_texts = split_runs(text)
    if exit_status != 0 or len(run_texts) != repeats:
        for run_text in run_texts:
            parse_output(run_text)  # the tool's own reason, when it printed one
        raise DeviceError(
            f"{transport.description}: the fuel-gauge run ended early "
            f"({len(run_texts)} of {repeats} benchmark runs, exit status {exit_status})"
        )
    outputs = [parse_output(run_text) for run_text in run_texts]
    local_log = writer.dir / "fuel_gauge.log"
    transport.get(log_remote, local_log)
    transport.run_checked(["rm", "-f", log_remote])
    samples = parse_log(local_log.read_text())
    steady = []
    for out in outputs:
        if out.steady.mean_us is None:
            raise DeviceError(f"{transport.description}: a benchmark run printed no average")
        steady.append((out.steady.count, out.steady.mean_us))
    result = estimate(samples, marks, steady)
    _keep_power_trace(writer, samples, result.units, marks)
    energy = result.to_dict()
    energy.setdefault("meter", METER)
    energy["estimate"] = True
    return outputs, energy


def _keep_power_trace(
    writer: RunWriter, samples: list[GaugeSample], units: GaugeUnits, marks: Marks
) -> None:
    """The gauge's samples as the run's power trace (watch clock, like the windows), so
    `edgetool trace` and `report` draw them as they do a meter's."""
    writer.append_power(
        [
            PowerSample(
                s.t_ns,
                units.watts(s),
                s.voltage_raw * units.voltage_scale,
                units.sign * s.current_raw * units.current_scale,
            )
            for s in samples
        ]
    )
    loads = marks.loads
    writer.manifest.power = PowerInfo.from_dict(  # the gauge's own entry, as it was
        {
            "meter": METER,
            "estimate": True,
            "units": units.description,
            "clock": "watch",
            "alignment": {
                "method": "same clock (sampled on the watch)",
                "offset_ns": 0,
                "uncertainty_ns": 0,
            },
            "idle_window": list(marks.idle) if marks.idle else None,
            "measure_window": [loads[0].start_ns, loads[-1].end_ns] if loads else None,
        }
    )
    writer.save()
