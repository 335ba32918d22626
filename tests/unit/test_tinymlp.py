"""The self-generated MLPs: runtimes agree with the numpy reference, bytes are stable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgetool.zoo import tinymlp
from edgetool.zoo.tinymlp import (
    BENCH_1MS,
    SPECS,
    TINY,
    MlpSpec,
    build_onnx,
    build_tflite,
    mlp_weights,
    reference_forward,
    write_models,
)

ort = pytest.importorskip("onnxruntime")
litert = pytest.importorskip("ai_edge_litert.interpreter")

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
N_INPUTS = 3


@pytest.fixture(scope="module", params=SPECS, ids=lambda s: s.name)
def built(request: pytest.FixtureRequest) -> tuple[MlpSpec, bytes, bytes]:
    spec: MlpSpec = request.param
    return spec, build_onnx(spec), build_tflite(spec)


def _inputs(spec: MlpSpec) -> list[np.ndarray]:
    rng = np.random.default_rng(1234 + spec.seed)
    return [rng.standard_normal((1, spec.in_features)).astype(np.float32) for _ in range(N_INPUTS)]


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    assert got.dtype == np.float32
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_specs() -> None:
    assert TINY.layers == (64, 128, 128, 10)
    assert TINY.name == "tiny-mlp"
    assert BENCH_1MS.name == "mlp-1ms"
    assert len({s.name for s in SPECS}) == len(SPECS)
    with pytest.raises(ValueError):
        MlpSpec("bad", (8,), seed=0)
    with pytest.raises(ValueError):
        MlpSpec("bad", (8, 0, 2), seed=0)


def test_weights_shapes_and_determinism() -> None:
    a, b = mlp_weights(TINY), mlp_weights(TINY)
    assert [w.shape for w, _ in a] == [(128, 64), (128, 128), (10, 128)]
    assert [bias.shape for _, bias in a] == [(128,), (128,), (10,)]
    for (wa, ba), (wb, bb) in zip(a, b, strict=True):
        assert wa.dtype == ba.dtype == np.float32
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)
    other = mlp_weights(MlpSpec("x", TINY.layers, seed=TINY.seed + 1))
    assert not np.array_equal(a[0][0], other[0][0])


def test_reference_forward_batches_and_relu() -> None:
    x = np.random.default_rng(0).standard_normal((4, TINY.in_features)).astype(np.float32)
    y = reference_forward(TINY, x)
    assert y.shape == (4, TINY.out_features) and y.dtype == np.float32
    np.testing.assert_array_equal(reference_forward(TINY, x[1]), y[1])
    # The hidden ReLUs must matter, otherwise the runtime checks would not cover them.
    h = x.astype(np.float64)
    for w, b in mlp_weights(TINY):
        h = h @ w.T.astype(np.float64) + b
    assert not np.allclose(h, y, atol=1e-3)


def test_onnx_matches_reference(built: tuple[MlpSpec, bytes, bytes]) -> None:
    spec, onnx_bytes, _ = built
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert (inp.name, list(inp.shape)) == ("input", [1, spec.in_features])
    assert inp.type == out.type == "tensor(float)"
    assert (out.name, list(out.shape)) == ("logits", [1, spec.out_features])
    for x in _inputs(spec):
        (y,) = sess.run(["logits"], {"input": x})
        _assert_close(y, reference_forward(spec, x))


@pytest.mark.parametrize("resolver", ["AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"])
def test_tflite_matches_reference(built: tuple[MlpSpec, bytes, bytes], resolver: str) -> None:
    # AUTO uses the XNNPACK delegate; the other path exercises the builtin kernels.
    spec, _, tflite_bytes = built
    interp = litert.Interpreter(
        model_content=tflite_bytes,
        num_threads=1,
        experimental_op_resolver_type=getattr(litert.OpResolverType, resolver),
    )
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    assert inp["name"] == "input" and list(inp["shape"]) == [1, spec.in_features]
    assert out["name"] == "logits" and list(out["shape"]) == [1, spec.out_features]
    assert inp["dtype"] == out["dtype"] == np.float32
    for x in _inputs(spec):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        _assert_close(interp.get_tensor(out["index"]), reference_forward(spec, x))


def test_tflite_signature(built: tuple[MlpSpec, bytes, bytes]) -> None:
    spec, _, tflite_bytes = built
    interp = litert.Interpreter(model_content=tflite_bytes)
    assert interp.get_signature_list() == {
        "serving_default": {"inputs": ["input"], "outputs": ["logits"]}
    }
    x = _inputs(spec)[0]
    y = interp.get_signature_runner("serving_default")(input=x)["logits"]
    _assert_close(y, reference_forward(spec, x))


def test_generation_is_deterministic(built: tuple[MlpSpec, bytes, bytes]) -> None:
    spec, onnx_bytes, tflite_bytes = built
    assert tflite_bytes[4:8] == b"TFL3"
    assert _sha(build_onnx(spec)) == _sha(onnx_bytes)
    assert _sha(build_tflite(spec)) == _sha(tflite_bytes)


@pytest.mark.parametrize("spec", tinymlp.SHIPPED, ids=lambda s: s.name)
def test_committed_models_match_generator(spec: MlpSpec) -> None:
    for ext, fresh in (("onnx", build_onnx(spec)), ("tflite", build_tflite(spec))):
        path = REPO_MODELS / spec.name / f"{spec.name}.{ext}"
        assert path.is_file(), f"{path} missing; run `python -m edgetool.zoo.tinymlp`"
        assert _sha(path.read_bytes()) == _sha(fresh), (
            f"{path} differs from the generator; run `python -m edgetool.zoo.tinymlp`"
        )


def test_write_models(tmp_path: Path) -> None:
    paths = write_models(TINY, tmp_path / "out")
    assert set(paths) == {"onnx", "tflite"}
    assert paths["onnx"] == tmp_path / "out" / "tiny-mlp.onnx"
    assert paths["onnx"].read_bytes() == build_onnx(TINY)
    assert paths["tflite"].read_bytes() == build_tflite(TINY)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "tiny-mlp.onnx",
        "tiny-mlp.tflite",
    ]


def test_repo_models_dir() -> None:
    assert tinymlp.repo_models_dir() == REPO_MODELS
