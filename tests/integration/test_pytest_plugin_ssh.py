"""The pytest plugin's example suite on the loopback sshd and the emulated Cortex-M4: the
plugin starts each emulator for the session, measures through it, and stops it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgetool.emulate import open_emulator
from edgetool.targets import load_target
from tests.unit.test_pytest_plugin import run_suite

pytest_plugins = ["pytester"]

pytestmark = [pytest.mark.integration]


def _stopped(name: str) -> bool:
    return open_emulator(load_target(name)).state() is None


@pytest.mark.skipif(
    not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()),
    reason="OpenSSH server not installed (apt-get install openssh-server)",
)
def test_suite_on_local_and_loopback(pytester: pytest.Pytester, home: Path) -> None:
    results = home / "results" / "ssh-session"
    result, props = run_suite(
        pytester, "--edge-target=local", "--edge-target=loopback", f"--edge-results={results}"
    )
    # per target: budget passes, the microsecond budget fails, mcu-only skips, no baseline
    result.assert_outcomes(passed=2, failed=2, skipped=2, xfailed=2)
    over_ssh = props["test_p50_within_budget[loopback]"]
    assert over_ssh["edge_target"] == "loopback"
    assert (results / over_ssh["edge_run_id"] / "manifest.json").is_file()
    result.stdout.fnmatch_lines(["*test_p50_within_budget?loopback?*loopback*p50*ms*"])
    assert _stopped("loopback")  # started for the session, stopped after it


@pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="needs qemu-system-arm and gcc-arm-none-eabi",
)
def test_suite_on_the_emulated_cortex_m4(pytester: pytest.Pytester, home: Path) -> None:
    results = home / "results" / "m4-session"
    result, props = run_suite(pytester, "--edge-target=mcu-m4-qemu", f"--edge-results={results}")
    # on a microcontroller the mcu-only test runs: nothing is skipped by the marker
    result.assert_outcomes(passed=2, failed=1, xfailed=1)
    m4 = props["test_p50_within_budget[mcu-m4-qemu]"]
    assert m4["edge_time_base"] != "device"  # emulated instructions, said so
    result.stdout.fnmatch_lines(["*mcu-m4-qemu*p50*ms (*)*"])
    assert _stopped("mcu-m4-qemu")
