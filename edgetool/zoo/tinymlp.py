"""Seeded random MLPs written directly as ONNX and TFLite files.

The CLI demo and the tests need a model that exists on a fresh machine without
torch, TensorFlow or a download. This module builds a plain multi-layer
perceptron (Dense + ReLU on hidden layers, linear last layer, no softmax) from a
seed and serialises it twice:

* ONNX through ``onnx.helper`` (``Gemm`` with ``transB=1`` + ``Relu``, opset 17);
* TFLite by writing the flatbuffer with the plain ``flatbuffers`` Builder API
  (``FULLY_CONNECTED`` with fused RELU), so the ``tflite`` bindings package is
  not needed.

Both outputs are byte-deterministic for a given :class:`MlpSpec`. Regenerate the
committed copies under ``models/`` with ``python -m edgetool.zoo.tinymlp``.

``onnx`` and ``flatbuffers`` are imported lazily inside the builders so that
:func:`mlp_weights` and :func:`reference_forward` need only numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetool import paths

FloatArray = npt.NDArray[np.float32]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
ONNX_OPSET = 17
PRODUCER = "edgetool.zoo.tinymlp"

# --- TFLite schema constants (tensorflow/compiler/mlir/lite/schema/schema.fbs) ---
_TFL_FILE_IDENTIFIER = b"TFL3"
_TFL_SCHEMA_VERSION = 3
_TFL_FLOAT32 = 0  # TensorType.FLOAT32
_TFL_FULLY_CONNECTED = 9  # BuiltinOperator.FULLY_CONNECTED
_TFL_OPTS_FULLY_CONNECTED = 8  # BuiltinOptions.FullyConnectedOptions
_TFL_ACT_NONE = 0  # ActivationFunctionType.NONE
_TFL_ACT_RELU = 1  # ActivationFunctionType.RELU
_TFL_BUFFER_ALIGN = 16  # Buffer.data is declared force_align: 16


@dataclass(frozen=True)
class MlpSpec:
    """Shape and seed of a generated MLP.

    ``layers`` is the input width followed by the width of every Dense layer,
    e.g. ``(64, 128, 10)`` is 64 inputs -> 128 hidden (ReLU) -> 10 logits.
    """

    name: str
    layers: tuple[int, ...]
    seed: int

    def __post_init__(self) -> None:
        if len(self.layers) < 2:
            raise ValueError(f"{self.name}: need an input width and at least one layer")
        if any(w <= 0 for w in self.layers):
            raise ValueError(f"{self.name}: layer widths must be positive: {self.layers}")
        if not self.name or "/" in self.name or "\\" in self.name:
            raise ValueError(f"invalid model name: {self.name!r}")

    @property
    def in_features(self) -> int:
        return self.layers[0]

    @property
    def out_features(self) -> int:
        return self.layers[-1]

    @property
    def num_params(self) -> int:
        return sum(i * o + o for i, o in zip(self.layers[:-1], self.layers[1:], strict=True))


# Fast default demo model (~27k parameters, ~110 kB per file).
TINY = MlpSpec("tiny-mlp", (64, 128, 128, 10), seed=1)
# Sized so that one onnxruntime inference (batch 1, 1 intra-op thread) takes
# roughly 1 ms (measured 0.93-0.99 ms median) on the development machine (Xeon,
# Sapphire Rapids class, 2 MiB L2/core). Batch-1 Dense layers are GEMVs, i.e.
# memory-bound, so latency tracks the parameter bytes (5.6M params, ~22.5 MB per
# file); expect very different numbers on edge devices.
BENCH_1MS = MlpSpec("mlp-1ms", (256, 1152, 1152, 1152, 1152, 1152, 10), seed=2)

SPECS: tuple[MlpSpec, ...] = (TINY, BENCH_1MS)
SHIPPED: tuple[MlpSpec, ...] = (TINY,)
"""Committed under models/; mlp-1ms (22 MB) is generated on demand by the benchmarks."""


def mlp_weights(spec: MlpSpec) -> list[tuple[FloatArray, FloatArray]]:
    """Deterministic float32 ``(weight, bias)`` pairs, one per layer.

    ``weight`` has shape ``(out, in)`` (the TFLite FULLY_CONNECTED / PyTorch
    layout), ``bias`` has shape ``(out,)``. Values are He-uniform scaled by
    ``1/sqrt(fan_in)`` so activations stay O(1) through the ReLU stack.

    Only ``Generator.random`` (float64 uniform) and exactly rounded float64
    arithmetic are used, which is the most version-stable path through numpy's
    RNG; the committed model files depend on it.
    """
    rng = np.random.default_rng(spec.seed)
    out: list[tuple[FloatArray, FloatArray]] = []
    for fan_in, fan_out in zip(spec.layers[:-1], spec.layers[1:], strict=True):
        w_limit = math.sqrt(6.0 / fan_in)
        b_limit = 1.0 / math.sqrt(fan_in)
        w = (rng.random((fan_out, fan_in)) * 2.0 - 1.0) * w_limit
        b = (rng.random(fan_out) * 2.0 - 1.0) * b_limit
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


def reference_forward(spec: MlpSpec, x: npt.ArrayLike) -> FloatArray:
    """Numpy reference of the network, computed in float64, returned as float32.

    ``x`` has shape ``(in,)`` or ``(batch, in)``; the result has the matching
    leading shape with ``out`` features.
    """
    h = np.asarray(x, dtype=np.float64)
    if h.shape[-1] != spec.in_features:
        raise ValueError(f"expected last dim {spec.in_features}, got shape {h.shape}")
    params = mlp_weights(spec)
    for i, (w, b) in enumerate(params):
        h = h @ w.astype(np.float64).T + b.astype(np.float64)
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
    return h.astype(np.float32)


def _hidden_name(i: int) -> str:
    return f"hidden{i}"


def build_onnx(spec: MlpSpec) -> bytes:
    """Serialise ``spec`` as an ONNX model (``Gemm(transB=1)`` + ``Relu``)."""
    from onnx import TensorProto, helper, numpy_helper

    from edgetool.zoo.onnx_graph import serialize_graph

    params = mlp_weights(spec)
    nodes: list[Any] = []
    inits: list[Any] = []
    prev = INPUT_NAME
    for i, (w, b) in enumerate(params):
        last = i == len(params) - 1
        w_name, b_name = f"fc{i}.weight", f"fc{i}.bias"
        inits.append(numpy_helper.from_array(w, w_name))
        inits.append(numpy_helper.from_array(b, b_name))
        gemm_out = OUTPUT_NAME if last else f"fc{i}"
        nodes.append(
            helper.make_node("Gemm", [prev, w_name, b_name], [gemm_out], name=f"fc{i}", transB=1)
        )
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [_hidden_name(i)], name=f"relu{i}"))
            prev = _hidden_name(i)

    graph = helper.make_graph(
        nodes,
        spec.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, spec.in_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, spec.out_features])],
        initializer=inits,
    )
    data = serialize_graph(
        graph,
        ONNX_OPSET,
        PRODUCER,
        f"Seeded random MLP {spec.layers} seed={spec.seed}; not trained.",
    )
    return data


# --- TFLite flatbuffer writer -------------------------------------------------


def _fb_offsets(b: Any, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def _fb_int32s(b: Any, values: Sequence[int]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(v)
    return int(b.EndVector())


def _fb_aligned_bytes(b: Any, data: bytes, alignment: int) -> int:
    # Like Builder.CreateByteVector, but honours Buffer.data's force_align.
    b.StartVector(1, len(data), alignment)
    b.head = b.head - len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    return int(b.EndVector())


def _fb_tensor(b: Any, name: str, shape: Sequence[int], buffer: int) -> int:
    name_off = b.CreateString(name)
    shape_off = _fb_int32s(b, shape)
    b.StartObject(4)
    b.PrependUOffsetTRelativeSlot(0, shape_off, 0)  # shape
    b.PrependInt8Slot(1, _TFL_FLOAT32, -1)  # type (written explicitly)
    b.PrependUint32Slot(2, buffer, 0)  # buffer
    b.PrependUOffsetTRelativeSlot(3, name_off, 0)  # name
    return int(b.EndObject())


def _fb_tensor_map(b: Any, name: str, tensor_index: int) -> int:
    name_off = b.CreateString(name)
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, name_off, 0)  # name
    b.PrependUint32Slot(1, tensor_index, 0xFFFFFFFF)  # tensor_index (always written)
    return int(b.EndObject())


def build_tflite(spec: MlpSpec) -> bytes:
    """Serialise ``spec`` as a float32 TFLite flatbuffer (schema version 3).

    One subgraph; per layer one FULLY_CONNECTED op with weights ``[out, in]``,
    bias ``[out]`` and fused RELU on hidden layers. Buffer 0 is the empty
    sentinel that activation tensors point at. A ``serving_default`` signature
    maps ``input`` -> ``logits``.
    """
    import flatbuffers  # type: ignore[import-untyped,unused-ignore]

    params = mlp_weights(spec)
    b = flatbuffers.Builder(spec.num_params * 4 + 4096)

    # Tensor table: 0 = input, then per layer (weight, bias, output).
    # Buffers: 0 = empty sentinel, then one per constant tensor.
    tensor_specs: list[tuple[str, list[int], int]] = [(INPUT_NAME, [1, spec.in_features], 0)]
    buffer_data: list[bytes] = [b""]
    op_io: list[tuple[list[int], list[int], int]] = []
    prev = 0
    for i, (w, bias) in enumerate(params):
        last = i == len(params) - 1
        fan_out, fan_in = w.shape
        w_idx = len(tensor_specs)
        tensor_specs.append((f"fc{i}.weight", [fan_out, fan_in], len(buffer_data)))
        buffer_data.append(np.ascontiguousarray(w, dtype="<f4").tobytes())
        b_idx = len(tensor_specs)
        tensor_specs.append((f"fc{i}.bias", [fan_out], len(buffer_data)))
        buffer_data.append(np.ascontiguousarray(bias, dtype="<f4").tobytes())
        y_idx = len(tensor_specs)
        tensor_specs.append((OUTPUT_NAME if last else _hidden_name(i), [1, fan_out], 0))
        op_io.append(([prev, w_idx, b_idx], [y_idx], _TFL_ACT_NONE if last else _TFL_ACT_RELU))
        prev = y_idx
    output_idx = prev

    # Large payloads first (the builder writes back to front).
    buffer_offs: list[int] = []
    for data in buffer_data:
        data_off = _fb_aligned_bytes(b, data, _TFL_BUFFER_ALIGN) if data else None
        b.StartObject(1)
        if data_off is not None:
            b.PrependUOffsetTRelativeSlot(0, data_off, 0)  # data
        buffer_offs.append(int(b.EndObject()))
    buffers_vec = _fb_offsets(b, buffer_offs)

    tensors_vec = _fb_offsets(b, [_fb_tensor(b, n, s, buf) for n, s, buf in tensor_specs])

    op_offs: list[int] = []
    for inputs, outputs, act in op_io:
        in_off = _fb_int32s(b, inputs)
        out_off = _fb_int32s(b, outputs)
        b.StartObject(4)  # FullyConnectedOptions
        b.PrependInt8Slot(0, act, -1)  # fused_activation_function (always written)
        opts = b.EndObject()
        b.StartObject(5)  # Operator
        b.PrependUint32Slot(0, 0, 0xFFFFFFFF)  # opcode_index (always written)
        b.PrependUOffsetTRelativeSlot(1, in_off, 0)  # inputs
        b.PrependUOffsetTRelativeSlot(2, out_off, 0)  # outputs
        b.PrependUint8Slot(3, _TFL_OPTS_FULLY_CONNECTED, 0)  # builtin_options_type
        b.PrependUOffsetTRelativeSlot(4, opts, 0)  # builtin_options
        op_offs.append(int(b.EndObject()))
    ops_vec = _fb_offsets(b, op_offs)

    sg_inputs = _fb_int32s(b, [0])
    sg_outputs = _fb_int32s(b, [output_idx])
    sg_name = b.CreateString("main")
    b.StartObject(5)  # SubGraph
    b.PrependUOffsetTRelativeSlot(0, tensors_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, sg_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, sg_outputs, 0)
    b.PrependUOffsetTRelativeSlot(3, ops_vec, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    subgraphs_vec = _fb_offsets(b, [b.EndObject()])

    b.StartObject(4)  # OperatorCode
    b.PrependInt8Slot(0, _TFL_FULLY_CONNECTED, -1)  # deprecated_builtin_code
    b.PrependInt32Slot(2, 1, 0)  # version (always written)
    b.PrependInt32Slot(3, _TFL_FULLY_CONNECTED, -1)  # builtin_code
    opcodes_vec = _fb_offsets(b, [b.EndObject()])

    sig_in = _fb_offsets(b, [_fb_tensor_map(b, INPUT_NAME, 0)])
    sig_out = _fb_offsets(b, [_fb_tensor_map(b, OUTPUT_NAME, output_idx)])
    sig_key = b.CreateString("serving_default")
    b.StartObject(5)  # SignatureDef
    b.PrependUOffsetTRelativeSlot(0, sig_in, 0)  # inputs
    b.PrependUOffsetTRelativeSlot(1, sig_out, 0)  # outputs
    b.PrependUOffsetTRelativeSlot(2, sig_key, 0)  # signature_key
    b.PrependUint32Slot(4, 0, 0xFFFFFFFF)  # subgraph_index (always written)
    sigs_vec = _fb_offsets(b, [b.EndObject()])

    description = b.CreateString(
        f"{PRODUCER}: seeded random MLP {spec.name} {spec.layers} seed={spec.seed}"
    )
    b.StartObject(8)  # Model
    b.PrependUint32Slot(0, _TFL_SCHEMA_VERSION, 0)  # version
    b.PrependUOffsetTRelativeSlot(1, opcodes_vec, 0)  # operator_codes
    b.PrependUOffsetTRelativeSlot(2, subgraphs_vec, 0)  # subgraphs
    b.PrependUOffsetTRelativeSlot(3, description, 0)  # description
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)  # buffers
    b.PrependUOffsetTRelativeSlot(7, sigs_vec, 0)  # signature_defs
    b.Finish(b.EndObject(), file_identifier=_TFL_FILE_IDENTIFIER)
    return bytes(b.Output())


def write_models(spec: MlpSpec, out_dir: Path) -> dict[str, Path]:
    """Write ``<name>.onnx`` and ``<name>.tflite`` into ``out_dir``.

    Returns ``{"onnx": path, "tflite": path}``. Files are only rewritten when
    their content changes, so mtimes stay stable.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt, data in (("onnx", build_onnx(spec)), ("tflite", build_tflite(spec))):
        path = out_dir / f"{spec.name}.{fmt}"
        if not path.is_file() or path.read_bytes() != data:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        written[fmt] = path
    return written


def repo_models_dir() -> Path:
    """The shipped ``models/`` (the repo's, from a checkout): where the demo MLPs belong."""
    return paths.shipped_dir("models")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgetool.zoo.tinymlp",
        description="Regenerate the seeded demo MLPs as ONNX and TFLite files.",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=repo_models_dir(),
        help="parent directory; each model goes to <out-dir>/<name>/ (default: repo models/)",
    )
    parser.add_argument(
        "--all", action="store_true", help="also write mlp-1ms (22 MB, used by bench/)"
    )
    args = parser.parse_args(argv)
    for spec in SPECS if args.all else SHIPPED:
        for path in write_models(spec, args.out_dir / spec.name).values():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"{path}  {path.stat().st_size} bytes  sha256:{digest[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
