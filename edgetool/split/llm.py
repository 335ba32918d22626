"""A KV-cache decoder cut between layers, for measuring what a cloud-edge LLM split carries.

The ONNX decoders `edgetool export` writes for LLMs (onnxruntime-genai's model builder) take
`input_ids`, `attention_mask` and `past_key_values.N.key/value` and return `logits` and
`present.N.key/value`. Between two layers the residual stream is one tensor, but the builder
fuses the residual add into the next layer's `SkipSimplifiedLayerNormalization`, so no graph
tensor alone separates layer k-1 from layer k and `edgetool.split.cuts` finds no cut there.
`split_at_layer` un-fuses that one node (an `Add` giving the residual, then a plain
`SimplifiedLayerNormalization`), names the residual `hidden_state`, and extracts:

* head: `input_ids`, `attention_mask`, the past of layers < k -> `hidden_state`, their present;
* tail: `hidden_state`, `attention_mask`, the past of layers >= k -> `logits`, their present.

`attention_mask` is not a crossing tensor: each side builds it from the position it is at.
Each side keeps the KV cache of its own layers, which is what makes the per-token crossing
one hidden-state row. `Stepper` runs a whole decoder or either half one step at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetool.errors import ModelError, UsageError

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

HIDDEN = "hidden_state"
"""The crossing tensor's name in both halves: the residual stream entering layer k."""

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class DecoderShape:
    """What fixes the size of every tensor a split decoder can send, per token."""

    layers: int
    kv_heads: int
    head_size: int
    hidden: int

    def hidden_bytes(self, itemsize: int = 4) -> int:
        """One token's hidden state at any layer boundary."""
        return self.hidden * itemsize

    def kv_bytes(self, layers: int | None = None, itemsize: int = 4) -> int:
        """One token's new K and V rows over `layers` layers (default all)."""
        count = self.layers if layers is None else layers
        return 2 * count * self.kv_heads * self.head_size * itemsize


def load(model: Path | ModelProto) -> ModelProto:
    import onnx

    if isinstance(model, Path):
        try:
            return onnx.load(str(model))
        except Exception as exc:  # protobuf's DecodeError, OSError, a missing data file, ...
            raise ModelError(f"{model}: not an ONNX model ({exc})") from exc
    return model


def decoder_shape(model: Path | ModelProto) -> DecoderShape:
    """Layers and KV heads from the past inputs; the hidden size from the norm weight of
    the first layer's input (what the residual stream is normalised over); the head size
    from the attention node's head counts and its fused QKV projection (the past inputs
    leave it symbolic), else hidden / heads."""
    proto = load(model)
    layers, kv_heads = _past_layers(proto)
    norm = _layer_norm(proto, 0)
    weights = {init.name: init for init in proto.graph.initializer}
    gamma = weights.get(norm.input[2 if norm.op_type.startswith("Skip") else 1])
    if gamma is None or len(gamma.dims) != 1:
        raise ModelError("the first layer's input norm has no constant 1-D weight")
    hidden = int(gamma.dims[0])
    attention = _attention(proto, 0)
    attrs = {a.name: a.i for a in attention.attribute if a.name in ("num_heads", "kv_num_heads")}
    heads = attrs.get("num_heads", 0)
    if not heads:
        raise ModelError(f"{attention.op_type} has no num_heads: cannot size the heads")
    producers = {name: node for node in proto.graph.node for name in node.output if name}
    qkv = producers.get(attention.input[0])
    fused = weights.get(qkv.input[1]) if qkv is not None and qkv.op_type == "MatMul" else None
    if fused is not None and not attention.input[1] and len(fused.dims) == 2:
        head_size = int(fused.dims[1]) // (heads + 2 * attrs.get("kv_num_heads", kv_heads))
    else:
        head_size = hidden // heads
    return DecoderShape(layers, kv_heads, head_size, hidden)


def split_at_layer(model: Path | ModelProto, layer: int) -> tuple[ModelProto, ModelProto]:
    """(head, tail): the head runs layers [0, layer), the tail [layer, layers)."""
    import onnx
    from onnx import helper

    proto = onnx.ModelProto()
    proto.CopyFrom(load(model))
    layers, _ = _past_layers(proto)
    if not 1 <= layer < layers:
        raise UsageError(f"a layer cut must be between 1 and {layers - 1}, got {layer}")
    norm = _layer_norm(proto, layer)
    if norm.op_type != "SkipSimplifiedLayerNormalization" or len(norm.input) < 3:
        raise ModelError(
            f"layer {layer}'s input norm is {norm.op_type}, not the fused residual add "
            "(SkipSimplifiedLayerNormalization) this cut un-fuses"
        )
    epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
    residual = norm.output[3] if len(norm.output) > 3 and norm.output[3] else ""
    add = helper.make_node("Add", [norm.input[0], norm.input[1]], [HIDDEN], name=f"{HIDDEN}/add")
    plain = helper.make_node(
        "SimplifiedLayerNormalization",
        [HIDDEN, norm.input[2]],
        [norm.output[0]],
        name=f"{HIDDEN}/norm",
        axis=-1,
        epsilon=epsilon,
        stash_type=1,
    )
    nodes = list(proto.graph.node)
    at = nodes.index(norm)
    nodes[at : at + 1] = [add, plain]
    if residual:
        for node in nodes:
            for k, name in enumerate(node.input):
                if name == residual:
                    node.input[k] = HIDDEN
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    hidden = decoder_shape(proto).hidden
    proto.graph.value_info.append(
        helper.make_tensor_value_info(
            HIDDEN, onnx.TensorProto.FLOAT, ["batch_size", "sequence_length", hidden]
        )
    )
    extractor = onnx.utils.Extractor(proto)
    head_past = [f"past_key_values.{i}.{kv}" for i in range(layer) for kv in ("key", "value")]
    tail_past = [
        f"past_key_values.{i}.{kv}" for i in range(layer, layers) for kv in ("key", "value")
    ]
    present = [name.replace("past_key_values.", "present.") for name in head_past]
    tail_present = [name.replace("past_key_values.", "present.") for name in tail_past]
    head = extractor.extract_model(["input_ids", "attention_mask", *head_past], [HIDDEN, *present])
    tail = extractor.extract_model(
        [HIDDEN, "attention_mask", *tail_past], ["logits", *tail_present]
    )
    for part in (head, tail):
        part.ir_version = proto.ir_version
    return head, tail


class Stepper:
    """One step of a KV-cache decoder or of one half, keeping its own layers' cache.

    The first input (`input_ids` or `hidden_state`) takes [1, tokens] ids or
    [1, tokens, hidden] floats; `past` maps each `past_key_values.*` input to its cache
    and may be replaced (a cloud taking over with a decoded cache)."""

    def __init__(self, model: Path | ModelProto, head_size: int, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        data = model.read_bytes() if isinstance(model, Path) else model.SerializeToString()
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load the decoder: {exc}") from exc
        inputs = self.session.get_inputs()
        self.feed_name = inputs[0].name
        self.has_mask = any(i.name == "attention_mask" for i in inputs)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.heads = {i.name: int(i.shape[1]) for i in inputs if _PAST.match(i.name)}
        self.head_size = head_size
        self.past: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """An empty cache."""
        self.past = {
            name: np.zeros((1, heads, 0, self.head_size), np.float32)
            for name, heads in self.heads.items()
        }

    @property
    def length(self) -> int:
        """Tokens in the cache (0 for a stepper without one)."""
        return int(next(iter(self.past.values())).shape[2]) if self.past else 0

    def step(self, feed: np.ndarray) -> np.ndarray:
        """Run `feed` after the cache; returns the first output (logits or hidden state)
        and appends the new rows to the cache."""
        total = self.length + int(feed.shape[1])
        feeds: dict[str, Any] = {self.feed_name: feed, **self.past}
        if self.has_mask:
            feeds["attention_mask"] = np.ones((1, total), dtype=np.int64)
        out = self.session.run(self.outputs, feeds)
        for name, value in zip(self.outputs[1:], out[1:], strict=True):
            self.past[name.replace("present.", "past_key_values.")] = value
        return np.asarray(out[0])


def kv_rows(cache: np.ndarray, start: int, stop: int | None = None) -> np.ndarray:
    """Cache rows [start, stop) of one [1, kv_heads, tokens, head_size] tensor as
    [tokens, kv_heads * head_size]: one row per token, every head's channels side by side
    (the layout a per-token codec sees)."""
    rows = cache[0, :, start:stop, :]
    return np.ascontiguousarray(rows.transpose(1, 0, 2).reshape(rows.shape[1], -1))


def kv_cache(rows: np.ndarray, kv_heads: int) -> np.ndarray:
    """`kv_rows`' inverse: [tokens, kv_heads * head_size] back to [1, kv_heads, tokens, d]."""
    tokens = rows.shape[0]
    return np.ascontiguousarray(rows.reshape(tokens, kv_heads, -1).transpose(1, 0, 2)[None])


def _past_layers(proto: ModelProto) -> tuple[int, int]:
    """(layers, kv_heads) from the past inputs, which must be complete."""
    found: dict[int, set[str]] = {}
    kv_heads = 0
    for value in proto.graph.input:
        match = _PAST.match(value.name)
        if not match:
            continue
        found.setdefault(int(match.group(1)), set()).add(match.group(2))
        shape = value.type.tensor_type.shape.dim
        if len(shape) == 4:
            kv_heads = int(shape[1].dim_value)
    if not found or sorted(found) != list(range(len(found))):
        raise ModelError("not a KV-cache decoder (needs past_key_values.N.key/value inputs)")
    if any(kinds != {"key", "value"} for kinds in found.values()) or not kv_heads:
        raise ModelError("the past_key_values inputs are incomplete or have no fixed KV heads")
    return len(found), kv_heads


def _attention(proto: ModelProto, layer: int) -> NodeProto:
    key = f"past_key_values.{layer}.key"
    attention: NodeProto | None = next((n for n in proto.graph.node if key in n.input), None)
    if attention is None:
        raise ModelError(f"no node reads {key}")
    return attention


def _layer_norm(proto: ModelProto, layer: int) -> NodeProto:
    """The norm feeding layer `layer`'s attention: the node whose output the projection(s)
    into the attention node reading `past_key_values.{layer}.key` multiply."""
    producers = {name: node for node in proto.graph.node for name in node.output if name}
    node: NodeProto | None = producers.get(_attention(proto, layer).input[0])
    while node is not None and node.op_type in ("MatMul", "MatMulNBits", "MatMulInteger", "Add"):
        node = producers.get(node.input[0])
    if node is None or "LayerNormalization" not in node.op_type:
        raise ModelError(f"layer {layer}'s attention input does not come from a layer norm")
    return node
