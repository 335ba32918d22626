"""C export: ONNX -> portable C with static memory (emx-onnx-cgen), plus the bench glue.

The glue appended to the generated file defines what firmware_stubs/common/model_api.h
declares: the model's name, its concatenated float32 input and output buffers and
`edgetool_run()`, so one firmware source tree builds with any exported model.
`--large-temp-threshold 0` keeps every temporary on the stack (no heap on the device);
`--large-weight-threshold 0` keeps every weight inline as a const array (flash).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgetool.errors import ModelError

ENTRY = "edgetool_model"


def _cgen() -> list[str]:
    found = shutil.which("emx-onnx-cgen")
    if found:
        return [found]
    return [sys.executable, "-m", "emx_onnx_cgen"]


def glue(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> str:
    """C that maps the flat bench buffers onto the generated function's arguments."""
    for tensor in inputs + outputs:
        if tensor.get("dtype") != "float32":
            raise ModelError(
                f"{name}: tensor {tensor.get('name')} is {tensor.get('dtype')}; the C export "
                "handles float32 inputs and outputs only"
            )
        if not all(isinstance(d, int) and d > 0 for d in tensor.get("shape", [])):
            raise ModelError(f"{name}: tensor {tensor.get('name')} has a dynamic shape")
    sizes_in = [math.prod(t["shape"]) for t in inputs]
    sizes_out = [math.prod(t["shape"]) for t in outputs]
    args, offset = [], 0
    for size in sizes_in:
        args.append(f"(const void *)(edgetool_input_buffer + {offset * 4})")
        offset += size
    offset = 0
    for size in sizes_out:
        args.append(f"(void *)(edgetool_output_buffer + {offset})")
        offset += size
    total_in, total_out = sum(sizes_in) * 4, sum(sizes_out)
    return f"""
/* ---- edgetool bench glue (see firmware_stubs/common/model_api.h) ---- */
const char edgetool_model_name[] = "{name}";
const uint32_t edgetool_input_bytes = {total_in}u;
const uint32_t edgetool_output_count = {total_out}u;
uint8_t edgetool_input_buffer[{total_in}] __attribute__((aligned(8)));
float edgetool_output_buffer[{total_out}];

void edgetool_run(void) {{
    {ENTRY}({", ".join(args)});
}}
"""


def append_glue(out: Path, name: str, described: dict[str, Any]) -> None:
    """End a model C file with the bench glue, whoever wrote its `ENTRY` function (the
    code generator, or a family's own kernel): the firmware ABI is defined in one place."""
    text = glue(name, described["inputs"], described["outputs"])
    with out.open("a", encoding="utf-8") as handle:
        handle.write(text)


def _fold_constants(onnx_path: Path, folded: Path) -> None:
    """onnxruntime's basic level (constant folding, no fused ops): torch.onnx leaves
    Shape→Slice chains whose outputs look dynamic, and the code generator needs static
    shapes. The parity reference stays the unfolded graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def export_c(onnx_path: Path, described: dict[str, Any], name: str, out: Path) -> dict[str, Any]:
    """Write out (a .c file) from onnx_path; `described` is the ONNX's inputs/outputs."""
    folded = out.with_name(out.stem + ".folded.onnx")
    _fold_constants(onnx_path, folded)
    try:
        return _generate(folded, onnx_path.name, described, name, out)
    finally:
        folded.unlink(missing_ok=True)


def _generate(
    folded: Path, source_name: str, described: dict[str, Any], name: str, out: Path
) -> dict[str, Any]:
    argv = [
        *_cgen(),
        "compile",
        "--color",
        "never",
        "--large-temp-threshold",
        "0",
        "--large-weight-threshold",
        "0",
        "--model-name",
        ENTRY,
        str(folded),
        str(out),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not out.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ModelError(
            f"emx-onnx-cgen could not compile {source_name}: "
            + (lines[-1][:300] if lines else f"exit {result.returncode}"),
            hint="See `edgetool verify` for the operators the model uses.",
        )
    append_glue(out, name, described)
    version = subprocess.run(
        [*_cgen(), "--help"], capture_output=True, text=True, check=False
    ).stdout
    generator = next((ln.strip() for ln in version.splitlines() if "build date" in ln), "")
    return {
        "c_entry": ENTRY,
        "c_generator": f"emx-onnx-cgen {generator}".strip(),
        "c_options": "--large-temp-threshold 0 --large-weight-threshold 0 "
        "(graph constant-folded by onnxruntime first)",
    }
