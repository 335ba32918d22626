"""The instruction time base of the emulated Pi: its target, its QEMU flags, how its
figures read, and the CI baseline check (bench/icount_baseline.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from edgetool import paths
from edgetool.cli.results import _latency_cell
from edgetool.emulate.qemu_a import ICOUNT_TIME_BASE, QemuArm64
from edgetool.errors import ConfigError
from edgetool.results.compare import DETERMINISTIC_PREFIX
from edgetool.targets import load_target_file
from edgetool.units import latency_unit

IMAGE = SimpleNamespace(kernel=Path("vmlinuz"), initrd=Path("initrd.img"))
"""What argv reads of a built image (its kernel and initrd paths)."""


def _baseline_script() -> ModuleType:
    path = Path(__file__).parents[2] / "bench" / "icount_baseline.py"
    spec = importlib.util.spec_from_file_location("icount_baseline", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_icount_target_boots_one_core_with_icount_on_its_siblings_disk() -> None:
    target = load_target_file(paths.builtin_targets_dir() / "rpi4-qemu-icount.toml")
    emulator = QemuArm64(target)
    assert emulator.icount and emulator.cores == 1
    assert emulator.image_name == "rpi4-qemu"
    assert emulator.base_overlay is not None
    assert emulator.base_overlay.parent.name == "rpi4-qemu"
    argv = emulator.argv("qemu-system-aarch64", IMAGE, 2222)  # type: ignore[arg-type]
    assert argv[argv.index("-icount") + 1] == "shift=0,sleep=off,align=off"
    assert argv[argv.index("-smp") + 1] == "1"
    assert ICOUNT_TIME_BASE.startswith(DETERMINISTIC_PREFIX), "compared exactly"


def test_plain_rpi4_qemu_keeps_wall_clock() -> None:
    emulator = QemuArm64(load_target_file(paths.builtin_targets_dir() / "rpi4-qemu.toml"))
    assert not emulator.icount and emulator.base_overlay is None
    assert "-icount" not in emulator.argv("qemu-system-aarch64", IMAGE, 2222)  # type: ignore[arg-type]


def test_icount_with_more_than_one_core_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pi.toml"
    path.write_text(
        '[transport]\ntype = "ssh"\nhost = "127.0.0.1"\n'
        '[emulator]\ntype = "qemu-aarch64"\ncores = 4\nicount = true\n'
    )
    with pytest.raises(ConfigError, match=r"'emulator\.cores' must be 1 when icount = true"):
        QemuArm64(load_target_file(path))


def test_instruction_figures_never_read_as_milliseconds() -> None:
    assert latency_unit(0.0645, instructions=True) == ("k instr", 1e3)
    assert latency_unit(8.017, instructions=True) == ("M instr", 1.0)
    assert latency_unit(8.017, instructions=False) == ("ms", 1.0)
    assert _latency_cell(0.064491, True) == "64.5 k instr"
    assert _latency_cell(1.052629, True) == "1.05 M instr"
    assert _latency_cell(0.412, False) == "0.412 ms"


def test_baseline_check_fails_beyond_tolerance_and_passes_within() -> None:
    script = _baseline_script()
    baseline = {"tolerance_pct": 1.0, "counts": {"pi": {"tiny-mlp": 64_491}}}
    assert script.check(baseline, {"pi": {"tiny-mlp": 64_600}}) == []  # +0.17 %
    assert script.check(baseline, {"pi": {"tiny-mlp": 60_000}}) == []  # faster: a note
    failures = script.check(baseline, {"pi": {"tiny-mlp": 66_000}})
    assert failures == ["tiny-mlp on pi: 64,491 -> 66,000 instructions (+2.34 %, tolerance 1 %)"]
    assert "not in the baseline" in script.check(baseline, {"pi": {"new": 1}})[0]


def test_shipped_baseline_covers_the_plan_on_both_emulated_cores() -> None:
    script = _baseline_script()
    import json

    recorded = json.loads(script.BASELINE.read_text())
    assert {t: set(m) for t, m in recorded["counts"].items()} == {
        t: set(m) for t, m in script.PLAN.items()
    }
    assert recorded["tolerance_pct"] == script.TOLERANCE_PCT
