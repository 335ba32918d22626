"""Zoo models deployed by name over a real SSH device (the loopback sshd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_l2mu_by_name_over_ssh_returns_the_reference_spike_counts(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("snntorch")
    from edgetool.zoo.family import get_family
    from edgetool.zoo.recipe import load_recipe

    recipe = load_recipe("l2mu-mcu")
    family = get_family("l2mu")
    samples = family.samples(recipe, "test", 1)
    window = samples.inputs["window"]
    np.save(tmp_path / "window.npy", window)
    result = run_cli(
        "deploy", "-t", "loopback", "-m", "l2mu-mcu", "-n", "30",
        "--input", str(tmp_path / "window.npy"), "--save-outputs", "--json",
        timeout=300,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["manifest"]["artifact"]["model"] == "l2mu-mcu"
    assert data["summary"]["latency"]["count"] == 30
    counts = np.load(Path(data["run_dir"]) / "outputs.npz")["spike_counts"]
    with torch.no_grad():
        expected = family.reference(recipe, recipe.dir)(torch.from_numpy(window)).numpy()
    assert counts.shape == (1, 7)
    np.testing.assert_array_equal(counts, expected)
