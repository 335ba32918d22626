"""The emulated Pi with an instruction time base (`rpi4-qemu-icount`) and the CI gate on it:
two boots count the same instructions for tiny-mlp, every view says "instr", and
bench/icount_baseline.py passes on the shipped models and fails on a heavier one.

Needs the cached image and wheels, like test_rpi4_qemu.py (`.ci/run` fetches them). One
provisioning of `rpi4-qemu` (whose disk the icount target boots read-only), then icount boots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetool import paths
from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

REAL_CACHE = paths.cache_dir()
REPO = Path(__file__).parents[2]
SCRIPT = REPO / "bench" / "icount_baseline.py"
TARGET = "rpi4-qemu-icount"


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private state dir whose rpi4-qemu is provisioned and stopped; the env to use it."""
    if not shutil.which("qemu-system-aarch64"):
        pytest.skip("qemu-system-aarch64 not installed (apt-get install qemu-system-arm)")
    if not any((d / "image.json").is_file() for d in (REAL_CACHE / "images").glob("rpi4-qemu-*")):
        message = "no cached rpi4-qemu image: run `edgetool emulate build rpi4-qemu` first"
        if os.environ.get("EDGETOOL_REQUIRE_EMULATORS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("icount")
    cache = home / "cache"
    cache.mkdir()
    for shared in ("images", "wheels"):
        (cache / shared).symlink_to(REAL_CACHE / shared)
    env = {
        "EDGETOOL_CACHE_DIR": str(cache),
        "EDGETOOL_STATE_DIR": str(home / "state"),
        "EDGETOOL_RESULTS": str(home / "results"),
    }
    saved = {k: os.environ.get(k) for k in (*env, "EDGETOOL_TARGETS")}
    os.environ.update(env)
    os.environ.pop("EDGETOOL_TARGETS", None)
    try:
        assert run_cli("emulate", "start", "rpi4-qemu", timeout=900).code == 0
        provisioned = run_cli("provision", "--target", "rpi4-qemu", timeout=1200)
        assert provisioned.code == 0, provisioned.stderr
        assert run_cli("emulate", "stop", "rpi4-qemu").code == 0
        yield env
    finally:
        run_cli("emulate", "stop", TARGET)
        run_cli("emulate", "stop", "rpi4-qemu")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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

    shipped = _gate()  # the whole plan: the emulated Pi and the emulated M4
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "within the baseline's tolerance" in shipped.stdout
    heavier = MlpSpec("tiny-mlp", (64, 160, 128, 10), seed=1)  # one layer 25 % wider
    write_models(heavier, tmp_path)
    slower = _gate("--only", f"{TARGET}:tiny-mlp", "--model", f"tiny-mlp={tmp_path}/tiny-mlp.onnx")
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert "REGRESSION tiny-mlp on rpi4-qemu-icount" in slower.stdout
