"""The emulated Raspberry Pi 4 end to end: the cached Debian arm64 image boots in QEMU
(Cortex-A72), is provisioned offline, runs zoo models over SSH, and stops; plus the
failure cases that need a real boot (boot timeout, a stale VM from a killed run).

The image and the device's wheels come from Debian's and PyPI's registries, which tests
may not reach: `.ci/run` builds and fetches them first (`edgetool emulate build
rpi4-qemu`, `edgetool provision --target rpi4-qemu --fetch-only`), and these tests use
that cache. With EDGETOOL_REQUIRE_EMULATORS=1 (set by .ci/run) a missing image fails the
test instead of skipping it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool import paths
from tests.conftest import CliResult, assert_one_line_error, run_cli
from tests.integration.conftest import ProvisionedPi, emulator_home, require_rpi4_image

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

TARGET = "rpi4-qemu"


@pytest.fixture
def emu_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """State and results under tmp_path; the image and wheel caches are the user's."""
    require_rpi4_image()
    for var, value in emulator_home(tmp_path).items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("EDGETOOL_TARGETS", raising=False)
    yield tmp_path
    run_cli("emulate", "stop", TARGET)


def cli(*args: str, timeout: float = 1200) -> CliResult:
    return run_cli(*args, timeout=timeout)


def qemu_pids(state_dir: Path) -> list[int]:
    """QEMU processes on this test's overlay, straight from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "qemu-system-aarch64" in line and str(state_dir) in line:
                pids.append(int(entry.name))
    return pids


def test_boot_provision_deploy_stop(
    provisioned_pi: ProvisionedPi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first boot and provisioning are the session's (`provisioned_pi`, which the
    icount tests boot read-only afterwards): this test asserts what they answered, then
    deploys on the VM they left running and stops it."""
    for var, value in provisioned_pi.env.items():
        monkeypatch.setenv(var, value)
    emu_home = provisioned_pi.home
    first_boot = provisioned_pi.first_boot
    built = cli("emulate", "build", TARGET, "--json")
    assert built.code == 0, built.stderr
    assert built.json()["cached"] is True, "a second build is a cache hit"

    started = first_boot["start"]
    assert started.code == 0, started.stderr
    state = started.json()
    assert state["ready"] and state["transport"]["host"] == "127.0.0.1"
    assert "-cpu" in state["argv"] and "cortex-a72" in state["argv"]
    assert "restrict=on" in " ".join(state["argv"]), "the guest must not reach any network"
    if not provisioned_pi.running:  # the icount tests ran first and stopped it
        assert cli("emulate", "start", TARGET).code == 0
        provisioned_pi.running = True
    status = cli("emulate", "status", TARGET)
    assert status.code == 0 and "running" in status.stdout

    # Before provisioning the runner's venv does not exist: the error says what to do.
    unprovisioned = first_boot["check_unprovisioned"]
    assert unprovisioned.code != 0
    assert "edgetool provision" in unprovisioned.stderr and "Traceback" not in unprovisioned.stderr

    first = first_boot["provision"]
    assert first.code == 0, first.stderr
    again = first_boot["provision_again"]
    assert again.code == 0, again.stderr
    assert again.json().get("nothing_to_do") is True, again.stdout

    check = cli("targets", "check", TARGET, "--json")
    assert check.code == 0, check.stderr
    facts = check.json()
    device = facts["device"]
    assert device["arch"] == "aarch64" and device["cores"] == 4
    assert device["cpu_model"] == "Cortex-A72"
    assert device["virtualization"] == "qemu", "device facts must say it is an emulator"
    assert "/venv/" in device["python_path"]
    assert facts["runtimes"]["onnxruntime"] and facts["runtimes"]["ai_edge_litert"]

    for model in ("tiny-mlp", "tiny-mlp:tflite"):
        run = cli("deploy", "--target", TARGET, "--model", model, "-n", "30", "-r", "2", "--json")
        assert run.code == 0, run.stderr
        data = run.json()
        target = data["manifest"]["target"]
        assert target["emulated"] is True and "cortex-a72" in target["emulator"]
        assert "not of a Raspberry Pi" in target["time_base"]
        assert data["manifest"]["device"]["virtualization"] == "qemu"
        assert data["summary"]["latency"]["count"] == 60  # two runner processes of 30
        assert data["summary"]["repetitions"]["count"] == 2
        assert data["summary"]["emulated"] is True and data["summary"]["time_base"]
    shown = cli("deploy", "--target", TARGET, "--model", "tiny-mlp", "-n", "5", "-r", "1")
    assert shown.code == 0 and "emulated" in shown.stdout

    stopped = cli("emulate", "stop", TARGET)
    assert stopped.code == 0 and "stopped" in stopped.stdout
    provisioned_pi.running = False
    assert qemu_pids(emu_home) == []
    assert "stopped" in cli("emulate", "status", TARGET).stdout


def _custom_target(home: Path, extra: str) -> Path:
    """rpi4-qemu with other emulator settings (same recipe, so the same cached image)."""
    targets = home / "targets"
    targets.mkdir(exist_ok=True)
    text = (paths.builtin_targets_dir() / f"{TARGET}.toml").read_text()
    text = text.replace("boot_timeout = 600\n", extra)
    assert extra in text
    (targets / f"{TARGET}.toml").write_text(text)
    return targets


def test_boot_timeout_is_one_line_with_the_console_tail(emu_home: Path) -> None:
    targets = _custom_target(emu_home, "boot_timeout = 10\n")
    out = run_cli("--targets-dir", str(targets), "emulate", "start", TARGET, timeout=300)
    assert_one_line_error(out, 7, "did not answer SSH within 10 s", "console:")
    assert qemu_pids(emu_home) == [], "a failed boot leaves no QEMU behind"
    assert "stopped" in run_cli("--targets-dir", str(targets), "emulate", "status", TARGET).stdout


def test_stale_vm_from_a_killed_start_is_found_and_cleaned(emu_home: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-m", "edgetool", "emulate", "start", TARGET],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = emu_home / "state" / "emulators" / f"{TARGET}.json"
    deadline = time.monotonic() + 60
    while not state_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state_file.exists(), "start did not publish its booting state"
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    assert len(qemu_pids(emu_home)) == 1, "the killed run's QEMU lives on"

    status = cli("emulate", "status", TARGET, "--json")
    assert status.code == 0
    report: dict[str, Any] = status.json()
    assert report["status"] == "stale" and "killed" in report["reason"]
    assert "emulate stop" in cli("emulate", "status", TARGET).stdout

    stopped = cli("emulate", "stop", TARGET)
    assert stopped.code == 0 and "stopped" in stopped.stdout
    assert qemu_pids(emu_home) == []
    assert cli("emulate", "status", TARGET, "--json").json()["status"] == "stopped"
