"""The emulated Pi with an instruction time base (`rpi4-qemu-icount`) and the CI gate on it:
two boots count the same instructions for tiny-mlp, every view says "instr", and
bench/icount_baseline.py passes on the shipped models and fails on a heavier one.

Needs the cached image and wheels, like test_rpi4_qemu.py (`.ci/run` fetches them). The
session's provisioned `rpi4-qemu` (`provisioned_pi`, shared with test_rpi4_qemu.py) is
stopped, then the icount target boots its disk read-only: twice in the first test (two
boots are what it tests), and the gate reuses the second boot, left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import ProvisionedPi

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "bench" / "icount_baseline.py"
TARGET = "rpi4-qemu-icount"


@pytest.fixture(scope="module")
def pi_disk(provisioned_pi: ProvisionedPi) -> Iterator[ProvisionedPi]:
    """The session's provisioned rpi4-qemu, stopped (the icount target boots its disk)."""
    assert provisioned_pi.first_boot["start"].code == 0, provisioned_pi.first_boot["start"].stderr
    provision = provisioned_pi.first_boot["provision"]
    assert provision.code == 0, provision.stderr
    if provisioned_pi.running:
        assert provisioned_pi.cli("emulate", "stop", "rpi4-qemu").code == 0
        provisioned_pi.running = False
    yield provisioned_pi
    provisioned_pi.cli("emulate", "stop", TARGET)


@pytest.fixture
def provisioned(pi_disk: ProvisionedPi, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's env points at the session's provisioned disk."""
    for var, value in pi_disk.env.items():
        monkeypatch.setenv(var, value)
    return pi_disk.env


def _tiny_mlp_count() -> tuple[float, str]:
    run = run_cli("deploy", "-t", TARGET, "-m", "tiny-mlp", "-n", "30", "-r", "3", "--json")
    assert run.code == 0, run.stderr
    data = run.json()
    target = data["manifest"]["target"]
    assert target["time_base"].startswith("emulated instructions")
    assert "-icount shift=0" in target["emulator"]
    return float(data["summary"]["repetitions"]["estimate_ms"]) * 1e6, Path(data["run_dir"]).name


def test_two_boots_count_the_same_and_every_view_says_instructions(
    provisioned: dict[str, str],
) -> None:
    started = run_cli("emulate", "start", TARGET, "--json", timeout=900)
    assert started.code == 0, started.stderr
    assert "-icount" in started.json()["argv"]
    first, first_id = _tiny_mlp_count()
    shown = run_cli("deploy", "-t", TARGET, "-m", "tiny-mlp", "-n", "10", "-r", "1")
    assert shown.code == 0, shown.stderr
    assert "latency (k instr)" in shown.stdout and "latency (ms)" not in shown.stdout
    assert "inferences/s" not in shown.stdout
    assert run_cli("emulate", "stop", TARGET).code == 0
    assert run_cli("emulate", "start", TARGET, timeout=900).code == 0
    second, second_id = _tiny_mlp_count()
    tolerance = json.loads((REPO / "bench" / "icount_baseline.json").read_text())["tolerance_pct"]
    assert abs(second - first) / first * 100 <= tolerance, (first, second)
    compared = run_cli("results", "compare", first_id, second_id)
    assert compared.code == 0, compared.stdout + compared.stderr
    assert "(exact)" in compared.stdout and "k instr" in compared.stdout
    listed = run_cli("results", "list")
    assert "k instr" in listed.stdout
    # The second boot stays up: the gate test only reads counts, and reuses it.


def _gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_gate_passes_on_the_shipped_models_and_fails_on_a_heavier_one(
    provisioned: dict[str, str], tmp_path: Path
) -> None:
    from edgetool.zoo.tinymlp import MlpSpec, write_models

    # One boot for both gate runs (the first test's second boot when it ran; the gate
    # itself starts a stopped icount target and stops it after, which costs a boot each).
    if run_cli("emulate", "status", TARGET, "--json").json()["status"] != "running":
        assert run_cli("emulate", "start", TARGET, timeout=900).code == 0
    shipped = _gate()  # the whole plan: the emulated Pi and the emulated M4
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "within the baseline's tolerance" in shipped.stdout
    status = run_cli("emulate", "status", TARGET, "--json").json()["status"]
    assert status == "running", "the gate stopped an emulator it did not start"
    heavier = MlpSpec("tiny-mlp", (64, 160, 128, 10), seed=1)  # one layer 25 % wider
    write_models(heavier, tmp_path)
    slower = _gate("--only", f"{TARGET}:tiny-mlp", "--model", f"tiny-mlp={tmp_path}/tiny-mlp.onnx")
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert "REGRESSION tiny-mlp on rpi4-qemu-icount" in slower.stdout
