"""Energy maths, clock alignment and the energy path of `edgetool deploy --energy` on the
local device, against a hwmon INA260 whose power follows a known waveform."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool import events
from edgetool.errors import ConfigError, DeviceError
from edgetool.events import PowerSample
from edgetool.power import open_meter
from edgetool.power.align import Alignment, estimate_offset, probe_clock
from edgetool.power.base import host_ns
from edgetool.power.energy import (
    PowerTrace,
    energy_from_model,
    energy_from_trace,
    group_windows,
    mean_ci,
)
from edgetool.results.manifest import RunManifest
from edgetool.results.store import RunWriter, load_run
from edgetool.runner import RUNNER_PATH
from edgetool.testing.hwmon_peer import HwmonPeer
from edgetool.testing.waveform import Sine
from edgetool.transport.local import LocalSettings, LocalTransport


def sampled(fn: Any, t0: int, t1: int, step: int) -> list[PowerSample]:
    return [PowerSample(t, fn(t)) for t in range(t0, t1 + 1, step)]


def test_trapezoid_integral_is_exact_for_piecewise_linear_power() -> None:
    # P(t) = 1 + t/1s: linear, so trapezoids are exact even between samples.
    trace = PowerTrace(sampled(lambda t: 1.0 + t / 1e9, 0, 2_000_000_000, 10_000_000))
    joules = trace.energy(
        [0, 250_000_000, 1_234_567_891], [1_000_000_000, 260_000_000, 1_900_000_000]
    )
    exact = [1.0 + 0.5, 0.01 + (0.26**2 - 0.25**2) / 2]
    a, b = 1.234567891, 1.9
    exact.append((b - a) + (b * b - a * a) / 2)
    assert np.allclose(joules, exact, rtol=1e-12)
    assert trace.mean_power(0, 1_000_000_000) == pytest.approx(1.5)


def test_windows_shorter_than_the_meter_resolves_are_batched_and_said_so() -> None:
    period = 1_000_000  # a 1 kHz meter
    windows = [(i * 200_000, i * 200_000 + 150_000) for i in range(1000)]  # 150 µs each
    groups = group_windows(windows, 10 * period)
    assert all(end - start >= 10 * period for start, end, _ in groups)
    assert sum(n for _, _, n in groups) == 1000
    samples = sampled(lambda t: 2.0, -5 * period, 210 * period, period)
    result = energy_from_trace("m", samples, windows, (-5 * period, 0))
    assert result.batched and result.note and "batched" in result.note
    # Constant 2 W: a group's energy over its span (gaps included) per inference.
    per_inference_mj = 2.0 * (groups[0][1] - groups[0][0]) / 1e9 / groups[0][2] * 1e3
    assert result.total_mj["mean"] == pytest.approx(per_inference_mj, rel=0.01)
    assert result.dynamic_mj is not None and abs(result.dynamic_mj["mean"]) < 1e-9
    assert result.idle_w == pytest.approx(2.0)


def test_long_windows_are_integrated_one_by_one_with_a_ci() -> None:
    period = 10_000  # 100 kHz
    rng = random.Random(1)
    windows, t = [], 0
    for _ in range(200):
        length = rng.randrange(900_000, 1_100_000)
        windows.append((t, t + length))
        t += length + 300_000
    # Power is 1 W idle and 3 W inside windows: per-inference dynamic energy = 2 W x length.
    starts = np.array([w[0] for w in windows])
    ends = np.array([w[1] for w in windows])
    ts = np.arange(-2_000_000, t + period, period)
    inside = (np.searchsorted(starts, ts, side="right") - 1 >= 0) & (
        ts < ends[np.clip(np.searchsorted(starts, ts, side="right") - 1, 0, None)]
    )
    samples = [PowerSample(int(a), 3.0 if b else 1.0) for a, b in zip(ts, inside, strict=True)]
    result = energy_from_trace("m", samples, windows, (-2_000_000, -20_000))
    assert not result.batched and result.groups == 200
    lengths = [(b - a) / 1e9 for a, b in windows]
    exact_dynamic = 2.0 * sum(lengths) / len(lengths) * 1e3
    assert result.dynamic_mj is not None
    assert result.dynamic_mj["mean"] == pytest.approx(exact_dynamic, rel=0.02)
    lo, hi = result.dynamic_mj["ci"]
    assert lo < result.dynamic_mj["mean"] < hi
    assert result.idle_w == pytest.approx(1.0)


def test_a_meter_that_missed_part_of_the_run_is_an_error_not_less_energy() -> None:
    samples = sampled(lambda t: 1.0, 0, 1_000_000, 1000)
    with pytest.raises(DeviceError, match="not the whole run"):
        energy_from_trace("m", samples, [(500_000, 2_000_000)], None)
    with pytest.raises(DeviceError, match="too few"):
        PowerTrace(samples[:1])


def test_mean_ci_matches_the_student_t_interval() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    values = [1.0, 2.0, 4.0, 3.5, 2.2, 3.1]
    mean, ci = mean_ci(values)
    assert ci is not None
    lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=mean, scale=scipy_stats.sem(values))
    assert ci == pytest.approx((lo, hi), rel=1e-3)
    assert mean_ci([2.0]) == (2.0, None)


def test_estimate_is_labelled_and_uses_the_declared_watts() -> None:
    result = energy_from_model("estimate", [1_000_000, 3_000_000], idle_w=2.0, active_w=5.0)
    assert result.estimate and result.note and "estimate" in result.note
    assert result.total_mj["mean"] == pytest.approx(5.0 * 2e-3 * 1e3)
    assert result.dynamic_mj is not None and result.dynamic_mj["mean"] == pytest.approx(6.0)
    with pytest.raises(ConfigError, match="idle_w and active_w"):
        open_meter("estimate", {"idle_w": 1.0})
    with pytest.raises(ConfigError, match="unknown"):
        open_meter("joulescope9000", {})
    with pytest.raises(ConfigError, match="exactly one of chip"):
        open_meter("hwmon", {})


def test_offset_from_round_trips_is_within_its_uncertainty() -> None:
    rng = random.Random(7)
    true_offset = 123_456_789
    probes = []
    for k in range(32):
        send = k * 1_000_000
        up, down = rng.randrange(20_000, 400_000), rng.randrange(20_000, 400_000)
        device = send + up - true_offset
        probes.append((send, device, send + up + down))
    estimate = estimate_offset(probes)
    assert abs(estimate.offset_ns - true_offset) <= estimate.uncertainty_ns
    assert estimate.uncertainty_ns <= 400_000


def test_drift_between_the_two_alignments_is_interpolated() -> None:
    before = estimate_offset([(0, 1_000, 100)])  # offset -950
    after = estimate_offset([(10_000_100, 10_001_000 + 100, 10_000_200)])
    alignment = Alignment.from_probes(before, after)
    assert alignment.drift_ns == after.offset_ns - before.offset_ns
    middle = (1_000 + 10_001_100) // 2
    expected = middle + (before.offset_ns + after.offset_ns) / 2
    assert abs(alignment.to_meter(middle) - expected) <= 1


def test_clock_probes_through_the_runner_find_this_hosts_own_clock(tmp_path: Path) -> None:
    # The local device shares this host's CLOCK_MONOTONIC: the true offset is 0.
    transport = LocalTransport(LocalSettings(root=tmp_path))
    process = transport.run([transport.python, str(RUNNER_PATH), "clock"])
    estimate = estimate_offset(probe_clock(process, 16))
    assert abs(estimate.offset_ns) <= estimate.uncertainty_ns
    assert estimate.uncertainty_ns < 50_000_000


def test_power_events_and_start_times_survive_the_journal(tmp_path: Path) -> None:
    line = json.dumps(
        {"event": "power", "t": [1, 2], "w": [0.5, 0.6], "v": [5.0, None], "a": [0.1, None]}
    )
    event = events.parse_event(line)
    assert event == events.Power([1, 2], [0.5, 0.6], [5.0, None], [0.1, None])
    assert isinstance(events.parse_event('{"event":"power","t":[1],"w":[]}'), events.Log)
    sample = events.parse_event('{"event":"sample","i":0,"ns":[5,6],"t":[10,20]}')
    assert sample == events.Samples(0, [5, 6], [10, 20])
    writer = RunWriter(tmp_path, "r", RunManifest())
    writer.append_samples(0, [5, 6], [10, 20])
    writer.append_power([PowerSample(1, 0.5, 5.0, 0.1), PowerSample(2, 0.6)])
    with (writer.dir / "power.jsonl").open("a") as handle:
        handle.write('{"t": [3], "w": [0.')  # a kill mid-write
    writer.finish("complete", None)
    run = load_run(writer.dir)
    assert run.starts_ns == [10, 20]
    assert [s.watts for s in run.power] == [0.5, 0.6]


def hwmon_target(tmp_path: Path, root: Path, chip: str = "ina260") -> Path:
    targets = tmp_path / "targets"
    targets.mkdir(exist_ok=True)
    (targets / "ina.toml").write_text(
        'description = "this host with an INA260 on hwmon"\nkind = "linux"\n'
        '[transport]\ntype = "local"\n'
        f'[meter]\ntype = "hwmon"\nchip = "{chip}"\nroot = "{root}"\nrate_hz = 200\n'
    )
    return targets


def test_deploy_energy_with_hwmon_matches_the_exact_integral(cli: Any, tmp_path: Path) -> None:
    volts = 5.0
    waveform = Sine(period_ns=700_000_000, mean_amps=0.6, amplitude=0.2, phase_ns=host_ns())
    peer = HwmonPeer(tmp_path / "hwmon", waveform, volts)
    try:
        targets = hwmon_target(tmp_path, tmp_path / "hwmon")
        out = cli("--targets-dir", str(targets), "deploy", "-t", "ina", "-m", "tiny-mlp",
                  "--energy", "--idle-seconds", "0.5", "-d", "1.5", "--json")  # fmt: skip
    finally:
        peer.close()
    assert out.code == 0, out.stderr
    data = out.json()
    energy = data["summary"]["energy"]
    power = data["manifest"]["power"]
    assert power["clock"] == "device" and power["alignment"]["method"] == "same-clock"
    run = load_run(Path(data["run_dir"]))
    assert run.starts_ns is not None and len(run.power) > 200
    # Ground truth: the waveform's exact integral over the same windows.
    windows = [(s, s + d) for s, d in zip(run.starts_ns, run.samples_ns, strict=True)]
    groups = group_windows(windows, 10 * 1e9 / 200)
    exact_total = [peer.watts_energy(a, b) / n * 1e3 for a, b, n in groups]
    idle_a, idle_b = power["idle_window"]
    exact_idle_w = peer.watts_energy(idle_a, idle_b) / ((idle_b - idle_a) / 1e9)
    exact_dynamic = [
        (peer.watts_energy(a, b) - exact_idle_w * (b - a) / 1e9) / n * 1e3 for a, b, n in groups
    ]
    assert energy["idle_w"] == pytest.approx(exact_idle_w, rel=0.02)
    assert energy["total_mj"]["mean"] == pytest.approx(np.mean(exact_total), rel=0.02)
    # Dynamic energy is a difference of two larger numbers: compare against the total scale.
    assert abs(energy["dynamic_mj"]["mean"] - np.mean(exact_dynamic)) <= 0.02 * np.mean(exact_total)
    assert energy["batched"] and energy["estimate"] is False
    shown = cli("results", "show", data["run_id"] if "run_id" in data else data["run_dir"])
    assert shown.code == 0 and "mJ/inference" in shown.stdout


def test_wrong_hwmon_chip_is_one_clear_error(cli: Any, tmp_path: Path) -> None:
    peer = HwmonPeer(tmp_path / "hwmon", Sine(1_000_000_000, 0.5, 0.1), 5.0)
    try:
        targets = hwmon_target(tmp_path, tmp_path / "hwmon", chip="ina226")
        out = cli("--targets-dir", str(targets), "deploy", "-t", "ina", "-m", "tiny-mlp",
                  "--energy", "--idle-seconds", "0.2", "-n", "10")  # fmt: skip
    finally:
        peer.close()
    assert out.code == 7
    assert "no hwmon chip named 'ina226'" in out.stderr and "hwmon7=ina260" in out.stderr
    assert "Traceback" not in out.stderr


def test_energy_without_a_meter_section_says_how_to_add_one(cli: Any) -> None:
    out = cli("deploy", "-m", "tiny-mlp", "--energy", "-n", "5")
    assert out.code == 5
    assert "has no [meter] section" in out.stderr and "estimate" in out.stderr


def test_estimate_meter_deploy_is_labelled_an_estimate(cli: Any, tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "est.toml").write_text(
        'kind = "linux"\n[transport]\ntype = "local"\n'
        '[meter]\ntype = "estimate"\nidle_w = 2.0\nactive_w = 6.5\n'
    )
    out = cli("--targets-dir", str(targets), "deploy", "-t", "est", "-m", "tiny-mlp",
              "--energy", "-n", "50", "--json")  # fmt: skip
    assert out.code == 0, out.stderr
    energy = out.json()["summary"]["energy"]
    assert energy["estimate"] is True
    mean_ms = out.json()["summary"]["latency"]["mean"]
    assert energy["total_mj"]["mean"] == pytest.approx(6.5 * mean_ms, rel=1e-6)
    assert math.isclose(energy["dynamic_mj"]["mean"], 4.5 * mean_ms, rel_tol=1e-6)
    shown = cli("--targets-dir", str(targets), "deploy", "-t", "est", "-m", "tiny-mlp",
                "--energy", "-n", "20")  # fmt: skip
    assert "estimate" in shown.stdout


@pytest.mark.parametrize("kind", ["ppk2", "um25c"])
def test_deploy_energy_with_a_host_meter_aligns_and_integrates(
    cli: Any, tmp_path: Path, kind: str
) -> None:
    """A host-side meter on a pty speaking the real protocol: the device clock is found by
    round trips (true offset 0 here) and each window is integrated on the meter's clock."""
    from edgetool.testing.meters import start_peer

    volts = 3.3
    # The UM25C answers with a reading ~0.1 s old: give it a load that changes slowly.
    period = 60_000_000 if kind == "ppk2" else 30_000_000_000
    waveform = Sine(period_ns=period, mean_amps=0.4, amplitude=0.15, phase_ns=host_ns())
    options = f"volts = {volts}\n" if kind == "ppk2" else "interval = 0.1\n"
    with start_peer(kind, waveform, volts) as peer:
        targets = tmp_path / "targets"
        targets.mkdir()
        (targets / "metered.toml").write_text(
            'kind = "linux"\n[transport]\ntype = "local"\n'
            f'[meter]\ntype = "{kind}"\nport = "{peer.port}"\n{options}'
        )
        out = cli("--targets-dir", str(targets), "deploy", "-t", "metered", "-m", "tiny-mlp",
                  "--energy", "--idle-seconds", "1", "-d", "2", "--json")  # fmt: skip
    assert out.code == 0, out.stderr
    data = out.json()
    alignment = data["manifest"]["power"]["alignment"]
    assert alignment["method"] == "round-trip" and alignment["rounds"] == 64
    assert abs(alignment["offset_ns"]) <= alignment["uncertainty_ns"] < 50_000_000
    run = load_run(Path(data["run_dir"]))
    assert run.starts_ns is not None
    start, end = run.starts_ns[0], run.starts_ns[-1] + run.samples_ns[-1]
    exact_mean_w = volts * waveform.charge(start, end) / ((end - start) / 1e9)
    energy = data["summary"]["energy"]
    assert energy["mean_power_w"] == pytest.approx(exact_mean_w, rel=0.02)
    idle_a, idle_b = data["manifest"]["power"]["idle_window"]
    exact_idle = volts * waveform.charge(idle_a, idle_b) / ((idle_b - idle_a) / 1e9)
    assert energy["idle_w"] == pytest.approx(exact_idle, rel=0.02)
