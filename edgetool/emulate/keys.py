"""SSH keys the emulators generate for themselves (host keys and edgetool's client key)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edgetool.errors import DeviceError


def keygen(path: Path, comment: str) -> None:
    """An unencrypted ed25519 key pair at `path` and `path.pub`, unless it exists."""
    if path.exists():
        return
    binary = shutil.which("ssh-keygen")
    if binary is None:
        raise DeviceError(
            "ssh-keygen not found.", hint="Install it: apt-get install openssh-client"
        )
    subprocess.run(
        [binary, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
