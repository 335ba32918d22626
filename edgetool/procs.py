"""Process facts shared by the result store and the emulators."""

from __future__ import annotations

import contextlib
import os
import signal
import time


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
