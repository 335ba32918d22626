"""Execution providers (`--ep`) and LiteRT delegates (`--delegate`) on the `local` target:
listed by `targets check`, chosen per run (and per side in `ab`), recorded as the runtime
really used them, refused rather than replaced, and flagged by `results compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgetool.results.compare import compare_runs
from edgetool.results.store import load_run
from edgetool.runner import device_runner
from tests.conftest import TINY_ONNX, TINY_TFLITE, assert_one_line_error
from tests.unit.test_compare import make_run, repetitions

QUICK = ("-n", "20", "--warmup", "1", "--warmup-seconds", "0", "--repeat", "2")


def test_targets_check_lists_the_devices_providers_and_delegates(cli: Any) -> None:
    import onnxruntime

    data = cli("targets", "check", "local", "--json").json()
    accelerators = data["accelerators"]
    assert accelerators["onnxruntime"] == onnxruntime.get_available_providers()
    assert "CPUExecutionProvider" in accelerators["onnxruntime"]
    assert accelerators["litert"] == ["xnnpack", "none"]
    text = cli("targets", "check", "local").stdout
    assert "providers" in text and "CPUExecutionProvider" in text
    assert "delegates" in text and "xnnpack, none" in text


def test_ep_is_recorded_as_asked_and_as_the_session_ran(cli: Any) -> None:
    result = cli("deploy", "-m", str(TINY_ONNX), *QUICK, "--ep", "cpu", "--json")
    assert result.code == 0, result.stderr
    manifest = result.json()["manifest"]
    assert manifest["settings"]["ep"] == "CPUExecutionProvider"  # the short name resolved
    assert manifest["runtime"]["ep"] == "CPUExecutionProvider"
    assert manifest["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert "delegate" not in manifest["runtime"]
    assert "CPUExecutionProvider" in manifest["accelerators"]["onnxruntime"]
    shown = cli("results", "show", result.json()["run_dir"]).stdout
    assert "on CPUExecutionProvider (asked: --ep CPUExecutionProvider)" in shown


def test_without_ep_the_default_provider_is_still_recorded(cli: Any) -> None:
    result = cli("deploy", "-m", str(TINY_ONNX), *QUICK, "--json")
    assert result.code == 0, result.stderr
    manifest = result.json()["manifest"]
    assert manifest["settings"]["ep"] == ""
    assert manifest["runtime"]["ep"] == "CPUExecutionProvider"
    shown = cli("results", "show", result.json()["run_dir"]).stdout
    assert "on CPUExecutionProvider (the default)" in shown


def test_a_provider_the_device_lacks_is_refused_naming_the_available_ones(cli: Any) -> None:
    result = cli("deploy", "-m", str(TINY_ONNX), *QUICK, "--ep", "CUDAExecutionProvider")
    assert_one_line_error(
        result, 7, "'CUDAExecutionProvider' is not available", "(available: ", "CPUExecution"
    )


def test_a_name_onnxruntime_does_not_know_is_a_usage_error_before_connecting(
    cli: Any,
) -> None:
    result = cli("deploy", "-m", str(TINY_ONNX), "--ep", "cudaa")
    assert_one_line_error(result, 2, "not an onnxruntime execution provider", "targets check")
    assert "did you mean CUDAExecutionProvider" in result.stderr
    assert "connected" not in result.stderr and "push" not in result.stderr


def test_ep_and_delegate_must_match_the_models_runtime(cli: Any) -> None:
    assert_one_line_error(cli("deploy", "-m", str(TINY_TFLITE), "--ep", "cpu"), 2, "--ep", "litert")
    assert_one_line_error(
        cli("deploy", "-m", str(TINY_ONNX), "--delegate", "none"), 2, "--delegate", "onnxruntime"
    )
    assert cli("deploy", "-m", str(TINY_TFLITE), "--delegate", "nnapi").code == 2


def test_flows_that_cannot_choose_refuse_ep_and_delegate(cli: Any) -> None:
    assert_one_line_error(
        cli("deploy", "-t", "mcu-m4-qemu", "-m", "tiny-mlp", "--ep", "cpu"),
        2,
        "--ep is not supported on mcu-m4-qemu",
    )
    assert_one_line_error(
        cli("deploy", "-t", "mcu-m4-qemu", "--delegate", "none"),
        2,
        "--delegate is not supported",
    )


@pytest.mark.parametrize(("delegate", "nodes"), [("xnnpack", True), ("none", False)])
def test_delegate_on_and_off_on_a_tflite_model(cli: Any, delegate: str, nodes: bool) -> None:
    result = cli("deploy", "-m", str(TINY_TFLITE), *QUICK, "--delegate", delegate, "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["summary"]["latency"]["count"] == 40
    runtime = data["manifest"]["runtime"]
    assert data["manifest"]["settings"]["delegate"] == delegate
    assert runtime["delegate"] == delegate
    assert (runtime["delegated_nodes"] > 0) is nodes
    assert "ep" not in runtime
    shown = cli("results", "show", data["run_dir"]).stdout
    assert f"on delegate {delegate} (asked: --delegate {delegate})" in shown


def test_onnxruntime_falling_back_to_cpu_is_refused() -> None:
    """onnxruntime drops a provider that fails to start and runs on CPU with a log line:
    a session without the asked provider is refused, not recorded under its name."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(TINY_ONNX), providers=["CPUExecutionProvider"])
    with pytest.raises(device_runner.RunnerError) as caught:
        device_runner.provider_in_use(session, "CUDAExecutionProvider")
    assert caught.value.kind == "ep_unavailable"
    assert "refusing to run on a fallback" in caught.value.message
    used = device_runner.provider_in_use(session, "CPUExecutionProvider")
    assert used == {"ep": "CPUExecutionProvider", "providers": ["CPUExecutionProvider"]}


def test_xnnpack_asked_but_taking_nothing_is_refused() -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interp = litert.Interpreter(
        model_path=str(TINY_TFLITE),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    with pytest.raises(device_runner.RunnerError) as caught:
        device_runner.delegate_in_use(interp, "xnnpack")
    assert caught.value.kind == "delegate_unavailable"
    assert device_runner.delegate_in_use(interp, "") == {"delegate": "none", "delegated_nodes": 0}


def test_provider_names_match_exactly_in_any_case_or_short() -> None:
    available = ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    assert device_runner.match_provider("xnnpack", available) == "XnnpackExecutionProvider"
    assert device_runner.match_provider("CPUExecutionProvider", available) == available[1]
    assert device_runner.match_provider("cpuexecutionprovider", available) == available[1]
    assert device_runner.match_provider("cuda", available) is None
    assert device_runner.match_provider("execution", available) is None


def test_ab_one_model_with_xnnpack_on_and_off(cli: Any) -> None:
    result = cli(
        "ab", "-m", str(TINY_TFLITE), "--delegate", "xnnpack", "--delegate", "none",
        "-n", "30", "--warmup", "1", "--warmup-seconds", "0", "--repeat", "2", "--json",
    )  # fmt: skip
    assert result.code in (0, 10, 13), result.stderr
    data = result.json()
    used = {}
    for role in ("a", "b"):
        manifest = json.loads((Path(data[role]["run_dir"]) / "manifest.json").read_text())
        used[role] = (manifest["settings"]["delegate"], manifest["runtime"]["delegate"])
        assert manifest["artifact"]["name"] == "tiny-mlp.tflite"
    assert used == {"a": ("xnnpack", "xnnpack"), "b": ("none", "none")}
    pair = data["pairs"][0]
    assert pair["model"] == "tiny-mlp:tflite (delegate xnnpack) → tiny-mlp:tflite (delegate none)"
    # The difference asked for is the point of this comparison, not a warning.
    assert not [w for w in pair["warnings"] if "delegate" in w]


def test_ab_refuses_a_third_delegate_and_a_lone_model_without_two_sides(cli: Any) -> None:
    three = cli("ab", "-m", "x.tflite", *["--delegate", "none"] * 3)
    assert_one_line_error(three, 2, "--delegate once (both sides) or twice")
    lone = cli("ab", "-m", str(TINY_TFLITE), "--delegate", "none")
    assert_one_line_error(lone, 2, "exactly twice", "once with --ep or --delegate given twice")


def test_compare_flags_runs_on_different_providers_and_delegates(tmp_path: Path) -> None:
    cpu = {"runtime": "onnxruntime", "runtime_version": "1.20", "threads": 0, "inputs": []}
    a = make_run(tmp_path, "a", repetitions(1), runtime={**cpu, "ep": "CPUExecutionProvider"})
    b = make_run(tmp_path, "b", repetitions(2), runtime={**cpu, "ep": "XnnpackExecutionProvider"})
    old = make_run(tmp_path, "old", repetitions(3), runtime=cpu)  # before they were recorded
    pair = compare_runs(load_run(a), load_run(b))
    assert (
        "different execution providers (CPUExecutionProvider vs XnnpackExecutionProvider)"
        in pair.warnings
    )
    assert pair.verdict == "no change"  # compared, loudly, as a runtime version change is
    assert not [w for w in compare_runs(load_run(a), load_run(old)).warnings if "provider" in w]
    lite = {"runtime": "litert", "runtime_version": "2.3", "threads": 0, "inputs": []}
    on = make_run(tmp_path, "on", repetitions(4), runtime={**lite, "delegate": "xnnpack"})
    off = make_run(tmp_path, "off", repetitions(5), runtime={**lite, "delegate": "none"})
    assert (
        "different delegates (xnnpack vs none)"
        in compare_runs(load_run(on), load_run(off)).warnings
    )


def run_target(tmp_path: Path, run_table: str) -> Path:
    """A `local` target whose [run] table sets a default provider or delegate."""
    targets = tmp_path / "targets"
    targets.mkdir(exist_ok=True)
    (targets / "board.toml").write_text(
        f'kind = "linux"\n[transport]\ntype = "local"\n[run]\n{run_table}\n'
    )
    return targets


def test_a_targets_run_table_sets_the_default_delegate_for_tflite_only(
    cli: Any, tmp_path: Path
) -> None:
    targets = str(run_target(tmp_path, 'delegate = "none"'))
    lite = cli("--targets-dir", targets, "deploy", "-t", "board", "-m", str(TINY_TFLITE), *QUICK)
    assert lite.code == 0, lite.stderr
    assert "--delegate none from [run] in board.toml" in lite.stderr
    shown = cli("results", "show", "latest").stdout
    assert "on delegate none (asked: --delegate none)" in shown
    flag = cli(
        "--targets-dir", targets, "deploy", "-t", "board", "-m", str(TINY_TFLITE), *QUICK,
        "--delegate", "xnnpack", "--json",
    )  # fmt: skip
    assert flag.json()["manifest"]["runtime"]["delegate"] == "xnnpack"  # the flag wins
    onnx = cli(
        "--targets-dir", targets, "deploy", "-t", "board", "-m", str(TINY_ONNX), *QUICK, "--json"
    )
    assert onnx.code == 0, onnx.stderr  # an ONNX model keeps onnxruntime's default
    assert onnx.json()["manifest"]["settings"]["delegate"] == ""


def test_a_targets_default_provider_is_refused_like_the_flag_when_absent(
    cli: Any, tmp_path: Path
) -> None:
    targets = str(run_target(tmp_path, 'ep = "CUDAExecutionProvider"'))
    result = cli("--targets-dir", targets, "deploy", "-t", "board", "-m", str(TINY_ONNX), *QUICK)
    assert_one_line_error(result, 7, "'CUDAExecutionProvider' is not available")
    assert "--ep CUDAExecutionProvider from [run] in board.toml" in result.stderr


def test_a_bad_run_table_is_a_config_error(cli: Any, tmp_path: Path) -> None:
    targets = str(run_target(tmp_path, 'delegate = "gpu"\nthreads = 2'))
    result = cli("--targets-dir", targets, "targets", "show", "board")
    assert result.code == 5 and "Traceback" not in result.stderr
    assert "key 'run.delegate' must be one of 'xnnpack', 'none', got 'gpu'" in result.stderr
    assert "unknown key 'run.threads'" in result.stderr
