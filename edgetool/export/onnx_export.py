"""ONNX export: torch.onnx (or the family's own graph), fp16 conversion, int8 QDQ."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from edgetool.errors import ConfigError, ModelError
from edgetool.export.common import (
    CALIBRATION_SAMPLES,
    calibration_batches,
    example_inputs,
    export_module,
    param_count,
)
from edgetool.zoo.family import Family
from edgetool.zoo.recipe import Recipe


def _torch_onnx(family: Family, recipe: Recipe, weights_dir: Path, out: Path) -> int:
    import torch

    module = export_module(family, recipe, weights_dir, "fp32").eval()
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            module,
            example_inputs(recipe),
            str(out),
            input_names=[spec.name for spec in recipe.inputs],
            output_names=list(recipe.outputs),
            opset_version=recipe.opset,
            dynamo=False,
        )
    if recipe.split_cuts:
        _name_cuts(out, recipe.split_cuts)
    return param_count(module)


def _name_cuts(path: Path, cuts: tuple[str, ...]) -> None:
    """Rename the output tensor of each `[split] cut` submodule to the submodule's name.

    torch.onnx scopes node names by module path (`/bottleneck/Clip`) but calls tensors
    `/bottleneck/Clip_output_0`, which changes with the ops inside; a cut point is only
    stable to name when the graph carries the module's name. The submodule's output is
    the one tensor made inside its scope and used outside it (or a graph output).
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    graph_outputs = {o.name for o in graph.output}
    for cut in cuts:
        scope = f"/{cut}/"
        inside = [n for n in graph.node if n.name.startswith(scope)]
        made = {t for n in inside for t in n.output}
        used_outside = {
            t for n in graph.node if not n.name.startswith(scope) for t in n.input if t in made
        }
        crossing = sorted(used_outside | (made & graph_outputs))
        if len(crossing) != 1:
            raise ModelError(
                f"[split] cut '{cut}': expected one tensor leaving module '{cut}' in the "
                f"exported graph, found {len(crossing)}"
            )
        old = crossing[0]
        for node in graph.node:
            node.input[:] = [cut if t == old else t for t in node.input]
            node.output[:] = [cut if t == old else t for t in node.output]
        for value in (*graph.output, *graph.value_info):
            if value.name == old:
                value.name = cut
    onnx.save(model, str(path))


def export_onnx(
    family: Family, recipe: Recipe, weights_dir: Path, quant: str, out: Path, say: Any
) -> dict[str, Any]:
    details: dict[str, Any] = {}
    builder = getattr(family, "build_onnx", None)
    custom = builder(recipe, weights_dir, quant, recipe.opset) if builder else None
    if custom is not None:
        out.write_bytes(custom)
        details["graph"] = (
            f"built by the {family.name} family (no torch.onnx, no extra quantization)"
        )
        return details
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        details["params"] = _torch_onnx(family, recipe, weights_dir, fp32)
        if quant == "fp32":
            fp32.replace(out)
        elif quant == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            # Inputs/outputs stay float32 so the same feeds and comparisons work.
            model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
            onnx.save(model, str(out))
            details["quantization"] = "float16 weights and activations, float32 I/O"
        elif quant == "int8":
            say(f"calibrating int8 on {CALIBRATION_SAMPLES} training samples")
            details.update(_quantize_int8(family, recipe, fp32, out))
        else:
            raise ModelError(f"unknown quantization '{quant}'")
    return details


def _quantize_int8(family: Family, recipe: Recipe, fp32: Path, out: Path) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = calibration_batches(family, recipe, CALIBRATION_SAMPLES)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    # A recipe may restrict int8 to some op types (`[export] int8_ops = ["MatMul"]`):
    # QDQ pairs around every element-wise op of a 40-step unrolled graph cost more
    # than the int8 matrix products save.
    op_types = recipe.export.get("int8_ops")
    if op_types is not None and (
        not isinstance(op_types, list) or not all(isinstance(o, str) for o in op_types)
    ):
        raise ConfigError(f"{recipe.name}: export.int8_ops must be a list of ONNX op types")
    logging.getLogger().setLevel(logging.ERROR)  # ORT nags about pre-processing
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=op_types,
    )
    scope = f" of {', '.join(op_types)}" if op_types else ""
    return {
        "quantization": (
            f"onnxruntime static QDQ, int8 weights (per channel) and activations{scope}"
        ),
        "calibration_samples": len(batches),
    }
