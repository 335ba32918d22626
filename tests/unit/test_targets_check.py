"""`targets check` as a health check: a device that answers but has none of the target's
runtimes fails it (exit 7), and the farm then skips that board's jobs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli

# The system interpreter on this host: a device's Python without onnxruntime or LiteRT.
BARE_PYTHON = "/usr/bin/python3"

TARGET = f"""description = "a board whose Python has no runtime"
kind = "linux"
python = "{BARE_PYTHON}"
runtimes = ["onnxruntime", "litert"]
[transport]
type = "local"
"""


@pytest.fixture
def bare(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A target `bare` whose interpreter imports none of its runtimes."""
    if not shutil.which(BARE_PYTHON):
        pytest.skip(f"{BARE_PYTHON} not installed")
    targets = home / "targets"
    targets.mkdir()
    (targets / "bare.toml").write_text(TARGET)
    monkeypatch.setenv("EDGETOOL_TARGETS", str(targets))
    return "bare"


def test_check_without_any_runtime_shows_facts_then_fails(bare: str) -> None:
    result = run_cli("targets", "check", bare)
    assert_one_line_error(result, 7, "none of the target's runtimes", "onnxruntime, litert")
    assert "onnxruntime" in result.stdout and "not installed" in result.stdout
    as_json = run_cli("targets", "check", bare, "--json")
    assert as_json.code == 7
    facts = json.loads(as_json.stdout)
    assert facts["runtimes"]["onnxruntime"] is None


def test_check_passes_when_one_runtime_is_there(home: Path) -> None:
    result = run_cli("targets", "check", "local")
    assert result.code == 0, result.stderr


def test_farm_marks_a_board_without_runtime_unhealthy(bare: str, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'name = "health"\ntargets = ["{bare}"]\n[run]\niterations = 5\nrepeat = 1\n'
        '[[models]]\nname = "tiny-mlp"\nformats = ["onnx"]\n'
    )
    night = tmp_path / "night"
    result = run_cli("farm", "run", str(plan), "--out", str(night))
    assert result.code == 12, (result.code, result.stdout, result.stderr)
    job = json.loads((night / "summary.json").read_text())["jobs"][0]
    assert job["status"] == "skipped"
    assert "health check failed" in job["reason"]
    assert "none of the target's runtimes" in job["reason"]
    assert not list(night.glob("runs/*/manifest.json"))  # no deploy was attempted
