"""`edgetool trace` / `edgetool report`: Perfetto trace structure, the HTML report's plots,
escaping, multi-run and partial runs, and the CLI commands (no device, no browser)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgetool.cli.report import report as report_command
from edgetool.cli.report import trace as trace_command
from edgetool.events import PowerSample
from edgetool.files import write_json_atomic
from edgetool.results.manifest import RunManifest, Summary
from edgetool.results.plots import latency_unit, merge_spans, minmax_buckets
from edgetool.results.report import build_report, write_report
from edgetool.results.stats import summarize_ns
from edgetool.results.store import RunWriter, load_run
from edgetool.results.trace import build_trace, thin_power, write_trace
from tests.conftest import assert_one_line_error

HOSTILE = 'evil<script>alert("x")</script>&co'
OFFSET = 5_000_000  # meter clock = device clock + 5 ms
T0 = 10_000_000_000  # device clock at the first inference


def make_run(
    root: Path,
    run_id: str,
    *,
    n: int = 50,
    starts: bool = True,
    power: bool = True,
    energy: bool = True,
    emulated: bool = False,
    status: str = "complete",
    target: str = "rpi5",
    model: str = "tiny-mlp",
    logs: list[dict[str, Any]] | None = None,
    durations: list[int] | None = None,
    time_base: str | None = None,
) -> Path:
    """A run directory as the deploy pipeline writes it (durations 1.0, 1.1, 1.2 ms …,
    unless given)."""
    if durations is None:
        durations = [1_000_000 + (i % 5) * 100_000 for i in range(n)]
    n = len(durations)
    begin = [T0 + i * 2_000_000 for i in range(n)]
    manifest: dict[str, Any] = {
        "target": {
            "name": target,
            "kind": "ssh",
            "description": "a board",
            "emulated": emulated,
            **({"time_base": time_base} if time_base else {}),
        },
        "artifact": {
            "name": f"{model}.onnx",
            "model": model,
            "format": "onnx",
            "quant": "fp32",
            "sha256": "ab" * 32,
        },
        "device": {"arch": "aarch64", "cores": 4, "cpu_model": "Cortex-A76", "os": "Linux"},
        "env_before": {
            "time_ns": 1,
            "temp_c": 45.0,
            "freq_khz": [2_400_000] * 4,
            "governor": "performance",
        },
        "env_after": {
            "time_ns": 2,
            "temp_c": 52.5,
            "freq_khz": [1_800_000] * 4,
            "governor": "performance",
        },
    }
    if power:
        end = begin[-1] + durations[-1] if n else T0
        manifest["power"] = {
            "meter": "ppk2@/dev/ttyACM0",
            "type": "ppk2",
            "clock": "host",
            "estimate": False,
            "rate_hz": 1000.0,
            "alignment": {"offset_ns": OFFSET, "uncertainty_ns": 20_000, "drift_ns": None},
            "idle_window": [T0 - 50_000_000 + OFFSET, T0 - 10_000_000 + OFFSET],
            "measure_window": [T0 + OFFSET, end + OFFSET],
        }
    if logs is not None:
        manifest["logs"] = logs
    writer = RunWriter(root, run_id, RunManifest.from_dict(manifest))
    if n:
        half = n // 2
        writer.append_samples(0, durations[:half], begin[:half] if starts else None)
        writer.append_samples(half, durations[half:], begin[half:] if starts else None)
    if power:
        t_first = T0 - 60_000_000 + OFFSET
        writer.append_power(
            [
                PowerSample(t_first + k * 1_000_000, 1.5 + (k % 7) * 0.1, 5.0, 0.3)
                for k in range(60 + 2 * n)
            ]
        )
    summary: dict[str, Any] | None = None
    if n:
        summary = {
            "count": n,
            "latency": summarize_ns(durations).to_dict(),
            "wall_s": n * 0.002,
            "throughput_per_s": 500.0,
        }
        if energy:
            summary["energy"] = {
                "meter": "ppk2@/dev/ttyACM0",
                "estimate": False,
                "idle_w": 1.5,
                "mean_power_w": 1.8,
                "total_mj": {"mean": 1.9, "ci": [1.8, 2.0]},
                "dynamic_mj": {"mean": 0.4, "ci": [0.35, 0.45]},
                "inferences": n,
                "groups": 5,
                "per_group": n // 5,
                "batched": False,
                "note": None,
            }
    if status == "running":  # a deploy that died: never finished
        writer._samples.close()
        manifest_path = root / run_id / "manifest.json"
        data = json.loads(manifest_path.read_text())
        data["host"]["pid"] = 2**22 + 12345  # no such process
        write_json_atomic(manifest_path, data)
        return root / run_id
    writer.finish(
        status,
        Summary.from_dict(summary) if summary is not None else None,
        "runner crashed" if status == "failed" else None,
    )
    return root / run_id


def events(trace: dict[str, Any], ph: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        e for e in trace["traceEvents"] if e["ph"] == ph and (name is None or e["name"] == name)
    ]


def plots_in(html: str) -> list[str]:
    return re.findall(r'<svg [^>]*data-plot="([^"]+)"', html)


# --- trace -------------------------------------------------------------------------------


def test_trace_has_one_slice_per_inference_with_durations(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=40))
    trace = build_trace(run)
    json.loads(json.dumps(trace))  # valid JSON
    assert trace["displayTimeUnit"] == "ms"
    slices = events(trace, "X", "inference")
    assert len(slices) == 40
    for i, (event, ns) in enumerate(zip(slices, run.samples_ns, strict=True)):
        assert event["args"]["index"] == i
        assert event["dur"] == pytest.approx(ns / 1000)
        assert event["args"]["latency_ms"] == pytest.approx(ns / 1e6)
    # starts are device times relative to the earliest event (the idle window's power sample)
    assert slices[1]["ts"] - slices[0]["ts"] == pytest.approx(2000.0)
    assert min(e["ts"] for e in trace["traceEvents"] if "ts" in e) == 0


def test_trace_metadata_names_process_and_threads(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", target="jetson", model="cbnet"))
    trace = build_trace(run)
    names = {e["name"]: e["args"] for e in events(trace, "M") if e["name"] == "process_name"}
    assert "jetson" in names["process_name"]["name"] and "cbnet" in names["process_name"]["name"]
    threads = {e["args"]["name"] for e in events(trace, "M", "thread_name")}
    assert any(t.startswith("device") for t in threads) and "meter" in threads
    assert trace["metadata"]["run_id"] == "r1"


def test_power_counters_are_mapped_onto_the_device_timeline(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=10))
    trace = build_trace(run)
    power = events(trace, "C", "power (W)")
    assert len(power) == len(run.power)
    first_inference = events(trace, "X", "inference")[0]["ts"]
    # sample at meter time T0 + OFFSET is at device time T0, i.e. the first inference start
    k = next(i for i, s in enumerate(run.power) if s.t_ns == T0 + OFFSET)
    assert power[k]["ts"] == pytest.approx(first_inference)
    assert power[k]["args"]["W"] == run.power[k].watts
    windows = {e["name"]: e for e in events(trace, "X") if e.get("cat") == "meter"}
    assert windows["measure window"]["ts"] == pytest.approx(first_inference)
    assert windows["idle window"]["dur"] == pytest.approx(40_000.0)
    assert {e["tid"] for e in windows.values()} != {events(trace, "X", "inference")[0]["tid"]}


def test_trace_env_counters_and_logs(tmp_path: Path) -> None:
    logs: list[dict[str, Any]] = [{"t_ns": T0 + 1_000_000, "text": "warmup done"}, {"bad": 1}]
    run = load_run(make_run(tmp_path, "r1", logs=logs))
    trace = build_trace(run)
    temps = events(trace, "C", "temperature (°C)")
    assert [e["args"]["°C"] for e in temps] == [45.0, 52.5]
    freq = events(trace, "C", "cpu freq (MHz)")
    assert freq[0]["args"]["cpu0"] == 2400.0 and freq[1]["args"]["cpu3"] == 1800.0
    instants = events(trace, "i")
    assert [e["args"]["text"] for e in instants] == ["warmup done"]
    first = events(trace, "X", "inference")[0]["ts"]
    assert instants[0]["ts"] == pytest.approx(first + 1000.0)


def test_old_run_without_start_times_lays_inferences_back_to_back(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=6, starts=False, power=False, energy=False))
    assert run.starts_ns is None
    slices = events(build_trace(run), "X", "inference")
    assert slices[0]["ts"] == 0
    for a, b in itertools.pairwise(slices):
        assert b["ts"] == pytest.approx(a["ts"] + a["dur"])


def test_emulated_trace_says_so(tmp_path: Path) -> None:
    trace = build_trace(load_run(make_run(tmp_path, "r1", emulated=True)))
    labels = [e["args"]["name"] for e in events(trace, "M") if e["name"].endswith("_name")]
    assert labels and all("emulated" in label for label in labels if label != "logs")
    assert trace["metadata"]["emulated"] is True


def test_write_trace_streams_valid_json_matching_build(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=30))
    count = write_trace(run, tmp_path / "out" / "t.json")
    written = json.loads((tmp_path / "out" / "t.json").read_text())
    assert written["traceEvents"] == build_trace(run)["traceEvents"]
    assert count == len(written["traceEvents"])


def test_empty_run_still_traces(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=0, power=False, status="failed"))
    trace = build_trace(run)
    assert not events(trace, "X", "inference") and events(trace, "M")


# --- report ------------------------------------------------------------------------------


def test_report_has_every_plot_and_is_self_contained(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=200))
    html = build_report([run])
    assert plots_in(html) == [
        "latency-histogram",
        "latency-cdf",
        "latency-over-time",
        "power",
        "energy",
    ]
    namespaces = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", html)
    assert "<script" not in html and "http://" not in namespaces and "https://" not in html
    for key in ("p50", "0.400", "1.900", "ppk2@/dev/ttyACM0", "temperature", "Cortex-A76"):
        assert key in html, key
    for svg in re.findall(r"<svg .*?</svg>", html, re.S):
        ET.fromstring(svg)  # every plot is well-formed XML


def test_report_escapes_hostile_names(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", target=HOSTILE, model=HOSTILE))
    html = build_report([run], title=HOSTILE)
    assert "<script" not in html
    assert "evil&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;co" in html
    for svg in re.findall(r"<svg .*?</svg>", html, re.S):
        ET.fromstring(svg)


def test_multi_run_report_overlays_distributions(tmp_path: Path) -> None:
    runs = [
        load_run(make_run(tmp_path, "a", target="rpi5")),
        load_run(make_run(tmp_path, "b", target="jetson", energy=False, power=False)),
        load_run(make_run(tmp_path, "c", target="qemu", emulated=True, power=False)),
    ]
    html = build_report(runs)
    found = plots_in(html)
    assert found.count("latency-histogram") == 1 and found.count("latency-cdf") == 1
    assert found.count("latency-over-time") == 3
    assert found.count("power") == 1 and found.count("energy") == 1
    assert "#1 rpi5" in html and "#2 jetson" in html and "#3 qemu · tiny-mlp (emulated)" in html
    assert "emulated time" in html
    assert html.count("<tr>") == 4  # header + 3 runs


def test_runs_without_energy_omit_power_and_energy_plots(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", power=False, energy=False))
    html = build_report([run])
    assert plots_in(html) == ["latency-histogram", "latency-cdf", "latency-over-time"]
    assert "mJ/inf" not in html


def test_partial_and_empty_runs_render_with_a_notice(tmp_path: Path) -> None:
    partial = load_run(make_run(tmp_path, "p", n=20, status="running", power=False))
    assert partial.status == "partial"
    empty = load_run(make_run(tmp_path, "e", n=0, power=False, status="failed"))
    html = build_report([partial, empty])
    assert "status <b>partial</b>" in html and "the deploy process died" in html
    assert "status <b>failed</b>" in html and "runner crashed" in html
    assert "no samples were recorded" in html
    assert plots_in(html).count("latency-over-time") == 1
    html_empty = build_report([empty])
    assert "latency-histogram" in plots_in(html_empty)


def test_large_run_is_downsampled(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=20_000, energy=True))
    html = build_report([run])
    assert len(html) < 1_500_000
    assert "latency min–max" in html and "power min–max" in html


def test_write_report_is_atomic_file(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1"))
    write_report([run], tmp_path / "sub" / "r.html")
    assert (tmp_path / "sub" / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["r.html"]


def test_plot_helpers() -> None:
    assert latency_unit([7_100.0, 7_300.0]).name == "µs"
    assert latency_unit([1_900_000.0]).name == "ms"
    assert latency_unit([3e10]).name == "s"
    assert latency_unit([2.5e6], instructions=True).name == "M instr"
    assert merge_spans([(0, 1), (1.2, 2), (5, 6)], 0.5) == [(0, 2), (5, 6)]
    xs, lo, hi, mean = minmax_buckets(list(range(1000)), [i % 10 for i in range(1000)], 10)
    assert len(xs) == 10 and lo == [0] * 10 and hi == [9] * 10 and mean[0] == 4.5


# --- CLI ---------------------------------------------------------------------------------


def test_trace_command_writes_file(tmp_path: Path) -> None:
    make_run(tmp_path / "results", "2026-01-01-r1")
    out = tmp_path / "t.json"
    result = CliRunner().invoke(
        trace_command, ["2026-01", "--results-dir", str(tmp_path / "results"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "ui.perfetto.dev" in result.output and str(out) in result.output
    assert json.loads(out.read_text())["metadata"]["run_id"] == "2026-01-01-r1"


def test_report_command_multi_run_json(tmp_path: Path) -> None:
    make_run(tmp_path / "results", "a")
    make_run(tmp_path / "results", "b")
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        report_command,
        ["a", "b", "--results-dir", str(tmp_path / "results"), "-o", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"path": str(out.resolve()), "runs": ["a", "b"]}
    assert plots_in(out.read_text()).count("latency-over-time") == 2


def test_cli_missing_run_exits_9(cli: Any, home: Path) -> None:
    result = cli("report", "nope", "-o", str(home / "r.html"))
    assert_one_line_error(result, 9, "no run 'nope'")
    result = cli("trace", "latest")
    assert_one_line_error(result, 9, "no runs under")


def test_cli_end_to_end_latest(cli: Any, home: Path) -> None:
    make_run(home / "results", "2026-05-05-x")
    out = home / "x.trace.json"
    result = cli("trace", "latest", "-o", str(out))
    assert result.code == 0, result.stderr
    assert out.exists()
    result = cli("report", "latest", "-o", str(home / "x.html"))
    assert result.code == 0 and "file://" in result.stdout
    unwritable = cli("report", "latest", "-o", str(home / "x.html" / "sub.html"))
    assert_one_line_error(unwritable, 9, "cannot write")


def test_huge_power_traces_are_thinned_keeping_spikes() -> None:
    samples = [PowerSample(k * 100_000, 1.0 + (k % 3) * 0.01) for k in range(100_000)]
    samples[54_321] = PowerSample(samples[54_321].t_ns, 9.0)
    thinned = thin_power(samples, limit=1000)
    assert len(thinned) <= 1000
    assert max(s.watts for s in thinned) == 9.0 and min(s.watts for s in thinned) == 1.0
    assert [s.t_ns for s in thinned] == sorted(s.t_ns for s in thinned)
    assert thin_power(samples[:10], limit=1000) == samples[:10]


def test_old_run_with_power_starts_at_the_measure_window(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", n=10, starts=False))
    trace = build_trace(run)
    first = events(trace, "X", "inference")[0]
    windows = {e["name"]: e for e in events(trace, "X") if e.get("cat") == "meter"}
    assert first["ts"] == pytest.approx(windows["measure window"]["ts"])
    assert trace["metadata"]["start_times"] == "back-to-back (estimated)"
    assert "power" in plots_in(build_report([run]))


def test_report_shows_the_run_estimate_and_verdicts_against_a_baseline(tmp_path: Path) -> None:
    from edgetool.results.manifest import RepetitionSummary
    from edgetool.results.stats import summarize_repetitions

    run = load_run(make_run(tmp_path, "r1"))
    assert run.summary is not None
    run.summary.repetitions = RepetitionSummary.from_dict(
        summarize_repetitions([0.0071, 0.0072, 0.0070], "process").to_dict()
    )
    html = build_report([run], verdicts={str(run.dir): "regression +8.1 % [+4.0, +12.3]"})
    assert "0.0071 [" in html and "ms ×3" in html  # four significant figures
    assert "vs baseline" in html and "regression +8.1 % [+4.0, +12.3]" in html
    plain = build_report([run])
    assert "vs baseline" not in plain


# --- what the plots show -----------------------------------------------------------------


def svg_of(html: str, name: str) -> str:
    """The first inline SVG plot called `name`."""
    found = [svg for svg in re.findall(r"<svg .*?</svg>", html, re.S) if plots_in(svg) == [name]]
    assert found, f"no {name} plot"
    return found[0]


def texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def numbers(svg: str) -> list[float]:
    out = []
    for text in texts(svg):
        with contextlib.suppress(ValueError):
            out.append(float(text.replace("−", "-")))
    return out


FAST = [7_000 + (i % 13) * 50 for i in range(5000)] + [2_000_000] * 5
"""A 7 µs model with five 2 ms hiccups."""


def test_fast_model_histogram_is_in_microseconds_with_the_tail_counted(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", durations=FAST, power=False, energy=False))
    html = build_report([run])
    hist = svg_of(html, "latency-histogram")
    assert "latency (µs)" in texts(hist)
    assert "5 samples above 7.6 µs not shown" in texts(hist)
    ticks = numbers(hist)
    assert 7.0 in ticks and 7.5 in ticks and 2000 not in ticks  # the body, not one bar at 0
    cdf = svg_of(html, "latency-cdf")
    assert "5 samples above 7.6 µs not shown" in texts(cdf)
    assert "7.6 [" not in html and "7.3 µs (1 repetition)" in html  # the table speaks µs too


def test_runs_far_apart_share_a_log_axis(tmp_path: Path) -> None:
    fast = load_run(make_run(tmp_path, "a", durations=FAST[:500], power=False, energy=False))
    slow = [20_000_000 + (i % 7) * 300_000 for i in range(300)]
    slow_run = load_run(make_run(tmp_path, "b", durations=slow, power=False, energy=False))
    html = build_report([fast, slow_run])
    for name in ("latency-histogram", "latency-cdf"):
        ticks = numbers(svg_of(html, name))
        assert {10.0, 100.0, 1000.0, 10000.0} <= set(ticks), ticks  # decades, plainly labelled


def test_latency_over_time_axes_start_at_zero(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", durations=FAST[:800], power=False, energy=False))
    svg = svg_of(build_report([run]), "latency-over-time")
    ticks = numbers(svg)
    assert min(ticks) == 0 and all(t >= 0 for t in ticks), ticks
    assert "latency (µs)" in texts(svg) and "temperature (°C)" in texts(svg)


def test_instruction_time_base_is_shown_in_instructions(tmp_path: Path) -> None:
    counts = [2_400_000 + (i % 3) * 1000 for i in range(40)]
    run = load_run(
        make_run(
            tmp_path, "r1", durations=counts, power=False, energy=False, emulated=True,
            time_base="emulated instructions (QEMU -icount shift=0)",
        )
    )  # fmt: skip
    html = build_report([run])
    assert "latency (M instr, emulated)" in texts(svg_of(html, "latency-histogram"))
    assert "2.401 M instr (1 repetition)" in html


def test_repetition_medians_are_plotted_with_the_run_ci(tmp_path: Path) -> None:
    from edgetool.results.manifest import RepetitionSummary
    from edgetool.results.stats import summarize_repetitions

    run = load_run(make_run(tmp_path, "r1"))
    assert run.summary is not None
    assert "latency-repetitions" not in plots_in(build_report([run]))
    run.summary.repetitions = RepetitionSummary.from_dict(
        summarize_repetitions([1.21, 1.19, 1.24, 1.2], "process").to_dict()
    )
    svg = svg_of(build_report([run]), "latency-repetitions")
    labels = texts(svg)
    assert "95% CI of the run" in labels and "repetition median" in labels
    assert {"1", "2", "3", "4"} <= set(labels) and min(numbers(svg)) == 0


def test_power_plot_shades_inference_windows_from_zero_watts(tmp_path: Path) -> None:
    svg = svg_of(build_report([load_run(make_run(tmp_path, "r1", n=30))]), "power")
    labels = texts(svg)
    assert {"inference running", "measure window", "idle window", "idle W"} <= set(labels)
    assert "power (W)" in labels and min(numbers(svg)) == 0


def test_summary_table_wraps_and_leads_with_energy(tmp_path: Path) -> None:
    html = build_report([load_run(make_run(tmp_path, "r1", model="a-rather-long-model-name"))])
    table = re.search(r'<table class="summary" id="summary">(.*?)</table>', html, re.S)
    assert table is not None
    head = re.findall(r"<th[^>]*>([^<]*)</th>", table.group(1))
    assert head.index("total mJ/inf [CI]") < 5  # on screen without scrolling sideways
    assert "nowrap" not in html and "overflow-x" not in html
    assert 'data-label="total mJ/inf [CI]">1.9000 [1.8000, 2.0000]' in table.group(1)


def test_plots_are_deterministic_and_survive_dollar_signs(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "r1", model="a$b$c_{x}"))
    first = re.findall(r"<svg .*?</svg>", build_report([run]), re.S)
    second = re.findall(r"<svg .*?</svg>", build_report([run]), re.S)
    assert first == second
    assert "#1 rpi5 · a$b$c_{x}" in texts(svg_of("".join(first), "latency-cdf"))
    ids = re.findall(r'\bid="([^"]+)"', "".join(first))
    assert len(ids) == len(set(ids))  # unique across the inlined plots
