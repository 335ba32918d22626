"""Start one farm subprocess so that it cannot outlive the farm that started it.

``python -m edgetool.farm.guard FARM_PID -- ARGV...`` asks the kernel to send SIGTERM
when its parent (the farm's worker thread) dies (Linux ``PR_SET_PDEATHSIG``), checks the
farm is still its parent (it may have died before the request), then execs ARGV in the same
process. SIGTERM is what a farm timeout sends first: a deploy keeps a partial run and exits.
Without this, a farm killed with SIGKILL left its jobs running unsupervised (they live in
their own process groups, out of reach of a terminal's Ctrl-C).

File descriptors the farm passed (a local place's lock) stay open across the exec, so the
job itself holds its place for as long as it runs, whoever dies first.

Only the standard library: this runs before every farm job and must start fast.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> bool:
    """True when the kernel will signal us at our parent's death (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m edgetool.farm.guard FARM_PID -- ARGV...", file=sys.stderr)
        return 2
    farm_pid, command = int(argv[0]), argv[2:]
    _die_with_parent(signal.SIGTERM)
    if os.getppid() != farm_pid:  # the farm died before the request: nobody supervises us
        print("error: the farm that started this job is gone", file=sys.stderr)
        return 130
    os.execvp(command[0], command)
    return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
