"""A split run's results views: the summary maths (per part, best cut, crossover), the
Perfetto trace of device/link/server slices, the HTML report's split section, and the
`results`/`trace`/`report` commands on such a run (built by hand: no device, no link)."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgetool.files import write_json_atomic
from edgetool.results import split
from edgetool.results.manifest import RunManifest
from edgetool.results.report import build_report
from edgetool.results.store import RunWriter, load_run
from edgetool.results.trace import build_trace, write_trace
from tests.conftest import assert_one_line_error
from tests.unit.test_trace_report import make_run

MS = 1_000_000
T0 = 5_000_000_000

LINKS: dict[str, dict[str, Any]] = {
    "wifi": {"bandwidth": "20mbit", "bits_per_second": 20e6, "rtt_ms": 10.0},
    "ble": {"bandwidth": "1mbit", "bits_per_second": 1e6, "rtt_ms": 30.0},
}
ROUTES: list[tuple[str, str, int, int, int, int]] = [
    # cut, codec, device ns, encode ns, bytes, server ns (graph order, baselines at the ends)
    ("device-only", "none", 40 * MS, 0, 0, 0),
    ("/conv1/Relu_output_0", "fp32", 2 * MS, MS // 2, 40_000, 3 * MS),
    ("/conv1/Relu_output_0", "int8", 2 * MS, MS, 10_000, 3 * MS),
    ("/fc/Gemm_output_0", "fp16", 6 * MS, MS // 4, 1_000, MS // 2),
    ("server-only", "fp32", 0, MS // 10, 12_288, 4 * MS),
]
REPLY = 40


def journal_records(reps: int = 3, per_rep: int = 4) -> list[dict[str, Any]]:
    """One record per inference, the link parts from each link's bandwidth and RTT, a
    little spread per repetition and inference so the intervals are not empty."""
    records = []
    t = T0
    for link, profile in LINKS.items():
        for cut, codec, device, encode, size, server in ROUTES:
            for rep in range(reps):
                for i in range(per_rep):
                    jitter = 1.0 + 0.01 * rep + 0.002 * i
                    offload = cut != "device-only"
                    half_rtt = profile["rtt_ms"] / 2 * MS if offload else 0
                    up = (
                        int(half_rtt + size * 8 / profile["bits_per_second"] * 1e9)
                        if offload
                        else 0
                    )
                    down = (
                        int(half_rtt + REPLY * 8 / profile["bits_per_second"] * 1e9)
                        if offload
                        else 0
                    )
                    parts = {
                        "device_ns": int(device * jitter),
                        "encode_ns": int(encode * jitter),
                        "up_ns": up,
                        "decode_ns": 0,
                        "tail_ns": int(server * jitter),
                        "server_ns": int(server * jitter),
                        "down_ns": down,
                    }
                    e2e = sum(
                        parts[k]
                        for k in ("device_ns", "encode_ns", "up_ns", "server_ns", "down_ns")
                    )
                    records.append(
                        {
                            "link": link,
                            "cut": cut,
                            "codec": codec,
                            "rep": rep,
                            "i": i,
                            "t0_ns": t,
                            **parts,
                            "bytes": size,
                            "reply_bytes": REPLY if offload else 0,
                            "e2e_ns": e2e,
                            "wall_ns": e2e + 50_000,
                        }
                    )
                    t += e2e + 100_000
    return records


def make_split_run(root: Path, run_id: str = "split-run", **extra: Any) -> Path:
    """A split run directory as `edgetool split` writes it: manifest with a split section,
    an empty samples.jsonl, split.jsonl and a summary with the split figures."""
    records = journal_records()
    cuts = [
        {"tensor": "/conv1/Relu_output_0", "shape": [1, 16, 16, 16], "dtype": "float32",
         "after": "conv1", "position": 1, "fp32_bytes": 16384},
        {"tensor": "/fc/Gemm_output_0", "shape": [1, 64], "dtype": "float32",
         "after": "fc", "position": 2, "fp32_bytes": 256},
    ]  # fmt: skip
    quality = {
        "/conv1/Relu_output_0": {
            "fp32": {"top1": 1.0, "max_abs_diff": 0.0, "bytes_per_inference": 40_000},
            "int8": {"top1": 0.97, "max_abs_diff": 0.02, "bytes_per_inference": 10_000},
        },
        "/fc/Gemm_output_0": {"fp16": {"top1": 0.995, "bytes_per_inference": 1_000}},
    }
    manifest = RunManifest.from_dict(
        {
            "target": {"name": "rpi5", "kind": "ssh"},
            "artifact": {"name": "cbnet.onnx", "model": "cbnet", "format": "onnx"},
            "split": {
                "server": {"name": "local"},
                "links": {
                    name: {**p, "jitter_ms": 0.0, "loss": 0.0, "source": None, "facts": {}}
                    for name, p in LINKS.items()
                },
                "cuts": cuts,
                "codecs": ["none", "fp32", "fp16", "int8"],
                "quality": quality,
                "input": "random (seed 0)",
            },
            **extra,
        }
    )
    writer = RunWriter(root, run_id, manifest)
    with (writer.dir / split.SPLIT_JOURNAL).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    writer.finish("complete", None)
    write_json_atomic(
        writer.dir / "summary.json",
        {"count": len(records), "split": split.summarize(records, LINKS)},
    )
    return writer.dir


# --- summary maths ------------------------------------------------------------------------


def _row(
    kind: str, device: float, server: float, sent: int, reply: int, e2e: float
) -> dict[str, Any]:
    def fig(ms: float) -> dict[str, Any]:
        return {"estimate_ms": ms, "p50_ms": ms, "ci": None}

    cut = kind if kind != "split" else "t"
    return {
        "link": "l", "cut": cut, "codec": "fp32", "kind": kind, "bytes": sent,
        "reply_bytes": reply, "device": fig(device), "encode": fig(0.0), "up": fig(0.0),
        "server": fig(server), "down": fig(0.0), "e2e": fig(e2e),
    }  # fmt: skip


def test_crossover_is_the_bandwidth_where_the_bytes_fill_the_slack() -> None:
    rows = [_row("device-only", 10.0, 0.0, 0, 0, 10.0), _row("split", 1.0, 1.0, 1000, 1000, 3.0)]
    crossover = split.crossover_bandwidth(rows, {"rtt_ms": 0.0})
    # 8 × 2000 bits in the 10 − 2 = 8 ms left: 2 Mbit/s
    assert abs(crossover["bits_per_second"] - 2e6) < 1e-6
    assert (crossover["cut"], crossover["codec"]) == ("t", "fp32")
    assert split.rate_text(crossover["bits_per_second"]) == "2 Mbit/s"
    # with an RTT the slack shrinks: 8 × 2000 bits in 4 ms is 4 Mbit/s
    assert abs(split.crossover_bandwidth(rows, {"rtt_ms": 4.0})["bits_per_second"] - 4e6) < 1e-6


def test_crossover_never_when_compute_and_rtt_reach_device_only() -> None:
    rows = [_row("device-only", 10.0, 0.0, 0, 0, 10.0), _row("split", 4.0, 4.0, 10, 10, 9.0)]
    crossover = split.crossover_bandwidth(rows, {"rtt_ms": 2.0})  # 8 + 2 ≥ 10
    assert crossover["bits_per_second"] is None
    assert "never pays" in crossover["reason"]
    assert split.rate_text(None) == "never"
    no_baseline = split.crossover_bandwidth(rows[1:], {"rtt_ms": 0.0})
    assert no_baseline["bits_per_second"] is None and "device-only" in no_baseline["reason"]


def test_summarize_has_a_row_per_route_with_each_part_and_the_best_per_link() -> None:
    records = journal_records(reps=3, per_rep=4)
    figures = split.summarize(records, LINKS)
    assert len(figures["rows"]) == len(LINKS) * len(ROUTES)
    row = next(
        r for r in figures["rows"]
        if (r["link"], r["cut"], r["codec"]) == ("wifi", "/fc/Gemm_output_0", "fp16")
    )  # fmt: skip
    assert row["count"] == 12 and row["bytes"] == 1000 and row["reply_bytes"] == REPLY
    # device 6 ms × (1 + 0.01 rep + 0.002 i): median of the repetition medians is rep 1's
    assert abs(row["device"]["estimate_ms"] - 6 * 1.013) < 1e-3
    assert row["e2e"]["ci"] is not None and row["e2e"]["reps"] == 3
    lo, hi = row["e2e"]["ci"]
    assert lo <= row["e2e"]["estimate_ms"] <= hi
    device_only = next(r for r in figures["rows"] if r["kind"] == "device-only")
    assert device_only["up"]["estimate_ms"] == 0.0 and device_only["up"]["ci"] is None
    # wifi: the small fc feature over 20 Mbit/s beats 40 ms on the device; ble: it doesn't
    assert (figures["best"]["wifi"]["cut"], figures["best"]["wifi"]["codec"]) == (
        "/fc/Gemm_output_0",
        "fp16",
    )
    assert figures["best"]["ble"]["cut"] == "device-only"
    assert figures["crossover"]["ble"]["cut"] == "/fc/Gemm_output_0"
    assert figures["crossover"]["ble"]["bits_per_second"] > LINKS["ble"]["bits_per_second"]


# --- trace --------------------------------------------------------------------------------


def test_trace_puts_each_part_on_its_track_end_to_end_from_the_inference_start(
    tmp_path: Path,
) -> None:
    run = load_run(make_split_run(tmp_path))
    path = tmp_path / "split.trace.json"
    count = write_trace(run, path)
    trace = json.loads(path.read_text(encoding="utf-8"))  # the streamed file is valid JSON
    events = trace["traceEvents"]
    assert count == len(events)
    assert trace["metadata"]["kind"] == "split"
    assert "own clocks" in trace["metadata"]["clock"]
    assert trace["metadata"]["inferences"] == len(journal_records())

    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert sorted(processes.values()) == ["link ble · cbnet", "link wifi · cbnet"]
    tracks = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    for pid in processes:
        names = [tracks[(pid, tid)] for tid in sorted(t for p, t in tracks if p == pid)]
        assert names == [
            "inference (end to end)", "device (head)", "encode", "link up", "server (tail)",
            "link down",
        ]  # fmt: skip
    pid_of = {name.split()[1]: pid for pid, name in processes.items()}
    track_of = {(pid, name): tid for (pid, tid), name in tracks.items()}

    # one wifi inference through the int8 conv1 cut, rep 1, i 2
    record = next(
        r for r in journal_records()
        if (r["link"], r["cut"], r["codec"], r["rep"], r["i"])
        == ("wifi", "/conv1/Relu_output_0", "int8", 1, 2)
    )  # fmt: skip
    origin = min(r["t0_ns"] for r in journal_records())
    mine = [
        e for e in events
        if e["ph"] == "X" and e["pid"] == pid_of["wifi"]
        and e["args"]["cut"] == record["cut"] and e["args"]["codec"] == "int8"
        and e["args"]["rep"] == 1 and e["args"]["i"] == 2
    ]  # fmt: skip
    by_track = {tracks[(e["pid"], e["tid"])]: e for e in mine}
    order = ["device (head)", "encode", "link up", "server (tail)", "link down"]
    keys = ["device_ns", "encode_ns", "up_ns", "server_ns", "down_ns"]
    t = (record["t0_ns"] - origin) / 1000
    for track, key in zip(order, keys, strict=True):
        event = by_track[track]
        assert event["name"] == "/conv1/Relu_output_0 · int8"
        assert abs(event["ts"] - t) < 1e-6 and abs(event["dur"] - record[key] / 1000) < 1e-6
        t += record[key] / 1000
    assert by_track["link up"]["args"]["bytes"] == 10_000
    assert by_track["link down"]["args"]["bytes"] == REPLY
    whole = by_track["inference (end to end)"]
    assert abs(whole["ts"] + whole["dur"] - t) < 1e-6
    assert whole["args"]["e2e_ms"] == record["e2e_ns"] / 1e6

    # device-only has nothing to send: no link or server slices, only the device's
    device_only = [e for e in events if e["ph"] == "X" and e["args"].get("cut") == "device-only"]
    assert {tracks[(e["pid"], e["tid"])] for e in device_only} == {
        "inference (end to end)",
        "device (head)",
    }
    assert track_of[(pid_of["ble"], "link up")] == 4


def test_a_split_run_with_a_torn_journal_line_still_traces(tmp_path: Path) -> None:
    run_dir = make_split_run(tmp_path)
    with (run_dir / split.SPLIT_JOURNAL).open("a", encoding="utf-8") as handle:
        handle.write('{"link": "wifi", "cut"')  # killed mid-write
    trace = build_trace(load_run(run_dir))
    assert trace["metadata"]["inferences"] == len(journal_records())


# --- report -------------------------------------------------------------------------------


def test_report_has_the_split_plots_table_best_cut_and_crossover(tmp_path: Path) -> None:
    html = build_report([load_run(make_split_run(tmp_path))])
    plots = re.findall(r'data-plot="([^"]+)"', html)
    assert plots.count("split-e2e-1") == 1
    assert plots.count("split-parts") == len(LINKS)  # one stacked-bar chart per link
    assert "latency-histogram" not in plots  # a split run has no per-inference samples
    for match in re.finditer(r"<svg .*?</svg>", html, flags=re.S):
        ET.fromstring(match.group(0))  # each inline SVG is well-formed XML
    assert 'data-link="wifi"' in html and 'data-link="ble"' in html
    # the e2e plot's x axis: baselines at the ends, cuts in graph order between them
    e2e = re.search(r'<svg data-plot="split-e2e-1".*?</svg>', html, flags=re.S)
    assert e2e is not None
    ticks = [t for t in ("server-only", "/conv1/Relu_output_0", "/fc/Gemm_output_0",
                         "device-only") if t in e2e.group(0)]  # fmt: skip
    assert len(ticks) == 4
    positions = [e2e.group(0).index(f">{t}<") for t in ticks]
    assert positions == sorted(positions)

    table = re.search(r'<table class="summary split">.*?</table>', html, flags=re.S)
    assert table is not None
    rows = re.findall(r"<tr.*?</tr>", table.group(0), flags=re.S)
    assert len(rows) == 1 + len(LINKS) * len(ROUTES)
    best = [r for r in rows if 'class="best"' in r]
    assert len(best) == len(LINKS)
    assert any("wifi" in r and "/fc/Gemm_output_0" in r and "fp16" in r for r in best)
    assert "top-1 0.970" in table.group(0)  # the codec's accuracy cost from the manifest
    verdicts = re.search(r'<ul class="split-best">.*?</ul>', html, flags=re.S)
    assert verdicts is not None
    text = verdicts.group(0)
    assert "wifi (20mbit, RTT 10 ms)</b>: best cut /fc/Gemm_output_0 · fp16" in text
    assert "ble (1mbit, RTT 30 ms)</b>: best cut device-only · none" in text
    assert "offloading pays above" in text and "Mbit/s" in text


def test_a_split_run_in_a_mixed_report_shows_its_best_end_to_end(tmp_path: Path) -> None:
    normal = load_run(make_run(tmp_path, "plain-run"))
    mixed = build_report([normal, load_run(make_split_run(tmp_path))])
    summary = re.search(r'<table class="summary" id="summary">.*?</table>', mixed, flags=re.S)
    assert summary is not None
    rows = re.findall(r"<tr>.*?</tr>", summary.group(0), flags=re.S)
    assert "split run, best end to end" not in rows[1]
    assert "split run, best end to end: ble: 40.5" in rows[2]
    assert "wifi: 17.2" in rows[2] and "/fc/Gemm_output_0 · fp16" in rows[2]
    plots = re.findall(r'data-plot="([^"]+)"', mixed)
    assert "latency-histogram" in plots and "split-e2e-2" in plots
    assert '<a href="#split">Split computing</a>' in mixed


# --- commands -----------------------------------------------------------------------------


def test_results_list_marks_a_split_run_with_its_best_end_to_end(home: Path, cli: Any) -> None:
    make_split_run(home / "results")
    make_run(home / "results", "plain-run")
    rows = {r["run_id"]: r for r in json.loads(cli("results", "list", "--json").stdout)}
    assert rows["split-run"]["kind"] == "split"
    assert rows["split-run"]["count"] == len(journal_records())
    assert abs(rows["split-run"]["best_e2e_ms"] - 17.25) < 0.01
    assert "kind" not in rows["plain-run"]
    text = cli("results", "list")
    assert text.code == 0, text.stderr
    line = next(line for line in text.stdout.splitlines() if line.startswith("split-run"))
    assert "split, best e2e 17.3 ms" in line and " 120 " in line


def test_results_compare_refuses_a_split_run_in_one_line(home: Path, cli: Any) -> None:
    make_split_run(home / "results")
    make_run(home / "results", "plain-run")
    for base, new in (("split-run", "split-run"), ("plain-run", "split-run")):
        result = cli("results", "compare", base, new)
        assert_one_line_error(result, 9, "split-run is a split run", "edgetool report")


def test_results_compare_of_nights_leaves_split_runs_out(home: Path, cli: Any) -> None:
    for night in ("a", "b"):
        make_run(home / night, "plain-run")
        make_split_run(home / night)
    result = cli("results", "compare", str(home / "a"), str(home / "b"), "--json")
    assert result.code in (0, 13), result.stderr  # the plain pair is compared; no crash
    pairs = json.loads(result.stdout)["pairs"]
    assert len(pairs) == 1 and "split-run" not in json.dumps(pairs)


def test_results_export_writes_the_journal_rows(home: Path, cli: Any) -> None:
    make_split_run(home / "results")
    result = cli("results", "export", "split-run")
    assert result.code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    records = journal_records()
    assert len(rows) == len(records)
    assert rows[5]["link"] == records[5]["link"] and int(rows[5]["e2e_ns"]) == records[5]["e2e_ns"]
    assert set(rows[0]) >= {"link", "cut", "codec", "rep", "i", "t0_ns", "bytes", "up_ns"}
    out = home / "split.csv"
    written = cli("results", "export", "split-run", "-o", str(out), "--json")
    assert json.loads(written.stdout)["rows"] == len(records)


def test_trace_report_and_show_commands_on_a_split_run(home: Path, cli: Any) -> None:
    make_split_run(home / "results")
    trace = cli("trace", "split-run", "-o", str(home / "t.json"))
    assert trace.code == 0, trace.stderr
    assert f"{len(journal_records())} inferences" in trace.stdout
    assert json.loads((home / "t.json").read_text())["metadata"]["kind"] == "split"
    report = cli("report", "split-run", "-o", str(home / "r.html"))
    assert report.code == 0, report.stderr
    assert 'data-plot="split-e2e-1"' in (home / "r.html").read_text()
    show = cli("results", "show", "split-run")
    assert show.code == 0 and "Traceback" not in show.stderr
