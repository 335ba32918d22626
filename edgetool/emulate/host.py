"""What every emulator needs from the host: its tools, a free loopback port, SSH keys."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from edgetool.errors import DeviceError


def require_tool(tool: str, package: str) -> str:
    """The tool's path, or an error naming the Debian package that provides it."""
    sbin = f"/usr/sbin/{tool}"  # root's tools (sshd, mke2fs) are not on every user's PATH
    found = shutil.which(tool) or (sbin if os.access(sbin, os.X_OK) else None)
    if found is None:
        raise DeviceError(f"{tool} not found.", hint=f"Install it: apt-get install {package}")
    return found


def free_port() -> int:
    """A port free on 127.0.0.1 right now (callers retry: another process may take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str) -> None:
    """An unencrypted ed25519 key pair at `path` and `path.pub`, unless it exists."""
    if path.exists():
        return
    subprocess.run(
        [require_tool("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "",
         "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
