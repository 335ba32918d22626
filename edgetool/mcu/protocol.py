"""Host side of the bench protocol: MLPerf Tiny's device-under-test commands, plus our
binary CRC-framed upload, over any byte port (a pyserial port, a socket, a pty).

The client never blocks past its timeout: every read has a deadline, a device that stops
answering raises DeviceError, a line that is not protocol is kept as noise and named in
the error, and a damaged upload frame is retransmitted a bounded number of times.
"""

from __future__ import annotations

import logging
import re
import struct
import time
import zlib
from dataclasses import dataclass, field

from edgetool.errors import DeviceError, TransferError
from edgetool.transport.base import BytePort

log = logging.getLogger(__name__)

READY = "m-ready"
HEX_PER_DB = 31
"""MLPerf Tiny's runner sends 31 bytes (62 hex digits) per `db` command."""

FRAME_SYNC = 0xA5
FRAME_DATA, FRAME_END, FRAME_ABORT = 1, 2, 3
ACK, NAK = 0x06, 0x15
FRAME_PAYLOAD = 512
MIN_FRAME = 16


@dataclass
class WireStats:
    """Bytes each way, so protocols can be compared by payload/wire bytes."""

    sent: int = 0
    received: int = 0
    retransmits: int = 0


@dataclass(frozen=True)
class DeviceInfo:
    """What `name%`, `profile%` and (our firmware only) `xinfo%` said."""

    name: str
    profile: str
    model: str
    extended: dict[str, str] = field(default_factory=dict)

    @property
    def is_edgetool(self) -> bool:
        return bool(self.extended)

    @property
    def tick_hz(self) -> int | None:
        value = self.extended.get("tick-hz")
        return int(value) if value and value.isdigit() else None

    @property
    def output_count(self) -> int:
        """float32 outputs the firmware returns (`xinfo` out=), 0 when it did not say."""
        value = self.extended.get("out", "")
        return int(value) if value.isdigit() else 0


def _bracket(line: str, prefix: str) -> str:
    """`m-name-dut-[X]` -> `X`; a line without brackets -> what follows the prefix."""
    body = line[len(prefix) :]
    start = body.find("[")
    return body[start + 1 : -1] if start >= 0 and body.endswith("]") else body


class BenchClient:
    """Drives one device over the bench protocol."""

    def __init__(self, port: BytePort, description: str, timeout: float = 10.0) -> None:
        self.port = port
        self.description = description
        self.timeout = timeout
        self.stats = WireStats()
        self._buf = bytearray()

    # --- bytes and lines ----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.port.write(data)
        self.stats.sent += len(data)

    def _fill(self, deadline: float) -> bool:
        """Read what has arrived (waiting at most until deadline); False on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.port.timeout = min(remaining, 0.2)
        # read(n) waits for all n bytes: ask for one, then for whatever else is queued.
        chunk = self.port.read(1)
        if chunk:
            waiting = int(getattr(self.port, "in_waiting", 0) or 0)
            if waiting:
                chunk += self.port.read(waiting)
        if chunk:
            self._buf += chunk
            self.stats.received += len(chunk)
        return bool(chunk)

    def _read_bytes(self, count: int, deadline: float) -> bytes | None:
        while len(self._buf) < count:
            if time.monotonic() >= deadline:
                return None
            self._fill(deadline)
        data = bytes(self._buf[:count])
        del self._buf[:count]
        return data

    def read_line(self, deadline: float) -> str | None:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                raw = bytes(self._buf[:end])
                del self._buf[: end + 1]
                line = raw.decode("ascii", errors="replace").strip("\r\x00 ")
                log.debug("< %s", line)
                return line
            if time.monotonic() >= deadline:
                return None
            self._fill(deadline)

    def drain(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        """Drop what the device is still sending (a banner, a reply we gave up on), for at
        most `limit` seconds: a device that never stops talking must not hang us."""
        self._buf.clear()
        end = time.monotonic() + limit
        while self._fill(min(end, time.monotonic() + quiet)):
            log.debug("dropped %r", bytes(self._buf))
            self._buf.clear()

    def command(self, text: str, timeout: float | None = None) -> list[str]:
        """Send `text%`, return the reply lines up to (not including) `m-ready`."""
        # `db <hex>` lines are upload data, not commands: shown at -vv only.
        data = text.startswith("db ") and not text.startswith("db load")
        log.log(logging.DEBUG if data else logging.INFO, "> %s%%", text)
        self._write(text.encode("ascii") + b"%")
        deadline = time.monotonic() + (timeout or self.timeout)
        lines: list[str] = []
        while True:
            line = self.read_line(deadline)
            if line is None:
                seen = f" (it sent: {' | '.join(lines[-3:])[:120]!r})" if lines else ""
                raise DeviceError(
                    f"{self.description}: no `m-ready` within {timeout or self.timeout:g} s "
                    f"after `{text[:40]}%`{seen}",
                    hint="Is the firmware running and the port/baud right? Reset the board.",
                )
            if not line:
                continue
            if line == READY:
                return lines
            lines.append(line)

    def checked(self, text: str, timeout: float | None = None) -> list[str]:
        """`command`, raising on an `e-[...]` reply."""
        lines = self.command(text, timeout)
        for line in lines:
            if line.startswith("e-"):
                raise DeviceError(f"{self.description}: `{text[:40]}%` failed: {line}")
        return lines

    # --- the MLPerf Tiny command set ----------------------------------------------

    def sync(self, attempts: int = 3) -> None:
        """Get in step with a device that may be mid-line or printing a banner."""
        self.drain()
        last: DeviceError | None = None
        for _ in range(attempts):
            try:
                # A lone `%` ends whatever partial command line noise left behind.
                log.debug("> %s (resync)", "%")
                self._write(b"%")
                self.drain(0.1)
                self.command("name", timeout=min(self.timeout, 5.0))
                return
            except DeviceError as exc:
                last = exc
        assert last is not None
        raise DeviceError(
            f"{self.description}: the device does not answer the bench protocol ({last.message})",
            hint="Check the URL/baud; the firmware must speak MLPerf Tiny's protocol.",
        )

    def info(self) -> DeviceInfo:
        name = next((ln for ln in self.checked("name") if ln.startswith("m-name-")), "")
        profile_lines = self.checked("profile")
        profile = next((ln for ln in profile_lines if ln.startswith("m-profile-")), "")
        model = next((ln for ln in profile_lines if ln.startswith("m-model-")), "")
        if not name:
            raise DeviceError(f"{self.description}: `name%` got no m-name line")
        extended: dict[str, str] = {}
        xinfo = self.command("xinfo")
        for line in xinfo:
            if line.startswith("m-xinfo-"):
                for item in _bracket(line, "m-xinfo-").split(","):
                    key, _, value = item.partition("=")
                    extended[key] = value
        return DeviceInfo(
            _bracket(name, "m-name-"),
            _bracket(profile, "m-profile-"),
            _bracket(model, "m-model-"),
            extended,
        )

    def load_hex(self, data: bytes) -> None:
        """MLPerf Tiny's way: `db load N%` then 31 bytes of hex per `db` command."""
        log.info("upload %d bytes as hex (db commands)", len(data))
        reply = self.checked(f"db load {len(data)}")
        if not any(f"Expecting {len(data)} bytes" in line for line in reply):
            raise DeviceError(f"{self.description}: `db load` got {reply!r}")
        done = False
        for start in range(0, len(data), HEX_PER_DB):
            lines = self.checked("db " + data[start : start + HEX_PER_DB].hex())
            done = done or "m-load-done" in lines
        if not done:
            raise TransferError(f"{self.description}: `db` upload did not end with m-load-done")

    def infer(self, count: int, warmup: int = 0) -> tuple[int, list[float]]:
        """`infer N W%`: (µs for all N between its two laps, the printed results)."""
        lines = self.checked(f"infer {count} {warmup}", timeout=self.timeout + 60)
        laps = [self._number(ln, "m-lap-us-") for ln in lines if ln.startswith("m-lap-us-")]
        results = [ln for ln in lines if ln.startswith("m-results-")]
        if len(laps) != 2 or "m-infer-done" not in lines:
            raise DeviceError(f"{self.description}: malformed `infer` reply {lines[-4:]!r}")
        values = _floats(_bracket(results[-1], "m-results-")) if results else []
        return laps[1] - laps[0], values

    # --- our extensions -------------------------------------------------------------

    def xinfer(self, count: int) -> list[int]:
        """Per-inference tick counts, one line each, no round trip between inferences."""
        lines = self.checked(f"xinfer {count}", timeout=self.timeout + 60)
        ticks = [
            self._number(ln, "m-xlap-ticks-") for ln in lines if ln.startswith("m-xlap-ticks-")
        ]
        if len(ticks) != count:
            raise DeviceError(f"{self.description}: `xinfer {count}` returned {len(ticks)} samples")
        return ticks

    def xresults(self, values: int = 0) -> bytes:
        """The output's bytes; `values` float32 outputs give the reply more time (8 hex
        characters each, at no less than a 115200-baud UART's ~10 k characters/s)."""
        lines = self.checked("xresults", self.timeout + values * 8 / 10_000)
        for line in lines:
            if line.startswith("m-xresults-"):
                try:
                    return bytes.fromhex(_bracket(line, "m-xresults-"))
                except ValueError:
                    raise self._garbled(line) from None
        raise DeviceError(f"{self.description}: `xresults` got {lines!r}")

    def _number(self, line: str, prefix: str) -> int:
        """The count after `prefix`; a line noise has garbled is a device error, never an
        internal one (and never a sample)."""
        text = line[len(prefix) :]
        if not text.isdigit():
            raise self._garbled(line)
        return int(text)

    def _garbled(self, line: str) -> DeviceError:
        return DeviceError(
            f"{self.description}: garbled reply {line[:60]!r} (noise on the serial link?)",
            hint="Check the cable and baud rate; the samples measured so far are kept.",
        )

    def load_binary(self, data: bytes, retries: int = 8, frame: int = FRAME_PAYLOAD) -> None:
        """Upload with CRC32 frames, ACK/NAK and retransmit; verified end to end."""
        log.info("upload %d bytes in CRC32 frames (xbin)", len(data))
        for attempt in range(4):
            try:
                reply = self.command(f"xbin {len(data)}", timeout=min(self.timeout, 3.0))
            except DeviceError:
                reply = []  # noise ate the `%`: end the half command below
            if any(line == f"m-xbin-ready-[{len(data)}]" for line in reply):
                break
            if any(line.startswith("m-xbin-ready-") for line in reply):
                self._abort_binary()  # noise changed the byte count: cancel, ask again
            if attempt == 3:
                raise TransferError(f"{self.description}: device refused `xbin`: {reply!r}")
            # Line noise may have damaged the command itself: resync and ask again.
            self._write(b"%")
            self.drain(0.1)
        # Frames shrink after a NAK (a long frame on a noisy line rarely arrives whole) and
        # grow back after clean ones; the device writes by offset, so any split is fine.
        seq, offset, size, failures, clean = 0, 0, frame, 0, 0
        while offset < len(data):
            chunk = data[offset : offset + size]
            if self._try_frame(FRAME_DATA, seq, offset, chunk):
                offset += len(chunk)
                failures = 0
                clean += 1
                if clean >= 4:  # grow back slowly: a noisy line stays noisy
                    size, clean = min(frame, size * 2), 0
            else:
                self.stats.retransmits += 1
                failures += 1
                clean = 0
                size = max(MIN_FRAME, size // 2)
                if failures > retries + 4:
                    raise TransferError(
                        f"{self.description}: upload stalled at byte {offset} after "
                        f"{failures} damaged frames (line too noisy?)",
                        hint="Check the cable and baud rate; lower the baud on long wires.",
                    )
            seq = (seq + 1) & 0xFF
        self._send_frame(FRAME_END, seq, 0, b"", retries)
        lines = self._until_ready()
        done = next((ln for ln in lines if ln.startswith("m-xbin-done-")), None)
        want = f"len={len(data)},crc={zlib.crc32(data):08x}"
        if done is None or _bracket(done, "m-xbin-done-") != want:
            raise TransferError(
                f"{self.description}: upload did not verify (device: {done!r}, expected {want})"
            )
        log.info("upload verified (%s, %d frames resent)", want, self.stats.retransmits)

    def _abort_binary(self) -> None:
        try:
            self._send_frame(FRAME_ABORT, 0, 0, b"", 8)
            self._until_ready()
        except (DeviceError, TransferError):
            self.drain(0.1)

    def _until_ready(self) -> list[str]:
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise DeviceError(f"{self.description}: no `m-ready` after the upload")
            if line == READY:
                return lines
            if line:
                lines.append(line)

    def _try_frame(self, kind: int, seq: int, offset: int, payload: bytes) -> bool:
        """One frame, one answer: True on its ACK; NAK, silence or noise are False."""
        body = struct.pack("<BBHI", kind, seq, len(payload), offset) + payload
        wire = bytes([FRAME_SYNC]) + body + struct.pack("<I", zlib.crc32(body))
        log.debug("> frame kind %d seq %d offset %d, %d bytes", kind, seq, offset, len(payload))
        self._write(wire)
        # The device NAKs once the line is quiet for 20 ms (device time); a frame whose
        # sync byte was damaged gets no answer at all, hence a deadline.
        # (1 s: a loaded host or emulator must not turn a slow ACK into a retransmit.)
        answer = self._read_bytes(2, time.monotonic() + 1.0 + len(wire) / 2000)
        log.debug("< %s", "no answer" if answer is None else answer.hex())
        if answer == bytes([ACK, seq]):
            return True
        if answer is None or answer[0] != NAK:
            self.drain(0.05)  # lost step: start afresh on a quiet line
        return False

    def _send_frame(self, kind: int, seq: int, offset: int, payload: bytes, retries: int) -> None:
        for attempt in range(retries + 1):
            if attempt:
                self.stats.retransmits += 1
            if self._try_frame(kind, seq, offset, payload):
                return
        raise TransferError(
            f"{self.description}: frame {seq} not acknowledged after {retries} retransmits "
            f"(line too noisy?)",
            hint="Check the cable and baud rate; lower the baud on long wires.",
        )

    def close(self) -> None:
        self.port.close()


_FLOAT_RE = re.compile(r"^-?(\d+(\.\d*)?|nan|inf)$")


def _floats(text: str) -> list[float]:
    values = []
    for item in text.split(","):
        item = item.strip()
        if item and _FLOAT_RE.match(item):
            values.append(float(item))
    return values
