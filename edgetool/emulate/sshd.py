"""A loopback OpenSSH sshd as a device: this host over real SSH, no board needed.

Everything it needs (host key, client key, authorized_keys, known_hosts, config, log)
lives in its state directory, and the state file it publishes overlays the target's
transport settings, so after `start` the target is used exactly like a Raspberry Pi.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetool.config import TableReader
from edgetool.emulate.base import Emulator, EmulatorStatus, Stage, no_stage, status_of
from edgetool.emulate.host import free_port, keygen, log_tail, publish_state, require_tool
from edgetool.errors import DeviceError
from edgetool.procs import live_state, terminate
from edgetool.targets import Target, emulator_state_file

log = logging.getLogger(__name__)


class LoopbackSshd:
    """Start/stop/status of one sshd bound to 127.0.0.1 on a free port."""

    def __init__(
        self, name: str, home: Path | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        # It takes no [emulator] options: any key there besides `type` is a mistake.
        TableReader.of_options(options or {}, "emulator.").finish()
        self.name = name
        self.state_file = emulator_state_file(name)
        self.dir = home or self.state_file.parent / name
        self.user = getpass.getuser()

    def state(self) -> dict[str, Any] | None:
        return live_state(self.state_file)

    def status(self) -> EmulatorStatus:
        return status_of(self.state())

    def start(
        self, timeout: float = 10.0, *, fresh: bool = False, stage: Stage = no_stage
    ) -> dict[str, Any]:
        """Start sshd (keys are kept; `fresh` changes nothing: the device is this host)."""
        running = self.state()
        if running:
            return running
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        host_key, client_key = self.dir / "host_ed25519", self.dir / "id_ed25519"
        keygen(host_key, "edgetool-loopback")
        keygen(client_key, "edgetool-loopback")
        (self.dir / "authorized_keys").write_text(
            Path(str(client_key) + ".pub").read_text(), encoding="ascii"
        )
        device = self.dir / "device"
        device.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = require_tool("sshd", "openssh-server")
        last_error = ""
        for _ in range(3):  # another process may grab the free port before sshd binds it
            port = free_port()
            config = self._write_config(port, host_key)
            sshd_log = self.dir / "sshd.log"
            sshd_log.unlink(missing_ok=True)
            log.info("start %s", shlex.join([sshd, "-f", str(config), "-E", str(sshd_log)]))
            result = subprocess.run(
                [sshd, "-f", str(config), "-E", str(sshd_log)],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if result.returncode == 0 and self._wait_listening(port, timeout):
                break
            last_error = (
                result.stderr.strip() or log_tail(sshd_log, 3)
            ) or f"exit {result.returncode}"
        else:
            raise DeviceError(f"loopback sshd did not start: {last_error}")
        pid = int((self.dir / "sshd.pid").read_text().strip())
        host_pub = Path(str(host_key) + ".pub").read_text().split()
        known_hosts = self.dir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        state = {
            "pid": pid,
            "log": str(self.dir / "sshd.log"),
            "python": sys.executable,
            "emulated_cpu": False,
            "workdir": str(device),
            "transport": {
                "host": "127.0.0.1",
                "port": port,
                "user": self.user,
                "identity_file": str(client_key),
                "known_hosts": str(known_hosts),
            },
        }
        publish_state(self.state_file, state)
        return state

    def _write_config(self, port: int, host_key: Path) -> Path:
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {port}",
                    f"HostKey {host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    # The state dir may sit under /tmp (tests); the keys in it are ours alone.
                    "StrictModes no",
                    "UsePAM no",
                    "MaxStartups 50:30:100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        return config

    @staticmethod
    def _wait_listening(port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1) as sock,
            ):
                if sock.recv(4).startswith(b"SSH-"):
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> bool:
        """Stop the listener (open sessions end with their clients); True if it was running."""
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if not state:
            return False
        log.info("stop sshd (pid %s)", state["pid"])
        terminate(int(state["pid"]))
        return True


def for_target(target: Target) -> Emulator:
    """The `sshd` entry of the emulator registry."""
    return LoopbackSshd(target.name, options=target.emulator.options if target.emulator else None)
