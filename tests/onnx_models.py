"""Small ONNX models built with onnx.helper, shaped like the ones users bring: a detector
whose input is [N, 3, H, W] (PP-OCR's), a fixed-size conv with only a batch dim open, and
an embedding lookup whose int64 input indexes a Gather."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

EMBEDDING_ROWS = 10


def _save(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every onnxruntime since 1.15 loads
    onnx.save(model, str(path))
    return path


def conv_model(path: Path, dims: list[Any]) -> Path:
    """x: dims (3 channels) -> Conv 3x3, 4 filters, same padding -> y."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return _save(graph, path)


def conv_chain(path: Path) -> Path:
    """x [1, 1, 8, 8] -> Conv (4) -> a -> Relu -> b -> Conv (2) -> y: one cut point, `b`,
    small enough that a split run over every route takes seconds."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 4, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [w1, w2],
    )
    return _save(graph, path)


def detector(path: Path) -> Path:
    """PP-OCR detector-like: x is [N, 3, H, W], every dim but the channels open."""
    return conv_model(path, ["N", 3, "H", "W"])


def batch_conv(path: Path) -> Path:
    """x is [N, 3, 8, 8]: only the batch is open."""
    return conv_model(path, ["N", 3, 8, 8])


def embedding() -> np.ndarray:
    return np.arange(EMBEDDING_ROWS * 4, dtype=np.float32).reshape(EMBEDDING_ROWS, 4)


def gather(path: Path) -> Path:
    """ids: int64 [N, 2] -> Gather rows of a 10x4 table -> emb [N, 2, 4]."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(embedding(), "table")],
    )
    return _save(graph, path)
