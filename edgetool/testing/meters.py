"""Fake PPK2 and UM25C meters on a pty, speaking the real wire protocols.

They let the real drivers (Ppk2Meter, Um25cMeter) be tested and benchmarked end to end
without hardware: the current they report is a Waveform of host time, so what a driver
measures can be checked against the waveform's exact charge().

    python -m edgetool.testing.meters ppk2 --volts 5 \
        --waveform pulses:period=10ms,width=4ms,high=0.5,low=0.05
    {"port": "/dev/pts/7"}

The peer serves until killed or until its stdin closes (so start it with stdin=PIPE).
In-process: `peer = start_peer("ppk2", waveform, volts)`; `peer.port`; `peer.close()`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import sys
import threading
import tty
from collections.abc import Sequence

import numpy as np

from edgetool.power import ppk2, um25c
from edgetool.power.base import host_ns
from edgetool.testing.waveform import Waveform, parse_waveform

PEER_CALIBRATION = ppk2.Ppk2Calibration(
    # Plausible, deliberately non-trivial values, so a decoder that ignores a term fails.
    r=(1031.64, 101.65, 10.15, 0.94, 0.043),
    gs=(0.0, 0.5, 0.05, 0.005, 0.0005),
    gi=(1.0, 0.9744, 0.9633, 0.9622, 0.9796),
    o=(112.0, 75.0, 62.0, 58.0, 88.0),
    s=(0.0, 2e-8, 1e-7, 2e-6, 5e-5),
    i=(0.0, 1e-8, 2e-7, 5e-6, 1e-4),
    ug=(1.0, 1.0, 0.998, 1.001, 1.0),
    calibrated="0",
    hw="9173",
    ia="56",
    mode="2",
)
# Arguments each PPK2 command takes (bytes after the opcode); unknown opcodes take none.
_PPK2_ARGS = {
    0x01: 3,  # TRIGGER_SET
    0x03: 2,  # TRIGGER_WINDOW_SET
    0x04: 2,  # TRIGGER_INTERVAL_SET
    ppk2.RANGE_SET: 1,
    0x09: 1,  # LCD_SET
    ppk2.DEVICE_RUNNING_SET: 1,
    ppk2.REGULATOR_SET: 2,
    0x0E: 1,  # SWITCH_POINT_DOWN
    0x0F: 2,  # SWITCH_POINT_UP
    ppk2.SET_POWER_MODE: 1,
    0x12: 4,  # RES_USER_SET
    ppk2.SET_USER_GAINS: 5,
}
_MAX_BACKLOG = 400_000
"""Bytes (1 s of samples) the PPK2 peer holds for a host that stopped reading; older ones
are dropped, as the device's USB buffers overflow, and the counter shows the gap."""


class Peer:
    """A fake meter on the master side of a pty; the driver opens `port` (the slave)."""

    def __init__(self, link: str | None = None) -> None:
        self._master, self._slave = os.openpty()
        # Raw, so neither side's bytes are echoed, translated or line-buffered before a
        # driver configures the port (pyserial makes it raw too, when it opens it).
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self.link = link
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.port, link)
        self._closed = threading.Event()
        self._out = bytearray()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self.requests = 0
        """Commands handled so far (for tests)."""

    def start(self) -> Peer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        try:
            while not self._closed.is_set():
                wait = self._tick()
                writers = [self._master] if self._out else []
                readable, _, _ = select.select([self._master], writers, [], wait)
                if readable:
                    try:
                        data = os.read(self._master, 4096)
                    except OSError as exc:
                        if exc.errno in (errno.EAGAIN, errno.EIO):
                            data = b""
                        else:
                            raise
                    for byte in data:
                        self._command(byte)
                self._flush()
        except OSError:
            if not self._closed.is_set():
                raise

    def _send(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                written = os.write(self._master, self._out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.EIO:  # nobody has the port open: data is lost
                    self._out.clear()
                    return
                raise
            del self._out[:written]

    def _tick(self) -> float:
        """Periodic work; returns the longest the loop may sleep."""
        return 0.05

    def _command(self, byte: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop serving and hang up the pty (a driver reading it sees the device vanish)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link:
            with contextlib.suppress(OSError):
                os.unlink(self.link)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Ppk2Peer(Peer):
    """A PPK2 streaming the waveform at 100 kHz in real time once AVERAGE_START arrives.

    Sample k is the waveform at stream_start_ns + k*10 µs (a point sample, not a 10 µs
    average), range-encoded with PEER_CALIBRATION as an auto-ranging PPK2 would; logic
    bit 0 is the waveform's trigger (high inside a Pulses pulse). Chunks go out every
    ~1 ms holding every sample whose time has passed.
    """

    CHUNK_S = 0.001

    def __init__(
        self,
        waveform: Waveform,
        volts: float,
        link: str | None = None,
        calibration: ppk2.Ppk2Calibration = PEER_CALIBRATION,
    ) -> None:
        super().__init__(link)
        self.waveform = waveform
        self.calibration = calibration
        self.vdd_mv = min(max(round(volts * 1000), ppk2.VDD_MIN_MV), ppk2.VDD_MAX_MV)
        self.mode = 0
        self.dut_on = False
        self.streaming = False
        self.stalled = False
        """Tests set this to make the peer go silent while 'streaming'."""
        self.stream_start_ns = 0
        self.sent_samples = 0
        self.dropped_samples = 0
        self._args: list[int] = []
        self._opcode: int | None = None
        self.raw = bytearray()
        """Every sample byte sent, when record_raw is set (for decoder cross-checks)."""
        self.record_raw = False

    def _command(self, byte: int) -> None:
        if self._opcode is None:
            self._opcode, self._args = byte, []
        else:
            self._args.append(byte)
        if len(self._args) < _PPK2_ARGS.get(self._opcode, 0):
            return
        opcode, args, self._opcode = self._opcode, self._args, None
        self.requests += 1
        if opcode == ppk2.GET_META_DATA:
            self._send(self.calibration.to_metadata().encode())
        elif opcode == ppk2.REGULATOR_SET:
            self.vdd_mv = args[0] << 8 | args[1]
        elif opcode == ppk2.SET_POWER_MODE:
            self.mode = args[0]
        elif opcode == ppk2.DEVICE_RUNNING_SET:
            self.dut_on = bool(args[0])
        elif opcode == ppk2.AVERAGE_START:
            self.streaming = True
            self.stream_start_ns = host_ns()
            self.sent_samples = 0
        elif opcode == ppk2.AVERAGE_STOP:
            self.streaming = False

    def _tick(self) -> float:
        if not self.streaming or self.stalled:
            return self.CHUNK_S if self.streaming else 0.05
        due = (host_ns() - self.stream_start_ns) // ppk2.SAMPLE_PERIOD_NS + 1
        if due > self.sent_samples:
            self._send_samples(self.sent_samples, due)
        return self.CHUNK_S

    def encode(self, k0: int, k1: int) -> bytes:
        """Wire bytes of samples k0..k1-1 of the current stream."""
        k = np.arange(k0, k1, dtype=np.int64)
        t = self.stream_start_ns + k * ppk2.SAMPLE_PERIOD_NS
        rng, adc = self.calibration.encode(self.waveform.amps_array(t), self.vdd_mv)
        words = ppk2.join_words(adc, rng, k & 0x3F, self.waveform.logic_array(t))
        return words.tobytes()

    def _send_samples(self, k0: int, k1: int) -> None:
        data = self.encode(k0, k1)
        self.sent_samples = k1
        if self.record_raw:
            self.raw += data
        self._out += data
        excess = len(self._out) - _MAX_BACKLOG
        if excess > 0:
            # Drop whole samples: the backlog ends on a sample boundary, so cut at one.
            cut = excess + (len(self._out) - excess) % 4
            del self._out[:cut]
            self.dropped_samples += cut // 4
        self._flush()


class Um25cPeer(Peer):
    """A UM25C answering each 0xF0 with a record of the waveform.

    The current reported is the waveform's mean over the `average_s` before the request
    (the meter integrates between its few-per-second display refreshes; a point sample
    would alias fast pulses). The 130 bytes are paced at `baud` (9600: ~135 ms per record)
    unless baud is 0. Other commands (0xF1 next screen, 0xF2 rotate, 0xF3 previous screen,
    0xF4 clear group, 0xAx group, 0xBx threshold, 0xDx brightness, 0xEx timeout) are
    accepted and ignored.
    """

    def __init__(
        self,
        waveform: Waveform,
        volts: float,
        link: str | None = None,
        *,
        average_s: float = 0.1,
        baud: int = 9600,
        model_id: int = um25c.UM25C,
    ) -> None:
        super().__init__(link)
        self.waveform = waveform
        self.volts = volts
        self.average_ns = int(average_s * 1e9)
        self.byte_ns = int(10e9 / baud) if baud else 0
        self.model_id = model_id
        self._queue: list[tuple[int, bytes]] = []
        """(time the next byte may go, remaining bytes) of records being 'transmitted'."""

    def _command(self, byte: int) -> None:
        self.requests += 1
        if byte != um25c.REQUEST:
            return
        now = host_ns()
        amps = self.waveform.mean(now - self.average_ns, now)
        record = um25c.build_record(self.volts, amps, self.model_id)
        start = now
        if self._queue:  # behind a record still going out
            last_start, last = self._queue[-1]
            start = max(now, last_start + len(last) * self.byte_ns)
        self._queue.append((start, record))

    def _tick(self) -> float:
        now = host_ns()
        while self._queue:
            start, data = self._queue[0]
            if self.byte_ns == 0:
                count = len(data)
            else:
                count = min(len(data), max(0, (now - start) // self.byte_ns))
            if count:
                self._send(data[:count])
                self._queue[0] = (start + count * self.byte_ns, data[count:])
            if self._queue[0][1]:
                return 0.01
            self._queue.pop(0)
        return 0.05


def start_peer(
    kind: str, waveform: Waveform, volts: float, link: str | None = None
) -> Ppk2Peer | Um25cPeer:
    """An in-process peer serving on a thread; `.port` to connect, `.close()` to hang up."""
    peer: Ppk2Peer | Um25cPeer
    if kind == "ppk2":
        peer = Ppk2Peer(waveform, volts, link)
    elif kind == "um25c":
        peer = Um25cPeer(waveform, volts, link)
    else:
        raise ValueError(f"unknown peer kind {kind!r}: ppk2 or um25c")
    peer.start()
    return peer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgetool.testing.meters", description=__doc__)
    parser.add_argument("kind", choices=("ppk2", "um25c"))
    parser.add_argument("--waveform", required=True, help="e.g. constant:0.2")
    parser.add_argument("--volts", type=float, required=True)
    parser.add_argument("--link", help="also make this path a symlink to the pty")
    args = parser.parse_args(argv)
    peer = start_peer(args.kind, parse_waveform(args.waveform), args.volts, args.link)
    try:
        print(json.dumps({"port": peer.port}), flush=True)
        while sys.stdin.buffer.read(4096):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        peer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
