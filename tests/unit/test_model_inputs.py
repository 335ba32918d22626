"""Models we did not write, on the `local` target: symbolic input dims, integer inputs,
`--input` files checked against the model, and numeric options checked up front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool.runner import RUNNER_PATH
from tests.conftest import assert_one_line_error
from tests.onnx_models import EMBEDDING_ROWS, batch_conv, detector, embedding, gather

QUICK = ("-n", "5", "-r", "1", "--warmup", "1", "--warmup-seconds", "0")


def test_symbolic_dims_without_a_value_are_an_error_that_shows_the_flag(
    cli: Any, tmp_path: Path
) -> None:
    model = detector(tmp_path / "det.onnx")
    result = cli("deploy", "-m", str(model), *QUICK)
    assert_one_line_error(result, 3, "'x'", "N, H, W", "[N, 3, H, W]", "--input-shape x=1x3xHxW")
    assert not (tmp_path / "results").exists()  # refused before anything ran


def test_input_shape_is_what_the_device_runs_and_what_the_run_records(
    cli: Any, tmp_path: Path
) -> None:
    model = detector(tmp_path / "det.onnx")
    result = cli(
        "deploy", "-m", str(model), *QUICK, "--input-shape", "x=1x3x32x48", "--save-outputs",
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = result.json()
    manifest = data["manifest"]
    assert manifest["inputs"] == [
        {"name": "x", "shape": [1, 3, 32, 48], "dtype": "float32", "source": "random"}
    ]
    assert manifest["settings"]["input_shapes"] == {"x": [1, 3, 32, 48]}
    outputs = np.load(Path(data["run_dir"]) / "outputs.npz")
    assert outputs["y"].shape == (1, 4, 32, 48)  # the runner fed 32x48, not 1x1
    shown = cli("results", "show", "latest")
    assert shown.code == 0, shown.stderr
    assert "x  float32 1x3x32x48  random" in shown.stdout


def test_input_shape_without_a_name_is_the_only_input(cli: Any, tmp_path: Path) -> None:
    model = detector(tmp_path / "det.onnx")
    result = cli("deploy", "-m", str(model), *QUICK, "--input-shape", "2x3x16x8", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["manifest"]["inputs"][0]["shape"] == [2, 3, 16, 8]


@pytest.mark.parametrize(
    ("shape", "needles"),
    [
        ("x=1x3x32", ["'x'", "[N, 3, H, W]", "[1, 3, 32]"]),  # rank
        ("x=1x4x32x32", ["'x'", "[N, 3, H, W]", "[1, 4, 32, 32]"]),  # a fixed dim
        ("image=1x3x32x32", ["'image'", "not an input", "inputs: x"]),
    ],
)
def test_input_shape_is_checked_against_the_model_before_deploying(
    cli: Any, tmp_path: Path, shape: str, needles: list[str]
) -> None:
    model = detector(tmp_path / "det.onnx")
    result = cli("deploy", "-m", str(model), *QUICK, "--input-shape", shape)
    assert_one_line_error(result, 3, *needles)


def test_a_target_sets_input_shapes_per_model_and_the_flag_wins(cli: Any, tmp_path: Path) -> None:
    model = detector(tmp_path / "det-v4.onnx")
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "lab.toml").write_text(
        'kind = "linux"\n[transport]\ntype = "local"\n'
        '[input_shapes]\n"det-*" = { x = "1x3x24x40" }\n"other" = "1x3x8x8"\n'
    )
    args = ("--targets-dir", str(targets), "deploy", "-t", "lab", "-m", str(model), *QUICK)
    from_toml = cli(*args, "--json")
    assert from_toml.code == 0, from_toml.stderr
    assert from_toml.json()["manifest"]["inputs"][0]["shape"] == [1, 3, 24, 40]
    flag = cli(*args, "--input-shape", "1x3x16x16", "--json")
    assert flag.code == 0, flag.stderr
    assert flag.json()["manifest"]["inputs"][0]["shape"] == [1, 3, 16, 16]


def test_a_bad_shape_in_a_target_file_is_a_config_error(cli: Any, tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "lab.toml").write_text(
        'kind = "linux"\n[transport]\ntype = "local"\n[input_shapes]\n"det*" = { x = "1x3xH" }\n'
    )
    result = cli("--targets-dir", str(targets), "deploy", "-t", "lab", "-m", "tiny-mlp")
    assert_one_line_error(result, 5, "lab.toml", "input_shapes.det*.x", "'1x3xH'")


def test_an_open_batch_dim_is_one_said_and_recorded(cli: Any, tmp_path: Path) -> None:
    model = batch_conv(tmp_path / "batch.onnx")
    result = cli("deploy", "-m", str(model), *QUICK)
    assert result.code == 0, result.stderr
    assert "input 'x': N (batch) set to 1" in result.stderr
    (fed,) = cli("results", "show", "latest", "--json").json()["manifest"]["inputs"]
    assert fed["shape"] == [1, 3, 8, 8] and fed["defaulted"] == ["N"]
    shown = cli("results", "show", "latest")
    assert "x  float32 1x3x8x8  random (N = 1 by default)" in shown.stdout


def test_integer_inputs_are_zeros_by_default(cli: Any, tmp_path: Path) -> None:
    """Random ids in [-128, 127] overran a 10-row table: the first inference failed."""
    model = gather(tmp_path / "emb.onnx")
    result = cli("deploy", "-m", str(model), *QUICK, "--save-outputs", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["manifest"]["inputs"][0]["source"] == "zeros"
    outputs = np.load(Path(data["run_dir"]) / "outputs.npz")
    assert (outputs["emb"] == embedding()[0]).all()


def test_real_ids_from_input_are_used(cli: Any, tmp_path: Path) -> None:
    model = gather(tmp_path / "emb.onnx")
    ids = np.array([[3, 9], [0, 1], [2, 2]], dtype=np.int32)  # int32: every value fits int64
    np.savez(tmp_path / "ids.npz", ids=ids)
    result = cli(
        "deploy", "-m", str(model), *QUICK, "--input", str(tmp_path / "ids.npz"),
        "--save-outputs", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["manifest"]["inputs"] == [
        {"name": "ids", "shape": [3, 2], "dtype": "int64", "source": "file"}
    ]
    outputs = np.load(Path(data["run_dir"]) / "outputs.npz")
    assert (outputs["emb"] == embedding()[ids]).all()


def test_an_index_out_of_range_is_a_model_input_error_with_a_hint(cli: Any, tmp_path: Path) -> None:
    model = gather(tmp_path / "emb.onnx")
    np.savez(tmp_path / "ids.npz", ids=np.array([[EMBEDDING_ROWS + 2, 1]], dtype=np.int64))
    result = cli("deploy", "-m", str(model), *QUICK, "--input", str(tmp_path / "ids.npz"))
    assert_one_line_error(result, 3, "first inference failed", "input 'ids' is int64")


@pytest.mark.parametrize(
    ("arrays", "needles"),
    [
        ({"ids": np.array([[1.9, 2.0]])}, ["'ids'", "expects int64, got float64", "not cast"]),
        (
            {"ids": np.array([[1, 2]]), "mask": np.ones((1, 2))},
            ["arrays the model does not take", "'mask'"],
        ),
        ({"tokens": np.array([[1, 2]])}, ["'tokens'"]),
        ({"ids": np.array([[2**63 + 5, 1]], dtype=np.uint64)}, ["'ids'", "outside int64"]),
    ],
)
def test_input_files_are_checked_not_cast(
    cli: Any, tmp_path: Path, arrays: dict[str, np.ndarray], needles: list[str]
) -> None:
    model = gather(tmp_path / "emb.onnx")
    np.savez(tmp_path / "in.npz", **arrays)
    result = cli("deploy", "-m", str(model), *QUICK, "--input", str(tmp_path / "in.npz"))
    assert_one_line_error(result, 3, "in.npz", *needles)


def test_an_input_file_missing_an_input_is_an_error(cli: Any, tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz")
    model = gather(tmp_path / "emb.onnx")
    result = cli("deploy", "-m", str(model), *QUICK, "--input", str(tmp_path / "empty.npz"))
    assert_one_line_error(result, 3, "empty.npz lacks input 'ids'")


@pytest.mark.parametrize(
    "option",
    [
        ["--duration", "nan"],
        ["--duration", "inf"],
        ["--duration", "0"],
        ["--warmup-seconds", "inf"],
        ["--idle-seconds", "nan"],
        ["--seed", "-1"],
        ["--seed", "abc"],
        ["--input-shape", "1xa"],
        ["--input-shape", "x=0x3"],
        ["--input-shape", "1x3", "--input-shape", "2x3"],
    ],
)
def test_bad_numbers_are_usage_errors(cli: Any, option: list[str]) -> None:
    """Refused by the command line (exit 2), never reported as a device error."""
    result = cli("deploy", "-m", "tiny-mlp", *option)
    assert result.code == 2, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    assert option[0] in result.stderr


def test_ab_takes_input_shapes(cli: Any, tmp_path: Path) -> None:
    a = detector(tmp_path / "a.onnx")
    b = detector(tmp_path / "b.onnx")
    result = cli(
        "ab", "-m", str(a), "-m", str(b), "-n", "5", "-r", "2", "--warmup", "1",
        "--input-shape", "x=1x3x12x12", "--json",
    )  # fmt: skip
    assert result.code in (0, 10, 13), result.stderr
    for role in ("a", "b"):
        run_dir = Path(result.json()[role]["run_dir"])
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["inputs"][0]["shape"] == [1, 3, 12, 12]


def run_runner(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, str(RUNNER_PATH), "run", *args], capture_output=True, text=True
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_the_runner_itself_never_guesses_a_symbolic_dim(tmp_path: Path) -> None:
    """A host without `onnx` cannot check the model: the device refuses the same way."""
    model = detector(tmp_path / "det.onnx")
    events = run_runner("--model", str(model), "--iterations", "2")
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "input_shape"
    assert "--input-shape x=1x3xHxW" in events[-1]["message"]
    events = run_runner("--model", str(model), "--iterations", "2", "--input-shape", "1x3x9x7")
    (model_event,) = [e for e in events if e["event"] == "model"]
    assert model_event["feeds"][0]["shape"] == [1, 3, 9, 7]
    assert events[-1]["event"] == "summary"
