"""Per-operator profiles: the runner's parser on real onnxruntime profiler output, the
shared op_profile.json format, and `deploy --op-profile` → results show / trace / report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool.errors import ResultsError
from edgetool.results.op_profile import (
    OP_PROFILE,
    OpProfile,
    from_benchmark_model,
    read_op_profile,
    top,
)
from edgetool.runner import RUNNER_PATH, device_runner
from tests.conftest import TINY_ONNX, TINY_TFLITE, assert_one_line_error, run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "benchmark_model"


def conv_relu_add(path: Path) -> Path:
    """conv1 (Conv) → relu1 (Relu) → add1 (Add with the input's conv2 branch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.full((4, 4, 3, 3), 0.01, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["x", "w"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["r1", "c2"], ["y"], name="add1"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def real_profile(tmp_path: Path, warmup: int, runs: int) -> list[dict[str, Any]]:
    """onnxruntime's own profiler JSON for warmup + runs inferences (no graph fusion, so
    the node names are the graph's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "ort")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        str(conv_relu_add(tmp_path / "m.onnx")), options, providers=["CPUExecutionProvider"]
    )
    feed = {"x": np.ones((1, 4, 32, 32), np.float32)}
    for _ in range(warmup + runs):
        session.run(None, feed)
    events: list[dict[str, Any]] = json.loads(Path(session.end_profiling()).read_text())
    return events


def test_parser_sums_real_profiler_output_per_op_type_and_node(tmp_path: Path) -> None:
    events = real_profile(tmp_path, warmup=2, runs=12)
    calls = [(1000 * i, 500) for i in range(12)]
    profile = device_runner.summarize_ort_profile(events, 2, calls)
    assert profile["inferences"] == 12 and profile["warmup"] == 2
    nodes = {n["name"]: n for n in profile["nodes"]}
    assert set(nodes) == {"conv1", "relu1", "conv2", "add1"}
    assert {n["op_type"] for n in nodes.values()} == {"Conv", "Relu", "Add"}
    # The warm-up inferences' nodes are left out: each node ran once per profiled inference.
    assert all(n["calls"] == 12 for n in nodes.values())
    kernel_us = {
        name: sum(
            e["dur"]
            for e in events
            if e.get("name") == f"{name}_kernel_time" and e.get("cat") == "Node"
        )
        for name in nodes
    }
    for name, node in nodes.items():
        assert node["total_ms"] <= kernel_us[name] / 1e3  # only the profiled runs' share
        assert node["mean_ms"] == pytest.approx(node["total_ms"] / 12)
    types = {t["op_type"]: t for t in profile["op_types"]}
    assert types["Conv"]["nodes"] == 2 and types["Conv"]["calls"] == 24
    assert types["Conv"]["total_ms"] == pytest.approx(
        nodes["conv1"]["total_ms"] + nodes["conv2"]["total_ms"]
    )
    # Percent of the inference: the nodes share (at most) the whole model_run time.
    assert 0 < sum(t["percent"] for t in types.values()) <= 100.0 + 1e-9
    assert profile["inference_ms"] >= max(n["mean_ms"] for n in nodes.values())
    # Slices: the first PROFILE_SLICES inferences, nodes in execution order, inside the run.
    assert len(profile["slices"]) == device_runner.PROFILE_SLICES == 10
    first = profile["slices"][0]
    assert (first["start_ns"], first["dur_ns"]) == calls[0]
    order = [profile["nodes"][i]["name"] for i, _, _ in first["nodes"]]
    assert order.index("conv1") < order.index("relu1") < order.index("add1")
    assert all(off >= 0 and off + dur <= first["model_us"] + 1 for _, off, dur in first["nodes"])
    # The host reads exactly what the runner wrote.
    parsed = OpProfile.from_dict(json.loads(json.dumps(profile)))
    assert OpProfile.from_dict(parsed.to_dict()) == parsed
    assert [r.label for r in top(parsed.nodes, 2)] == [
        n["name"] for n in sorted(profile["nodes"], key=lambda n: -n["mean_ms"])[:2]
    ]


def run_runner(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(RUNNER_PATH), "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_runner_profiles_after_the_timed_loop_and_only_on_request() -> None:
    lines = run_runner("--model", str(TINY_ONNX), "--iterations", "20", "--op-profile", "4")
    kinds = [line["event"] for line in lines]
    assert kinds.index("summary") < kinds.index("op_profile") == len(kinds) - 1
    profile = lines[-1]
    summary = lines[kinds.index("summary")]
    assert summary["count"] == 20  # the profiled inferences are not samples
    assert sum(len(line["ns"]) for line in lines if line["event"] == "sample") == 20
    assert profile["inferences"] == 4 and len(profile["slices"]) == 4 and profile["nodes"]
    assert "not latency figures" in profile["note"]
    plain = run_runner("--model", str(TINY_ONNX), "--iterations", "5")
    assert "op_profile" not in [line["event"] for line in plain]


def test_profile_pass_leaves_no_profiler_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = device_runner.load_model(str(TINY_ONNX), "onnxruntime", 1)
    assert isinstance(model, device_runner.OnnxModel)
    feeds = {spec["name"]: np.zeros([1, 64], np.float32) for spec in model.inputs}
    profile = device_runner.profile_onnx(model, str(TINY_ONNX), feeds, 3)
    assert profile["inferences"] == 3
    assert list(tmp_path.iterdir()) == []


def test_runner_says_litert_has_no_profiler() -> None:
    lines = run_runner("--model", str(TINY_TFLITE), "--iterations", "5", "--op-profile", "3")
    assert lines[-2]["event"] == "summary"
    assert "benchmark_model" in lines[-1]["error"]


def test_benchmark_model_tables_share_the_format() -> None:
    from edgetool.android.benchmark_model import parse_output
    from edgetool.flows.android import op_profile

    output = parse_output((FIXTURES / "op_profiling.txt").read_text())
    profile = op_profile(output)
    assert profile is not None and profile.percent_of == "operators"
    assert [r.label for r in profile.nodes] == [op.name for op in output.ops]
    assert [r.op_type for r in profile.op_types] == [op.node_type for op in output.op_types]
    first = output.ops[0]
    assert profile.nodes[0].mean_ms == first.avg_ms
    assert profile.inferences == output.steady.count
    assert profile.nodes[0].calls == first.times_called * output.steady.count
    assert OpProfile.from_dict(profile.to_dict()) == profile


def test_old_android_runs_read_their_summary_ops(tmp_path: Path) -> None:
    rows = [
        {"node_type": "CONV_2D", "avg_ms": 2.0, "percent": 80.0, "times_called": 1, "count": 3},
        {"node_type": "SOFTMAX", "avg_ms": 0.5, "percent": 20.0, "times_called": 1, "count": 1},
    ]
    profile = read_op_profile(tmp_path, rows)
    assert profile == from_benchmark_model(rows, [], None)
    assert [r.op_type for r in profile.op_types] == ["CONV_2D", "SOFTMAX"]
    assert read_op_profile(tmp_path) is None


def test_a_damaged_profile_is_a_results_error(tmp_path: Path) -> None:
    (tmp_path / OP_PROFILE).write_text('{"op_types": [{"mean_ms": 1}]}')
    with pytest.raises(ResultsError, match=r"op_profile\.json"):
        read_op_profile(tmp_path)


# --- deploy --op-profile on `local`, then every view of it ------------------------------


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One profiled run on `local` (module-scoped: the views below all read it)."""
    home = tmp_path_factory.mktemp("home")
    env = {
        f"EDGETOOL_{name.upper()}": str(home / name)
        for name in ("cache_dir", "state_dir", "results", "config_dir")
    }
    result = run_cli(
        "deploy", "-m", "tiny-mlp", "--op-profile", "-n", "30", "-r", "2", "--json", env=env
    )
    assert result.code == 0, result.stderr
    return {"data": result.json(), "env": env}


def test_deploy_writes_the_profile_beside_unchanged_latency_figures(
    profiled: dict[str, Any],
) -> None:
    data = profiled["data"]
    run_dir = Path(data["run_dir"])
    assert data["summary"]["latency"]["count"] == 60  # 2 × 30 timed; the pass adds none
    profile = read_op_profile(run_dir)
    assert profile is not None and profile.error is None
    assert profile.source == "onnxruntime profiler" and profile.inferences == 10
    assert {r.op_type for r in profile.nodes} and profile.slices


def test_results_show_ops_tables_and_json(profiled: dict[str, Any]) -> None:
    env = profiled["env"]
    text = run_cli("results", "show", "latest", "--ops", env=env)
    assert text.code == 0, text.stderr
    assert "by op type" in text.stdout and "by node" in text.stdout
    assert "not latency figures" in text.stdout and "% of inference" in text.stdout
    data = run_cli("results", "show", "latest", "--ops", "--top", "1", "--json", env=env).json()
    assert len(data["op_types"]) == 1 and len(data["nodes"]) == 1 and "slices" not in data
    full = read_op_profile(Path(profiled["data"]["run_dir"]))
    assert full is not None
    assert data["nodes"][0]["name"] == top(full.nodes, 1)[0].name
    plain = run_cli("results", "show", "latest", env=env)
    assert "--ops" in plain.stdout


def test_trace_nests_node_slices_in_each_profiled_inference(profiled: dict[str, Any]) -> None:
    from edgetool.results.store import load_run
    from edgetool.results.trace import PROFILE_TID, build_trace

    run = load_run(Path(profiled["data"]["run_dir"]))
    events = [e for e in build_trace(run)["traceEvents"] if e.get("tid") == PROFILE_TID]
    slices = [e for e in events if e["ph"] == "X"]
    outer = [e for e in slices if e["name"] == "profiled inference"]
    assert len(outer) == 10
    timed_end = max(
        e["ts"] + e["dur"] for e in build_trace(run)["traceEvents"] if e.get("cat") == "inference"
    )
    assert min(e["ts"] for e in outer) >= timed_end  # the pass follows the timed loop
    nodes = [e for e in slices if e["cat"] not in ("op_profile",)]
    assert nodes
    for node in nodes:
        parents = [e for e in slices if e["name"] == "model_run" and e["ts"] <= node["ts"]]
        parent = max(parents, key=lambda e: e["ts"])
        assert node["ts"] + node["dur"] <= parent["ts"] + parent["dur"] + 1e-6
        inference = max((e for e in outer if e["ts"] <= node["ts"]), key=lambda e: e["ts"])
        assert parent["ts"] + parent["dur"] <= inference["ts"] + inference["dur"] + 1e-6


def test_report_has_a_per_operator_section(profiled: dict[str, Any]) -> None:
    from edgetool.results.report import build_report
    from edgetool.results.store import load_run

    run = load_run(Path(profiled["data"]["run_dir"]))
    html = build_report([run])
    assert "<h2>Per-operator profile</h2>" in html and 'data-plot="ops-1"' in html
    profile = read_op_profile(run.dir)
    assert profile is not None
    assert all(row.label in html for row in top(profile.nodes, 3))


def test_runs_without_a_profile_say_so(cli: Any, home: Path) -> None:
    made = cli("deploy", "-m", "tiny-mlp", "-n", "5", "-r", "1", "--json")
    assert made.code == 0, made.stderr
    assert not (Path(made.json()["run_dir"]) / OP_PROFILE).exists()
    assert_one_line_error(cli("results", "show", "latest", "--ops"), 9, "no per-operator profile")
    from edgetool.results.report import build_report
    from edgetool.results.store import load_run

    assert "Per-operator profile" not in build_report([load_run(Path(made.json()["run_dir"]))])


def test_tflite_on_linux_is_refused_pointing_to_benchmark_model(cli: Any, home: Path) -> None:
    result = cli("deploy", "-m", str(TINY_TFLITE), "--op-profile", "-n", "5")
    assert_one_line_error(result, 2, "--op-profile", "LiteRT", "benchmark_model")
    results = home / "results"
    assert not results.exists() or not any(results.iterdir())
