"""The on-device runner ships as one file; this package only says where it is."""

from __future__ import annotations

import hashlib
from pathlib import Path

RUNNER_PATH = Path(__file__).with_name("device_runner.py")


def runner_sha256() -> str:
    return hashlib.sha256(RUNNER_PATH.read_bytes()).hexdigest()
