"""TFLite export through litert-torch (no TensorFlow); int8 through LiteRT's quantizer
(ai-edge-quantizer, static int8 weights and activations, calibrated)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgetool.errors import ModelError
from edgetool.export.common import (
    CALIBRATION_SAMPLES,
    calibration_batches,
    example_inputs,
    export_module,
    param_count,
    quiet_native_output,
)
from edgetool.zoo.family import Family
from edgetool.zoo.recipe import Recipe


def export_tflite(
    family: Family, recipe: Recipe, weights_dir: Path, quant: str, out: Path, say: Any
) -> dict[str, Any]:
    import torch

    with quiet_native_output():  # importing litert-torch logs from TensorFlow/torchao C++ code
        import litert_torch

    module = export_module(family, recipe, weights_dir, quant).eval()
    details: dict[str, Any] = {"params": param_count(module)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        try:
            with torch.no_grad(), quiet_native_output():
                litert_torch.convert(module, example_inputs(recipe)).export(str(fp32))
        except Exception as exc:  # converter errors are MLIR dumps: keep the gist
            gist = next((ln for ln in str(exc).splitlines() if "error:" in ln), str(exc))
            raise ModelError(
                f"litert-torch cannot convert {recipe.name}: {gist.strip()[:300]}",
                hint="Export it to ONNX instead (--format onnx).",
            ) from exc
        if quant == "fp32" or quant in getattr(family, "native_quants", ()):
            fp32.replace(out)
            return details
        say(f"calibrating int8 on {CALIBRATION_SAMPLES} training samples")
        details.update(_quantize_int8(family, recipe, fp32, out))
    return details


def _quantize_int8(family: Family, recipe: Recipe, fp32: Path, out: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer import recipe as recipes

    signatures = Interpreter(model_path=str(fp32)).get_signature_list()
    key, signature = next(iter(signatures.items()))
    batches = calibration_batches(family, recipe, CALIBRATION_SAMPLES)
    # litert-torch names inputs args_0..; feed them in the recipe's order.
    feeds = [
        {
            arg: batch[spec.name]
            for arg, spec in zip(signature["inputs"], recipe.inputs, strict=True)
        }
        for batch in batches
    ]
    with quiet_native_output():
        qt = quantizer.Quantizer(str(fp32))
        qt.load_quantization_recipe(recipes.static_wi8_ai8())
        calibration = qt.calibrate({key: feeds})
        qt.quantize(calibration).export_model(str(out), overwrite=True)
    return {
        "quantization": "ai-edge-quantizer static_wi8_ai8 (int8 weights and activations)",
        "calibration_samples": len(batches),
    }
