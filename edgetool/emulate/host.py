"""What every emulator needs from the host: its tools, a free loopback port, SSH keys."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from edgetool.errors import DeviceError
from edgetool.files import write_text_atomic

log = logging.getLogger(__name__)


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


def log_tail(path: Path, lines: int) -> str:
    """The log's last non-blank lines on one line, for a one-line error ('' if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:] if ln.strip())


def publish_state(state_file: Path, state: dict[str, Any]) -> None:
    """Write an emulator's state file whole (targets read it as the transport overlay)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(state_file, lambda handle: json.dump(state, handle, indent=2))


def keygen(path: Path, comment: str) -> None:
    """An unencrypted ed25519 key pair at `path` and `path.pub`, unless it exists."""
    if path.exists():
        return
    argv = [require_tool("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "",
            "-C", comment, "-f", str(path)]  # fmt: skip
    log.info("run %s", shlex.join(argv))
    subprocess.run(
        argv,
        check=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
