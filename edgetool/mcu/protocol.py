"""Host side of the bench protocol: MLPerf Tiny's device-under-test commands, plus our
binary CRC-framed upload, over any byte port (a pyserial port, a socket, a pty).

The client never blocks past its timeout: every read has a deadline, a device that stops
answering raises DeviceError, a line that is not protocol is kept as noise and named in
the error, and a damaged upload frame is retransmitted a bounded number of times.

Noise on the line (protocol 2, see firmware_stubs/common/bench.c): every reply line of
our `x` commands ends in `*XXXX`, a CRC-16/CCITT-FALSE of the line. A line that fails it
is counted (`WireStats.bad_lines`) and dropped, never parsed; the command is asked again
(for `xinfer`: only the inferences still missing). A command lost to noise (no reply, an
`e-` reply to a garbled echo, a damaged `m-ready`) is retried a bounded number of times,
each wait bounded by the port's timeout. Plain MLPerf Tiny devices and protocol 1
firmware send no checksums: their runs are driven the same way but are unverified
(`BenchClient.line_check` is False, recorded as `wire_checksum: false`).
"""

from __future__ import annotations

import logging
import math
import re
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

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
ATTEMPTS = 8
"""Tries of one command before a device error: at BER 1e-3 both ways a short command and
its reply arrive whole ~60 % of the time, so 8 tries fail together ~1e-3 of the time."""
XINFO_ATTEMPTS = 24
"""Tries of `xinfo` once a reply looked like ours (0.67 ** 24 < 1e-4 at BER 1e-3)."""
SLOW_REPLY = 60.0
"""Extra seconds a reply may take once it started (`infer` warm-ups print nothing)."""
READY_GRACE = 1.0
"""Seconds to wait for `m-ready` once a reply's last line came (it follows at once)."""
QUIET = 0.25
"""A partial line this long quiet that reads like `m-ready` ends the reply: noise may
have eaten its newline."""
RESULT_CHUNK = 64
"""Output bytes per `xresults O N`; halved after a damaged line (8 KB of hex in one line
would never arrive whole on a noisy link)."""

T = TypeVar("T")


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()
_CHECK_TAIL = re.compile(r"\*([0-9a-f]{4})")


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): the firmware's line checksum."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc


def checked_body(line: str) -> str | None:
    """`m-xlap-ticks-5*1c2d` -> `m-xlap-ticks-5` when the CRC matches; None when it does
    not, or the line carries none."""
    body, star, tail = line.rpartition("*")
    if not star or not _CHECK_TAIL.fullmatch("*" + tail) or not body.isascii():
        return None
    return body if crc16(body.encode("ascii")) == int(tail, 16) else None


def _near_ready(text: bytes | str) -> bool:
    """`m-ready` with at most two characters damaged."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    return len(raw) == 7 and sum(a != b for a, b in zip(raw, READY.encode(), strict=False)) <= 2


class _BadReply(Exception):
    """A reply that noise damaged: worth asking again."""


class LineTooNoisy(TransferError):
    """Upload frames keep arriving damaged: the link, not one unlucky line, is the problem."""


@dataclass
class WireStats:
    """Bytes each way, so protocols can be compared by payload/wire bytes; what noise cost."""

    sent: int = 0
    received: int = 0
    retransmits: int = 0
    bad_lines: int = 0
    """Reply lines dropped: a failed checksum or a shape noise made (never data)."""
    retries: int = 0
    """Commands asked again after a lost or damaged reply."""


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
    def wire_checksum(self) -> bool:
        """Protocol 2 firmware: every reply line of the `x` commands carries a CRC-16."""
        return self.extended.get("check") == "crc16"

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
        self.line_check = False
        """Require the CRC on `x` replies (set by `info` for protocol 2 firmware)."""
        self.attempts = ATTEMPTS
        self._buf = bytearray()
        self._last_rx = time.monotonic()

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
            self._last_rx = time.monotonic()
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

    def _reply(
        self,
        text: str,
        timeout: float | None = None,
        busy: float = 0.0,
        last: Callable[[str], bool] | None = None,
    ) -> tuple[list[str], bool]:
        """Send `text%`; (the reply lines before `m-ready`, whether the reply ended). The
        first line must come within `timeout`, each next one within `timeout` of the last
        (or `timeout + busy` from the start); after a line `last` accepts, `m-ready` is
        waited for only briefly."""
        if not self._own_wire:
            # Its own framing says when the device stalled: that error stands as it is.
            return self.command(text, (timeout or self.timeout) + busy), True
        # `db <hex>` lines are upload data, not commands: shown at -vv only.
        data = text.startswith("db ") and not text.startswith("db load")
        log.log(logging.DEBUG if data else logging.INFO, "> %s%%", text)
        self._buf.clear()  # the device speaks only when asked: anything queued is stale
        self._write(text.encode("ascii") + b"%")
        wait = timeout or self.timeout
        started = time.monotonic()
        deadline = started + wait
        lines: list[str] = []
        ended = False
        while True:
            now = time.monotonic()
            if now >= deadline:
                return lines, ended
            line = self.read_line(min(deadline, now + QUIET))
            if line is None:
                # A damaged newline: `m-ready` sits in the buffer, and nothing follows.
                pending = bytes(self._buf).rstrip(b"\r\x00 ")
                quiet = time.monotonic() - self._last_rx >= QUIET
                if quiet and len(pending) <= 9 and _near_ready(pending[:7]):
                    self._buf.clear()
                    self.stats.bad_lines += 1
                    return lines, True
                continue
            if not line:
                continue
            if line == READY:
                return lines, True
            if _near_ready(line):
                log.info("damaged `m-ready` (%r) taken as the end of the reply", line)
                self.stats.bad_lines += 1
                return lines, True
            lines.append(line)
            if last is not None and last(line):
                ended = True
                deadline = time.monotonic() + min(wait, READY_GRACE)
            elif not ended:
                # Each line renews the wait; `busy` covers a device working silently (the
                # warm-ups of `infer`), which a `-done` line says is over.
                if "done" in line:
                    busy = 0.0
                deadline = max(started + wait + busy, time.monotonic() + wait)

    @property
    def _own_wire(self) -> bool:
        """False for a subclass that carries commands its own way (a REPL dispatcher):
        it gets the parsing and the retries of damaged replies, not our `%` line handling
        (its own errors, a stalled device, are raised as they are)."""
        return type(self).command is BenchClient.command

    def command(self, text: str, timeout: float | None = None) -> list[str]:
        """Send `text%`, return the reply lines up to (not including) `m-ready`; no retry."""
        lines, ended = self._reply(text, timeout, SLOW_REPLY if text.startswith("infer") else 0)
        if not ended:
            seen = f" (it sent: {' | '.join(lines[-3:])[:120]!r})" if lines else ""
            raise DeviceError(
                f"{self.description}: no `m-ready` within {timeout or self.timeout:g} s "
                f"after `{text[:40]}%`{seen}",
                hint="Is the firmware running and the port/baud right? Reset the board.",
            )
        return lines

    def resync(self) -> None:
        """End a half command noise left on the device (a lone `%`), wait for its reply."""
        if not self._own_wire:
            self.drain()
            return
        log.debug("> %s (resync)", "%")
        self._buf.clear()
        self._write(b"%")
        deadline = time.monotonic() + min(self.timeout, 2.0)
        while (line := self.read_line(deadline)) is not None:
            if line == READY or _near_ready(line):
                break
        self.drain(0.05)

    def _retry(self, text: str, problem: str, resync: bool) -> None:
        self.stats.retries += 1
        log.info("again `%s%%`: %s", text[:40], problem)
        if resync:
            self.resync()

    def _body(self, line: str) -> str | None:
        """The line without its checksum; None (counted) when the CRC fails, or when this
        device sends CRCs and the line has none."""
        body = checked_body(line)
        if body is not None:
            return body
        if self.line_check:
            self.stats.bad_lines += 1
            log.info("dropped damaged line %r", line[:80])
            return None
        return line

    def ask(
        self,
        text: str,
        parse: Callable[[list[str]], T],
        timeout: float | None = None,
        busy: float = 0.0,
        last: Callable[[str], bool] | None = None,
    ) -> T:
        """`text%` until `parse` accepts its reply (it raises `_BadReply` for a reply noise
        damaged), at most `attempts` times; an `e-[...]` reply is asked again too (we only
        send well-formed commands: an error names what noise made of one)."""
        problem = ""
        for attempt in range(self.attempts):
            lines, ended = self._reply(text, timeout, busy, last)
            if not ended:
                seen = f" (it sent: {' | '.join(lines[-3:])[:120]!r})" if lines else ""
                problem = f"no `m-ready` within {timeout or self.timeout:g} s{seen}"
            elif errors := [ln for ln in lines if ln.startswith("e-")]:
                problem = errors[0][:80]
            else:
                try:
                    return parse(lines)
                except _BadReply as bad:
                    problem = str(bad)
            if attempt + 1 < self.attempts:
                self._retry(text, problem, resync=not ended)
        raise DeviceError(
            f"{self.description}: `{text[:40]}%` failed {self.attempts} times: {problem}",
            hint="Check the cable and baud rate; the samples measured so far are kept.",
        )

    def checked(self, text: str, timeout: float | None = None, busy: float = 0.0) -> list[str]:
        """`command`, asked again on a lost reply or an `e-[...]` one (bounded)."""
        return self.ask(text, lambda lines: lines, timeout, busy)

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
        def bracketed(prefix: str) -> Callable[[list[str]], str]:
            def parse(lines: list[str]) -> str:
                for line in lines:
                    if line.startswith(prefix) and line.endswith("]"):
                        return _bracket(line, prefix)
                raise _BadReply(f"no {prefix} line in {lines[-2:]!r}")

            return parse

        def profile_lines(lines: list[str]) -> tuple[str, str]:
            profile = next((ln for ln in lines if ln.startswith("m-profile-")), "")
            model = next((ln for ln in lines if ln.startswith("m-model-")), "")
            return _bracket(profile, "m-profile-"), _bracket(model, "m-model-")

        name = self.ask("name", bracketed("m-name-"), last=lambda ln: ln.startswith("m-name-"))
        profile, model = self.ask(
            "profile", profile_lines, last=lambda ln: ln.startswith("m-model")
        )
        extended = self._xinfo()
        info = DeviceInfo(name, profile, model, extended)
        self.line_check = info.wire_checksum
        if info.wire_checksum:
            # `name%` and `profile%` are MLPerf Tiny's plain lines; the checked `xinfo`
            # says the same (the firmware's name is edgetool-BOARD) without the doubt.
            name = f"edgetool-{extended.get('board', '?')}"
            info = DeviceInfo(name, profile, extended.get("model", model), extended)
        return info

    def _xinfo(self) -> dict[str, str]:
        """`xinfo`'s fields: protocol 2 (checked), protocol 1 (our older firmware, no
        checksums), or {} for a plain MLPerf Tiny device (it answers `e-[Unknown command:
        xinfo]`). A damaged answer is asked again: its line is long (~130 characters, whole
        only ~1 time in 3 at BER 1e-3), so our firmware gets XINFO_ATTEMPTS tries and is
        never taken for a plain device; a device that never said anything like it is."""
        problem = ""
        ours, ended = False, True
        attempt = 0
        while attempt < (XINFO_ATTEMPTS if ours else self.attempts):
            if attempt:
                self._retry("xinfo", problem, resync=not ended)
            attempt += 1
            lines, ended = self._reply("xinfo", last=lambda ln: ln.startswith("m-xinfo-"))
            for line in lines:
                body = checked_body(line)
                if body is not None and body.startswith("m-xinfo-["):
                    return _fields(body)
                if line.startswith("m-xinfo-[") and line.endswith("]"):
                    fields = _fields(line)
                    if fields.get("proto") == "1":  # before checksums: unverified, not corrupt
                        return fields
                if line.startswith("e-") and line.endswith(" xinfo]"):
                    return {}
            ours = ours or any("xinfo" in ln or "proto=" in ln for ln in lines)
            self.stats.bad_lines += len(lines)
            problem = f"{lines[-2:]!r}"[:160] if ended else "no `m-ready`"
        if ours:
            raise DeviceError(
                f"{self.description}: `xinfo%` never arrived whole in {attempt} tries ({problem})",
                hint="Check the cable and baud rate; the line is too noisy to verify samples.",
            )
        log.warning(
            "%s: no answer to `xinfo%%` (%s): driven as a plain MLPerf Tiny device",
            self.description,
            problem,
        )
        return {}

    def load_hex(self, data: bytes) -> None:
        """MLPerf Tiny's way: `db load N%` then 31 bytes of hex per `db` command. A `db`
        line appends, so it is never repeated alone: a damaged one restarts the upload
        from `db load` (which empties the buffer)."""
        log.info("upload %d bytes as hex (db commands)", len(data))
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                self._retry(f"db load {len(data)}", problem, resync=True)
            try:
                self._load_hex_once(data)
                return
            except (DeviceError, _BadReply) as exc:
                problem = exc.message if isinstance(exc, DeviceError) else str(exc)
        raise TransferError(f"{self.description}: `db` upload failed: {problem}")

    def _load_hex_once(self, data: bytes) -> None:
        def expecting(lines: list[str]) -> None:
            if not any(f"Expecting {len(data)} bytes" in line for line in lines):
                raise _BadReply(f"`db load` got {lines!r}")

        self.ask(f"db load {len(data)}", expecting)
        done = False
        for start in range(0, len(data), HEX_PER_DB):
            lines = self.command("db " + data[start : start + HEX_PER_DB].hex())
            bad = [ln for ln in lines if ln != "m-load-done"]
            if bad:
                raise _BadReply(f"`db` got {bad[0][:60]!r}")
            done = done or "m-load-done" in lines
        if not done:
            raise _BadReply("`db` upload did not end with m-load-done")

    def infer(self, count: int, warmup: int = 0) -> tuple[int, list[float]]:
        """`infer N W%`: (µs for all N between its two laps, the printed results). MLPerf
        Tiny's plain lines: a garbled one is asked again, a digit turned into another
        digit cannot be seen (runs on such devices are marked unverified)."""

        def parse(lines: list[str]) -> tuple[int, list[float]]:
            laps = [self._number(ln, "m-lap-us-") for ln in lines if ln.startswith("m-lap-us-")]
            results = [ln for ln in lines if ln.startswith("m-results-")]
            if len(laps) != 2 or "m-infer-done" not in lines:
                self.stats.bad_lines += 1
                raise _BadReply(f"malformed `infer` reply {lines[-4:]!r}")
            values = parse_scores(results[-1]) if results else []
            return laps[1] - laps[0], values

        return self.ask(
            f"infer {count} {warmup}",
            parse,
            busy=SLOW_REPLY,
            last=lambda ln: ln.startswith("m-results-"),
        )

    # --- our extensions -------------------------------------------------------------

    def xinfer(self, count: int) -> list[int]:
        """Per-inference tick counts, one line each, no round trip between inferences.
        Damaged lines are dropped and only the missing inferences asked again: each
        line is one inference's own measurement, so dropping it biases nothing."""
        ticks: list[int] = []
        fruitless = 0
        while len(ticks) < count:
            text = f"xinfer {count - len(ticks)}"
            # One line per inference: the wait renews with each, so no allowance for
            # silent work (an inference must take less than the port's timeout).
            lines, ended = self._reply(text, last=lambda ln: ln.startswith("m-infer-done"))
            got: list[int] = []
            for line in lines:
                body = self._body(line)
                if body is None or not body.startswith("m-xlap-ticks-"):
                    continue
                digits = body[len("m-xlap-ticks-") :]
                if digits.isdigit():
                    got.append(int(digits))
                else:  # an unchecked line noise garbled (checked ones never get here)
                    self.stats.bad_lines += 1
            ticks += got[: count - len(ticks)]
            if len(ticks) >= count:
                break
            fruitless = 0 if got else fruitless + 1
            problem = f"{count - len(ticks)} of {count} samples missing" + (
                "" if ended else " (no `m-ready`)"
            )
            if fruitless >= self.attempts:
                raise DeviceError(
                    f"{self.description}: `{text}%` failed {fruitless} times: {problem}",
                    hint="Check the cable and baud rate; the samples measured so far are kept.",
                )
            self._retry(text, problem, resync=not ended)
        return ticks

    def xresults(self, values: int = 0) -> bytes:
        """The output's bytes; `values` float32 outputs give the reply more time (8 hex
        characters each, at no less than a 115200-baud UART's ~10 k characters/s). From
        checked firmware in pieces (`xresults O N`), each line CRC-checked."""
        if self.line_check and values:
            return self._xresults_pieces(values * 4)

        def parse(lines: list[str]) -> bytes:
            for line in lines:
                body = self._body(line)
                if body is not None and body.startswith("m-xresults-"):
                    try:
                        return bytes.fromhex(_bracket(body, "m-xresults-"))
                    except ValueError:
                        self.stats.bad_lines += 1
                        raise _BadReply(f"garbled reply {line[:60]!r}") from None
            raise _BadReply(f"`xresults` got {lines[-2:]!r}")

        return self.ask("xresults", parse, self.timeout + values * 8 / 10_000)

    def _xresults_pieces(self, total: int) -> bytes:
        out = bytearray()
        size, fruitless = RESULT_CHUNK, 0
        while len(out) < total:
            offset, want = len(out), min(size, total - len(out))
            text = f"xresults {offset} {want}"
            prefix = f"m-xresults-{offset}-["
            lines, ended = self._reply(text, last=lambda ln: ln.startswith("m-xresults-"))
            piece = None
            for line in lines:
                body = self._body(line)
                if body is not None and body.startswith(prefix) and body.endswith("]"):
                    piece = bytes.fromhex(body[len(prefix) : -1])
            if piece is not None and len(piece) == want:
                out += piece
                fruitless = 0
                continue
            fruitless += 1
            size = max(8, size // 2)
            problem = f"damaged reply {lines[-1][:60]!r}" if lines else "no reply"
            if fruitless >= self.attempts:
                raise DeviceError(
                    f"{self.description}: `{text}%` failed {fruitless} times: {problem}",
                    hint="Check the cable and baud rate; the samples measured so far are kept.",
                )
            self._retry(text, problem, resync=not ended)
        return bytes(out)

    def _number(self, line: str, prefix: str) -> int:
        """The count after `prefix`; a line noise has garbled is asked again, never an
        internal error (and never a sample)."""
        text = line[len(prefix) :]
        if not text.isdigit():
            self.stats.bad_lines += 1
            raise _BadReply(f"garbled reply {line[:60]!r} (noise on the serial link?)")
        return int(text)

    def load_binary(
        self, data: bytes, retries: int = 8, frame: int = FRAME_PAYLOAD, attempts: int = 5
    ) -> None:
        """Upload with CRC32 frames, ACK/NAK and retransmit; verified end to end. A whole
        upload whose ending was lost to noise (a damaged `m-xbin-done` or `m-ready`, a
        refused `xbin`) is cancelled on the device and sent again, `attempts` times: at BER
        1e-3 both ways a 40-character confirmation line is damaged about one time in three."""
        for attempt in range(1, attempts + 1):
            try:
                self._load_binary_once(data, retries, frame)
                return
            except LineTooNoisy:
                raise  # frames themselves do not get through: a new attempt would not either
            except (DeviceError, TransferError) as exc:
                if attempt == attempts:
                    raise
                self.stats.retries += 1
                log.info("upload attempt %d failed (%s): cancelling, sending again", attempt, exc)
                self._abort_binary()  # a device left mid-upload would refuse the next `xbin`
                self._write(b"%")
                self.drain(0.2)

    def _load_binary_once(self, data: bytes, retries: int, frame: int) -> None:
        log.info("upload %d bytes in CRC32 frames (xbin)", len(data))
        for attempt in range(4):
            try:
                raw = self.command(f"xbin {len(data)}", timeout=min(self.timeout, 3.0))
                reply = [body for body in map(self._body, raw) if body is not None]
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
                    raise LineTooNoisy(
                        f"{self.description}: upload stalled at byte {offset} after "
                        f"{failures} damaged frames (line too noisy?)",
                        hint="Check the cable and baud rate; lower the baud on long wires.",
                    )
            seq = (seq + 1) & 0xFF
        self._send_frame(FRAME_END, seq, 0, b"", retries)
        lines = [body for body in map(self._body, self._until_ready()) if body is not None]
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

    def wire_report(self) -> dict[str, object]:
        """What the run records about the link: were samples checksum-verified, and what
        noise cost (lines dropped, commands asked again, upload frames resent)."""
        return {
            "wire_checksum": self.line_check,
            "checksum": "crc16-ccitt-false" if self.line_check else None,
            "bad_lines": self.stats.bad_lines,
            "retries": self.stats.retries,
            "retransmits": self.stats.retransmits,
        }

    def close(self) -> None:
        self.port.close()


def _fields(line: str) -> dict[str, str]:
    """`m-xinfo-[a=1,b=x]` -> {"a": "1", "b": "x"}."""
    fields: dict[str, str] = {}
    for item in _bracket(line, "m-xinfo-").split(","):
        key, _, value = item.partition("=")
        fields[key] = value
    return fields


def parse_scores(line: str) -> list[float]:
    """`m-results-[0.1,1e-05,-0.5,1.0E+2]` -> the floats, in any notation C's printf
    writes. A value that is not a number is noise (`_BadReply`: asked again); nan or inf
    is what the device really computed, an error that names the line."""
    body = _bracket(line, "m-results-").strip()
    if not body:
        return []
    values = []
    for item in body.split(","):
        try:
            if "_" in item:  # float() takes 1_0; printf never writes it: noise
                raise ValueError(item)
            value = float(item.strip())
        except ValueError:
            raise _BadReply(f"garbled score {item.strip()[:20]!r} in {line[:80]!r}") from None
        values.append(value)
    if not all(math.isfinite(v) for v in values):
        raise DeviceError(
            f"the device reported non-finite scores: {line[:120]!r}",
            hint="Its model produced nan/inf: check the input it was given (--input).",
        )
    return values
