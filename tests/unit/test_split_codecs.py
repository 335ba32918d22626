"""The split runner's feature codecs (error bounds that follow from each codec, payload
sizes) and its head/tail processes driven over pipes as the host drives them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetool.runner import device_runner, split_runner
from edgetool.runner.split_runner import CODECS, RunnerError, calibrate, decode, encode

RUNNER = Path(split_runner.__file__)
LOSSY = [c for c in CODECS if c != "none"]


def relu_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """What a conv layer after ReLU looks like: half zeros, each channel its own spread."""
    spread = np.geomspace(0.05, 20.0, shape[1]).reshape(1, -1, *([1] * (len(shape) - 2)))
    return np.maximum(rng.normal(size=shape) * spread + 0.1 * spread, 0).astype(np.float32)


def normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def sgq4_blocks(params: dict[str, Any], shape: tuple[int, ...]) -> list[tuple[list[int], slice]]:
    """The codec's group x stripe layout as the docstring states it, rebuilt independently."""
    rows = shape[2] if len(shape) >= 3 else 1
    stripes = [
        slice(int(part[0]), int(part[-1]) + 1)
        for part in np.array_split(np.arange(rows), min(params["stripes"], rows))
    ]
    return [(group, stripe) for group in params["groups"] for stripe in stripes]


def inner(codec: str) -> str:
    return codec.removesuffix("+zstd")


def assert_within_codec_error(
    codec: str, x: np.ndarray, y: np.ndarray, params: dict[str, Any], payload: bytes
) -> None:
    err = np.abs(y.astype(np.float64) - x)
    base = inner(codec)
    if base == "fp32":
        assert np.array_equal(x, y)
    elif base == "fp16":  # round to nearest: half an ulp, 2^-11 relative (2^-25 subnormal)
        assert np.all(err <= np.abs(x) * 2.0**-11 + 2.0**-25)
    elif base == "int8":  # inside the calibrated range: half a step
        assert err.max() <= params["scale"] / 2 * (1 + 1e-5)
    else:
        raw = payload if base == codec else _unzstd(payload)
        blocks = sgq4_blocks(params, x.shape)
        side = np.frombuffer(raw, dtype="<f2", count=2 * len(blocks)).astype(np.float64)
        view, err_view = (
            (a.reshape(a.shape[0], a.shape[1], a.shape[2], -1) for a in (x, err))
            if x.ndim >= 3  # [batch, channels, rows, rest]; below rank 3 the last axis
            else (a.reshape(-1, a.shape[-1])[:, :, None, None] for a in (x, err))
        )
        for k, (group, stripe) in enumerate(blocks):
            block = view[:, group, stripe, :]
            step = side[2 * k + 1]
            # the carried scale is the block's own range / 15 (rounded up to fp16) ...
            span = float(block.max() - block.min())
            assert span / 15 <= step * (1 + 1e-6) + 1e-7
            assert step <= span / 15 * (1 + 2.0**-9) + abs(float(block.min())) * 2.0**-9 + 1e-7
            # ... and no value is further than half of it from the original
            assert err_view[:, group, stripe, :].max() <= step / 2 * (1 + 1e-5) + 1e-7


def _unzstd(payload: bytes) -> bytes:
    import zstandard

    return bytes(zstandard.ZstdDecompressor().decompress(payload))


@pytest.mark.parametrize("make", [normal, relu_like], ids=["normal", "relu_like"])
@pytest.mark.parametrize("codec", LOSSY)
def test_round_trip_within_the_codecs_error(codec: str, make: Any) -> None:
    rng = np.random.default_rng(3)
    shape = (1, 12, 9, 7)
    calibration = make(rng, (16, *shape[1:]))
    x = np.clip(make(rng, shape), calibration.min(), calibration.max())  # inside the range
    params = json.loads(json.dumps(calibrate(codec, calibration)))  # survives a JSON file
    payload = encode(codec, x, params)
    y = decode(codec, payload, params, shape)
    assert y.shape == shape and y.dtype == np.float32
    assert_within_codec_error(codec, x, y, params, payload)
    if codec.endswith("+zstd"):  # lossless on top: exactly the inner codec's result
        assert np.array_equal(
            y, decode(inner(codec), encode(inner(codec), x, params), params, shape)
        )


def test_payload_sizes_follow_the_tensor_size() -> None:
    rng = np.random.default_rng(0)
    shape = (1, 16, 8, 8)
    x = relu_like(rng, shape)
    n = x.size
    params = {c: calibrate(c, relu_like(rng, (8, *shape[1:]))) for c in LOSSY}
    sizes = {c: len(encode(c, x, params[c])) for c in LOSSY}
    assert sizes["fp32"] == 4 * n
    assert sizes["fp16"] == 2 * n
    assert sizes["int8"] == n  # no side info: scale and zero point were calibrated
    blocks = len(params["sgq4"]["groups"]) * params["sgq4"]["stripes"]
    assert sizes["sgq4"] == 4 * blocks + n // 2
    assert 4 * blocks <= n / 8  # side info stays small next to the codes
    for base in ("fp32", "fp16", "int8", "sgq4"):  # half zeros compress
        assert sizes[base + "+zstd"] < sizes[base]
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["sgq4"]


@pytest.mark.parametrize("shape", [(1, 3, 5, 3), (1, 7), (9,), (2, 5, 3)])
@pytest.mark.parametrize("codec", ["sgq4", "sgq4+zstd", "int8", "fp16"])
def test_odd_element_counts_and_low_ranks(codec: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    params = calibrate(codec, x[None] if len(shape) == 1 else x)
    payload = encode(codec, x, params)
    y = decode(codec, payload, params, shape)
    assert y.shape == shape
    if codec == "sgq4":  # an odd count pads one nibble: ceil(n / 2) code bytes
        blocks = len(params["groups"]) * min(params["stripes"], shape[2] if len(shape) > 2 else 1)
        assert len(payload) == 4 * blocks + (x.size + 1) // 2
        assert_within_codec_error(codec, x, y, params, payload)
    assert np.abs(y - x).max() <= (x.max() - x.min()) / 15 / 2 * 1.01


def test_constant_and_zero_tensors_decode_exactly() -> None:
    for value in (0.0, 1.5):
        x = np.full((1, 4, 6, 6), value, dtype=np.float32)
        params = calibrate("sgq4", x)
        assert np.array_equal(decode("sgq4", encode("sgq4", x, params), params, x.shape), x)


def test_sgq4_groups_channels_of_similar_range() -> None:
    spread = np.array([1.0, 100.0, 1.1, 90.0, 0.9, 110.0, 1.2, 95.0], dtype=np.float32)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 8)).astype(np.float32)
    x *= spread.reshape(1, -1, 1, 1)
    groups = split_runner.Sgq4Codec().calibrate(x)["groups"]
    small, large = {0, 2, 4, 6}, {1, 3, 5, 7}
    assert all(set(g) <= small or set(g) <= large for g in groups)


def test_bad_payloads_and_names_are_codec_errors() -> None:
    x = np.ones((1, 2, 3, 3), dtype=np.float32)
    with pytest.raises(RunnerError, match="unknown codec 'bf16'") as err:
        encode("bf16", x, {})
    assert err.value.kind == "codec"
    with pytest.raises(RunnerError, match="needs 72") as err:
        decode("fp32", b"\0" * 10, {}, x.shape)
    assert err.value.kind == "codec"
    with pytest.raises(RunnerError, match="calibration") as err:
        encode("int8", x, {})
    with pytest.raises(RunnerError, match="not a zstd frame"):
        decode("fp16+zstd", b"garbage", {}, x.shape)
    with pytest.raises(RunnerError, match="for 8 channels, the tensor has 2"):
        decode("sgq4", b"", calibrate("sgq4", np.ones((1, 8, 3, 3))), x.shape)


def test_zstd_missing_is_codec_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # `import zstandard` fails
    with pytest.raises(RunnerError, match=r"pip install zstandard") as err:
        encode("int8+zstd", np.zeros(4), {"scale": 1.0, "zero_point": 0})
    assert err.value.kind == "codec_unavailable"
    assert encode("int8", np.zeros(4), {"scale": 1.0, "zero_point": 0}) == bytes(4)


# --- the processes -------------------------------------------------------------------


def conv_chain(tmp_path: Path) -> dict[str, Path]:
    """x[1,3,8,8] -> conv4 -> relu -> conv6 -> relu (`mid`, the cut) -> conv5 -> global
    average pool -> flatten -> y[1,5]; the full model and its head and tail by hand."""
    rng = np.random.default_rng(7)

    def conv(name: str, cin: int, cout: int, src: str, dst: str) -> tuple[Any, list[Any]]:
        weight = numpy_helper.from_array(
            (rng.normal(size=(cout, cin, 3, 3)) * 0.4).astype(np.float32), name + "_w"
        )
        bias = numpy_helper.from_array(rng.normal(size=cout).astype(np.float32), name + "_b")
        node = helper.make_node("Conv", [src, weight.name, bias.name], [dst], pads=[1] * 4)
        return node, [weight, bias]

    c1, i1 = conv("c1", 3, 4, "x", "a")
    c2, i2 = conv("c2", 4, 6, "r1", "b")
    c3, i3 = conv("c3", 6, 5, "mid", "c")
    head_nodes = [c1, helper.make_node("Relu", ["a"], ["r1"]), c2]
    head_nodes.append(helper.make_node("Relu", ["b"], ["mid"]))
    tail_nodes = [c3, helper.make_node("GlobalAveragePool", ["c"], ["g"])]
    tail_nodes.append(helper.make_node("Flatten", ["g"], ["y"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    mid = helper.make_tensor_value_info("mid", TensorProto.FLOAT, [1, 6, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])
    paths = {}
    for name, nodes, inputs, outputs, inits in (
        ("full", head_nodes + tail_nodes, [x], [y], i1 + i2 + i3),
        ("head", head_nodes, [x], [mid], i1 + i2),
        ("tail", tail_nodes, [mid], [y], i3),
    ):
        graph = helper.make_graph(nodes, name, inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(model, str(paths[name]))
    return paths


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, Path]:
    return conv_chain(tmp_path)


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return list(
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    )


class Proc:
    """A runner process with pipes: send a line, read one JSON line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read() if self.proc.stderr else ""
        message: dict[str, Any] = json.loads(line)
        return message

    def send(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


def start(procs: list[Proc], *args: str, env: dict[str, str] | None = None) -> Proc:
    proc = Proc(*args, env=env)
    procs.append(proc)
    return proc


def device_runner_inputs(model_path: Path, seed: int) -> dict[str, np.ndarray]:
    model = device_runner.OnnxModel(str(model_path), threads=1)
    feeds, _ = device_runner.make_inputs(model, None, seed)
    return feeds


@pytest.mark.parametrize(
    ("codec", "atol"), [("fp32", 1e-5), ("int8", 0.5), ("sgq4+zstd", 1.5), ("fp16+zstd", 0.02)]
)
def test_head_and_tail_processes_match_the_unsplit_model(
    chain: dict[str, Path], procs: list[Proc], tmp_path: Path, codec: str, atol: float
) -> None:
    rng = np.random.default_rng(0)
    calib = np.concatenate(
        [run_onnx(chain["head"], {"x": normal(rng, (1, 3, 8, 8))})[0] for _ in range(16)]
    )
    params = tmp_path / "params.json"
    params.write_text(json.dumps(calibrate(codec, calib)))
    head = start(procs, "head", "--model", str(chain["head"]), "--codec", codec,
                 "--params", str(params), "--seed", "5", "--threads", "1")  # fmt: skip
    ready = head.read()
    assert ready["event"] == "ready"
    assert ready["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert ready["feature"] == {"name": "mid", "shape": [1, 6, 8, 8], "dtype": "float32"}
    assert set(ready["versions"]) == {"python", "numpy", "onnxruntime", "zstandard"}
    tail = start(procs, "tail", "--model", str(chain["tail"]), "--codec", codec,
                 "--params", str(params), "--shape", "1x6x8x8", "--dtype", "float32")  # fmt: skip
    assert tail.read()["feature"]["name"] == "mid"
    # the head's inputs are the ones device_runner.py draws for the same seed
    expected = run_onnx(chain["full"], device_runner_inputs(chain["full"], 5))[0]
    for i in range(3):
        feature = head.send("go")
        assert (feature["event"], feature["i"]) == ("feature", i)
        assert feature["head_ns"] > 0 and feature["encode_ns"] > 0
        payload = base64.b64decode(feature["data"])
        assert feature["bytes"] == len(payload)
        if codec == "fp32":
            assert len(payload) == 4 * 6 * 8 * 8
        result = tail.send(json.dumps({"i": i, "data": feature["data"]}))
        assert (result["event"], result["i"]) == ("result", i)
        assert result["decode_ns"] > 0 and result["tail_ns"] > 0
        reply = np.frombuffer(base64.b64decode(result["reply"]), dtype="<f4")
        assert result["reply_bytes"] == reply.nbytes == 4 * 5
        np.testing.assert_allclose(reply.reshape(1, 5), expected, atol=atol)
        assert result["top1"] == int(np.argmax(reply))
    assert head.proc.stdin is not None
    head.proc.stdin.write("quit\n")  # no answer: the process ends
    head.proc.stdin.flush()
    assert head.proc.wait(timeout=60) == 0
    assert head.close() == 0
    assert tail.close() == 0


def test_identity_head_sends_the_input(chain: dict[str, Path], procs: list[Proc]) -> None:
    """Server-only baseline: the head forwards the model input; the tail is the full model."""
    head = start(procs, "head", "--model", "-", "--codec", "fp16", "--input-shape", "x=1x3x8x8")
    assert head.read()["feature"] == {"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}
    tail = start(procs, "tail", "--model", str(chain["full"]), "--codec", "fp16",
                 "--shape", "1x3x8x8")  # fmt: skip
    tail.read()
    feature = head.send("go")
    assert feature["bytes"] == 2 * 3 * 8 * 8
    sent = np.frombuffer(base64.b64decode(feature["data"]), dtype="<f2").reshape(1, 3, 8, 8)
    inputs = device_runner_inputs(chain["full"], 0)["x"]
    np.testing.assert_allclose(sent, inputs, rtol=2.0**-11)
    result = tail.send(json.dumps({"i": 0, "data": feature["data"]}))
    expected = run_onnx(chain["full"], {"x": sent.astype(np.float32)})[0]
    assert result["top1"] == int(np.argmax(expected))


def test_codec_none_runs_the_whole_model_and_sends_nothing(
    chain: dict[str, Path], procs: list[Proc]
) -> None:
    head = start(procs, "head", "--model", str(chain["full"]), "--codec", "none")
    assert head.read()["feature"]["shape"] == [1, 5]
    feature = head.send("go")
    assert feature["bytes"] == 0 and "data" not in feature
    assert head.close() == 0


def test_head_cycles_through_the_samples_of_an_npz(
    chain: dict[str, Path], procs: list[Proc], tmp_path: Path
) -> None:
    samples = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=samples)
    head = start(procs, "head", "--model", str(chain["head"]), "--codec", "fp32",
                 "--input", str(tmp_path / "in.npz"))  # fmt: skip
    assert head.read()["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    got = [np.frombuffer(base64.b64decode(head.send("go")["data"]), "<f4") for _ in range(3)]
    for i, features in enumerate(got):
        want = run_onnx(chain["head"], {"x": samples[i % 2 : i % 2 + 1]})[0].ravel()
        np.testing.assert_allclose(features, want, atol=1e-5)


def error_line(proc: Proc) -> dict[str, Any]:
    line = proc.read()
    assert line["event"] == "error", line
    assert proc.close() == 2
    return line


def test_corrupt_model_is_one_error_line(tmp_path: Path, procs: list[Proc]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    head = start(procs, "head", "--model", str(bad), "--codec", "fp32")
    line = error_line(head)
    assert line["kind"] == "bad_model" and "bad.onnx" in line["message"]
    tail = start(procs, "tail", "--model", str(bad), "--codec", "fp32", "--shape", "1x4")
    assert error_line(tail)["kind"] == "bad_model"


def test_unknown_codec_is_one_error_line(chain: dict[str, Path], procs: list[Proc]) -> None:
    head = start(procs, "head", "--model", str(chain["head"]), "--codec", "jpeg")
    line = error_line(head)
    assert line["kind"] == "codec" and "jpeg" in line["message"] and "sgq4+zstd" in line["message"]


def test_missing_zstandard_is_codec_unavailable(
    chain: dict[str, Path], procs: list[Proc], tmp_path: Path
) -> None:
    """A device without python-zstandard: a module on the path that fails to import."""
    (tmp_path / "zstandard.py").write_text("raise ImportError('no zstandard here')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    head = start(procs, "head", "--model", str(chain["head"]), "--codec", "int8+zstd", env=env)
    line = error_line(head)
    assert line["kind"] == "codec_unavailable" and "pip install zstandard" in line["message"]
    plain = start(procs, "head", "--model", str(chain["head"]), "--codec", "fp16", env=env)
    assert plain.read()["event"] == "ready"  # the other codecs do not need it
    assert plain.close() == 0


def test_tail_errors_on_a_payload_of_the_wrong_size(
    chain: dict[str, Path], procs: list[Proc]
) -> None:
    tail = start(procs, "tail", "--model", str(chain["tail"]), "--codec", "fp32",
                 "--shape", "1x6x8x8")  # fmt: skip
    tail.read()
    line = tail.send(json.dumps({"i": 0, "data": base64.b64encode(b"\0" * 12).decode()}))
    assert line["event"] == "error" and line["kind"] == "codec" and "1536" in line["message"]
    assert tail.close() == 2


def test_tail_refuses_a_shape_the_model_does_not_take(
    chain: dict[str, Path], procs: list[Proc]
) -> None:
    tail = start(procs, "tail", "--model", str(chain["tail"]), "--codec", "fp32",
                 "--shape", "1x6x4x4")  # fmt: skip
    line = error_line(tail)
    assert line["kind"] == "bad_input" and "--shape" in line["message"]
