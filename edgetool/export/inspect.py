"""What is inside an artifact: tensors, operators, MACs, and which runtimes run each op."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgetool.errors import ModelError


def describe(path: Path) -> dict[str, Any]:
    """Inputs/outputs, op counts, MACs (and parameters for ONNX graphs)."""
    if path.suffix == ".onnx":
        return _describe_onnx(path)
    return _describe_tflite(path)


def _dims(value_info: Any) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value_info.type.tensor_type.shape.dim
    ]


def _describe_onnx(path: Path) -> dict[str, Any]:
    import onnx
    from onnx import helper, shape_inference

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path.name}: not a readable ONNX model ({exc})") from exc
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes: dict[str, list[int | str]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        shapes[info.name] = _dims(info)
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    initializers = {i.name for i in graph.initializer}

    def tensor(info: Any) -> dict[str, Any]:
        dtype = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
        return {"name": info.name, "shape": _dims(info), "dtype": str(np.dtype(dtype))}

    macs = 0
    for node in graph.node:
        macs += _onnx_node_macs(node, shapes)
    return {
        "inputs": [tensor(i) for i in graph.input if i.name not in initializers],
        "outputs": [tensor(o) for o in graph.output],
        "ops": dict(sorted(Counter(_onnx_op(n) for n in graph.node).items())),
        "macs": macs,
        "initializer_elements": int(sum(math.prod(i.dims) for i in graph.initializer)),
    }


def _onnx_op(node: Any) -> str:
    return f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def _known(shape: list[int | str] | None) -> list[int] | None:
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    return [int(d) for d in shape]


def _onnx_node_macs(node: Any, shapes: dict[str, list[int | str]]) -> int:
    if node.op_type in ("Conv", "QLinearConv", "ConvInteger"):
        w_index = 3 if node.op_type == "QLinearConv" else 1
        weight = _known(shapes.get(node.input[w_index]))
        out = _known(shapes.get(node.output[0]))
        if weight and out:
            return math.prod(out) * math.prod(weight[1:])
    elif node.op_type == "ConvTranspose":
        weight = _known(shapes.get(node.input[1]))
        inp = _known(shapes.get(node.input[0]))
        if weight and inp:
            return math.prod(inp) * math.prod(weight[1:])
    elif node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a = _known(shapes.get(node.input[0]))
        out = _known(shapes.get(node.output[0]))
        if a and out:
            transposed = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if transposed else a[-1]
            return math.prod(out) * k
    return 0


def _tflite_interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        # Without default delegates, so XNNPACK does not fold the ops into one DELEGATE.
        interp = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
    except Exception as exc:
        raise ModelError(f"{path.name}: LiteRT cannot load it ({str(exc).strip()[:200]})") from exc
    return interp


def _describe_tflite(path: Path) -> dict[str, Any]:
    interp = _tflite_interpreter(path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}

    def tensor(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero = detail.get("quantization", (0.0, 0))
        data = {
            "name": detail["name"],
            "shape": [int(d) for d in detail["shape"]],
            "dtype": str(np.dtype(detail["dtype"])),
        }
        if scale:
            data["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
        return data

    ops = interp._get_ops_details()
    macs = 0
    for op in ops:
        macs += _tflite_op_macs(op, tensors)
    return {
        "inputs": [tensor(d) for d in interp.get_input_details()],
        "outputs": [tensor(d) for d in interp.get_output_details()],
        "ops": dict(sorted(Counter(op["op_name"] for op in ops).items())),
        "macs": macs,
    }


def _tflite_op_macs(op: dict[str, Any], tensors: dict[int, dict[str, Any]]) -> int:
    name = op["op_name"]
    inputs = [int(i) for i in op["inputs"]]
    outputs = [int(i) for i in op["outputs"]]
    if len(inputs) < 2 or not outputs or inputs[1] < 0:
        return 0
    weight = [int(d) for d in tensors[inputs[1]]["shape"]]
    out = [int(d) for d in tensors[outputs[0]]["shape"]]
    if name == "CONV_2D":  # weight [Cout, kh, kw, Cin]
        return math.prod(out) * math.prod(weight[1:])
    if name == "DEPTHWISE_CONV_2D":  # weight [1, kh, kw, Cout]
        return math.prod(out) * weight[1] * weight[2]
    if name == "FULLY_CONNECTED":  # weight [out, in]
        return math.prod(out) * weight[-1]
    if name == "BATCH_MATMUL":
        return math.prod(out) * weight[-2]
    return 0


def op_support(path: Path) -> dict[str, dict[str, bool | None]]:
    """Per operator: does each runtime have a kernel for it (None: not applicable)."""
    ops = describe(path)["ops"]
    if path.suffix == ".onnx":
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        kernels = {
            (k.op_name, k.domain)
            for k in ort_state.get_all_opkernel_def()
            if k.provider == "CPUExecutionProvider"
        }
        result: dict[str, dict[str, bool | None]] = {}
        for op in ops:
            domain, _, name = op.rpartition(":")
            # Constant nodes become initializers when the session loads: no kernel needed.
            supported = (name, domain) in kernels or (name == "Constant" and not domain)
            result[op] = {"onnxruntime": supported, "litert": None, "tflite-micro": None}
        return result
    micro_missing = _tflm_missing(path, set(ops))
    return {
        op: {
            "onnxruntime": None,
            "litert": True,  # describe() loaded it in LiteRT: every op has a kernel
            "tflite-micro": None if micro_missing is None else op not in micro_missing,
        }
        for op in ops
    }


def _tflm_missing(path: Path, ops: set[str]) -> set[str] | None:
    """Ops TFLite Micro lacks, by asking it to build an interpreter (None: not installed)."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return None
    from edgetool.export.common import quiet_native_output

    try:
        with quiet_native_output():
            runtime.Interpreter.from_file(str(path))
        return set()
    except Exception as exc:
        text = str(exc)
        missing = {op for op in ops if op in text}
        return missing or ops
