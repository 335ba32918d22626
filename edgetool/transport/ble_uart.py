"""The Nordic UART Service as a byte port: the same console code runs over BLE as over a
serial line.

Writes go out as GATT writes of at most `write_size` bytes (20 fits the default 23-byte
ATT MTU on every central); the device's notifications are reassembled into one byte
stream with pyserial's read/timeout semantics. Two links carry the packets: bleak (a real
watch) and a TCP bridge (`tcp://HOST:PORT`, 1 length byte + payload per packet) that the
test peer and BLE-to-TCP bridges speak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edgetool.config import TableReader
from edgetool.errors import ConfigError, ConnectError, DeviceError
from edgetool.transport.base import TransportType


@dataclass(frozen=True)
class BleUartSettings:
    """The Nordic UART Service: a BLE address (or a macOS UUID) reached with bleak, or
    `tcp://HOST:PORT` for a NUS bridge that carries the same packets (the test peer)."""

    type: ClassVar[str] = "ble-uart"

    address: str
    timeout: float = 10.0
    write_size: int = 20
    """Bytes per GATT write: 20 is safe on every central (23-byte default ATT MTU)."""

    def where(self) -> str:
        """Where the device is, as `targets list` shows it."""
        return self.address


def _parse_ble_uart(reader: TableReader) -> BleUartSettings:
    size = reader.get("write_size", int, "an integer", 20)
    if not 1 <= size <= 244:
        reader.reject("write_size", "an integer from 1 to 244", size)
        size = 20
    settings = BleUartSettings(
        address=reader.required_str("address"),
        timeout=reader.number("timeout", 10.0),
        write_size=size,
    )
    reader.finish()
    return settings


log = logging.getLogger(__name__)

NUS_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
"""The host writes here (the device receives)."""
NUS_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
"""The device notifies here."""
MAX_NOTIFY = 20

Deliver = Callable[[bytes], None]


class NusLink(Protocol):
    """Carries whole packets; notifications arrive through the `deliver` callback."""

    description: str

    def start(self, deliver: Deliver, closed: Callable[[], None]) -> None: ...

    def send(self, packet: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass
class NusStats:
    """Bytes and packets each way: BLE throughput is counted in packets."""

    bytes_out: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    packets_in: int = 0


class NusPort:
    """A pyserial-like port (edgetool.transport.base.BytePort) over a NUS packet link."""

    def __init__(self, link: NusLink, write_size: int = 20, timeout: float | None = 1.0) -> None:
        if write_size < 1:
            raise ConfigError(f"NUS write size must be positive, not {write_size}")
        self.link = link
        self.write_size = write_size
        self.timeout = timeout
        self.stats = NusStats()
        self.description = link.description
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        link.start(self._deliver, self._link_closed)

    def _deliver(self, packet: bytes) -> None:
        with self._cond:
            self._buf += packet
            self.stats.bytes_in += len(packet)
            self.stats.packets_in += 1
            self._cond.notify_all()

    def _link_closed(self) -> None:
        log.debug("%s: link closed", self.description)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def in_waiting(self) -> int:
        with self._cond:
            return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        """Up to `size` bytes: all of them, or what arrived before the timeout."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._cond:
            while len(self._buf) < size and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self._buf and self._closed:
                raise DeviceError(
                    f"{self.description}: the BLE link dropped",
                    hint="Is the watch in range and not connected to another app?",
                )
            data = bytes(self._buf[:size])
            del self._buf[:size]
            return data

    def write(self, data: bytes) -> int:
        """Split into write_size packets: a longer GATT write is refused or truncated."""
        if self._closed:
            raise DeviceError(f"{self.description}: the BLE link dropped")
        for start in range(0, len(data), self.write_size):
            packet = bytes(data[start : start + self.write_size])
            self.link.send(packet)
            self.stats.bytes_out += len(packet)
            self.stats.packets_out += 1
        return len(data)

    def close(self) -> None:
        self._closed = True
        self.link.close()


class TcpNusLink:
    """The NUS packets over TCP, each framed as 1 length byte + payload."""

    def __init__(self, host: str, port: int, timeout: float, write_size: int) -> None:
        self.description = f"NUS bridge tcp://{host}:{port}"
        self.write_size = write_size
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ConnectError(
                f"cannot reach the NUS bridge at tcp://{host}:{port}: {exc}",
                hint="Is the bridge (or the test peer) running on that port?",
            ) from exc
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, deliver: Deliver, closed: Callable[[], None]) -> None:
        def pump() -> None:
            buf = bytearray()
            try:
                while True:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                    while buf and len(buf) >= 1 + buf[0]:
                        size = buf[0]
                        deliver(bytes(buf[1 : 1 + size]))
                        del buf[: 1 + size]
            except OSError:
                pass
            closed()

        self._thread = threading.Thread(target=pump, name="nus-tcp", daemon=True)
        self._thread.start()

    def send(self, packet: bytes) -> None:
        if not 0 < len(packet) <= min(self.write_size, 255):
            raise ValueError(f"NUS packet of {len(packet)} bytes (limit {self.write_size})")
        try:
            with self._lock:
                self.sock.sendall(bytes([len(packet)]) + packet)
        except OSError as exc:
            raise DeviceError(f"{self.description}: the link dropped ({exc})") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)


def _import_bleak() -> Any:
    try:
        import bleak
    except ImportError as exc:
        raise ConfigError(
            "a ble-uart target needs bleak (Bluetooth LE for Python), which is not installed",
            hint="pip install 'edgetool[ble]'",
        ) from exc
    return bleak


class BleakLink:
    """A real NUS over bleak; bleak is asyncio, so its loop runs in a background thread."""

    def __init__(self, address: str, timeout: float) -> None:
        self._bleak = _import_bleak()
        self.address = address
        self.timeout = timeout
        self.description = f"BLE {address} (bleak)"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bleak", daemon=True)
        self._thread.start()
        self._client: Any = None

    def _run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, deliver: Deliver, closed: Callable[[], None]) -> None:
        bleak = self._bleak

        async def connect() -> Any:
            device = await bleak.BleakScanner.find_device_by_address(
                self.address, timeout=self.timeout
            )
            if device is None:
                return None
            client = bleak.BleakClient(device, disconnected_callback=lambda _c: closed())
            await client.connect(timeout=self.timeout)
            service = client.services.get_service(NUS_SERVICE)
            if service is None:
                await client.disconnect()
                raise DeviceError(
                    f"{self.description}: the device has no Nordic UART Service",
                    hint="Is this a Bangle.js (Espruino) watch?",
                )
            await client.start_notify(NUS_TX, lambda _char, data: deliver(bytes(data)))
            return client

        try:
            client = self._run(connect(), self.timeout * 3 + 5)
        except DeviceError:
            self._stop_loop()
            raise
        except Exception as exc:  # bleak raises BleakError, OSError, TimeoutError...
            self._stop_loop()
            raise ConnectError(
                f"cannot connect to {self.address} over BLE: {exc}",
                hint="Is Bluetooth on, the watch awake and not connected to the phone/IDE?",
            ) from exc
        if client is None:
            self._stop_loop()
            raise ConnectError(
                f"BLE device {self.address} not found within {self.timeout:g} s",
                hint="Wake the watch, keep it near, and check the address "
                "(or set EDGETOOL_<TARGET>_ADDRESS).",
            )
        self._client = client

    def send(self, packet: bytes) -> None:
        # With response: the GATT layer then paces us, so Espruino's input queue never
        # overflows while it is busy (a flash write, an inference).
        try:
            self._run(self._client.write_gatt_char(NUS_RX, packet, response=True), self.timeout)
        except Exception as exc:
            raise DeviceError(f"{self.description}: write failed ({exc})") from exc

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None

            async def disconnect() -> None:
                try:
                    await client.stop_notify(NUS_TX)
                finally:
                    await client.disconnect()

            # A link that is already gone needs no clean disconnect.
            with contextlib.suppress(Exception):
                self._run(disconnect(), self.timeout)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)


def parse_tcp_address(address: str) -> tuple[str, int] | None:
    """`tcp://HOST:PORT` -> (host, port); anything else is a BLE address."""
    if not address.startswith("tcp://"):
        return None
    host, _, port = address[len("tcp://") :].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"bad NUS bridge address {address!r}: expected tcp://HOST:PORT")
    return host.strip("[]"), int(port)


def open_nus_port(settings: BleUartSettings) -> NusPort:
    """Connect to the watch (or a bridge) and return its console as a byte port."""
    if "XX:XX" in settings.address.upper():
        raise ConfigError(
            f"the watch's Bluetooth address is still the placeholder {settings.address}",
            hint="Set [transport] address in the target file or EDGETOOL_<TARGET>_ADDRESS "
            "(`bluetoothctl scan on` lists it as 'Bangle.js xxxx').",
        )
    tcp = parse_tcp_address(settings.address)
    log.info("connect to %s (Nordic UART Service)", settings.address)
    link: NusLink
    if tcp is not None:
        link = TcpNusLink(tcp[0], tcp[1], settings.timeout, settings.write_size)
    else:
        link = BleakLink(settings.address, settings.timeout)
    return NusPort(link, settings.write_size)


TRANSPORT = TransportType("ble-uart", BleUartSettings, _parse_ble_uart, open_port=open_nus_port)
