"""benchmark_model output parsing and the battery fuel-gauge estimate (Wear OS targets)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgetool.android.benchmark_model import (
    MAX_SECS,
    benchmark_argv,
    latency_summary,
    parse_output,
)
from edgetool.android.fuel_gauge import (
    GaugeSample,
    LoadWindow,
    Marks,
    estimate,
    fuel_gauge_argv,
    parse_log,
    parse_marks,
    split_runs,
)
from edgetool.errors import DeviceError, ModelError
from edgetool.results.stats import summarize_ns

FIXTURES = Path(__file__).parent.parent / "fixtures" / "benchmark_model"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- benchmark_model -------------------------------------------------------------------


def test_every_fixture_says_it_was_not_captured_on_a_device() -> None:
    files = sorted(FIXTURES.glob("*.txt"))
    assert len(files) >= 6
    for path in files:
        assert path.read_text().startswith("# edgetool fixture: written to the documented")


def test_full_stats_run() -> None:
    out = parse_output(fixture("mobilenet_xnnpack.txt"))
    s = out.steady
    assert (s.count, s.first_us, s.curr_us, s.min_us, s.max_us, s.avg_us, s.std_us) == (
        50,
        7122,
        7093,
        6980,
        8411,
        7135.66,
        214,
    )
    assert not s.all_same and s.median_us is None
    assert out.warmup is not None
    assert (out.warmup.count, out.warmup.avg_us, out.warmup.std_us) == (5, 7688.4, 1103)
    assert (out.init_us, out.first_us, out.warmup_avg_us) == (38552, 9873, 7688.4)
    assert out.inference_avg_us == 7135.66
    assert (out.memory_init_mb, out.memory_overall_mb, out.peak_memory_mb) == (
        4.60938,
        6.01562,
        None,
    )
    assert (out.model_size_mb, out.threads, out.ops, out.warnings) == (1.89129, 2, [], [])


def test_all_same_and_count_one_forms() -> None:
    out = parse_output(fixture("all_same.txt"))
    s = out.steady
    assert (s.count, s.curr_us, s.all_same) == (20, 3, True)
    assert (s.first_us, s.min_us, s.max_us, s.avg_us, s.std_us) == (None,) * 5
    assert s.mean_us == 3
    assert out.warmup is not None and (out.warmup.count, out.warmup.curr_us) == (1, 41)
    latency = latency_summary(out)
    assert latency["mean"] == latency["min"] == latency["max"] == pytest.approx(0.003)
    assert latency["std"] == 0.0
    assert "only 20 samples" not in latency["unstable"]


def test_count_zero_parses_but_has_no_latency() -> None:
    out = parse_output(fixture("count_zero.txt"))
    assert out.steady.count == 0
    assert (out.steady.curr_us, out.steady.avg_us, out.steady.all_same) == (None, None, False)
    assert out.init_us == 36904 and out.first_us == 0
    with pytest.raises(DeviceError, match="count=0"):
        latency_summary(out)


def test_newer_build_percentiles_warnings_and_e_notation() -> None:
    out = parse_output(fixture("percentiles_warnings.txt"))
    s = out.steady
    assert (s.count, s.avg_us, s.std_us) == (30, 1.38127e06, 19804)
    assert (s.p5_us, s.median_us, s.p95_us) == (1362511, 1379940, 1421306)
    assert out.warmup_avg_us == 1.54728e06 and out.peak_memory_mb == 101.34
    assert out.threads == 4
    assert out.warnings == [
        "Unconsumed cmdline flags: --edgetool_probe=1",
        "Attempting to use a delegate that only supports static-sized tensors with a graph "
        "that has dynamic-sized tensors (tensor#412 is a dynamic-sized tensor).",
    ]
    # the tool's nearest-rank percentiles are not edgetool's: still not reported
    assert latency_summary(out)["p50"] is None


def test_op_profiling_tables_of_the_regular_runs() -> None:
    out = parse_output(fixture("op_profiling.txt"))
    assert out.steady.count == 50 and out.steady.avg_us == 24950.1
    assert out.warmup is not None and out.warmup.curr_us == 27466
    assert [(op.node_type, op.avg_ms, op.percent, op.times_called, op.name) for op in out.ops] == [
        ("TfLiteXNNPackDelegate", 23.871, 96.142, 1, "[MobilenetV1/Logits/SpatialSqueeze]:31"),
        ("RESHAPE", 0.009, 0.036, 1, "[MobilenetV1/Logits/Reshape]:29"),
        ("SOFTMAX", 0.949, 3.822, 1, "[MobilenetV1/Predictions/Reshape_1]:30"),
    ]
    assert out.ops[0].first_ms == 24.31
    assert [(t.node_type, t.count, t.avg_ms, t.percent) for t in out.op_types] == [
        ("TfLiteXNNPackDelegate", 1, 23.871, 96.142),
        ("SOFTMAX", 1, 0.949, 3.822),
        ("RESHAPE", 1, 0.009, 0.036),
    ]
    # the initialization tables (ModifyGraphWithDelegate, AllocateTensors) are not ops
    assert all("AllocateTensors" not in op.node_type for op in out.ops + out.op_types)


def test_tables_whose_tabs_became_spaces() -> None:
    text = fixture("op_profiling.txt").replace("\t", "  ")
    out = parse_output(text)
    assert [op.node_type for op in out.ops] == ["TfLiteXNNPackDelegate", "RESHAPE", "SOFTMAX"]
    assert out.ops[2].name == "[MobilenetV1/Predictions/Reshape_1]:30"


def test_crlf_and_interleaved_log_lines() -> None:
    lines = fixture("mobilenet_xnnpack.txt").splitlines()
    noisy: list[str] = []
    for line in lines:
        noisy.append(line)
        noisy.append("WARNING: thermal throttling may apply")
        noisy.append("INFO: some delegate chatter count=3")
    out = parse_output("\r\n".join(noisy) + "\r\n")
    assert (out.steady.count, out.steady.avg_us) == (50, 7135.66)
    assert out.warmup is not None and out.warmup.count == 5
    assert out.warnings.count("thermal throttling may apply") == len(lines)


def test_model_that_fails_to_prepare_quotes_the_tools_line() -> None:
    with pytest.raises(ModelError) as caught:
        parse_output(fixture("unsupported_op.txt"))
    message = caught.value.message
    assert message.startswith("benchmark_model could not run the model: Select TensorFlow op(s)")
    assert "\n" not in message and caught.value.hint


def test_old_binary_without_prefixes() -> None:
    with pytest.raises(ModelError, match="Didn't find op for builtin opcode 'MUL' version '5'"):
        parse_output(fixture("old_binary_new_op.txt"))


def test_garbage_is_a_device_error_naming_the_last_line() -> None:
    with pytest.raises(DeviceError) as caught:
        parse_output("/system/bin/sh: benchmark_model: inaccessible or not found\n\n")
    assert "no 'Running benchmark' line" in caught.value.message
    assert "inaccessible or not found" in caught.value.message
    assert "\n" not in caught.value.message


def test_output_cut_after_the_warm_up_is_a_device_error() -> None:
    text = fixture("mobilenet_xnnpack.txt").split("INFO: Running benchmark for at least 50")[0]
    with pytest.raises(DeviceError, match="no regular"):
        parse_output(text)


def test_argv_has_exact_counts() -> None:
    argv = benchmark_argv("/data/bm", "/data/m.tflite", num_runs=40, warmup_runs=3, threads=2)
    assert argv[0] == "/data/bm"
    assert argv[1:] == [
        "--graph=/data/m.tflite",
        "--num_runs=40",
        "--warmup_runs=3",
        "--min_secs=0",
        "--warmup_min_secs=0",
        f"--max_secs={MAX_SECS}",
        "--num_threads=2",
    ]
    full = benchmark_argv(
        "bm", "m", num_runs=1, warmup_runs=0, threads=1, op_profiling=True, use_xnnpack=False
    )
    assert full[-2:] == ["--enable_op_profiling=true", "--use_xnnpack=false"]
    assert "--use_xnnpack=true" in benchmark_argv(
        "bm", "m", num_runs=1, warmup_runs=0, threads=1, use_xnnpack=True
    )
    with pytest.raises(ValueError):
        benchmark_argv("bm", "m", num_runs=0, warmup_runs=0, threads=1)


def test_latency_summary_keys_units_and_no_invented_percentiles() -> None:
    latency = latency_summary(parse_output(fixture("mobilenet_xnnpack.txt")))
    normal = summarize_ns([1_000_000, 2_000_000]).to_dict()
    assert set(latency) == set(normal) | {"aggregate_only", "source"}
    assert latency["unit"] == "ms" and latency["aggregate_only"] is True
    assert latency["source"] == "benchmark_model"
    for key in ("p50", "p90", "p95", "p99", "p999", "median_ci"):
        assert latency[key] is None
    assert (latency["count"], latency["mean"], latency["min"], latency["max"]) == (
        50,
        pytest.approx(7.13566),
        pytest.approx(6.98),
        pytest.approx(8.411),
    )
    # the tool's population std (÷n) becomes the sample std (÷(n−1))
    assert latency["std"] == pytest.approx(0.214 * (50 / 49) ** 0.5)


# --- fuel gauge: synthetic logs with a known answer ----------------------------------

IDLE_MA, LOAD_MA = 80.0, 230.0
IDLE_V, LOAD_V = 3.95, 3.90
AVG_US, COUNT = 4000.0, 250  # 1 s steady phase per run
PERIOD_NS = 20_000_000


def synthetic(micro_negative: bool, repeats: int = 3) -> tuple[str, Marks, list[tuple[int, float]]]:
    """A log at 50 Hz: idle 0-2 s; each run = 0.5 s start-up (150 mA) + 1 s steady load,
    then 0.5 s gap. Readings jitter by ±1 LSB so they are not constant."""
    base = 1_700_000_000_000_000_000
    loads = []
    t = base + 2_000_000_000
    for i in range(1, repeats + 1):
        loads.append(LoadWindow(i, t, t + 1_500_000_000, 0))
        t += 2_000_000_000
    marks = Marks("Discharging", base, base + 2_000_000_000, tuple(loads), t)
    lines = []
    for k in range((t - base) // PERIOD_NS):
        ts = base + k * PERIOD_NS + PERIOD_NS // 2
        ma, volts = IDLE_MA, IDLE_V
        for w in loads:
            if w.start_ns <= ts <= w.end_ns:
                steady = ts >= w.end_ns - COUNT * AVG_US * 1e3
                ma, volts = (LOAD_MA, LOAD_V) if steady else (150.0, IDLE_V)
        jitter = 1 if k % 2 else -1
        if micro_negative:
            lines.append(f"{ts} {-round(ma * 1000) + jitter} {round(volts * 1e6)}")
        else:
            lines.append(f"{ts} {round(ma) + jitter} {round(volts * 1000)}")
    return "\n".join(lines) + "\n", marks, [(COUNT, AVG_US)] * repeats


@pytest.mark.parametrize(
    ("micro_negative", "description"),
    [
        (True, "current_now in µA, negative while discharging; voltage_now in µV"),
        (False, "current_now in mA, positive while discharging; voltage_now in mV"),
    ],
)
def test_estimate_matches_the_exact_answer(micro_negative: bool, description: str) -> None:
    log, marks, steady = synthetic(micro_negative)
    result = estimate(parse_log(log), marks, steady)
    assert result.units.description == description
    idle_w, load_w = IDLE_MA * IDLE_V / 1e3, LOAD_MA * LOAD_V / 1e3
    avg_s = AVG_US / 1e6
    assert result.idle_w == pytest.approx(idle_w, rel=1e-3)
    assert result.load_w == pytest.approx(load_w, rel=1e-3)
    assert result.dynamic_mj == pytest.approx((load_w - idle_w) * avg_s * 1e3, rel=0.01)
    assert result.total_mj == pytest.approx(load_w * avg_s * 1e3, rel=0.01)
    assert result.dynamic_ci is not None
    assert result.dynamic_ci[0] <= result.dynamic_mj <= result.dynamic_ci[1]
    data = result.to_dict()
    assert data["method"] == "fuel-gauge estimate" and data["repeats"] == 3
    assert data["idle_mw"] == pytest.approx(idle_w * 1e3, rel=1e-3)
    assert data["window_s"] == [pytest.approx(1.0)] * 3
    assert data["sample_period_s"] == pytest.approx(0.02)
    assert data["units"] == description
    assert not any("noise" in w for w in data["warnings"])


def test_charging_is_refused() -> None:
    log, marks, steady = synthetic(True)
    charging = Marks("Charging", marks.idle_start_ns, marks.idle_end_ns, marks.loads)
    with pytest.raises(DeviceError, match="is charging: a fuel-gauge estimate would measure"):
        estimate(parse_log(log), charging, steady)


def test_too_few_samples_in_a_window() -> None:
    log, marks, _ = synthetic(True)
    with pytest.raises(DeviceError, match="holds 2 gauge samples") as caught:
        estimate(parse_log(log), marks, [(10, AVG_US)] * 3)  # 40 ms steady phases
    assert "num_runs" in (caught.value.hint or "")


def test_unresolved_dynamic_energy_is_reported_not_refused() -> None:
    log, marks, steady = synthetic(True)
    flat = "\n".join(
        f"{line.split()[0]} -80000 3950000" for line in log.splitlines()
    )  # no load current at all
    result = estimate(parse_log(flat + "\ngarbage line\n"), marks, steady)
    assert result.dynamic_mj == pytest.approx(0.0, abs=1e-9)
    assert any("not resolved above the gauge's noise" in w for w in result.warnings)
    assert result.malformed_lines == 1


def test_marks_and_runs_split() -> None:
    text = "\r\n".join(
        [
            "edgetool-mark status Not charging",
            "edgetool-mark idle-start 100",
            "edgetool-mark idle-end 200",
            "edgetool-mark load-start 1 300",
            "INFO: run one",
            "edgetool-mark load-end 1 0 400",
            "edgetool-mark load-start 2 500",
            "ERROR: run two",
            "edgetool-mark load-end 2 1 600",
            "edgetool-mark load-start 3 700",
            "INFO: cut off",
        ]
    )
    marks, runs = split_runs(text)
    assert marks.status == "Not charging" and marks.idle == (100, 200)
    assert marks.loads == (LoadWindow(1, 300, 400, 0), LoadWindow(2, 500, 600, 1))
    assert runs == ["INFO: run one", "ERROR: run two"]
    assert parse_marks(["edgetool-mark idle-start x", "noise"]).idle_start_ns is None


def test_log_parsing_counts_malformed_lines() -> None:
    samples = parse_log("1 -2 3\n4 NA 6\n7 8\n\n9 10 11\n12 13 14 15")
    assert samples == [GaugeSample(1, -2, 3), GaugeSample(9, 10, 11)]
    assert samples.malformed == 3


def test_argv_passes_values_as_arguments() -> None:
    argv = fuel_gauge_argv("/sys/bat; rm -rf /", "/tmp/l.log", 0.05, 2, 3, ["bm", "--x=1"])
    assert argv[:2] == ["sh", "-c"] and "rm -rf" not in argv[2]
    assert argv[3:] == [
        "sh",
        "/sys/bat; rm -rf /",
        "/tmp/l.log",
        "0.05",
        "2",
        "3",
        "--",
        "bm",
        "--x=1",
    ]


# --- fuel gauge: the script itself, under the host's /bin/sh ---------------------------


def test_script_runs_under_posix_sh(tmp_path: Path) -> None:
    battery = tmp_path / "battery"
    battery.mkdir()
    (battery / "status").write_text("Discharging\n")
    (battery / "voltage_now").write_text("4000000\n")
    flag = tmp_path / "load.flag"
    idle_ua, load_ua = 100_000, 400_000

    def put(value: int) -> None:
        tmp = battery / "current_now.tmp"
        tmp.write_text(f"{-value}\n")
        os.replace(tmp, battery / "current_now")

    put(idle_ua)
    stop = threading.Event()

    def writer() -> None:
        loaded = False
        while not stop.is_set():
            now = flag.exists()
            if now != loaded:
                put(load_ua if now else idle_ua)
                loaded = now
            time.sleep(0.001)

    output = tmp_path / "bench.txt"
    output.write_text(
        fixture("mobilenet_xnnpack.txt").replace(
            "count=50 first=7122 curr=7093 min=6980 max=8411 avg=7135.66 std=214",
            "count=100 first=3000 curr=3000 min=2900 max=3100 avg=3000 std=40",
        )
    )
    bench = [
        "sh",
        "-c",
        'touch "$1"; sleep 0.45; rm -f "$1"; cat "$2"',
        "sh",
        str(flag),
        str(output),
    ]
    log = tmp_path / "gauge.log"
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            fuel_gauge_argv(str(battery), str(log), 0.02, 0.4, 2, bench),
            capture_output=True,
            text=True,
            timeout=20,
        )
    finally:
        stop.set()
        thread.join()
    assert done.returncode == 0, done.stderr
    marks, runs = split_runs(done.stdout)
    assert marks.status == "Discharging" and marks.idle is not None and marks.done_ns
    assert [(w.index, w.exit_status) for w in marks.loads] == [(1, 0), (2, 0)]
    outputs = [parse_output(text) for text in runs]
    assert [o.steady.count for o in outputs] == [100, 100]
    size = log.stat().st_size
    time.sleep(0.1)
    assert log.stat().st_size == size, "the sampler outlived the script"
    samples = parse_log(log.read_text())
    assert len(samples) >= 20 and samples.malformed == 0
    result = estimate(samples, marks, [(o.steady.count, 3000.0) for o in outputs])
    assert result.units.sign == -1
    assert result.idle_w == pytest.approx(0.4, rel=0.02)
    # 1.2 W above idle for 3 ms; the steady tail ends a few ms after the load flag drops
    assert result.dynamic_mj == pytest.approx(3.6, rel=0.15)


def test_script_stops_after_a_failed_run(tmp_path: Path) -> None:
    battery = tmp_path / "battery"
    battery.mkdir()
    for name, value in (
        ("status", "Discharging"),
        ("current_now", "-90000"),
        ("voltage_now", "3900000"),
    ):
        (battery / name).write_text(value + "\n")
    bench = ["sh", "-c", f'cat "{FIXTURES / "unsupported_op.txt"}"; exit 1']
    done = subprocess.run(
        fuel_gauge_argv(str(battery), str(tmp_path / "g.log"), 0.02, 0.1, 3, bench),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1
    marks, runs = split_runs(done.stdout)
    assert [(w.index, w.exit_status) for w in marks.loads] == [(1, 1)]
    with pytest.raises(ModelError, match="Select TensorFlow op"):
        parse_output(runs[0])
