"""A UART (or any pyserial URL, e.g. QEMU's `socket://127.0.0.1:PORT`) as a BytePort."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from edgetool.config import TableReader
from edgetool.errors import ConnectError
from edgetool.transport.base import BytePort, TransportType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SerialSettings:
    """A UART: `/dev/ttyACM0`, or any pyserial URL (`socket://127.0.0.1:PORT` for QEMU)."""

    type: ClassVar[str] = "serial"

    url: str
    baud: int = 115200
    timeout: float = 10.0
    """Seconds to wait for a reply line before the device counts as not answering."""

    def where(self) -> str:
        """Where the device is, as `targets list` shows it."""
        return self.url


def _parse_serial(reader: TableReader) -> SerialSettings:
    baud = reader.get("baud", int, "an integer", 115200)
    if baud <= 0:
        reader.reject("baud", "a positive integer", baud)
        baud = 115200
    settings = SerialSettings(
        url=reader.required_str("url"),
        baud=baud,
        timeout=reader.number("timeout", 10.0),
    )
    reader.finish()
    return settings


def open_port(url: str, baud: int, timeout: float) -> BytePort:
    """`serial_for_url`: `/dev/ttyACM0`, `socket://127.0.0.1:PORT`, `loop://` all work."""
    import serial

    log.info("open %s at %d baud", url, baud)
    try:
        port: BytePort = serial.serial_for_url(url, baudrate=baud, timeout=0.2)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise ConnectError(
            f"cannot open serial port {url}: {exc}",
            hint="Is the board plugged in (or the emulator running), and the URL right?",
        ) from exc
    return port


def _open(settings: SerialSettings) -> BytePort:
    return open_port(settings.url, settings.baud, settings.timeout)


TRANSPORT = TransportType("serial", SerialSettings, _parse_serial, open_port=_open)
