"""The on-device runner, run as the device runs it: a subprocess, JSON lines on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool.runner import RUNNER_PATH
from tests.conftest import TINY_ONNX, TINY_TFLITE


def run_runner(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(
        [sys.executable, str(RUNNER_PATH), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, events


@pytest.mark.parametrize("model", [TINY_ONNX, TINY_TFLITE], ids=["onnx", "tflite"])
def test_run_streams_hello_model_samples_summary(model: Path) -> None:
    code, events = run_runner(
        "run", "--model", str(model), "--iterations", "600", "--warmup", "3", "--threads", "1"
    )
    assert code == 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "hello" and kinds[-1] == "summary"
    assert kinds.index("model") < kinds.index("warmup") < kinds.index("sample")
    samples = [e for e in events if e["event"] == "sample"]
    assert len(samples) >= 3  # batched: 600 > one batch of 256
    flat = [ns for e in samples for ns in e["ns"]]
    assert len(flat) == 600 and all(ns > 0 for ns in flat)
    assert [e["i"] for e in samples] == sorted(e["i"] for e in samples)
    model_event = next(e for e in events if e["event"] == "model")
    assert model_event["inputs"][0]["name"] == "input"
    assert model_event["inputs"][0]["shape"] == [1, 64]
    assert events[-1]["count"] == 600 and events[-1]["peak_rss"] > 0
    envs = [e for e in events if e["event"] == "env"]
    assert [e["when"] for e in envs] == ["before", "after"]


def test_duration_mode_stops_by_time() -> None:
    code, events = run_runner(
        "run", "--model", str(TINY_ONNX), "--duration", "0.3", "--warmup", "0"
    )
    assert code == 0
    summary = events[-1]
    assert 0.3e9 <= summary["wall_ns"] < 3e9


def test_outputs_match_numpy_reference_for_given_input(tmp_path: Path) -> None:
    from edgetool.zoo.tinymlp import TINY, reference_forward

    x = np.random.default_rng(3).uniform(-1, 1, size=(1, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    dump = tmp_path / "out.npz"
    code, _ = run_runner(
        "run",
        "--model",
        str(TINY_ONNX),
        "--input",
        str(tmp_path / "x.npy"),
        "--iterations",
        "1",
        "--dump-outputs",
        str(dump),
    )
    assert code == 0
    np.testing.assert_allclose(np.load(dump)["logits"], reference_forward(TINY, x), atol=1e-4)


def test_corrupt_model_is_an_error_event(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    code, events = run_runner("run", "--model", str(bad))
    assert code == 2
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "bad_model"
    assert "bad.onnx" in events[-1]["message"]


def test_wrong_input_shape_is_an_error_event(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 32), np.float32))
    code, events = run_runner("run", "--model", str(TINY_ONNX), "--input", str(tmp_path / "x.npy"))
    assert code == 2
    assert events[-1]["kind"] == "input_shape"
    assert "[1, 64]" in events[-1]["message"] and "[1, 32]" in events[-1]["message"]


def shadowed_env(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An interpreter on which these modules fail to import, as on a bare device."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    for module in modules:
        (shadow / f"{module}.py").write_text("raise ImportError('not installed here')\n")
    return {"PYTHONPATH": str(shadow), "PATH": "/usr/bin:/bin"}


def test_missing_runtime_is_an_error_event_not_a_traceback(tmp_path: Path) -> None:
    env = shadowed_env(tmp_path, "onnxruntime")
    code, events = run_runner("run", "--model", str(TINY_ONNX), env=env)
    assert code == 2
    assert events[0]["runtimes"]["onnxruntime"] is None
    assert events[-1]["kind"] == "runtime_missing"
    assert "onnxruntime is not installed" in events[-1]["message"]


def test_missing_tflite_runtimes(tmp_path: Path) -> None:
    env = shadowed_env(tmp_path, "ai_edge_litert", "tflite_runtime")
    code, events = run_runner("run", "--model", str(TINY_TFLITE), env=env)
    assert code == 2 and events[-1]["kind"] == "runtime_missing"


def test_facts_report_device_and_runtimes() -> None:
    code, events = run_runner("facts")
    assert code == 0
    hello = events[0]
    assert hello["device"]["cores"] >= 1
    assert hello["device"]["python"].count(".") == 2
    assert hello["runtimes"]["onnxruntime"]
    env = events[1]
    assert env["event"] == "env"
    assert {"time_ns", "governor", "freq_khz", "loadavg"} <= set(env)
    assert {"cpus", "thermal", "throttle", "cpu_times", "affinity", "process_threads"} <= set(env)
    assert env["process_threads"] >= 1 and env["cpu_times"]["total"] > 0


def test_runner_imports_nothing_from_edgetool() -> None:
    source = RUNNER_PATH.read_text()
    assert "edgetool." not in source.replace("edgetool-runner", "")
    assert "import edgetool" not in source


def test_min_duration_extends_a_count_run() -> None:
    code, events = run_runner(
        "run",
        "--model",
        str(TINY_ONNX),
        "--iterations",
        "5",
        "--min-duration",
        "0.2",
        "--warmup",
        "0",
    )
    assert code == 0
    assert events[-1]["count"] > 5
    assert events[-1]["wall_ns"] >= 0.2e9


def test_runner_source_needs_at_most_python_3_9() -> None:
    """Raspberry Pi OS bullseye ships 3.9: the runner must not use newer syntax or APIs.
    (Annotations are not evaluated: the runner has `from __future__ import annotations`.)"""
    vermin = Path(sys.executable).with_name("vermin")
    proc = subprocess.run(
        [str(vermin), "-t=3.9-", "--violations", "--no-tips", str(RUNNER_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_peak_rss_is_the_runners_own_not_its_parents() -> None:
    """Linux carries ru_maxrss across exec: a runner started by a process holding 400 MB
    must still report only what it used itself."""
    script = (
        "import json, subprocess, sys\n"
        "ballast = bytearray(400_000_000)\n"
        "for i in range(0, len(ballast), 4096): ballast[i] = 1\n"
        f"out = subprocess.run([sys.executable, {str(RUNNER_PATH)!r}, 'run', '--model', "
        f"{str(TINY_ONNX)!r}, '--iterations', '5'], capture_output=True, text=True).stdout\n"
        "print([json.loads(l)['peak_rss'] for l in out.splitlines() if '\"summary\"' in l][0])\n"
    )
    peak = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=True).stdout)  # fmt: skip
    assert 10_000_000 < peak < 300_000_000
