"""Run a process as a real non-root user, for the refusals only such a user sees (a shaped
link needs root) and the paths that must work without it (`--link none`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

import pytest

DROP = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def nobody_python(
    probe: str = "import sys; assert sys.version_info >= (3, 11)",
    candidates: Sequence[str] = (sys.executable, "/usr/bin/python3"),
) -> list[str]:
    """An argv prefix running the first candidate Python for which `probe` succeeds as user
    nobody (ours may sit where nobody may read). Not root: this process's own Python, since
    the test already runs unprivileged. Skips the test when neither way can work."""
    if os.geteuid() != 0:
        return [sys.executable]
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a process as nobody")
    for python in candidates:
        check = [*DROP, python, "-c", probe]
        if subprocess.run(check, capture_output=True, check=False, cwd="/").returncode == 0:
            return [*DROP, python]
    pytest.skip(f"user nobody may not run any of {', '.join(candidates)} here")
