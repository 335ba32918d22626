"""Codec quality on the host: lenet cut by hand after its second conv block (the real cut
finder is edgetool/split/cuts.py; this test picks the tensor itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetool.split.quality import CodecQuality, codec_quality, recipe_samples

CUT = "/trunk/trunk.4/Relu_output_0"  # [1, 10, 9, 9] after conv-pool-relu x2
CODECS = ("none", "fp32", "fp16", "int8", "sgq4", "fp32+zstd", "int8+zstd", "sgq4+zstd")


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgetool.export.build import export

    root = tmp_path_factory.mktemp("lenet-split")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGETOOL_CACHE_DIR", str(root / "cache"))
        full = export("lenet", "onnx", "fp32").path
    head, tail = root / "head.onnx", root / "tail.onnx"
    onnx.utils.extract_model(str(full), str(head), ["image"], [CUT])
    onnx.utils.extract_model(str(full), str(tail), [CUT], ["logits"])
    return {"full": full, "head": head, "tail": tail}


@pytest.fixture(scope="module")
def lenet_quality(lenet: dict[str, Path]) -> dict[str, CodecQuality]:
    samples = recipe_samples("lenet", calibration=64, test=200)
    assert samples is not None
    assert samples.labels.dtype.kind in "iu" and len(samples.labels) == 200
    return codec_quality(
        lenet["full"],
        lenet["head"],
        lenet["tail"],
        CODECS,
        samples.calibration,
        samples.test,
        samples.labels,
    )


def test_fp32_split_is_the_unsplit_model(lenet_quality: dict[str, CodecQuality]) -> None:
    unsplit, fp32 = lenet_quality["none"], lenet_quality["fp32"]
    assert unsplit.bytes_per_inference == 0 and unsplit.ratio_vs_fp32 is None
    assert unsplit.top1 is not None and unsplit.top1 > 0.9  # the shipped weights' accuracy
    assert fp32.top1 == unsplit.top1
    assert fp32.top1_agreement == 1.0
    assert fp32.max_abs_diff < 1e-4
    assert fp32.bytes_per_inference == 4 * 10 * 9 * 9 and fp32.ratio_vs_fp32 == 1.0
    assert fp32.psnr_db is None  # logits are no images


def test_quantised_codecs_cost_a_few_points_at_most(
    lenet_quality: dict[str, CodecQuality],
) -> None:
    reference = lenet_quality["none"].top1
    assert reference is not None
    for codec in ("fp16", "int8", "sgq4", "int8+zstd", "sgq4+zstd"):
        quality = lenet_quality[codec]
        assert quality.top1 is not None and abs(quality.top1 - reference) <= 0.03, quality
        assert quality.top1_agreement is not None and quality.top1_agreement >= 0.95
        assert quality.max_abs_diff > 0  # lossy: the outputs do move
    assert lenet_quality["int8+zstd"].max_abs_diff == lenet_quality["int8"].max_abs_diff


def test_bytes_shrink_codec_by_codec(lenet_quality: dict[str, CodecQuality]) -> None:
    size = {name: q.bytes_per_inference for name, q in lenet_quality.items()}
    assert size["fp32"] > size["fp16"] > size["int8"] > size["sgq4"]
    assert size["fp16"] == size["fp32"] / 2 and size["int8"] == size["fp32"] / 4
    for base in ("fp32", "int8", "sgq4"):  # post-ReLU features have zeros to squeeze
        assert size[base + "+zstd"] < size[base]
    ratio = lenet_quality["sgq4"].ratio_vs_fp32
    assert ratio is not None and 6 < ratio < 8  # 4-bit codes plus side info


def test_models_without_data_have_no_samples() -> None:
    assert recipe_samples("tiny-mlp") is None  # shipped ONNX, no recipe
    assert recipe_samples("no-such-model") is None


def test_psnr_for_image_outputs_with_image_labels(tmp_path: Path) -> None:
    """A 2-conv image model cut in the middle; labels are the unsplit outputs themselves,
    so fp32 is (numerically) perfect and int8/sgq4 lose a measurable amount."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.normal(size=(4, 1, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.normal(size=(1, 4, 3, 3)) * 0.3).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["mid"]),
        helper.make_node("Conv", ["mid", "w2"], ["y"], pads=[1] * 4),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 16, 16])
    model = helper.make_model(
        helper.make_graph(nodes, "img", [x], [y], [w1, w2]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    paths = {name: tmp_path / f"{name}.onnx" for name in ("full", "head", "tail")}
    onnx.save(model, str(paths["full"]))
    onnx.utils.extract_model(str(paths["full"]), str(paths["head"]), ["x"], ["mid"])
    onnx.utils.extract_model(str(paths["full"]), str(paths["tail"]), ["mid"], ["y"])
    images = rng.uniform(0, 1, size=(12, 1, 16, 16)).astype(np.float32)
    import onnxruntime as ort

    session = ort.InferenceSession(str(paths["full"]), providers=["CPUExecutionProvider"])
    labels = np.concatenate([session.run(None, {"x": images[k : k + 1]})[0] for k in range(12)])
    labels = np.clip(labels, 0, 1)
    result = codec_quality(
        paths["full"],
        paths["head"],
        paths["tail"],
        ["fp32", "int8", "sgq4"],
        {"x": images[:6]},
        {"x": images[6:]},
        labels[6:],
    )
    assert result["fp32"].top1 is None and result["fp32"].top1_agreement is None
    psnr = {name: q.psnr_db for name, q in result.items()}
    assert psnr["fp32"] is not None and psnr["int8"] is not None and psnr["sgq4"] is not None
    assert psnr["fp32"] > psnr["int8"] > psnr["sgq4"] > 20
