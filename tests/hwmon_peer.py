"""A Linux hwmon INA260 as files: the sysfs attributes the runner reads, rewritten in
place every millisecond from a waveform of the host clock, so the energy is known exactly."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edgetool.power.base import host_ns
from edgetool.power.waveform import Waveform


class HwmonPeer:
    def __init__(self, root: Path, waveform: Waveform, volts: float, chip: str = "ina260"):
        self.dir = root / "hwmon7"
        self.dir.mkdir(parents=True)
        (self.dir / "name").write_text(chip + "\n")
        self.waveform = waveform
        self.volts = volts
        self._fds = {
            name: os.open(self.dir / name, os.O_RDWR | os.O_CREAT, 0o644)
            for name in ("power1_input", "in1_input", "curr1_input")
        }
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watts_energy(self, t0_ns: int, t1_ns: int) -> float:
        """Exact joules between two host times."""
        return self.volts * self.waveform.charge(t0_ns, t1_ns)

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

    def _loop(self) -> None:
        while not self._stop.wait(0.001):
            self._write()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for fd in self._fds.values():
            os.close(fd)
