"""Cut points of ONNX graphs: which tensors alone separate head from tail (a chain, a
residual block, two inputs, an If body reading an outer tensor), the two halves as valid
models that compute what the whole does (the zoo's lenet, cbnet and fsrcnn-x4), the
errors a bad `--points` gets, and the cache of extracted halves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetool.errors import ModelError, UsageError
from edgetool.export import build
from edgetool.split import cuts
from tests.conftest import TINY_TFLITE

RNG = np.random.default_rng(0)


def _weight(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    output: str = "y",
) -> Path:
    graph = helper.make_graph(
        nodes, path.stem, inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _image(name: str = "x", dims: list[Any] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims or [1, 3, 8, 8])


def chain(path: Path, dims: list[Any] | None = None) -> Path:
    """x -> Conv -> a -> Relu -> b -> Conv -> c -> GlobalAveragePool -> y."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="/relu/Relu"),
        helper.make_node("Conv", ["b", "w2"], ["c"], name="/conv2/Conv"),
        helper.make_node("GlobalAveragePool", ["c"], ["y"], name="/pool"),
    ]
    return _save(
        path, nodes, [_image(dims=dims)], [_weight("w1", 4, 3, 3, 3), _weight("w2", 2, 4, 3, 3)]
    )


def residual(path: Path) -> Path:
    """x -> Conv -> h; h -> Conv -> m1 -> Relu -> m2; m2 + h -> s -> Conv -> y."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "w2"], ["m1"], name="block.conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["m1"], ["m2"], name="block.relu"),
        helper.make_node("Add", ["m2", "h"], ["s"], name="block.add"),
        helper.make_node("Conv", ["s", "w3"], ["y"], name="head"),
    ]
    weights = [_weight("w1", 4, 3, 3, 3), _weight("w2", 4, 4, 3, 3), _weight("w3", 1, 4, 1, 1)]
    return _save(path, nodes, [_image()], weights)


def two_inputs(path: Path) -> Path:
    """a -> Relu -> ra; b -> Relu -> rb; ra + rb -> s -> Tanh -> t -> MatMul W -> y."""
    nodes = [
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Add", ["ra", "rb"], ["s"], name="add"),
        helper.make_node("Tanh", ["s"], ["t"], name="tanh"),
        helper.make_node("MatMul", ["t", "W"], ["y"], name="fc"),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4]) for name in ("a", "b")]
    return _save(path, nodes, inputs, [_weight("W", 4, 3)])


def if_body_reads_outer(path: Path) -> Path:
    """x -> Relu -> a -> Neg -> b; y = If(cond) { b * 2 } else { b }: `b` reaches the If
    only from its branches, which onnx's Extractor does not follow."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["b", "two"], ["then_y"])], "then", [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)], [two],
    )  # fmt: skip
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["else_y"])], "else", [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Neg", ["a"], ["b"], name="neg"),
        helper.make_node(
            "If", ["cond"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch
        ),
    ]
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _save(
        path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [cond]
    )


def _tensors(found: list[cuts.CutPoint]) -> list[str]:
    return [cut.tensor for cut in found]


# --- which tensors are cuts --------------------------------------------------------------


def test_a_chain_cuts_after_every_node(tmp_path: Path) -> None:
    found = cuts.find_cuts(chain(tmp_path / "chain.onnx"))
    assert found == [
        cuts.CutPoint("a", (1, 4, 8, 8), "float32", 0, "Conv /conv1/Conv"),
        cuts.CutPoint("b", (1, 4, 8, 8), "float32", 1, "Relu /relu/Relu"),
        cuts.CutPoint("c", (1, 2, 6, 6), "float32", 2, "Conv /conv2/Conv"),
    ]
    assert (found[0].numel, found[0].nbytes, found[0].raw_bytes(), found[0].raw_bytes(16)) == (
        256, 1024, 1024, 512,
    )  # fmt: skip


def test_raw_bytes_rounds_up_per_tensor() -> None:
    cut = cuts.CutPoint("t", (1, 3), "float32", 0, "Relu r")
    assert (cut.raw_bytes(4), cut.raw_bytes(8), cut.raw_bytes(4.5)) == (2, 3, 2)
    assert cuts.CutPoint("t", (1, 16, 7, 7), "float32", 0, "").raw_bytes(4.5) == 441


def test_inside_a_residual_block_the_skip_crosses_too(tmp_path: Path) -> None:
    model = residual(tmp_path / "res.onnx")
    assert _tensors(cuts.find_cuts(model)) == ["h", "s"]
    with pytest.raises(UsageError, match=r"^'m1' is not a cut: the tail also needs 'h'$"):
        cuts.resolve_points(model, "m1")


def test_with_two_inputs_a_cut_comes_after_they_meet(tmp_path: Path) -> None:
    model = two_inputs(tmp_path / "two.onnx")
    assert _tensors(cuts.find_cuts(model)) == ["s", "t"]
    with pytest.raises(UsageError, match="'ra' is not a cut: the tail also needs 'b'"):
        cuts.resolve_points(model, "ra")
    inputs = cuts.random_inputs(model, seed=3)
    assert set(inputs) == {"a", "b"}
    for cut in cuts.find_cuts(model):
        result = cuts.parity(model, cuts.extract(model, cut, tmp_path / "parts"), inputs)
        assert result.ok and result.max_abs_diff == 0.0, result


def test_an_if_branch_reading_an_outer_tensor_is_followed(tmp_path: Path) -> None:
    model = if_body_reads_outer(tmp_path / "if.onnx")
    assert _tensors(cuts.find_cuts(model)) == ["a", "b"]
    # onnx's own Extractor drops `neg` from the tail (only the If's branches read `b`)...
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
    tail = onnx.utils.Extractor(proto).extract_model(["a"], ["y"])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(tail)
    # ...so the tail is copied with it, and runs
    pair = cuts.extract(model, cuts.resolve_points(model, "a")[0], tmp_path / "parts")
    assert [n.op_type for n in onnx.load(str(pair.tail)).graph.node] == ["Neg", "If"]
    inputs = cuts.random_inputs(model)
    assert cuts.parity(model, pair, inputs).ok


def test_a_symbolic_batch_is_one_and_other_dims_must_be_given(tmp_path: Path) -> None:
    batch = chain(tmp_path / "batch.onnx", ["N", 3, 8, 8])
    assert cuts.find_cuts(batch)[0].shape == (1, 4, 8, 8)
    assert cuts.find_cuts(batch, {"x": [2, 3, 8, 8]})[0].shape == (2, 4, 8, 8)
    open_dims = chain(tmp_path / "open.onnx", ["N", 3, "H", "W"])
    with pytest.raises(ModelError, match=r"--input-shape x=1x3xHxW") as caught:
        cuts.find_cuts(open_dims)
    assert caught.value.exit_code == 3
    found = cuts.find_cuts(open_dims, {"": [1, 3, 16, 12]})
    assert [cut.shape for cut in found] == [(1, 4, 16, 12), (1, 4, 16, 12), (1, 2, 14, 10)]
    pair = cuts.extract(open_dims, found[2], tmp_path / "parts", {"": [1, 3, 16, 12]})
    inputs = cuts.random_inputs(open_dims, {"x": [1, 3, 16, 12]})
    assert cuts.parity(open_dims, pair, inputs).ok


# --- the zoo's models: every candidate splits into two models that agree ------------------


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 ONNX exports (fsrcnn at 32x32: its 128x128 input makes every parity run slow)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGETOOL_CACHE_DIR", str(cache))
        return {
            "lenet": build.export("lenet", "onnx", "fp32").path,
            "cbnet": build.export("cbnet", "onnx", "fp32").path,
            "fsrcnn-x4": build.export("fsrcnn-x4", "onnx", "fp32", input_shape=(1, 1, 32, 32)).path,
        }


@pytest.mark.parametrize("name", ["lenet", "cbnet", "fsrcnn-x4"])
def test_every_zoo_candidate_splits_with_parity(
    zoo_onnx: dict[str, Path], name: str, tmp_path: Path
) -> None:
    model = zoo_onnx[name]
    found = cuts.find_cuts(model)
    inputs = cuts.random_inputs(model, seed=1)
    for cut in found:
        pair = cuts.extract(model, cut, tmp_path)
        head, tail = onnx.load(str(pair.head)), onnx.load(str(pair.tail))
        onnx.checker.check_model(head)
        onnx.checker.check_model(tail)
        assert [o.name for o in head.graph.output] == [cut.tensor]
        assert [i.name for i in tail.graph.input] == [cut.tensor]
        dims = tuple(d.dim_value for d in tail.graph.input[0].type.tensor_type.shape.dim)
        assert dims == cut.shape
        result = cuts.parity(model, pair, inputs)
        assert result.ok and result.max_abs_diff <= 1e-5, (cut.tensor, result)
        assert result.top1_agree is (None if name == "fsrcnn-x4" else True)
    assert cuts.resolve_points(model, "auto") == found


def test_zoo_cut_lists(zoo_onnx: dict[str, Path]) -> None:
    lenet = cuts.find_cuts(zoo_onnx["lenet"])
    assert len(lenet) == 11 and lenet[-1].tensor == "/trunk/trunk.9/Gemm_output_0"
    assert lenet[-1].shape == (1, 84)
    cbnet = {cut.tensor: cut for cut in cuts.find_cuts(zoo_onnx["cbnet"])}
    # the autoencoder's bottleneck, and the classifier after torch's shape arithmetic
    # (Shape, Mod, Slice, Concat -> Reshape: known only once the constants are folded)
    assert cbnet["/ae/encoder/encoder.6/Relu_output_0"].shape == (1, 64)
    assert cbnet["/ae/Reshape_2_output_0"].shape == (1, 1, 28, 28)
    assert cbnet["/classifier/exit1/exit1.5/Flatten_output_0"].shape == (1, 640)
    assert "/ae/Shape_output_0" not in cbnet and len(cbnet) == 17
    fsrcnn = cuts.find_cuts(zoo_onnx["fsrcnn-x4"])
    assert fsrcnn[-1].tensor == "/Mul_output_0" and fsrcnn[-1].shape == (1, 1, 128, 128)


# --- errors ------------------------------------------------------------------------------


def test_points_errors_name_the_tensor_and_the_reason(tmp_path: Path) -> None:
    model = chain(tmp_path / "chain.onnx")
    assert _tensors(cuts.resolve_points(model, " c, a ,a")) == ["a", "c"]
    with pytest.raises(UsageError) as caught:
        cuts.resolve_points(model, "a,nope")
    message = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in message
    assert "'nope'" in message and "'a', 'b', 'c'" in message
    for name, reason in [
        ("x", "it is an input of the model"),
        ("y", "it is an output of the model"),
        ("w1", "it is a constant"),
    ]:
        with pytest.raises(UsageError, match=f"^'{name}' is not a cut: {reason}"):
            cuts.resolve_points(model, name)
    with pytest.raises(UsageError, match="--points is empty"):
        cuts.resolve_points(model, " , ")


def test_unknown_lists_at_most_eight_candidates(zoo_onnx: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match=r"has no tensor 'conv9'.* and 3 more$"):
        cuts.resolve_points(zoo_onnx["lenet"], "conv9")


def test_a_model_without_cuts_and_a_tflite_model_are_model_errors(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    single = _save(tmp_path / "single.onnx", nodes, [_image()], [])
    assert cuts.find_cuts(single) == []
    with pytest.raises(ModelError, match=r"single\.onnx has no cut point"):
        cuts.resolve_points(single, "auto")
    with pytest.raises(ModelError, match="split points are found in ONNX graphs"):
        cuts.find_cuts(TINY_TFLITE)


# --- parity and the cache ----------------------------------------------------------------


def test_parity_sees_a_tail_that_computes_something_else(tmp_path: Path) -> None:
    model = chain(tmp_path / "chain.onnx")
    pair = cuts.extract(model, cuts.find_cuts(model)[1], tmp_path / "parts")
    inputs = cuts.random_inputs(model)
    assert cuts.parity(model, pair, inputs) == cuts.Parity(0.0, None, True, 1e-4)
    tail = onnx.load(str(pair.tail))
    weight = tail.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.5, weight.name))
    onnx.save(tail, str(pair.tail))
    result = cuts.parity(model, pair, inputs)
    assert not result.ok and result.max_abs_diff > 0.1
    with pytest.raises(ModelError, match="no value given for input 'x'"):
        cuts.parity(model, pair, {})


def test_second_extract_reuses_the_files(tmp_path: Path) -> None:
    model = chain(tmp_path / "chain.onnx", ["N", 3, 8, 8])
    cut = cuts.find_cuts(model)[0]
    first = cuts.extract(model, cut, tmp_path / "parts")
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (first.head, first.tail)]
    again = cuts.extract(model, cut, tmp_path / "parts")
    assert again == first
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (again.head, again.tail)] == stamps
    other = cuts.extract(model, cut, tmp_path / "parts", {"x": [2, 3, 8, 8]})
    assert other.head != first.head  # other shapes, other halves
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == sorted(
        p.name for p in (first.head, first.tail, other.head, other.tail)
    )  # written atomically: no temporary left
