"""An emulated Raspberry Pi 4 class device: QEMU `virt` with Cortex-A72 cores, Debian
arm64, reached over SSH on a loopback port.

The cached image (`debian_image.py`) is never written: each emulator boots a qcow2
overlay of its own, kept between starts like a real board's SD card (so provisioning
survives a restart) until `start --fresh`. The guest's network is QEMU user-mode with
`restrict=on`: it cannot reach anything; the only way in is the SSH port forwarded to
127.0.0.1. The host key comes from the image build, so the first connection is verified.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgetool.config import TableReader
from edgetool.emulate.base import BuiltImage, Emulator, EmulatorStatus, Stage, no_stage
from edgetool.emulate.debian_image import Image, Recipe, build_image, cached_image
from edgetool.emulate.host import free_port, log_tail, publish_state, require_tool
from edgetool.errors import ConfigError, ConnectError, DeviceError, EdgetoolError
from edgetool.procs import pid_alive, terminate
from edgetool.targets import Target, emulator_state_file
from edgetool.transport.ssh import SshSettings

log = logging.getLogger(__name__)

CPU = "cortex-a72"
MACHINE = "virt"
TIME_BASE = (
    "emulated Cortex-A72 (QEMU TCG binary translation on the host): wall-clock times of "
    "the emulator, not of a Raspberry Pi"
)
ICOUNT = "shift=0,sleep=off,align=off"
"""QEMU's virtual clock advances 1 ns per emulated instruction (shift=0); idle time is
skipped instead of slept (sleep=off), and the guest is never held back to the host's
pace (align=off): the guest clock then counts instructions, whatever the host's load."""
ICOUNT_TIME_BASE = (
    "emulated instructions (QEMU -icount shift=0 on an emulated Cortex-A72: 1 ns of guest "
    "clock = 1 instruction; instructions, not cycles: no cache or pipeline model)"
)


def qemu_binary() -> str:
    return require_tool("qemu-system-aarch64", "qemu-system-arm")


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _qemus_on(overlay: Path) -> list[int]:
    """Every QEMU process booting OVERLAY, straight from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = _cmdline(int(entry.name))
            if "qemu-system-aarch64" in line and str(overlay) in line:
                found.append(int(entry.name))
    return found


class QemuArm64:
    """build/start/stop/status of one emulated Pi; its state file overlays the target's
    transport, so after `start` the target is used exactly like a real `rpi4`."""

    def __init__(self, target: Target) -> None:
        if target.emulator is None:
            raise ConfigError(f"target {target.name} has no [emulator] section")
        reader = TableReader(target.source, target.emulator.options, "emulator.")
        self.name = target.name
        self.source = target.source
        self.recipe = Recipe.read(reader)
        self.cores = self._int(reader, "cores", 4, 1, 64)  # a Pi 4 has four A72 cores
        self.memory_mb = self._int(reader, "memory_mb", 2048, 256, 65536)
        self.boot_timeout = float(self._int(reader, "boot_timeout", 600, 10, 7200))
        self.fixed_port = self._int(reader, "port", 0, 0, 65535)
        self.icount = bool(reader.get("icount", bool, "true or false", False))
        if self.icount and self.cores != 1:
            # Under -icount QEMU runs every vCPU on one host thread, in turns whose length
            # depends on the host: more than one core makes the counts depend on it too.
            reader.problem(f"key '{reader.key('cores')}' must be 1 when icount = true")
        # A sibling target whose image and provisioned disk this one boots (read-only: a
        # throwaway overlay on top of the sibling's), so runtimes are provisioned once.
        self.disk_of: str | None = reader.text("disk_of", None)
        reader.finish()  # every [emulator] problem at once; other keys are unknown
        self.state_file = emulator_state_file(self.name)
        self.dir = self.state_file.parent / self.name
        self.overlay = self.dir / "overlay.qcow2"
        disk_name = self.disk_of or self.name
        self.image_name = disk_name
        self.base_overlay = (
            emulator_state_file(disk_name).parent / disk_name / "overlay.qcow2"
            if self.disk_of
            else None
        )

    @staticmethod
    def _int(reader: TableReader, key: str, default: int, lo: int, hi: int) -> int:
        value = reader.value(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            reader.problem(f"key '{reader.key(key)}' must be an integer from {lo} to {hi}")
            return default
        return value

    # -- image -------------------------------------------------------------------------

    def build(self, stage: Stage = no_stage) -> tuple[Image, bool]:
        return build_image(self.recipe, self.image_name, stage)

    def build_image(self, stage: Stage = no_stage) -> BuiltImage:
        """`emulate build`: the cached image, built first when there is none."""
        image, cached = self.build(stage)
        info = image.info
        return BuiltImage(
            dir=image.dir,
            disk=image.disk,
            disk_format="qcow2",
            cached=cached,
            description=f"Debian {info['recipe']['suite']} arm64, kernel {info['kernel']}",
            facts=info,
        )

    def image(self) -> Image | None:
        return cached_image(self.recipe, self.image_name)

    # -- state -------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return data

    def _ours(self, pid: object) -> bool:
        """The pid is alive and is a QEMU booting our overlay (not a reused pid)."""
        return isinstance(pid, int) and pid_alive(pid) and str(self.overlay) in _cmdline(pid)

    def orphans(self) -> list[int]:
        """QEMU processes on our overlay that no state file accounts for (a killed run)."""
        known = (self._read_state() or {}).get("pid")
        return [pid for pid in _qemus_on(self.overlay) if pid != known]

    def state(self) -> dict[str, Any] | None:
        """The running, ready emulator's state; None otherwise."""
        data = self._read_state()
        if data and data.get("ready") and self._ours(data.get("pid")):
            return data
        return None

    def status(self) -> EmulatorStatus:
        """What `status` reports: running / booting / stale (with why) / stopped."""
        data = self._read_state()
        orphans = self.orphans()
        if data and self._ours(data.get("pid")):
            if data.get("ready"):
                return {"status": "running", "state": data, "orphans": orphans}
            starter = data.get("starter_pid")
            if isinstance(starter, int) and pid_alive(starter):
                return {"status": "booting", "state": data, "orphans": orphans}
            return {
                "status": "stale",
                "reason": f"left booting by a killed `emulate start` (QEMU pid {data['pid']})",
                "state": data,
                "orphans": orphans,
            }
        if orphans:
            return {
                "status": "stale",
                "reason": f"QEMU still running on the overlay with no state (pid "
                f"{', '.join(map(str, orphans))})",
                "state": data,
                "orphans": orphans,
            }
        if data:
            self.state_file.unlink(missing_ok=True)
            return {"status": "stopped", "reason": f"QEMU pid {data.get('pid')} had died"}
        return {"status": "stopped"}

    # -- start / stop --------------------------------------------------------------------

    def stop(self) -> bool:
        """Stop our QEMU and any stale one on our overlay; True if something was running."""
        data = self._read_state()
        pids = [*self.orphans()]
        if data and self._ours(data.get("pid")):
            pids.append(int(data["pid"]))
        self.state_file.unlink(missing_ok=True)
        for pid in pids:
            log.info("stop QEMU (pid %d)", pid)
            terminate(pid, grace=5.0, kill=True)
        return bool(pids)

    def start(self, *, fresh: bool = False, stage: Stage = no_stage) -> dict[str, Any]:
        running = self.state()
        if running and not fresh:
            return running
        report = self.status()
        booting = report.get("state") if report["status"] == "booting" else None
        if booting:
            raise DeviceError(
                f"{self.name} is already being started by pid {booting['starter_pid']}"
            )
        if report["status"] != "stopped" or fresh:
            if report["status"] == "stale":
                stage(f"cleaning a stale VM: {report.get('reason')}")
            self.stop()
        binary = qemu_binary()
        if self.fixed_port and _port_taken(self.fixed_port):
            raise DeviceError(
                f"port 127.0.0.1:{self.fixed_port} for {self.name}'s SSH is taken by another "
                "process.",
                hint="Stop that process, or remove 'port' from the target's [emulator] "
                "so a free port is chosen.",
            )
        image = self.image()
        if image is None:
            stage("no cached image: building it (needs Debian's package registry)")
            image, _ = self.build(stage)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._prepare_overlay(image, fresh)
        known_hosts = self.dir / "known_hosts"
        attempts = 1 if self.fixed_port else 3
        for attempt in range(attempts):
            port = self.fixed_port or free_port()
            known_hosts.write_text(f"[127.0.0.1]:{port} {image.host_public_key}\n")
            try:
                return self._boot(binary, image, port, known_hosts, stage)
            except _PortLost:
                if attempt == attempts - 1:
                    raise DeviceError(
                        f"could not forward a loopback port to {self.name}: another process "
                        "took each free port before QEMU bound it"
                    ) from None
        raise AssertionError("unreachable")

    def _prepare_overlay(self, image: Image, fresh: bool) -> None:
        """A qcow2 overlay backed by the cached image; a new one when the image changed."""
        if self.disk_of and self.base_overlay:
            self._prepare_shared_overlay(self.disk_of, self.base_overlay)
            return
        record = self.dir / "overlay.json"
        try:
            backing = json.loads(record.read_text()).get("image")
        except (OSError, ValueError):
            backing = None
        if not fresh and self.overlay.exists() and backing == str(image.disk):
            return
        qemu_img = require_tool("qemu-img", "qemu-utils")
        self.overlay.unlink(missing_ok=True)
        log.info("create overlay %s on %s", self.overlay, image.disk)
        subprocess.run(
            [qemu_img, "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "qcow2",
             str(self.overlay)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        )  # fmt: skip
        record.write_text(json.dumps({"image": str(image.disk)}))

    def _prepare_shared_overlay(self, sibling: str, base: Path) -> None:
        """A new throwaway overlay on the sibling's disk at every start: each boot sees
        the sibling's provisioned runtimes as they are now, and writes nothing back."""
        if not base.exists():
            raise DeviceError(
                f"{self.name} boots {sibling}'s provisioned disk, and {sibling} has none yet",
                hint=f"Run `edgetool emulate start {sibling}`, `edgetool provision --target "
                f"{sibling}` and `edgetool emulate stop {sibling}` once.",
            )
        if _qemus_on(base):
            raise DeviceError(
                f"{sibling} is running: {self.name} boots its disk, which must not change "
                "underneath it",
                hint=f"Stop it first: `edgetool emulate stop {sibling}`.",
            )
        qemu_img = require_tool("qemu-img", "qemu-utils")
        self.overlay.unlink(missing_ok=True)
        log.info("create overlay %s on %s", self.overlay, base)
        subprocess.run(
            [qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
             str(self.overlay)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        )  # fmt: skip

    def argv(self, binary: str, image: Image, port: int) -> list[str]:
        icount = ["-icount", ICOUNT] if self.icount else []
        return [
            binary,
            "-M", MACHINE, "-cpu", CPU, "-smp", str(self.cores), "-m", str(self.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.dir / 'console.log'}",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", "console=ttyAMA0 root=/dev/vda rw panic=-1 net.ifnames=0",
            "-no-reboot",
            "-drive", f"if=none,id=disk0,format=qcow2,file={self.overlay}",
            "-device", "virtio-blk-pci,drive=disk0",
            "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            *icount,
        ]  # fmt: skip

    def _boot(
        self,
        binary: str,
        image: Image,
        port: int,
        known_hosts: Path,
        stage: Callable[[str], None],
    ) -> dict[str, Any]:
        console = self.dir / "console.log"
        console.unlink(missing_ok=True)
        qemu_log = self.dir / "qemu.log"
        argv = self.argv(binary, image, port)
        log.info("start %s", shlex.join(argv))
        with qemu_log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        state: dict[str, Any] = {
            "pid": proc.pid,
            "starter_pid": os.getpid(),
            "ready": False,
            "image": str(image.dir),
            "overlay": str(self.overlay),
            "log": str(console),
            "argv": argv,
            "emulated_cpu": True,
            "emulator": f"qemu-system-aarch64 -M {MACHINE} -cpu {CPU} -smp {self.cores}"
            + (f" -icount {ICOUNT}" if self.icount else "")
            + " (TCG)",
            "time_base": ICOUNT_TIME_BASE if self.icount else TIME_BASE,
            "transport": {
                "host": "127.0.0.1",
                "port": port,
                "user": self.recipe.user,
                "identity_file": str(image.client_key),
                "known_hosts": str(known_hosts),
                "use_ssh_config": False,
            },
        }
        publish_state(self.state_file, state)
        began = time.monotonic()
        try:
            self._wait_ssh(proc, state, began, stage)
        except BaseException:
            terminate(proc.pid, grace=2.0, kill=True)
            self.state_file.unlink(missing_ok=True)
            raise
        state["ready"] = True
        state["boot_seconds"] = round(time.monotonic() - began, 1)
        publish_state(self.state_file, state)
        return state

    def _wait_ssh(
        self,
        proc: subprocess.Popen[bytes],
        state: dict[str, Any],
        began: float,
        stage: Callable[[str], None],
    ) -> None:
        """Until a real SSH login runs a command (sshd answers before logins are allowed)."""
        from edgetool.transport.ssh import SshTransport

        port = int(state["transport"]["port"])
        t = state["transport"]
        settings = SshSettings(
            host="127.0.0.1",
            port=port,
            user=t["user"],
            identity_file=Path(t["identity_file"]),
            known_hosts=(Path(t["known_hosts"]),),
            connect_timeout=10.0,
            use_ssh_config=False,
        )
        console = Path(state["log"])
        last_error = "no answer yet"
        while True:
            elapsed = time.monotonic() - began
            if proc.poll() is not None:
                qemu_says = log_tail(self.dir / "qemu.log", 3)
                if "hostfwd" in qemu_says or "host forwarding" in qemu_says:
                    raise _PortLost
                raise DeviceError(
                    f"QEMU for {self.name} exited (status {proc.returncode}) during boot: "
                    + (qemu_says or log_tail(console, 6) or "no output")
                )
            if elapsed > self.boot_timeout:
                raise DeviceError(
                    f"{self.name} did not answer SSH within {self.boot_timeout:g} s "
                    f"({last_error}); console: {log_tail(console, 6) or 'empty'}",
                    hint=f"The whole console log is in {console}; a slow host may need a "
                    "larger boot_timeout in the target's [emulator].",
                )
            stage(f"booting ({elapsed:.0f} s): {_last_console_line(console)}")
            if not _banner(port):
                time.sleep(1.0)
                continue
            try:
                transport = SshTransport(settings, self.name)
                try:
                    transport.run_checked(["true"])
                finally:
                    transport.close()
                return
            except (ConnectError, DeviceError) as exc:
                last_error = str(exc)
            except EdgetoolError:
                raise  # a host key mismatch is never retried
            time.sleep(2.0)


def for_target(target: Target) -> Emulator:
    """The `qemu-aarch64` entry of the emulator registry."""
    return QemuArm64(target)


class _PortLost(Exception):
    """QEMU could not bind the forwarded port (someone took it after we chose it)."""


def _banner(port: int) -> bool:
    """True once the guest's sshd greets us through the forwarded port."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
    ):
        sock.settimeout(3)
        return sock.recv(8).startswith(b"SSH-")
    return False


def _last_console_line(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 400))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-80:].strip() if lines else ""
