"""Finishing a hand-built ONNX graph the same way everywhere: deterministic bytes."""

from __future__ import annotations

from typing import Any

ONNX_IR_VERSION = 8
"""IR 8 (the one that came with opset 17): loads in older onnxruntime builds on devices."""


def serialize_graph(graph: Any, opset: int, producer: str, doc: str) -> bytes:
    """Wrap a graph in a checked model and serialize it byte-for-byte reproducibly."""
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=producer,
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString(deterministic=True)
    return data
