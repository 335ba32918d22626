"""Nordic Power Profiler Kit II: 100 kHz current samples over USB serial.

Wire protocol (as documented by the `ppk2-api` package and nRF Connect Power Profiler):
single-byte commands, some with arguments; GET_META_DATA (0x19) answers a text block of
calibration values ending in "END\n"; AVERAGE_START (0x06) streams 4-byte little-endian
words, 100 000 a second, until AVERAGE_STOP (0x07). Each word holds a 14-bit ADC value
(bits 0-13), the measurement range 0-4 (bits 14-16), a 6-bit sample counter (bits 18-23)
and the 8 digital inputs (bits 24-31).

The device has no clock we can read, so samples are placed on the host clock: sample k is
at t0 + k*10 µs, and t0 is estimated with a minimum-delay filter. A sample cannot arrive
before it was taken, so for every read, (host_ns() at arrival - (k_last)*10 µs) is an
upper bound of t0; the smallest bound seen so far is the estimate (USB and scheduling
delays only ever add). Timestamps are assigned when samples() drains, from the best
estimate at that moment, so later drains may be (slightly) earlier-shifted than earlier
ones but every sample in one drain is on the same t0. Clock drift between the PPK2's
crystal and the host is not modelled (tens of ppm: ~1 ms per minute of streaming).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetool.errors import ConnectError, DeviceError
from edgetool.events import PowerSample
from edgetool.power.base import (
    Capabilities,
    PollingMeter,
    host_ns,
    meter_options,
    option,
)

# Command opcodes (ppk2-api's PPK2_Command).
AVERAGE_START = 0x06
AVERAGE_STOP = 0x07
RANGE_SET = 0x08
DEVICE_RUNNING_SET = 0x0C
REGULATOR_SET = 0x0D
SET_POWER_MODE = 0x11
SPIKE_FILTERING_ON = 0x15
SPIKE_FILTERING_OFF = 0x16
GET_META_DATA = 0x19
RESET = 0x20
SET_USER_GAINS = 0x25

SAMPLE_PERIOD_NS = 10_000
ADC_MAX = 0x3FFF
ADC_MULT = 1.8 / 163840
"""Volts per (ADC count * 4), as in ppk2-api and nRF Connect."""
VDD_MIN_MV, VDD_MAX_MV = 800, 5000
RANGES = 5

FloatArray = npt.NDArray[np.float64]
U32Array = npt.NDArray[np.uint32]
IntArray = npt.NDArray[np.int64]


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class Ppk2Calibration:
    """The per-range calibration from GET_META_DATA (keys R, GS, GI, O, S, I, UG 0-4).

    amps = UG * (x * (GS*x + GI) + S*vdd + I), with x = (4*adc - O) * ADC_MULT / R:
    the same model as ppk2-api's get_adc_result, so both decoders agree on real data.
    """

    r: tuple[float, ...] = (1031.64, 101.65, 10.15, 0.94, 0.043)
    gs: tuple[float, ...] = (1.0,) * RANGES
    gi: tuple[float, ...] = (1.0,) * RANGES
    o: tuple[float, ...] = (0.0,) * RANGES
    s: tuple[float, ...] = (0.0,) * RANGES
    i: tuple[float, ...] = (0.0,) * RANGES
    ug: tuple[float, ...] = (1.0,) * RANGES
    calibrated: str = "0"
    hw: str = ""
    ia: str = ""
    mode: str = ""

    def arrays(self) -> dict[str, FloatArray]:
        """Per-range coefficient arrays, indexed by a sample's range for vector maths."""
        return {
            key: np.asarray(getattr(self, key), dtype=np.float64)
            for key in ("r", "gs", "gi", "o", "s", "i", "ug")
        }

    def amps(self, rng: npt.NDArray[Any], adc: npt.NDArray[Any], vdd_mv: int) -> FloatArray:
        """Current for each (range, 14-bit ADC value) pair, before any spike filtering."""
        c = self.arrays()
        rng = np.minimum(rng, RANGES - 1)
        x = (adc.astype(np.float64) * 4 - c["o"][rng]) * (ADC_MULT / c["r"][rng])
        offset = c["s"][rng] * (vdd_mv / 1000) + c["i"][rng]
        result: FloatArray = c["ug"][rng] * (x * (c["gs"][rng] * x + c["gi"][rng]) + offset)
        return result

    def full_scale(self, vdd_mv: int) -> FloatArray:
        """The largest current each range can report (ADC at 0x3FFF)."""
        rng = np.arange(RANGES)
        return self.amps(rng, np.full(RANGES, ADC_MAX), vdd_mv)

    def encode(
        self, amps: FloatArray, vdd_mv: int, headroom: float = 0.9
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(range, adc) that decode back to `amps`: what an auto-ranging PPK2 would send.

        Picks the most sensitive range whose full scale (times headroom) holds the value,
        then inverts the quadratic gain model in its cancellation-free form.
        """
        c = self.arrays()
        fs = self.full_scale(vdd_mv) * headroom
        rng = np.minimum(np.searchsorted(fs, amps, side="left"), RANGES - 1)
        gs, gi = c["gs"][rng], c["gi"][rng]
        k = c["s"][rng] * (vdd_mv / 1000) + c["i"][rng] - amps / c["ug"][rng]
        x = -2 * k / (gi + np.sqrt(np.maximum(gi * gi - 4 * gs * k, 0.0)))
        adc = np.rint((x * c["r"][rng] / ADC_MULT + c["o"][rng]) / 4)
        return rng.astype(np.int64), np.clip(adc, 0, ADC_MAX).astype(np.int64)

    def to_metadata(self) -> str:
        """The GET_META_DATA answer text (the peer sends it; parse_metadata reads it)."""
        lines = [f"Calibrated: {self.calibrated}"]
        for key, values in (
            ("R", self.r),
            ("GS", self.gs),
            ("GI", self.gi),
            ("O", self.o),
            ("S", self.s),
            ("I", self.i),
            ("UG", self.ug),
        ):
            lines += [f"{key}{n}: {v!r}" for n, v in enumerate(values)]
        lines += [f"HW: {self.hw}", f"IA: {self.ia}", f"mode: {self.mode}", "END", ""]
        return "\n".join(lines)


def parse_metadata(text: str) -> Ppk2Calibration:
    """The calibration in a GET_META_DATA answer; ValueError if R0-R4 are not all there.

    A zero R keeps the nominal value, as ppk2-api does (some PPK2s ship with R = 0).
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            values[key.strip()] = value.strip()
    defaults = Ppk2Calibration()
    coeffs: dict[str, tuple[float, ...]] = {}
    for key in ("r", "gs", "gi", "o", "s", "i", "ug"):
        column = []
        for n in range(RANGES):
            name = f"{key.upper()}{n}"
            nominal = getattr(defaults, key)[n]
            if name not in values:
                if key == "r":
                    raise ValueError(f"metadata has no {name}")
                column.append(nominal)
                continue
            number = float(values[name])
            column.append(nominal if key == "r" and number == 0 else number)
        coeffs[key] = _floats(column)
    return Ppk2Calibration(
        **coeffs,
        calibrated=values.get("Calibrated", ""),
        hw=values.get("HW", ""),
        ia=values.get("IA", ""),
        mode=values.get("mode", ""),
    )


def split_words(
    words: U32Array,
) -> tuple[IntArray, IntArray, IntArray, npt.NDArray[np.uint8]]:
    """(adc, range, counter, logic) fields of raw sample words."""
    w = words.astype(np.int64)
    return (
        w & ADC_MAX,
        np.minimum((w >> 14) & 0x7, RANGES - 1),
        (w >> 18) & 0x3F,
        (w >> 24).astype(np.uint8),
    )


def join_words(
    adc: IntArray, rng: IntArray, counter: IntArray, logic: npt.NDArray[Any]
) -> U32Array:
    """Raw sample words from their fields (the peer's encoder)."""
    word = (adc & ADC_MAX) | (rng << 14) | ((counter & 0x3F) << 18) | (logic.astype(np.int64) << 24)
    return word.astype("<u4")


@dataclass
class SpikeFilter:
    """ppk2-api's / nRF Connect's smoothing of the 3 samples after each range switch.

    A range switch makes the shunt settle for a few samples; those samples are replaced
    by a rolling average (alpha 0.18, or 0.06 when switching into range 4, whose first
    two samples are also kept out of the averages). The averages run over every sample,
    so between switches they are advanced in one vector step and only the samples at a
    switch go through the per-sample state machine: cheap at 100 kHz.
    """

    alpha: float = 0.18
    alpha4: float = 0.06
    samples: int = 3
    avg: float | None = None
    avg4: float | None = None
    prev_range: int | None = None
    consecutive: int = 0
    after_spike: int = 0
    _weights: dict[float, FloatArray] = field(default_factory=dict, repr=False)

    _TAIL = 1024
    """Averages forget (1-alpha)^n: after 1024 samples even alpha4's weight is < 1e-27."""

    def _advance(self, current: float | None, alpha: float, x: FloatArray) -> float:
        if current is None:
            current, x = float(x[0]), x[1:]
        if len(x) == 0:
            return current
        tail = x[-self._TAIL :]
        weights = self._weights.get(alpha)
        if weights is None:
            weights = alpha * (1 - alpha) ** np.arange(self._TAIL - 1, -1, -1, dtype=np.float64)
            self._weights[alpha] = weights
        decay = (1 - alpha) ** len(x)
        return float(current * decay + np.dot(weights[-len(tail) :], tail))

    def _step(self, value: float, rng: int) -> float:
        prev_avg, prev_avg4 = self.avg, self.avg4
        self.avg = value if self.avg is None else self.alpha * value + (1 - self.alpha) * self.avg
        self.avg4 = (
            value if self.avg4 is None else self.alpha4 * value + (1 - self.alpha4) * self.avg4
        )
        if self.prev_range is None:
            self.prev_range = rng
        out = value
        if self.prev_range != rng or self.after_spike > 0:
            if self.prev_range != rng:
                self.consecutive = 0
                self.after_spike = self.samples
            else:
                self.consecutive += 1
            if rng == RANGES - 1:
                if self.consecutive < 2:
                    self.avg, self.avg4 = prev_avg, prev_avg4
                out = self.avg4 if self.avg4 is not None else value
            else:
                out = self.avg
            self.after_spike -= 1
        self.prev_range = rng
        return out

    def apply(self, amps: FloatArray, rng: IntArray) -> FloatArray:
        """Filtered copy of one chunk; the state carries over to the next chunk."""
        out = amps.copy()
        n = len(amps)
        if n == 0:
            return out
        shifted = np.empty(n, dtype=np.int64)
        shifted[0] = rng[0] if self.prev_range is None else self.prev_range
        shifted[1:] = rng[:-1]
        switches = np.flatnonzero(rng != shifted).tolist()
        switches.append(n)
        next_switch = 0
        i = 0
        while i < n:
            if self.after_spike > 0 or self.avg is None or i == switches[next_switch]:
                out[i] = self._step(float(amps[i]), int(rng[i]))
                i += 1
                while switches[next_switch] < i:
                    next_switch += 1
                continue
            j = switches[next_switch]
            self.avg = self._advance(self.avg, self.alpha, amps[i:j])
            self.avg4 = self._advance(self.avg4, self.alpha4, amps[i:j])
            self.prev_range = int(rng[j - 1])
            i = j
        return out


@dataclass
class _Chunk:
    k0: int
    amps: FloatArray
    logic: npt.NDArray[np.uint8]
    stream: _Stream


@dataclass
class _Stream:
    """One AVERAGE_START..AVERAGE_STOP: its sample count and the t0 estimate."""

    t0_ns: int | None = None
    emitted_t0_ns: int | None = None  # the t0 the first samples() used: kept, so the
    # stream's timeline stays one contiguous 10 µs grid however t0_ns is refined later
    next_k: int = 0
    expected_counter: int | None = None
    lost: int = 0

    def bound(self, arrival_ns: int, last_k: int) -> None:
        candidate = arrival_ns - last_k * SAMPLE_PERIOD_NS
        if self.t0_ns is None or candidate < self.t0_ns:
            self.t0_ns = candidate


class Ppk2Meter(PollingMeter):
    """A PPK2 in ampere mode (in series with the DUT's supply) or source mode (powering it).

    Options: port (required), mode "ampere"|"source", volts (required: the supply the
    PPK2 sources in source mode, or the DUT's rail in ampere mode; power = volts * amps),
    spike_filter (default true: smooth range switches as nRF Connect and ppk2-api do).
    """

    METADATA_TIMEOUT_S = 2.0
    STALL_TIMEOUT_S = 1.0

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__()
        reader = meter_options(options)
        port = option(reader, "port", str, None)
        if not port and (port is not None or "port" not in reader.raw):
            reader.problem('[meter] ppk2 needs port = "/dev/ttyACM0" (the PPK2 data port)')
        mode = reader.choice("mode", ("ampere", "source"), "ampere")
        volts = option(reader, "volts", float, None)
        needs_volts = "[meter] ppk2 needs volts (the DUT supply in volts: power = volts * amps)"
        if volts is None:
            if "volts" not in reader.raw:  # (one of the wrong type is recorded already)
                reader.problem(needs_volts)
        elif not 0 < volts <= 30:
            reader.problem(needs_volts)
        elif mode == "source" and not VDD_MIN_MV <= round(volts * 1000) <= VDD_MAX_MV:
            reader.problem(f"[meter] a PPK2 sources 0.8-5.0 V, not volts = {volts}")
        spike_filter = option(reader, "spike_filter", bool, True)
        reader.finish()
        self.port: str = port
        self.mode: str = mode
        self.volts = float(volts)
        self.spike_filter: bool = spike_filter
        self.vdd_mv = min(max(round(self.volts * 1000), VDD_MIN_MV), VDD_MAX_MV)
        self.label = f"ppk2@{port}"
        self.capabilities = Capabilities(
            rate_hz=100_000, channels=("amps",), clock="host", trigger_input=True
        )
        self.last_logic: npt.NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)
        """Digital inputs of the samples the last samples() call returned (bit 0 = D0)."""
        self._chunks: list[_Chunk] = []
        self._lock = threading.Lock()
        self._stream = _Stream()
        self._pending = b""
        self._filter = SpikeFilter()
        self._last_data_ns = 0
        self._serial: Any = self._open()
        try:
            self.calibration = self._read_metadata()
            self._configure()
        except BaseException:
            self._serial.close()
            raise

    def _open(self) -> Any:
        import serial

        try:
            return serial.Serial(self.port, baudrate=115200, timeout=0.05, write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectError(
                f"cannot open PPK2 port {self.port} ({exc}): check the cable and that "
                "no other program (nRF Connect) holds it"
            ) from exc

    def _write(self, *data: int) -> None:
        import serial

        try:
            self._serial.write(bytes(data))
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"PPK2 on {self.port} rejected a command ({exc})") from exc

    def _read_metadata(self) -> Ppk2Calibration:
        """Stop any stream a previous program left running, then ask for calibration."""
        import serial

        self._write(AVERAGE_STOP)
        deadline = host_ns() + int(self.METADATA_TIMEOUT_S * 1e9)
        try:
            self._serial.reset_input_buffer()
            self._write(GET_META_DATA)
            text = b""
            while host_ns() < deadline:
                text += self._serial.read(max(1, self._serial.in_waiting))
                if b"END" in text:
                    body = text[: text.rindex(b"END") + 3].decode("utf-8", "replace")
                    return parse_metadata(body[body.rfind("Calibrated") :])
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"PPK2 on {self.port} failed while reading metadata ({exc})") from exc
        except ValueError as exc:
            raise DeviceError(
                f"PPK2 on {self.port} sent unreadable metadata ({exc}): replug it and retry"
            ) from exc
        raise DeviceError(
            f"no PPK2 answered on {self.port} within {self.METADATA_TIMEOUT_S:g} s: check "
            "the port is the PPK2's data port (not its second ACM port) and replug it"
        )

    def _configure(self) -> None:
        self._write(SET_POWER_MODE, 1 if self.mode == "ampere" else 2)
        self._write(REGULATOR_SET, self.vdd_mv >> 8, self.vdd_mv & 0xFF)
        self._write(DEVICE_RUNNING_SET, 1)  # connect the DUT (ppk2-api does so in both modes)

    def _on_start(self) -> None:
        self._stream = _Stream()
        self._pending = b""
        self._filter = SpikeFilter()
        self._serial.reset_input_buffer()
        self._write(AVERAGE_START)
        self._last_data_ns = host_ns()

    def _on_stop(self) -> None:
        try:
            self._write(AVERAGE_STOP)
        except DeviceError as exc:  # reported by samples(), like a failure while reading
            if self._failure is None:
                self._failure = exc

    def _read(self) -> list[PowerSample]:
        import serial

        try:
            data = self._serial.read(1)
            if data:
                data += self._serial.read(self._serial.in_waiting)
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"PPK2 on {self.port} disconnected ({exc})") from exc
        now = host_ns()
        if not data:
            if now - self._last_data_ns > self.STALL_TIMEOUT_S * 1e9:
                raise DeviceError(
                    f"PPK2 on {self.port} stopped sending samples: replug it and retry"
                )
            return []
        self._last_data_ns = now
        self._ingest(self._pending + data, now)
        return []

    def _ingest(self, data: bytes, arrival_ns: int) -> None:
        """Decode whole words; `arrival_ns` bounds t0 (see the module docstring)."""
        whole = len(data) // 4 * 4
        self._pending = data[whole:]
        if not whole:
            return
        words = np.frombuffer(data[:whole], dtype="<u4")
        adc, rng, counter, logic = split_words(words)
        stream = self._stream
        # Counter gaps (samples the host did not read in time) advance the sample index,
        # so the samples after a loss keep their true times.
        expected = int(counter[0]) if stream.expected_counter is None else stream.expected_counter
        steps = np.diff(np.concatenate(([expected - 1], counter))) - 1
        gaps = np.cumsum(np.mod(steps, 64))
        stream.lost += int(gaps[-1])
        k = np.arange(len(words), dtype=np.int64) + gaps
        stream.expected_counter = int(counter[-1] + 1) & 0x3F
        amps = self.calibration.amps(rng, adc, self.vdd_mv)
        if self.spike_filter:
            amps = self._filter.apply(amps, rng)
        k0 = stream.next_k
        stream.next_k = k0 + int(k[-1]) + 1
        stream.bound(arrival_ns, stream.next_k - 1)
        with self._lock:
            if int(k[-1]) + 1 == len(words):
                self._chunks.append(_Chunk(k0, amps, logic, stream))
            else:  # split at the gaps into contiguous runs
                breaks = np.flatnonzero(np.diff(k) != 1) + 1
                for idx in np.split(np.arange(len(words)), breaks):
                    self._chunks.append(_Chunk(k0 + int(k[idx[0]]), amps[idx], logic[idx], stream))

    def samples(self) -> list[PowerSample]:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        with self._lock:
            chunks, self._chunks = self._chunks, []
        out: list[PowerSample] = []
        volts = self.volts
        for chunk in chunks:
            stream = chunk.stream
            if stream.emitted_t0_ns is None:
                stream.emitted_t0_ns = stream.t0_ns
            t0 = stream.emitted_t0_ns or 0
            times = (t0 + (chunk.k0 + np.arange(len(chunk.amps))) * SAMPLE_PERIOD_NS).tolist()
            out.extend(
                PowerSample(t, volts * a, volts, a)
                for t, a in zip(times, chunk.amps.tolist(), strict=True)
            )
        self.last_logic = (
            np.concatenate([c.logic for c in chunks]) if chunks else np.zeros(0, np.uint8)
        )
        return out

    @property
    def t0_ns(self) -> int | None:
        """When sample 0 of the running stream was taken: the estimate its samples are
        timed by (fixed once samples have been returned), else the current one."""
        stream = self._stream
        return stream.t0_ns if stream.emitted_t0_ns is None else stream.emitted_t0_ns

    @property
    def lost_samples(self) -> int:
        """Samples of the current stream the counter says never arrived."""
        return self._stream.lost

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._serial.close()
