"""The export machinery (recipe -> artifact + manifest, cache, verify, deploy by name),
exercised end to end through the CLI on a toy family that trains in a second."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, assert_one_line_error, run_cli

ZOO = REPO / "tests" / "fixtures" / "zoo"


@pytest.fixture(scope="module")
def trained_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy zoo trained once for the module (training is what the train test checks)."""
    root = tmp_path_factory.mktemp("zoo") / "zoo"
    shutil.copytree(ZOO, root)
    result = run_cli(
        "train", "toy", "--json", env={"EDGETOOL_MODELS": str(root), "PYTHONPATH": str(REPO)}
    )
    assert result.code == 0, result.stderr
    assert result.json()["metrics"]["test_top1"] > 0.9
    return root


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exports are keyed by content, so tests may share them safely."""
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture
def zoo(trained_zoo: Path, export_cache: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained toy zoo that a test may change."""
    root = home / "zoo"
    shutil.copytree(trained_zoo, root)
    monkeypatch.setenv("EDGETOOL_MODELS", str(root))
    monkeypatch.setenv("EDGETOOL_CACHE_DIR", str(export_cache))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return root


def test_onnx_export_manifest_and_cache(cli: Any, zoo: Path) -> None:
    first = cli("export", "toy", "--format", "onnx", "--json")
    assert first.code == 0, first.stderr
    data = first.json()
    path, manifest = Path(data["path"]), data["manifest"]
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["size"] == path.stat().st_size
    assert (manifest["format"], manifest["quant"], manifest["opset"]) == ("onnx", "fp32", 17)
    assert manifest["params"] == 16 * 32 + 32 + 32 * 4 + 4
    assert manifest["macs"] == 16 * 32 + 32 * 4
    assert manifest["inputs"] == [{"name": "x", "shape": [1, 16], "dtype": "float32"}]
    assert manifest["outputs"][0]["name"] == "logits"
    assert manifest["ops"] == {"Gemm": 2, "Relu": 1}
    assert len(manifest["recipe_hash"]) == 64
    mtime = path.stat().st_mtime_ns
    again = cli("export", "toy", "--format", "onnx", "--json").json()
    assert again["path"] == str(path) and path.stat().st_mtime_ns == mtime  # cache hit
    retrained = cli("train", "toy", "--set", "train.seed=7", "--json")
    assert retrained.code == 0
    changed = cli("export", "toy", "--format", "onnx", "--json").json()
    assert changed["path"] != str(path)  # new weights, new artifact
    assert changed["manifest"]["recipe_hash"] != manifest["recipe_hash"]


def test_training_is_reproducible(cli: Any, zoo: Path, tmp_path: Path) -> None:
    import torch

    for out in ("a", "b"):
        assert cli("train", "toy", "-o", str(tmp_path / out), "--json").code == 0
    a = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("quant", ["fp32", "fp16", "int8"])
def test_onnx_quantizations_verify(cli: Any, zoo: Path, quant: str) -> None:
    result = cli("verify", f"toy:onnx:{quant}", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"] and report["quant"] == quant and report["samples"] == 64
    assert report["agreement"]["top1_agreement"] >= 0.95
    assert report["cosine"] > 0.98
    assert all(s["onnxruntime"] for s in report["ops"].values())
    if quant == "int8":
        assert "QuantizeLinear" in report["ops"] and report["max_abs"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_tflite_export_verify_and_deploy(cli: Any, zoo: Path, quant: str) -> None:
    result = cli("verify", f"toy:tflite:{quant}", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"]
    assert report["ops"]["FULLY_CONNECTED"] == {
        "onnxruntime": None,
        "litert": True,
        "tflite-micro": True,
    }
    deployed = cli("deploy", "-m", f"toy:tflite:{quant}", "-n", "20", "--json")
    assert deployed.code == 0, deployed.stderr
    artifact = deployed.json()["manifest"]["artifact"]
    assert (artifact["model"], artifact["quant"], artifact["format"]) == ("toy", quant, "tflite")


def test_verify_failure_is_exit_11(cli: Any, zoo: Path) -> None:
    recipe = zoo / "toy" / "recipe.toml"
    recipe.write_text(recipe.read_text() + "\n[export.tolerances.int8]\nmax_abs = 0.0\n")
    result = cli("verify", "toy:onnx:int8")
    assert_one_line_error(result, 11, "max abs error")
    assert "FAIL" in result.stdout


def test_deploy_by_name_exports_then_runs(cli: Any, zoo: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 16), np.float32))
    result = cli(
        "deploy",
        "-m",
        "toy:onnx:int8",
        "-n",
        "20",
        "--input",
        str(tmp_path / "x.npy"),
        "--save-outputs",
        "--json",
    )
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["manifest"]["artifact"]["quant"] == "int8"
    assert np.load(Path(data["run_dir"]) / "outputs.npz")["logits"].shape == (1, 4)


def test_models_list_and_show(cli: Any, zoo: Path) -> None:
    listing = cli("models", "list", "--json").json()
    assert [(m["name"], m["trained"]) for m in listing] == [("toy", True)]
    shown = cli("models", "show", "toy", "--json").json()
    assert shown["family"] == "tests.toy_family:Toy" and shown["metrics"]["test_top1"] > 0.9


def test_export_errors(cli: Any, zoo: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("export", "toy", "-f", "tflite", "-q", "fp16"), 3, "fp16 TFLite")
    assert_one_line_error(cli("export", "nope"), 3, "unknown model 'nope'")
    (zoo / "toy" / "weights.pt").unlink()
    assert_one_line_error(cli("export", "toy"), 3, "edgetool train toy")
    plain = tmp_path / "plain.onnx"
    shutil.copyfile(REPO / "models" / "tiny-mlp" / "tiny-mlp.onnx", plain)
    assert_one_line_error(cli("verify", str(plain)), 3, "no edgetool manifest")


def test_bad_recipe_is_a_config_error(cli: Any, zoo: Path) -> None:
    (zoo / "toy" / "recipe.toml").write_text('family = "x"\ninputs = [{ shape = [0] }]\n')
    assert_one_line_error(cli("export", "toy"), 5, "inputs[0].shape")
