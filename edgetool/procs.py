"""Process facts shared by the result store and the emulators."""

from __future__ import annotations

import os


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
