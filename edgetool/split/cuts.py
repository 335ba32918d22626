"""Where an ONNX model can be cut in two, the two halves, and whether together they still
compute what the whole model computes.

A cut is one tensor `t`: the head computes `t` from the model's inputs, the tail computes
the model's outputs from `t` alone. So `t` is a cut when it is the only value the tail
needs from the head: every path from the inputs to the outputs passes through it (inside
a residual block the skip path crosses too, so only the block's output is a cut).
Constants (initializers, Constant nodes, anything computed from constants only) never
cross: they are copied to whichever side uses them. Input shapes are made concrete first,
by the runner's rules (`--input-shape`, else a symbolic batch is 1), so every cut has a
shape and a size in bytes before anything runs.

Halves come from `onnx.utils.Extractor` where it can, and from our own copy of the graph
where it cannot (it drops nodes reached only from an If/Loop body reading an outer
tensor, and refuses sparse initializers). Both halves pass `onnx.checker`; they are
cached beside each other, keyed by the model's sha256, the tensor and the input shapes,
and written atomically, so a second run (or a concurrent one) reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetool.errors import ModelError, UsageError
from edgetool.export.artifact import Artifact
from edgetool.files import write_bytes_atomic
from edgetool.flows.model_inputs import concrete_shapes, declared_inputs
from edgetool.runner import device_runner

if TYPE_CHECKING:
    import numpy as np
    from onnx import GraphProto, ModelProto, NodeProto, ValueInfoProto

    from edgetool.export.verify import ArtifactRunner

LOG = logging.getLogger(__name__)

InputShapes = Mapping[str, Sequence[int]]

EXTRACT_VERSION = 1
"""Part of the cache key of extracted halves: bump it when extraction changes its output."""

LISTED_CANDIDATES = 8
"""Candidates named in an unknown-tensor error: enough to spot a typo, one line still."""


@dataclass(frozen=True)
class CutPoint:
    """One tensor that alone separates a model's head from its tail."""

    tensor: str
    """The crossing tensor's name: what `--points a,b` names."""
    shape: tuple[int, ...]
    """Concrete, for the input shapes it was found with."""
    dtype: str
    """numpy dtype name of the tensor in the model (float32 for a plain export)."""
    position: int
    """Index, in the graph's topological node order, of the node that produces it."""
    after: str
    """That node: op type and name, e.g. "Conv /conv1/Conv"."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor in its own dtype (what crosses with no codec)."""
        import numpy as np

        return self.numel * np.dtype(self.dtype).itemsize

    def raw_bytes(self, bits: float = 32) -> int:
        """Bytes at `bits` per element, rounded up: the payload of a codec without side info."""
        return math.ceil(self.numel * bits / 8)


@dataclass(frozen=True)
class SplitPair:
    head: Path
    tail: Path
    cut: CutPoint


@dataclass(frozen=True)
class Parity:
    """Head then tail against the whole model, fp32 with no codec between them."""

    max_abs_diff: float
    """Over every output of the model."""
    top1_agree: bool | None
    """None when the first output is not a class score vector ([batch, classes])."""
    ok: bool
    tolerance: float


@dataclass
class _Graph:
    """A model with concrete input shapes and inferred types, and its data flow."""

    name: str
    proto: ModelProto
    inputs: list[str]
    outputs: list[str]
    nodes: list[NodeProto]
    reads: list[list[str]]
    """Per node: its inputs and the outer tensors its subgraphs read."""
    producer: dict[str, int]
    constant: set[str]
    live: set[int]
    """Nodes some output depends on."""
    ancestors: list[int]
    """Per node, a bit per node: the non-constant nodes it depends on, itself included."""
    types: dict[str, ValueInfoProto]


def find_cuts(model: Path, input_shapes: InputShapes | None = None) -> list[CutPoint]:
    """Every candidate cut of `model`, in graph order; ModelError when a dim is unknown."""
    graph = _analyse(model, input_shapes)
    return [_cut_point(graph, name) for name in _tensors(graph) if _why_not(graph, name) is None]


def resolve_points(
    model: Path, spec: str, input_shapes: InputShapes | None = None
) -> list[CutPoint]:
    """`--points`: "auto" for every candidate, else comma-separated tensor names (in graph
    order, each once); a name that is not a cut is a UsageError that says why."""
    names = list(dict.fromkeys(part.strip() for part in spec.split(",") if part.strip()))
    if not names:
        raise UsageError("--points is empty: give 'auto' or tensor names separated by commas")
    graph = _analyse(model, input_shapes)
    candidates = [name for name in _tensors(graph) if _why_not(graph, name) is None]
    if names == ["auto"]:
        if not candidates:
            raise ModelError(
                f"{graph.name} has no cut point: no single tensor separates its inputs "
                "from its outputs"
            )
        return [_cut_point(graph, name) for name in candidates]
    known = set(graph.types) | graph.constant | set(graph.producer)
    for name in names:
        if name not in known:
            listed = ", ".join(repr(c) for c in candidates[:LISTED_CANDIDATES])
            more = len(candidates) - LISTED_CANDIDATES
            listed += f" and {more} more" if more > 0 else ""
            raise UsageError(
                f"--points: {graph.name} has no tensor {name!r}; its cut points are "
                f"{listed or 'none'}"
            )
        reason = _why_not(graph, name)
        if reason is not None:
            raise UsageError(f"{name!r} is not a cut: {reason}")
    chosen = set(names)
    return [_cut_point(graph, name) for name in candidates if name in chosen]


def extract(
    model: Path, cut: CutPoint, out_dir: Path, input_shapes: InputShapes | None = None
) -> SplitPair:
    """The head (inputs → cut) and tail (cut → outputs) as two ONNX files in `out_dir`,
    reused when this model, tensor and input shapes were extracted there before."""
    artifact = _onnx_artifact(model)
    shapes = concrete_shapes(artifact, input_shapes or {})
    key_text = json.dumps([artifact.sha256, cut.tensor, sorted(shapes.items()), EXTRACT_VERSION])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", cut.tensor).strip("_.")[:60] or "cut"
    head = out_dir / f"{model.stem}.{slug}.{key}.head.onnx"
    tail = out_dir / f"{model.stem}.{slug}.{key}.tail.onnx"
    if head.is_file() and tail.is_file():
        LOG.debug("split at %s: reusing %s and %s", cut.tensor, head.name, tail.name)
        return SplitPair(head, tail, cut)
    graph = _analyse(model, input_shapes)
    if cut.tensor not in graph.types and cut.tensor not in graph.producer:
        raise UsageError(f"{graph.name} has no tensor {cut.tensor!r} to cut at")
    reason = _why_not(graph, cut.tensor)
    if reason is not None:
        raise UsageError(f"{cut.tensor!r} is not a cut: {reason}")
    head_proto = _extract_part(graph, graph.inputs, [cut.tensor], "head")
    tail_proto = _extract_part(graph, [cut.tensor], graph.outputs, "tail")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(tail, tail_proto.SerializeToString())
    write_bytes_atomic(head, head_proto.SerializeToString())
    return SplitPair(head, tail, _cut_point(graph, cut.tensor))


def parity(
    model: Path, pair: SplitPair, inputs: Mapping[str, np.ndarray], tolerance: float = 1e-4
) -> Parity:
    """Run the whole model and head → tail in onnxruntime on `inputs`: the largest
    absolute difference over all outputs, and top-1 agreement for a classifier. `ok`
    when the difference is within `tolerance` and the top-1 (if any) agrees."""
    import numpy as np

    full = _runner(model)
    expected = full.outputs(_feeds(full, inputs, model))
    head = _runner(pair.head)
    crossing = head.outputs(_feeds(head, inputs, pair.head))
    got = _runner(pair.tail).outputs(crossing[:1])
    if len(got) != len(expected):
        raise ModelError(
            f"{pair.tail.name} has {len(got)} outputs, {model.name} has {len(expected)}"
        )
    worst = 0.0
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        if mine.shape != theirs.shape:
            raise ModelError(
                f"{pair.tail.name}: output {index} has shape {mine.shape}, "
                f"{model.name} gives {theirs.shape}"
            )
        a, b = mine.astype(np.float64), theirs.astype(np.float64)
        diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        if diff.size:
            worst = max(worst, float(np.max(diff)))  # NaN (one side only) stays NaN: not ok
    top1: bool | None = None
    first, reference = got[0], expected[0]
    if reference.ndim == 2 and reference.shape[-1] > 1:
        top1 = bool(np.array_equal(first.argmax(axis=-1), reference.argmax(axis=-1)))
    ok = bool(worst <= tolerance) and top1 is not False
    return Parity(max_abs_diff=worst, top1_agree=top1, ok=ok, tolerance=tolerance)


def random_inputs(
    model: Path, input_shapes: InputShapes | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """The inputs the device runner would generate for `model` with this seed (floats
    uniform in [-1, 1), integer and bool inputs zeros), at the concrete input shapes."""
    artifact = _onnx_artifact(model)
    shapes = concrete_shapes(artifact, input_shapes or {})
    runner_model = device_runner.Model()
    runner_model.inputs = declared_inputs(artifact) or []
    given = {name: list(dims) for name, dims in shapes.items()}
    feeds, _described = device_runner.make_inputs(runner_model, None, seed, given)
    return dict(feeds)


# --- analysis ----------------------------------------------------------------------------


def _onnx_artifact(model: Path) -> Artifact:
    artifact = Artifact.from_path(model)
    if artifact.format != "onnx":
        raise ModelError(
            f"{model.name}: split points are found in ONNX graphs; this is {artifact.format}",
            hint="Export it with --format onnx.",
        )
    return artifact


def _analyse(model: Path, input_shapes: InputShapes | None) -> _Graph:
    import onnx

    artifact = _onnx_artifact(model)
    shapes = concrete_shapes(artifact, input_shapes or {})
    try:
        proto = onnx.load(str(model))
    except Exception as exc:  # protobuf's DecodeError, a missing external data file, ...
        raise ModelError(f"{model.name}: not a readable ONNX model ({_last_line(exc)})") from exc
    initializers = {t.name for t in proto.graph.initializer}
    initializers |= {t.values.name for t in proto.graph.sparse_initializer}
    for value in proto.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim  # as many as given: resolve_shapes checked
            for dim, size in zip(dims, shapes[value.name], strict=True):
                dim.Clear()
                dim.dim_value = size
    try:
        proto = _infer(proto)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors alike
        raise ModelError(f"{model.name}: shape inference failed ({_last_line(exc)})") from exc
    graph = proto.graph
    inputs = [v.name for v in graph.input if v.name not in initializers]
    nodes = list(graph.node)
    reads = [_reads(node) for node in nodes]
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    dynamic = set(inputs)
    constant = set(initializers)
    ancestors: list[int] = []
    for index, node in enumerate(nodes):
        mask = 0
        for name in reads[index]:
            source = producer.get(name)
            if source is not None and source >= index:
                raise ModelError(
                    f"{model.name}: node {node.name or index} reads {name!r} before it is "
                    "computed (the graph is not in topological order)"
                )
            if name in dynamic:
                mask |= (1 << index) | (ancestors[source] if source is not None else 0)
        ancestors.append(mask)
        outputs = [name for name in node.output if name]
        (dynamic if mask else constant).update(outputs)
    live: set[int] = set()
    stack = [name for name in (v.name for v in graph.output)]
    while stack:
        source = producer.get(stack.pop())
        if source is not None and source not in live:
            live.add(source)
            stack.extend(reads[source])
    types: dict[str, ValueInfoProto] = {}
    for value in [*graph.value_info, *graph.input, *graph.output]:
        types[value.name] = value
    return _Graph(
        name=model.name,
        proto=proto,
        inputs=inputs,
        outputs=[v.name for v in graph.output],
        nodes=nodes,
        reads=reads,
        producer=producer,
        constant=constant,
        live=live,
        ancestors=ancestors,
        types=types,
    )


FOLD_LIMIT = 4096
"""Largest constant (in elements) folded to help shape inference: shape arithmetic is a
handful of int64s; weights are not worth evaluating for it."""


def _infer(proto: ModelProto) -> ModelProto:
    """`proto` with every tensor's shape onnx can infer, helped by folding constants.

    onnx's data propagation stops at ops such as Mod, which torch's export puts in the
    shape arithmetic before a Reshape (cbnet's autoencoder): every shape after it would be
    unknown. With concrete inputs that arithmetic is constant, so it is evaluated on a copy
    (Shape of a known shape, ops on constants), shapes are inferred again, and the shapes
    found are added to the model, whose nodes stay as they were."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    work = onnx.ModelProto()
    work.CopyFrom(inferred)
    for _round in range(8):
        if not _fold(work):
            break
        work = onnx.shape_inference.infer_shapes(work, data_prop=True)
    found = {value.name: value for value in work.graph.value_info}
    known = {value.name for value in inferred.graph.value_info if _known(value)}
    known |= {value.name for value in [*inferred.graph.input, *inferred.graph.output]}
    for name, value in found.items():
        if name not in known and _known(value):
            inferred.graph.value_info.append(value)
    kept = {}
    for value in inferred.graph.value_info:  # the appended entry wins over an unknown one
        kept[value.name] = value
    del inferred.graph.value_info[:]
    inferred.graph.value_info.extend(kept.values())
    return inferred


def _fold(model: ModelProto) -> int:
    """Replace, in place, nodes whose outputs are small constants by Constant nodes;
    how many were replaced."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    shapes = {v.name: v for v in [*graph.value_info, *graph.input, *graph.output]}
    values: dict[str, Any] = {
        t.name: numpy_helper.to_array(t)
        for t in graph.initializer
        if math.prod(t.dims) <= FOLD_LIMIT
    }
    opsets = {o.domain: o.version for o in model.opset_import}
    folded = 0
    nodes: list[NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        outputs: list[Any] | None = None
        if node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
            shape = _shape_of(shapes.get(node.input[0]))
            if shape is not None:
                attrs = {a.name: a.i for a in node.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", len(shape))
                outputs = [np.array(shape[start:end], dtype=np.int64)]
        elif (
            node.domain in ("", "ai.onnx")
            and not _subgraphs(node)
            and all(name in values for name in node.input if name)
        ):
            feeds = {name: values[name] for name in node.input if name}
            try:
                evaluator = ReferenceEvaluator(node, opsets=opsets)
                outputs = list(evaluator.run(None, feeds))
            except Exception:  # an op the reference cannot run: leave it to inference
                outputs = None
        if outputs is None or any(np.asarray(o).size > FOLD_LIMIT for o in outputs):
            continue
        for name, value in zip(node.output, outputs, strict=False):
            values[name] = np.asarray(value)
        if node.op_type == "Constant":
            continue
        nodes[-1:] = [
            helper.make_node(
                "Constant", [], [name], value=numpy_helper.from_array(values[name], name)
            )
            for name in node.output
            if name
        ]
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(nodes)
    return folded


def _shape_of(value: ValueInfoProto | None) -> list[int] | None:
    if value is None or not _known(value):
        return None
    return [int(dim.dim_value) for dim in value.type.tensor_type.shape.dim]


def _known(value: ValueInfoProto) -> bool:
    """Its type is a tensor with an element type and every dim a number."""
    if not value.type.HasField("tensor_type"):
        return False
    tensor_type = value.type.tensor_type
    return bool(
        tensor_type.elem_type
        and tensor_type.HasField("shape")
        and all(dim.HasField("dim_value") for dim in tensor_type.shape.dim)
    )


def _reads(node: NodeProto) -> list[str]:
    """A node's inputs and the outer-scope tensors its subgraphs (If/Loop/Scan) read."""
    names = [name for name in node.input if name]
    for sub in _subgraphs(node):
        names.extend(sorted(_outer_names(sub) - set(names)))
    return names


def _subgraphs(node: NodeProto) -> list[GraphProto]:
    found: list[GraphProto] = []
    for attribute in node.attribute:
        if attribute.HasField("g"):
            found.append(attribute.g)
        found.extend(attribute.graphs)
    return found


def _outer_names(graph: GraphProto) -> set[str]:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {name for node in graph.node for name in node.output}
    used: set[str] = set()
    for node in graph.node:
        used.update(_reads(node))
    used.update(v.name for v in graph.output)
    return used - defined


def _tensors(graph: _Graph) -> list[str]:
    """Every node output, in graph order."""
    return [name for node in graph.nodes for name in node.output if name]


def _crossings(graph: _Graph, tensor: str) -> list[str]:
    """The values, besides `tensor`, that the tail would need from the head if the head
    were everything `tensor` depends on."""
    head = graph.ancestors[graph.producer[tensor]]
    crossing: dict[str, None] = {}

    def from_head(name: str) -> bool:
        if name in graph.constant:
            return False
        source = graph.producer.get(name)
        return name in graph.inputs or (source is not None and bool(head >> source & 1))

    for index in sorted(graph.live):
        if head >> index & 1:
            continue
        for name in graph.reads[index]:
            if from_head(name):
                crossing[name] = None
    for name in graph.outputs:
        if from_head(name):
            crossing[name] = None
    crossing.pop(tensor, None)
    return list(crossing)


def _why_not(graph: _Graph, tensor: str) -> str | None:
    """Why `tensor` is not a cut, or None when it is one."""
    if tensor in graph.inputs:
        return "it is an input of the model"
    if tensor in graph.outputs:
        return "it is an output of the model"
    if tensor in graph.constant or tensor not in graph.producer:
        return "it is a constant, copied to whichever side needs it"
    if graph.producer[tensor] not in graph.live:
        return "no output of the model depends on it"
    others = _crossings(graph, tensor)
    if others:
        outputs = [name for name in others if name in graph.outputs]
        needed = [name for name in others if name not in graph.outputs]
        reasons = []
        if needed:
            reasons.append(f"the tail also needs {_names(needed)}")
        if outputs:
            reasons.append(f"the model's output {_names(outputs)} is computed before it")
        return "; ".join(reasons)
    if _concrete(graph, tensor) is None:
        return "its shape is unknown after shape inference (give --input-shape?)"
    return None


def _names(names: list[str], most: int = 3) -> str:
    text = ", ".join(repr(name) for name in names[:most])
    return text + (f" and {len(names) - most} more" if len(names) > most else "")


def _concrete(graph: _Graph, tensor: str) -> tuple[tuple[int, ...], str] | None:
    """The tensor's shape and numpy dtype name, when both are known."""
    from onnx import helper

    value = graph.types.get(tensor)
    if value is None or not _known(value):
        return None
    tensor_type = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    return tuple(int(dim.dim_value) for dim in tensor_type.shape.dim), str(dtype)


def _cut_point(graph: _Graph, tensor: str) -> CutPoint:
    concrete = _concrete(graph, tensor)
    if concrete is None:  # _why_not said it is a cut, so its shape is known
        raise ModelError(f"{graph.name}: {tensor!r} has no known shape")
    shape, dtype = concrete
    position = graph.producer[tensor]
    node = graph.nodes[position]
    return CutPoint(
        tensor=tensor,
        shape=shape,
        dtype=dtype,
        position=position,
        after=f"{node.op_type} {node.name or f'#{position}'}",
    )


# --- extraction --------------------------------------------------------------------------


def _extract_part(graph: _Graph, inputs: list[str], outputs: list[str], label: str) -> ModelProto:
    """onnx's Extractor, checked; our own copy of the graph where that fails."""
    import onnx
    from onnx.utils import Extractor

    try:
        part = Extractor(graph.proto).extract_model(inputs, outputs)
        onnx.checker.check_model(part)
        return part
    except Exception as exc:  # ValueError, ValidationError, KeyError: all mean "do it ourselves"
        LOG.debug("onnx's Extractor failed on the %s (%s): copying nodes", label, exc)
    part = _copy_part(graph, inputs, outputs)
    try:
        onnx.checker.check_model(part)
    except onnx.checker.ValidationError as exc:
        raise ModelError(
            f"{graph.name}: the {label} up to {outputs[0]!r} is not a valid model "
            f"({_last_line(exc)})"
        ) from exc
    return part


def _copy_part(graph: _Graph, inputs: list[str], outputs: list[str]) -> ModelProto:
    """The nodes between `inputs` and `outputs` (subgraph reads included), with the
    initializers, value_info, local functions and opsets they use."""
    from onnx import helper

    stop = set(inputs)
    keep: set[int] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        source = graph.producer.get(name)
        if name in stop or source is None or source in keep:
            continue
        keep.add(source)
        stack.extend(graph.reads[source])
    used = set(outputs) | {name for index in keep for name in graph.reads[index]}
    used -= stop
    internal = {name for index in keep for name in graph.nodes[index].output} - set(outputs)
    source_graph = graph.proto.graph
    part_graph = helper.make_graph(
        [graph.nodes[index] for index in sorted(keep)],
        f"{source_graph.name or 'model'} ({', '.join(inputs)} to {', '.join(outputs)})",
        [graph.types[name] for name in inputs],
        [graph.types[name] for name in outputs],
        initializer=[t for t in source_graph.initializer if t.name in used],
        value_info=[v for v in source_graph.value_info if v.name in internal],
        sparse_initializer=[t for t in source_graph.sparse_initializer if t.values.name in used],
    )
    functions = {(f.name, f.domain): f for f in graph.proto.functions}
    referred: list[Any] = []
    queue = [graph.nodes[index] for index in sorted(keep)]
    while queue:
        node = queue.pop(0)
        function = functions.pop((node.op_type, node.domain), None)
        if function is not None:
            referred.append(function)
            queue.extend(function.node)
    part = helper.make_model(
        part_graph,
        opset_imports=list(graph.proto.opset_import),
        functions=referred,
        producer_name="edgetool.split",
    )
    part.ir_version = graph.proto.ir_version
    return part


# --- running -----------------------------------------------------------------------------


def _runner(path: Path) -> ArtifactRunner:
    from edgetool.export.verify import ArtifactRunner

    artifact = _onnx_artifact(path)
    try:
        return ArtifactRunner(artifact)
    except Exception as exc:  # onnxruntime's Fail/InvalidGraph/NotImplemented
        raise ModelError(f"{path.name}: onnxruntime cannot load it ({_last_line(exc)})") from exc


def _feeds(runner: ArtifactRunner, inputs: Mapping[str, np.ndarray], path: Path) -> list[Any]:
    missing = [name for name in runner.input_names if name not in inputs]
    if missing:
        raise ModelError(f"{path.name}: no value given for input {_names(missing)}")
    return [inputs[name] for name in runner.input_names]


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def identity_pair(model: Path, out_dir: Path, input_shapes: InputShapes | None = None) -> SplitPair:
    """The server-only baseline as a pair: a head that passes the model's one input
    through, and the whole model as the tail (for the codecs' cost on the raw input)."""
    import onnx
    from onnx import helper

    artifact = _onnx_artifact(model)
    shapes = concrete_shapes(artifact, input_shapes or {})
    declared = declared_inputs(artifact) or []
    if len(declared) != 1:
        raise UsageError(
            f"{model.name} has {len(declared)} inputs; the server-only baseline sends one "
            "(use --no-baselines)"
        )
    name = declared[0]["name"]
    shape = tuple(shapes[name])
    proto = onnx.load(str(model), load_external_data=False)
    (value,) = [i for i in proto.graph.input if i.name == name]
    elem = value.type.tensor_type.elem_type
    head_path = out_dir / f"{model.stem}.{artifact.sha256[:12]}.identity.head.onnx"
    if not head_path.is_file():
        graph = helper.make_graph(
            [helper.make_node("Identity", [name], [f"{name}_sent"])],
            "identity_head",
            [helper.make_tensor_value_info(name, elem, list(shape))],
            [helper.make_tensor_value_info(f"{name}_sent", elem, list(shape))],
        )
        head = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        head.ir_version = min(proto.ir_version or 8, 8)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(head_path, head.SerializeToString())
    dtype = str(helper.tensor_dtype_to_np_dtype(elem))
    cut = CutPoint(name, shape, dtype, -1, "(the model's input)")
    return SplitPair(head_path, model, cut)
