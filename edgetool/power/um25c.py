"""RDTech UM24C/UM25C/UM34C USB meters over their Bluetooth serial port (9600 baud).

Each 0xF0 byte asks for one 130-byte big-endian record. Layout (libsigrok's rdtech-um
driver and the pyummeter package agree on it; offsets in bytes):

    0   u16  model id: 0x0963 UM24C, 0x09c9 UM25C, 0x0d4c UM34C
    2   u16  voltage: UM25C mV, UM24C/UM34C 10 mV
    4   u16  current: UM25C 0.1 mA, UM24C/UM34C 1 mA
    6   u32  power, mW
    10  u16  temperature °C        12  u16  temperature °F
    14  u16  selected data group   16  10 x (u32 mAh, u32 mWh) data groups
    96  u16  USB D+ (10 mV)        98  u16  USB D- (10 mV)     100 u16 charging mode
    102 u32  recorded mAh          106 u32  recorded mWh       110 u16 threshold (10 mA)
    112 u32  recorded seconds      116 u16  recording on       118 u16 screen timeout (min)
    120 u16  backlight 0-5         122 u32  load resistance (0.1 Ω)
    126 u16  screen index          128 u16  0xFFF1 end marker (UM24C/UM25C; UM34C: checksum)

Note the model ids: the UM25C is 0x09c9 and the UM24C 0x0963 in both public sources.
The meter refreshes its reading a few times a second, so polling faster than ~5 Hz only
repeats values. The meter answers with a reading it already has, so each sample is stamped
when the request was sent (the latest moment the reading can describe), not when the
130 bytes finished arriving at 9600 baud (~135 ms later).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgetool.errors import ConnectError, DeviceError
from edgetool.events import PowerSample
from edgetool.power.base import (
    Capabilities,
    PollingMeter,
    host_ns,
    meter_options,
    option,
)

REQUEST = 0xF0
RECORD_LEN = 130
END_MARKER = 0xFFF1
UM24C, UM25C, UM34C = 0x0963, 0x09C9, 0x0D4C
MODELS: dict[int, tuple[str, float, float]] = {
    # id: (name, volts per count, amps per count)
    UM24C: ("UM24C", 0.01, 0.001),
    UM25C: ("UM25C", 0.001, 0.0001),
    UM34C: ("UM34C", 0.01, 0.001),
}
_LAYOUT = struct.Struct(">HHHIHHH80sHHHIIHIHHHIHH")
assert _LAYOUT.size == RECORD_LEN


@dataclass(frozen=True)
class UmRecord:
    model: str
    model_id: int
    volts: float
    amps: float
    watts: float
    """The meter's own power field (1 mW resolution)."""
    temp_c: int
    temp_f: int
    group: int
    groups: tuple[tuple[float, float], ...]
    """(Ah, Wh) per data group."""
    dplus: float
    dminus: float
    charging_mode: int
    record_ah: float
    record_wh: float
    record_threshold_a: float
    record_seconds: int
    recording: bool
    screen_timeout_min: int
    brightness: int
    ohms: float
    screen: int


def parse_record(raw: bytes) -> UmRecord:
    """Decode one 130-byte answer; DeviceError for a short, corrupt or unknown record."""
    if len(raw) != RECORD_LEN:
        raise DeviceError(f"UM meter record is {len(raw)} bytes, not {RECORD_LEN}")
    f = _LAYOUT.unpack(raw)
    model_id = f[0]
    if model_id not in MODELS:
        raise DeviceError(
            f"unknown UM meter model id 0x{model_id:04x}: edgetool reads UM24C (0x0963), "
            "UM25C (0x09c9) and UM34C (0x0d4c)"
        )
    name, v_unit, a_unit = MODELS[model_id]
    if model_id != UM34C and f[-1] != END_MARKER:  # the UM34C sends a checksum instead
        raise DeviceError(f"{name} record ends in 0x{f[-1]:04x}, not 0xfff1: corrupt read")
    groups_raw = struct.unpack(">20I", f[7])
    return UmRecord(
        model=name,
        model_id=model_id,
        volts=f[1] * v_unit,
        amps=f[2] * a_unit,
        watts=f[3] / 1000,
        temp_c=f[4],
        temp_f=f[5],
        group=f[6],
        groups=tuple((groups_raw[n] / 1000, groups_raw[n + 1] / 1000) for n in range(0, 20, 2)),
        dplus=f[8] / 100,
        dminus=f[9] / 100,
        charging_mode=f[10],
        record_ah=f[11] / 1000,
        record_wh=f[12] / 1000,
        record_threshold_a=f[13] / 100,
        record_seconds=f[14],
        recording=f[15] == 1,
        screen_timeout_min=f[16],
        brightness=f[17],
        ohms=f[18] / 10,
        screen=f[19],
    )


def build_record(
    volts: float,
    amps: float,
    model_id: int = UM25C,
    *,
    temp_c: int = 25,
    group: int = 0,
    groups: tuple[tuple[float, float], ...] = (),
) -> bytes:
    """A record as the meter would send it (for the peer and for tests)."""
    _, v_unit, a_unit = MODELS[model_id]
    v_counts = min(max(round(volts / v_unit), 0), 0xFFFF)
    a_counts = min(max(round(amps / a_unit), 0), 0xFFFF)
    watts = v_counts * v_unit * a_counts * a_unit
    ohms = volts / amps if amps > 0 else 9999.9
    flat = [0] * 20
    for n, (ah, wh) in enumerate(groups[:10]):
        flat[2 * n], flat[2 * n + 1] = round(ah * 1000), round(wh * 1000)
    return _LAYOUT.pack(
        model_id,
        v_counts,
        a_counts,
        round(watts * 1000),
        temp_c,
        round(temp_c * 9 / 5 + 32),
        group,
        struct.pack(">20I", *flat),
        0,
        0,
        0,
        0,
        0,
        10,
        0,
        0,
        1,
        5,
        min(round(ohms * 10), 0xFFFFFFFF),
        0,
        END_MARKER,
    )


class Um25cMeter(PollingMeter):
    """An RDTech UM meter polled over Bluetooth serial (or any pyserial URL).

    Options: port (required: /dev/rfcomm0, a tty, or socket://host:port), interval
    (seconds between requests, default 0.2; the meter itself refreshes a few times a
    second), timeout (seconds to wait for a record, default 1.0).
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__()
        reader = meter_options(options)
        port = option(reader, "port", str, None)
        if not port and (port is not None or "port" not in reader.raw):
            reader.problem('[meter] um25c needs port = "/dev/rfcomm0" (or socket://...)')
        interval = option(reader, "interval", float, 0.2)
        if not 0.05 <= interval <= 60:
            reader.reject("interval", "within [0.05, 60] s", interval)
        timeout = option(reader, "timeout", float, 1.0)
        if not 0.2 <= timeout <= 30:
            reader.reject("timeout", "within [0.2, 30] s", timeout)
        reader.finish()
        self.port: str = port
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.label = f"um25c@{port}"
        self.capabilities = Capabilities(
            rate_hz=1.0 / self.interval, channels=("volts", "amps", "watts"), clock="host"
        )
        self._next_ns = 0
        self._serial: Any = self._open()
        try:
            self.model = self._poll()[2].model
        except BaseException:
            self._serial.close()
            raise
        self.label = f"{self.model.lower()}@{port}"

    def _open(self) -> Any:
        import serial

        try:
            return serial.serial_for_url(self.port, baudrate=9600, timeout=self.timeout)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectError(
                f"cannot open UM meter port {self.port} ({exc}): pair the meter and bind "
                "it with `rfcomm bind`, or check the socket:// address"
            ) from exc

    def _poll(self) -> tuple[int, int, UmRecord]:
        """One request/response: (sent ns, received ns, record)."""
        import serial

        try:
            self._serial.reset_input_buffer()  # a late answer to a timed-out request
            sent = host_ns()
            self._serial.write(bytes([REQUEST]))
            raw = self._serial.read(RECORD_LEN)
            received = host_ns()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(
                f"UM25C on {self.port} stopped answering ({exc}): check the meter is on "
                "and in Bluetooth range"
            ) from exc
        if len(raw) < RECORD_LEN:
            raise DeviceError(
                f"UM25C on {self.port} did not answer a request within {self.timeout:g} s "
                f"({len(raw)} of {RECORD_LEN} bytes): check it is powered and paired"
            )
        return sent, received, parse_record(raw)

    def _on_start(self) -> None:
        self._next_ns = host_ns()

    def _read(self) -> list[PowerSample]:
        wait = (self._next_ns - host_ns()) / 1e9
        if wait > 0 and self._stop.wait(wait):
            return []
        self._next_ns = max(self._next_ns + int(self.interval * 1e9), host_ns())
        sent, received, record = self._poll()
        # volts*amps has finer resolution than the 1 mW power field.
        watts = record.volts * record.amps
        del received
        return [PowerSample(sent, watts, record.volts, record.amps)]

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._serial.close()
