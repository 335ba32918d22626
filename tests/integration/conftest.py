"""A real OpenSSH sshd on 127.0.0.1, started once per session, through the same
LoopbackSshd that `edgetool emulate start loopback` uses."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.emulate.sshd import LoopbackSshd


def _sshd_available() -> bool:
    return bool(shutil.which("sshd") or os.access("/usr/sbin/sshd", os.X_OK))


@pytest.fixture(scope="session")
def sshd_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not _sshd_available():
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    state = tmp_path_factory.mktemp("sshd-state")
    previous = os.environ.get("EDGETOOL_STATE_DIR")
    os.environ["EDGETOOL_STATE_DIR"] = str(state)
    sshd = LoopbackSshd("loopback")
    sshd.start()
    yield state
    sshd.stop()
    if previous is None:
        os.environ.pop("EDGETOOL_STATE_DIR", None)
    else:
        os.environ["EDGETOOL_STATE_DIR"] = previous


@pytest.fixture
def loopback(sshd_state_dir: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The running loopback device's state (port, keys, workdir) for one test."""
    monkeypatch.setenv("EDGETOOL_STATE_DIR", str(sshd_state_dir))
    state = LoopbackSshd("loopback").state()
    assert state is not None, "loopback sshd died"
    return state
