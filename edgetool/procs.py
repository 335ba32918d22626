"""Process facts shared by the result store and the emulators."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any


def pid_alive(pid: object) -> bool:
    """True if a process with this pid exists (ours or, without permission to signal, not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reaped_alive(pid: int) -> bool:
    """pid_alive, reaping it first when it is our own exited child (no zombie left)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return pid_alive(pid)


def terminate(pid: int, grace: float = 5.0, kill: bool = False) -> None:
    """SIGTERM, wait up to `grace` seconds for the process to go, then SIGKILL if `kill`.

    Emulators (sshd, QEMU) are stopped this way; an sshd's open sessions end with their
    clients, so it is not killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while reaped_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        reaped_alive(pid)


def live_state(state_file: Path) -> dict[str, Any] | None:
    """An emulator's published state, or None when it is missing, unreadable, or its
    process is gone (a stale file from a crashed emulator never counts as running)."""
    try:
        data: dict[str, Any] = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    return data if pid_alive(int(data.get("pid", 0))) else None
