"""A real OpenSSH sshd on 127.0.0.1, started once per session, through the same
LoopbackSshd that `edgetool emulate start loopback` uses; and one emulated Pi
(`rpi4-qemu`) booted and provisioned once per session, for every test that needs a
provisioned disk (booting and provisioning it takes minutes under emulation)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgetool import paths
from edgetool.emulate.sshd import LoopbackSshd
from tests.conftest import CliResult, run_cli

REAL_CACHE = paths.cache_dir()  # read before any fixture points the cache elsewhere
RPI4 = "rpi4-qemu"


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


def require_rpi4_image() -> None:
    """Skip (or fail, under EDGETOOL_REQUIRE_EMULATORS=1) without QEMU or the cached image,
    which `.ci/run` builds before the tests (tests may not reach Debian's registry)."""
    if not shutil.which("qemu-system-aarch64"):
        pytest.skip("qemu-system-aarch64 not installed (apt-get install qemu-system-arm)")
    if not any((d / "image.json").is_file() for d in (REAL_CACHE / "images").glob(RPI4 + "-*")):
        message = f"no cached {RPI4} image: run `edgetool emulate build {RPI4}` first"
        if os.environ.get("EDGETOOL_REQUIRE_EMULATORS") == "1":
            pytest.fail(message)
        pytest.skip(message)


def emulator_home(home: Path) -> dict[str, str]:
    """State and results under HOME; the image and wheel caches are the user's (linked)."""
    cache = home / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for shared in ("images", "wheels"):
        (REAL_CACHE / shared).mkdir(parents=True, exist_ok=True)
        (cache / shared).symlink_to(REAL_CACHE / shared)
    return {
        "EDGETOOL_CACHE_DIR": str(cache),
        "EDGETOOL_STATE_DIR": str(home / "state"),
        "EDGETOOL_RESULTS": str(home / "results"),
    }


@dataclass
class ProvisionedPi:
    """A private home whose `rpi4-qemu` was booted from the cached image and provisioned
    once; `first_boot` keeps what that first start and provisioning answered, so the test
    of first-provision behaviour asserts on it instead of paying for its own boot.

    The VM is left running (the next test deploys on it without a second boot); a test
    that needs it stopped (the icount target boots its disk) stops it."""

    home: Path
    env: dict[str, str]
    first_boot: dict[str, CliResult] = field(default_factory=dict)
    running: bool = True

    def cli(self, *args: str, timeout: float = 1200) -> CliResult:
        return run_cli(*args, env=self.env, timeout=timeout)


@pytest.fixture(scope="session")
def provisioned_pi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisionedPi]:
    require_rpi4_image()
    home = tmp_path_factory.mktemp("rpi4-provisioned")
    env = {**emulator_home(home), "EDGETOOL_TARGETS": ""}
    pi = ProvisionedPi(home, env)
    try:
        # What a user sees on a fresh board: start, a check before provisioning (which must
        # say what to do), the first provisioning and a second one with nothing to do.
        for step, args in (
            ("start", ("emulate", "start", RPI4, "--json")),
            ("check_unprovisioned", ("targets", "check", RPI4)),
            ("provision", ("provision", "--target", RPI4, "--json")),
            ("provision_again", ("provision", "--target", RPI4, "--json")),
        ):
            pi.first_boot[step] = pi.cli(*args)
        yield pi  # the tests assert on first_boot: a failed step fails them, not setup
    finally:
        for target in (f"{RPI4}-icount", RPI4):
            pi.cli("emulate", "stop", target)
