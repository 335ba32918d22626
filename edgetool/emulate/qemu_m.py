"""QEMU's Cortex-M4 board (mps2-an386) as a device: its UART on a loopback TCP port.

`start` boots an ELF (the protocol-only firmware when none is given) with `-icount
shift=0`, so SysTick counts instructions deterministically, waits for the firmware's
`m-init-done` banner, and publishes `socket://127.0.0.1:PORT` in the state file, which
overlays the target's transport URL. "Flashing" an emulated board = booting a new ELF.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetool.config import TableReader
from edgetool.emulate.base import Emulator, EmulatorStatus, Stage, no_stage, status_of
from edgetool.emulate.host import free_port, log_tail, publish_state, require_tool
from edgetool.errors import DeviceError
from edgetool.procs import live_state, terminate
from edgetool.targets import Target, emulator_state_file

log = logging.getLogger(__name__)

MACHINE = "mps2-an386"
TIME_BASE = "emulated instructions (QEMU -icount shift=0: 1 ns of virtual time = 1 instruction)"


def qemu_binary() -> str:
    return require_tool("qemu-system-arm", "qemu-system-arm")


class QemuCortexM:
    """Start/stop/status of one QEMU mps2-an386 whose UART listens on 127.0.0.1."""

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        # It takes no [emulator] options (the firmware decides the rest): any key besides
        # `type` is a mistake.
        TableReader.of_options(options or {}, "emulator.").finish()
        self.name = name
        self.state_file = emulator_state_file(name)
        self.dir = self.state_file.parent / name

    def state(self) -> dict[str, Any] | None:
        return live_state(self.state_file)

    def status(self) -> EmulatorStatus:
        return status_of(self.state())

    def start(
        self,
        elf: Path | None = None,
        timeout: float = 15.0,
        *,
        fresh: bool = False,
        stage: Stage = no_stage,
    ) -> dict[str, Any]:
        """Boot `elf` (or keep the running one when it is already that ELF); a board
        keeps nothing between boots, so `fresh` changes nothing."""
        if elf is None:
            from edgetool.firmware.build import build_firmware

            elf = build_firmware(MACHINE, None).elf
        running = self.state()
        if running and running.get("elf") == str(elf):
            return running
        if running:
            self.stop()
        self.dir.mkdir(parents=True, exist_ok=True)
        qemu_log = self.dir / "qemu.log"
        port = free_port()
        argv = [
            qemu_binary(),
            "-M",
            MACHINE,
            "-nographic",
            "-monitor",
            "none",
            "-icount",
            "shift=0",
            "-kernel",
            str(elf),
            "-serial",
            f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
        ]
        log.info("start %s", shlex.join(argv))
        with qemu_log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        banner = self._wait_banner(port, proc, timeout)
        if banner is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            tail = log_tail(qemu_log, 2)
            raise DeviceError(
                f"QEMU {MACHINE} did not boot {elf.name} (no m-init-done within {timeout:g} s)"
                + (f": {tail}" if tail else ""),
                hint="Was the ELF built for board mps2-an386?",
            )
        state = {
            "pid": proc.pid,
            "elf": str(elf),
            "log": str(qemu_log),
            "argv": argv,
            "emulated_cpu": True,
            "time_base": TIME_BASE,
            "banner": banner,
            "transport": {"url": f"socket://127.0.0.1:{port}"},
        }
        publish_state(self.state_file, state)
        return state

    @staticmethod
    def _wait_banner(port: int, proc: subprocess.Popen[bytes], timeout: float) -> str | None:
        """Connect (QEMU waits for us before it boots) and read up to `m-init-done`."""
        deadline = time.monotonic() + timeout
        sock: socket.socket | None = None
        while sock is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                time.sleep(0.05)
        if sock is None:
            return None
        data = b""
        with sock:
            while b"m-ready" not in data and time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        text = data.decode("ascii", errors="replace")
        return text.strip() if "m-init-done" in text else None

    def stop(self) -> bool:
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if not state:
            return False
        log.info("stop QEMU (pid %s)", state["pid"])
        terminate(int(state["pid"]), kill=True)
        return True


def for_target(target: Target) -> Emulator:
    """The `qemu-m` entry of the emulator registry."""
    return QemuCortexM(target.name, target.emulator.options if target.emulator else None)
