"""Zoo I as a user runs it: for CBNet and TinyLUT, fp32 and int8, ONNX and TFLite,
`edgetool verify` passes against the PyTorch (or numpy LUT) reference and
`edgetool deploy --target local` measures the artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("quant", ["fp32", "int8"])
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("model", ["cbnet", "tinylut-s-x2"])
def test_verify_and_deploy_locally(cli: Any, home: Path, model: str, fmt: str, quant: str) -> None:
    spec = f"{model}:{fmt}:{quant}"
    verified = cli("verify", spec, "--samples", "8", "--json")
    assert verified.code == 0, verified.stderr
    report = verified.json()
    assert report["passed"] is True and report["samples"] == 8
    if model.startswith("tinylut") and quant == "int8":
        assert report["max_abs"] == 0  # the LUT artifact equals the numpy LUT reference
    deployed = cli("deploy", "-m", spec, "-n", "5", "-r", "1", "--json")
    assert deployed.code == 0, deployed.stderr
    out = deployed.json()
    assert out["summary"]["count"] == 5
    assert out["manifest"]["artifact"]["model"] == model
    assert out["manifest"]["artifact"]["quant"] == quant
