"""A Linux hwmon INA260 as files: the sysfs attributes the runner reads, rewritten in
place every millisecond from a waveform of the host clock.

The ground truth is the energy of what the sensor *exposed*: each written value holds until
the next write, as a real INA's register holds its last conversion. On a loaded two-core CI
host the writer thread can run late by several milliseconds, so the waveform's own integral
is not what the runner could have seen (CI once failed on exactly that, 2.6 % off)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edgetool.power.base import host_ns
from edgetool.testing.waveform import Waveform


class HwmonPeer:
    """`root/hwmon7` holding name, power1_input, in1_input and curr1_input, rewritten every
    millisecond by a thread until close(). A local target's `[meter] type = "hwmon"`
    reads it with `chip = "ina260"` and `root` set to this root (the runner scans it)."""

    def __init__(self, root: Path, waveform: Waveform, volts: float, chip: str = "ina260"):
        self.dir = root / "hwmon7"
        self.dir.mkdir(parents=True)
        (self.dir / "name").write_text(chip + "\n")
        self.waveform = waveform
        self.volts = volts
        self._held: list[tuple[int, float]] = []  # (host ns the value became visible, amps)
        self._fds = {
            name: os.open(self.dir / name, os.O_RDWR | os.O_CREAT, 0o644)
            for name in ("power1_input", "in1_input", "curr1_input")
        }
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watts_energy(self, t0_ns: int, t1_ns: int) -> float:
        """Exact joules the sensor exposed between two host times (a step function)."""
        held = self._held
        charge = 0.0
        for i, (since, amps) in enumerate(held):
            until = held[i + 1][0] if i + 1 < len(held) else max(t1_ns, since)
            lo, hi = max(since, t0_ns), min(until, t1_ns)
            if hi > lo:
                charge += amps * (hi - lo) / 1e9
        if not held or t0_ns < held[0][0]:
            raise ValueError("window starts before the sensor's first value")
        return self.volts * charge

    def _write(self) -> None:
        amps = self.waveform.amps(host_ns())
        # Fixed-width values rewritten at offset 0: a reader's pread never sees a torn file.
        values = {
            "power1_input": round(self.volts * amps * 1e6),  # µW
            "in1_input": round(self.volts * 1e3),  # mV
            "curr1_input": round(amps * 1e3),  # mA
        }
        for name, value in values.items():
            os.pwrite(self._fds[name], f"{value:012d}\n".encode(), 0)
        # Stamped after the writes: from here on a reader sees the new value.
        self._held.append((host_ns(), amps))

    def _loop(self) -> None:
        while not self._stop.wait(0.001):
            self._write()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for fd in self._fds.values():
            os.close(fd)
