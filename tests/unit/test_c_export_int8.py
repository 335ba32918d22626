"""C export of a family's native int8 graph (TinyLUT-S's LUTs) and `--input-shape`:
the gate lets native int8 through and nothing else, the shape override is validated and
keys the cache (without changing the key of an unchanged export), and an int8 C export of
tinylut-s-x4 at 4x4 describes the small shapes and keeps a bit-exact source ONNX."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool.errors import ModelError
from edgetool.export import build
from edgetool.zoo.recipe import TensorSpec, load_recipe


def test_int8_c_only_for_native_quantizations(home: Path) -> None:
    # FSRCNN's int8 is an onnxruntime QDQ graph: still refused before anything is built
    with pytest.raises(ModelError, match="int8 C export is not supported yet"):
        build.export("fsrcnn-x4", "c", "int8")
    with pytest.raises(ModelError, match="fp16 C export is not supported yet"):
        build.export("tinylut-s-x4", "c", "fp16")


def test_input_shape_keys_the_cache_only_when_given() -> None:
    recipe = load_recipe("tinylut-s-x4")
    text = f"{recipe.content_hash()}|c|int8|{recipe.opset}|{build.EXPORTER_VERSION}"
    assert build.cache_key(recipe, "c", "int8") == hashlib.sha256(text.encode()).hexdigest()[:20]
    small = build.cached_path(recipe, "c", "int8", (1, 1, 8, 8))
    assert small != build.cached_path(recipe, "c", "int8")
    assert small != build.cached_path(recipe, "c", "int8", (1, 1, 16, 16))


def test_with_input_shape_validates() -> None:
    recipe = load_recipe("tinylut-s-x4")
    assert build.with_input_shape(recipe, None) is recipe
    shaped = build.with_input_shape(recipe, (1, 1, 8, 8))
    assert shaped.inputs == (TensorSpec("lr", (1, 1, 8, 8), "float32"),)
    assert shaped.content_hash() == recipe.content_hash()
    with pytest.raises(ModelError, match="must have 4 positive dimensions"):
        build.with_input_shape(recipe, (8, 8))
    with pytest.raises(ModelError, match="must have 4 positive dimensions"):
        build.with_input_shape(recipe, (1, 1, 0, 8))
    two = replace(recipe, inputs=recipe.inputs * 2)
    with pytest.raises(ModelError, match="has 2 inputs"):
        build.with_input_shape(two, (1, 1, 8, 8))


def test_cli_rejects_a_malformed_input_shape(cli: Any) -> None:
    result = cli("export", "tinylut-s-x4", "--format", "c", "--input-shape", "1,1,a,8")
    assert result.code == 2, result.stderr  # click's usage error, before any export
    assert "--input-shape" in result.stderr and "expected positive integers" in result.stderr


@pytest.mark.skipif(
    shutil.which("emx-onnx-cgen") is None and importlib.util.find_spec("emx_onnx_cgen") is None,
    reason="emx-onnx-cgen is not installed",
)
def test_tinylut_int8_c_export_small_input(cli: Any) -> None:
    ort = pytest.importorskip("onnxruntime")
    from edgetool.zoo import tinylut

    result = cli(
        "export", "tinylut-s-x4", "--format", "c", "--quant", "int8", "--input-shape", "1,1,4,4"
    )
    assert result.code == 0, result.stderr
    result = cli(
        "export",
        "tinylut-s-x4",
        "--format",
        "c",
        "--quant",
        "int8",
        "--input-shape",
        "1,1,4,4",
        "--json",
    )
    assert result.code == 0, result.stderr
    data = result.json()
    manifest = data["manifest"]
    assert (manifest["format"], manifest["quant"]) == ("c", "int8")
    assert manifest["input_shape_override"] == [1, 1, 4, 4]
    assert manifest["inputs"] == [{"name": "lr", "shape": [1, 1, 4, 4], "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == [1, 1, 16, 16]
    source = Path(manifest["source_onnx"]["path"])
    onnx_manifest = json.loads(source.with_name(source.name + ".manifest.json").read_text())
    assert onnx_manifest["input_shape_override"] == [1, 1, 4, 4]
    assert manifest["c_generator"].startswith("edgetool TinyLUT LUT kernel")
    c_text = Path(data["path"]).read_text()
    assert "void edgetool_model(const float *lr, float *sr)" in c_text
    assert "edgetool_input_bytes = 64u" in c_text and "#define TL_H 4" in c_text
    assert manifest["size"] < 200_000  # int8 tables, not emx-onnx-cgen's 3.4 MB of floats
    # the C runs on this host too: its output is the numpy LUT reference, bit for bit
    luts = tinylut.load_luts(load_recipe("tinylut-s-x4").dir)
    x = np.random.default_rng(0).uniform(0, 255, (1, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        _run_c_on_host(Path(data["path"]), x, 16 * 16), tinylut.lut_reference(x, luts).ravel()
    )
    # the graph the parity reference runs is still the LUT graph, bit-exact to numpy
    got = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(
        None, {"lr": x}
    )[0]
    np.testing.assert_array_equal(got, tinylut.lut_reference(x, luts))


def _run_c_on_host(source: Path, x: np.ndarray, outputs: int) -> np.ndarray:
    """Compile an exported model file with the host gcc and run it through its bench glue."""
    import ctypes
    import subprocess
    import tempfile

    if shutil.which("gcc") is None:
        pytest.skip("no host gcc")
    lib = Path(tempfile.mkdtemp()) / "model.so"
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", str(source), "-o", str(lib), "-lm"], check=True
    )
    so = ctypes.CDLL(str(lib))
    data = x.astype("<f4").tobytes()
    ctypes.memmove(
        ctypes.addressof(ctypes.c_uint8.in_dll(so, "edgetool_input_buffer")), data, len(data)
    )
    so.edgetool_run()
    out = (ctypes.c_float * outputs).in_dll(so, "edgetool_output_buffer")
    return np.frombuffer(bytes(out), dtype="<f4")


def test_verify_uses_the_exported_input_shape(cli: Any) -> None:
    # a shape-overridden artifact is verified on inputs of its own shape, not the recipe's
    result = cli(
        "export", "tinylut-s-x4", "-f", "onnx", "-q", "int8", "--input-shape", "1,1,8,8", "--json"
    )
    assert result.code == 0, result.stderr
    path = result.json()["path"]
    result = cli("verify", path, "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"] is True
    assert report["max_abs"] == 0
