"""PPK2 and UM25C drivers against the protocol peers on a pty, checked against the exact
charge of the waveform the peer plays back (edgetool.testing.waveform)."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edgetool.errors import ConfigError, ConnectError, DeviceError
from edgetool.events import PowerSample
from edgetool.power import ppk2, um25c
from edgetool.power.base import host_ns
from edgetool.testing.meters import PEER_CALIBRATION, Ppk2Peer, Um25cPeer, start_peer
from edgetool.testing.waveform import Constant, Pulses, Sine, parse_waveform

PULSES = "pulses:period=10ms,width=4ms,high=0.5,low=0.05"
VOLTS = 5.0


Trace = tuple["npt.NDArray[np.int64]", "npt.NDArray[np.float64]"]


def trace(samples: list[PowerSample], key: str = "amps") -> Trace:
    t = np.array([s.t_ns for s in samples], dtype=np.int64)
    return t, np.array([getattr(s, key) for s in samples], dtype=np.float64)


def integrate(tr: Trace, t0: int, t1: int) -> float:
    """Trapezoid of a sampled trace over [t0, t1], the ends linearly interpolated."""
    t, y = tr
    inside = (t > t0) & (t < t1)
    tt = np.concatenate(([t0], t[inside], [t1])).astype(np.float64)
    yy = np.concatenate(([np.interp(t0, t, y)], y[inside], [np.interp(t1, t, y)]))
    return float(np.trapezoid(yy, tt)) * 1e-9


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """The peers run on their own thread: let them catch up with commands just sent."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert condition()


@contextlib.contextmanager
def silent_pty() -> Iterator[str]:
    """A serial port nobody answers on."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


# --- waveforms ----------------------------------------------------------------------


def test_pulses_charge_is_exact_and_windows_are_whole_pulses() -> None:
    w = parse_waveform(PULSES + ",phase=3ms")
    assert isinstance(w, Pulses)
    assert (w.period_ns, w.width_ns, w.phase_ns) == (10_000_000, 4_000_000, 3_000_000)
    t0, t1 = 12_345_678_901, 12_345_678_901 + 57_654_321
    t = np.arange(t0, t1, 1000, dtype=np.int64)  # 1 µs midpoint sum: exact for steps
    numeric = float(np.sum(w.amps_array(t + 500))) * 1e-6
    assert w.charge(t0, t1) == pytest.approx(numeric, rel=1e-4)
    assert w.charge(t1, t0) == pytest.approx(-numeric, rel=1e-4)
    windows = w.pulse_windows(t0, t1)
    assert all(t0 <= a and b <= t1 and b - a == w.width_ns for a, b in windows)
    assert all((a - w.phase_ns) % w.period_ns == 0 for a, _ in windows)
    assert len(windows) == 5
    for a, b in windows:
        assert w.charge(a, b) == pytest.approx(0.5 * 0.004)
    assert parse_waveform(w.spec) == w


def test_other_waveforms_and_spec_errors() -> None:
    assert parse_waveform("constant:200mA") == Constant(0.2)
    assert Constant(0.2).charge(0, 2_000_000_000) == pytest.approx(0.4)
    s = parse_waveform("sine:period=1s,mean=0.2,amplitude=0.1,phase=0.25s")
    assert isinstance(s, Sine) and parse_waveform(s.spec) == s
    t = np.arange(10**12, 10**12 + 1_300_000_000, 10_000, dtype=np.int64)
    numeric = float(np.sum(s.amps_array(t + 5_000))) * 1e-5
    assert s.charge(10**12, 10**12 + 1_300_000_000) == pytest.approx(numeric, rel=1e-6)
    for bad in ("square:1", "pulses:period=10,width=4ms,high=1,low=0", "pulses:period=1ms",
                "pulses:period=1ms,width=2ms,high=1,low=0", "constant:lots"):  # fmt: skip
        with pytest.raises(ConfigError):
            parse_waveform(bad)


# --- PPK2 encoding ------------------------------------------------------------------


def test_ppk2_words_metadata_and_calibration_round_trip() -> None:
    adc = np.array([0, 1, 0x3FFF, 1234], dtype=np.int64)
    rng = np.array([0, 4, 2, 3], dtype=np.int64)
    counter = np.array([0, 63, 17, 5], dtype=np.int64)
    logic = np.array([0, 255, 1, 128], dtype=np.uint8)
    words = np.frombuffer(ppk2.join_words(adc, rng, counter, logic).tobytes(), dtype="<u4")
    fields = ppk2.split_words(words)
    assert np.array_equal(fields[0], adc) and np.array_equal(fields[1], rng)
    assert np.array_equal(fields[2], counter) and np.array_equal(fields[3], logic)

    text = PEER_CALIBRATION.to_metadata()
    assert text.startswith("Calibrated: 0\nR0: 1031.64\n") and text.endswith("mode: 2\nEND\n")
    for key in ("GS4", "GI0", "O3", "S2", "I1", "UG4", "HW", "IA"):
        assert f"\n{key}: " in text
    assert ppk2.parse_metadata(text) == PEER_CALIBRATION
    with pytest.raises(ValueError):
        ppk2.parse_metadata("Calibrated: 0\nR0: 1.0\nEND\n")

    # Every range: encode then decode recovers the current (ADC quantisation < 0.1 %).
    amps = np.geomspace(50e-6, 3.0, 400)
    rng, adc = PEER_CALIBRATION.encode(amps, 3300)
    assert set(rng.tolist()) == {0, 1, 2, 3, 4}
    decoded = PEER_CALIBRATION.amps(rng, adc, 3300)
    assert np.max(np.abs(decoded - amps) / amps) < 1e-3
    # Below that, range 0's ADC step (4*ADC_MULT/R0 = 43 nA) is the limit, as on the device.
    tiny = np.geomspace(1e-7, 50e-6, 50)
    decoded = PEER_CALIBRATION.amps(*PEER_CALIBRATION.encode(tiny, 3300), 3300)
    assert np.max(np.abs(decoded - tiny)) < 0.6 * 4 * ppk2.ADC_MULT / 1031.64


def test_spike_filter_vector_path_matches_per_sample_state_machine() -> None:
    rng_gen = np.random.default_rng(1)
    ranges = np.repeat(rng_gen.integers(0, 5, 60), rng_gen.integers(1, 200, 60))
    amps = rng_gen.uniform(0.1, 1.0, len(ranges)) * 10.0 ** (ranges - 5)
    reference = ppk2.SpikeFilter()
    expected = np.array(
        [reference._step(float(a), int(r)) for a, r in zip(amps, ranges, strict=True)]
    )
    vector = ppk2.SpikeFilter()
    cuts = sorted(rng_gen.integers(0, len(amps), 12).tolist())
    got = np.concatenate(
        [
            vector.apply(amps[a:b], ranges[a:b])
            for a, b in zip([0, *cuts], [*cuts, len(amps)], strict=True)
        ]
    )
    assert np.allclose(got, expected, rtol=1e-9, atol=0)


# --- PPK2 end to end ----------------------------------------------------------------


def test_ppk2_meter_recovers_pulse_charge_and_start_time() -> None:
    w = parse_waveform(PULSES)
    assert isinstance(w, Pulses)
    with start_peer("ppk2", w, VOLTS) as peer:
        assert isinstance(peer, Ppk2Peer)
        meter = ppk2.Ppk2Meter({"port": peer.port, "volts": VOLTS})
        try:
            assert meter.label == f"ppk2@{peer.port}"
            wait_for(lambda: peer.dut_on)
            assert (peer.mode, peer.vdd_mv, peer.dut_on) == (1, 5000, True)
            meter.start()
            time.sleep(1.0)
            samples = meter.samples()
            logic = [meter.last_logic]
            time.sleep(0.05)
            samples += meter.samples()
            logic.append(meter.last_logic)
            meter.stop()
            wait_for(lambda: not peer.streaming)
            t0_error_us = (meter.t0_ns or 0) - peer.stream_start_ns
        finally:
            meter.close()
    assert meter.lost_samples == 0
    assert len(samples) > 90_000
    t = np.array([s.t_ns for s in samples])
    assert np.all(np.diff(t) == 10_000)
    assert 0 <= t0_error_us < 1_000_000  # an upper bound, and < 1 ms above the truth

    windows = w.pulse_windows(t[0] + 20_000_000, t[-1] - 20_000_000)
    assert len(windows) >= 8
    amps, watts = trace(samples), trace(samples, "watts")
    errors = []
    for a, b in windows:  # each pulse with 1 ms either side: the whole burst
        exact = w.charge(a - 1_000_000, b + 1_000_000)
        errors.append(integrate(amps, a - 1_000_000, b + 1_000_000) / exact - 1)
    assert max(abs(e) for e in errors) < 0.02, errors
    span = (windows[0][0], windows[-1][0])
    assert integrate(amps, *span) == pytest.approx(w.charge(*span), rel=0.005)
    assert integrate(watts, *span) == pytest.approx(VOLTS * w.charge(*span), rel=0.005)

    # The trigger input (logic bit 0) marks the pulses on the same timeline.
    trigger = np.concatenate(logic).astype(np.int64) & 1
    rises = t[1:][np.diff(trigger) == 1]
    assert len(rises) >= 80
    offsets = [(r - w.phase_ns) % w.period_ns for r in rises.tolist()]
    assert max(min(o, w.period_ns - o) for o in offsets) < 1_000_000


def test_ppk2_decoder_agrees_with_ppk2_api() -> None:
    api = pytest.importorskip("ppk2_api.ppk2_api")
    w = parse_waveform("pulses:period=2ms,width=500us,high=0.8,low=100uA")
    with start_peer("ppk2", w, 3.3) as peer, silent_pty() as dummy:
        assert isinstance(peer, Ppk2Peer)
        peer.stream_start_ns = host_ns()
        raw = peer.encode(0, 30_000)  # 0.3 s of wire bytes, as the peer would stream them
        reference = api.PPK2_API(dummy, timeout=0.1)
        assert reference._parse_metadata(PEER_CALIBRATION.to_metadata())
        reference.current_vdd = 3300
        theirs = np.array(reference.get_samples(raw[:40_001])[0] + reference.get_samples(
            raw[40_001:])[0]) * 1e-6  # fmt: skip
        adc, rng, _, _ = ppk2.split_words(np.frombuffer(raw, dtype="<u4"))
        ours = ppk2.SpikeFilter().apply(PEER_CALIBRATION.amps(rng, adc, 3300), rng)
        truth = w.amps_array(peer.stream_start_ns + np.arange(30_000) * 10_000)
    assert len(theirs) == len(ours) == 30_000
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    settled = ours == PEER_CALIBRATION.amps(rng, adc, 3300)  # outside the spike filter
    assert settled.mean() > 0.95
    assert np.max(np.abs(theirs[settled] - truth[settled]) / truth[settled]) < 1e-3


def test_ppk2_errors() -> None:
    with silent_pty() as port:
        slow = ppk2.Ppk2Meter.METADATA_TIMEOUT_S
        ppk2.Ppk2Meter.METADATA_TIMEOUT_S = 0.3
        try:
            started = time.monotonic()
            with pytest.raises(DeviceError, match=f"no PPK2 answered on {port}"):
                ppk2.Ppk2Meter({"port": port, "volts": 3.3})
            assert time.monotonic() - started < 1.5
        finally:
            ppk2.Ppk2Meter.METADATA_TIMEOUT_S = slow
    with pytest.raises(ConnectError, match="cannot open PPK2 port"):
        ppk2.Ppk2Meter({"port": "/dev/does-not-exist", "volts": 3.3})
    for options in (
        {"volts": 3.3},
        {"port": 3, "volts": 3.3},
        {"port": "/dev/x"},
        {"port": "/dev/x", "volts": "3.3"},
        {"port": "/dev/x", "volts": 3.3, "mode": "volts"},
        {"port": "/dev/x", "volts": 9.0, "mode": "source"},
        {"port": "/dev/x", "volts": 3.3, "spike_filter": "yes"},
    ):
        with pytest.raises(ConfigError):
            ppk2.Ppk2Meter(options)


def test_ppk2_stream_that_stops_fails_the_run() -> None:
    with start_peer("ppk2", Constant(0.01), 1.8) as peer:
        assert isinstance(peer, Ppk2Peer)
        meter = ppk2.Ppk2Meter({"port": peer.port, "volts": 1.8, "mode": "source"})
        meter.STALL_TIMEOUT_S = 0.3
        try:
            wait_for(lambda: peer.dut_on)
            assert (peer.mode, peer.vdd_mv) == (2, 1800)
            meter.start()
            time.sleep(0.1)
            assert meter.samples()
            peer.stalled = True
            time.sleep(0.6)
            with pytest.raises(DeviceError, match="stopped sending samples"):
                meter.samples()
        finally:
            meter.close()


# --- UM25C --------------------------------------------------------------------------


def hand_record(model: int, volts: int, amps: int, marker: int = 0xFFF1) -> bytes:
    raw = bytearray(130)
    struct.pack_into(">HHHI", raw, 0, model, volts, amps, 1234)
    struct.pack_into(">HH", raw, 10, 31, 88)
    struct.pack_into(">II", raw, 16 + 8 * 3, 1500, 7500)  # data group 3
    struct.pack_into(">HH", raw, 96, 60, 245)
    struct.pack_into(">I", raw, 122, 43)
    struct.pack_into(">H", raw, 128, marker)
    return bytes(raw)


def test_um_record_parsing_on_hand_built_bytes() -> None:
    rec = um25c.parse_record(hand_record(0x09C9, 5123, 2345))
    assert (rec.model, rec.watts) == ("UM25C", 1.234)
    assert rec.volts == pytest.approx(5.123) and rec.amps == pytest.approx(0.2345)
    assert (rec.temp_c, rec.temp_f, rec.dplus, rec.dminus) == (31, 88, 0.6, 2.45)
    assert rec.ohms == pytest.approx(4.3)
    assert rec.groups[3] == (1.5, 7.5) and rec.groups[0] == (0.0, 0.0)
    old = um25c.parse_record(hand_record(0x0963, 512, 234))
    assert old.model == "UM24C"
    assert old.volts == pytest.approx(5.12) and old.amps == pytest.approx(0.234)
    assert um25c.parse_record(hand_record(0x0D4C, 512, 234, marker=0x1234)).model == "UM34C"
    with pytest.raises(DeviceError, match="unknown UM meter model id 0x1234"):
        um25c.parse_record(hand_record(0x1234, 1, 1))
    with pytest.raises(DeviceError, match="corrupt"):
        um25c.parse_record(hand_record(0x09C9, 1, 1, marker=0))
    with pytest.raises(DeviceError, match="129 bytes"):
        um25c.parse_record(hand_record(0x09C9, 1, 1)[:129])
    built = um25c.parse_record(um25c.build_record(4.987, 0.12345))
    assert built.volts == pytest.approx(4.987) and built.amps == pytest.approx(0.1234)


def test_um25c_meter_energy_over_two_seconds() -> None:
    w = parse_waveform(PULSES)
    with start_peer("um25c", w, VOLTS) as peer:
        assert isinstance(peer, Um25cPeer)
        meter = um25c.Um25cMeter({"port": peer.port, "interval": 0.2})
        try:
            assert meter.label == f"um25c@{peer.port}"
            assert meter.capabilities.rate_hz == 5
            meter.start()
            time.sleep(2.3)
            meter.stop()
            samples = meter.samples()
        finally:
            meter.close()
    assert len(samples) >= 10
    a, b = samples[0].t_ns, samples[-1].t_ns
    assert b - a > 1.9e9
    assert integrate(trace(samples, "watts"), a, b) == pytest.approx(
        VOLTS * w.charge(a, b), rel=0.02
    )


def test_um25c_dead_or_silent_meter() -> None:
    with silent_pty() as port, pytest.raises(DeviceError, match="did not answer"):
        um25c.Um25cMeter({"port": port, "timeout": 0.2})
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetool.testing.meters", "um25c", "--waveform", "constant:0.3",
         "--volts", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        meter = um25c.Um25cMeter({"port": port, "interval": 0.1, "timeout": 0.5})
        try:
            meter.start()
            time.sleep(0.5)
            assert meter.samples()[0].amps == pytest.approx(0.3)
            proc.kill()
            proc.wait()
            deadline = time.monotonic() + 3
            with pytest.raises(DeviceError, match=f"UM25C on {port}"):
                while time.monotonic() < deadline:
                    meter.samples()
                    time.sleep(0.05)
        finally:
            meter.close()
    finally:
        proc.kill()
        proc.wait()
    for options in ({}, {"port": 7}, {"port": "/dev/x", "interval": "fast"},
                    {"port": "/dev/x", "interval": 0.0}):  # fmt: skip
        with pytest.raises(ConfigError):
            um25c.Um25cMeter(options)


def _rapl_tree(root: Path, energy_uj: int, wrap_uj: int) -> Path:
    domain = root / "intel-rapl:0"
    domain.mkdir(parents=True)
    (domain / "name").write_text("package-0\n")
    (domain / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
    (domain / "energy_uj").write_text(f"{energy_uj}\n")
    (root / "intel-rapl:0:0").mkdir()  # a subdomain (core): not summed twice
    (root / "intel-rapl:0:0" / "energy_uj").write_text("0\n")
    return domain / "energy_uj"


def test_rapl_counts_energy_across_a_counter_wrap(tmp_path: Path) -> None:
    """The powercap file format, with a counter that wraps while the meter reads it."""
    from edgetool.power.rapl import RaplMeter

    wrap = 1_000_000_000
    counter = _rapl_tree(tmp_path, wrap - 300_000, wrap)
    meter = RaplMeter({"root": str(tmp_path), "interval": 0.02})
    assert meter.label == "rapl@intel-rapl:0"
    meter.start()
    fd = os.open(counter, os.O_WRONLY)
    try:
        written = wrap - 300_000
        for _ in range(20):  # +60 mJ every 10 ms: 6 W, wrapping after 50 ms
            time.sleep(0.01)
            written = (written + 60_000) % wrap
            os.pwrite(fd, f"{written:012d}\n".encode(), 0)
    finally:
        os.close(fd)
    time.sleep(0.05)
    meter.stop()
    samples = meter.samples()
    meter.close()
    assert samples and all(s.watts >= 0 for s in samples)
    from edgetool.power.energy import PowerTrace

    trace = PowerTrace(samples)
    joules = float(trace.energy([trace.span[0]], [trace.span[1]])[0])
    assert 0.8 < joules < 1.3  # 1.2 J written; the span between sample midpoints is shorter
    assert max(s.watts for s in samples) < 20  # a wrap read as -1e3 J would explode


def test_rapl_on_this_host_or_the_reason_it_cannot_run() -> None:
    from edgetool.power.rapl import RaplMeter, package_domains

    root = Path("/sys/class/powercap")
    if not package_domains(root):
        pytest.skip(f"no Intel RAPL on this host ({root} has no intel-rapl:N package domain)")
    try:
        meter = RaplMeter({})
    except DeviceError as exc:
        pytest.skip(f"RAPL present but unreadable here: {exc}")
    meter.start()
    time.sleep(0.3)
    meter.stop()
    samples = meter.samples()
    meter.close()
    assert samples and all(0 <= s.watts < 2000 for s in samples)


def test_rapl_without_powercap_is_a_clear_error(tmp_path: Path) -> None:
    from edgetool.power.rapl import RaplMeter

    with pytest.raises(DeviceError, match="no Intel RAPL package domains"):
        RaplMeter({"root": str(tmp_path)})
