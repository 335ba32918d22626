"""manifest.json and summary.json through their types: read, written back unchanged, and
old run directories (before repetitions, start times or energy) still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgetool.results.compare import CompareSettings, compare_runs
from edgetool.results.manifest import (
    EnergySummary,
    LatencySummary,
    RunManifest,
    Summary,
    TargetInfo,
)
from edgetool.results.report import build_report
from edgetool.results.store import load_run
from edgetool.results.trace import build_trace


def file_text(data: Any) -> str:
    """The bytes the store writes for `data` (sorted keys, indent 2)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_a_deployed_run_reads_and_writes_back_byte_for_byte(cli: Any) -> None:
    result = cli("deploy", "--model", "tiny-mlp", "-n", "20", "-r", "2", "--warmup", "2", "--json")
    assert result.code == 0, result.stderr
    run_dir = Path(result.json()["run_dir"])
    for name, cls in (("manifest.json", RunManifest), ("summary.json", Summary)):
        text = (run_dir / name).read_text()
        record = cls.from_dict(json.loads(text))
        assert file_text(record.to_dict()) == text
        assert record.extra == {}, f"{name}: keys the types do not know: {sorted(record.extra)}"
    run = load_run(run_dir)
    assert run.manifest.target_info.name == "local" and run.manifest.status == "complete"
    assert run.manifest.runtime_info.runtime == "onnxruntime"
    assert run.summary is not None and run.summary.repetitions is not None
    assert run.summary.repetitions.count == 2 and run.summary.latency_info.count == 40
    shown = cli("results", "show", run_dir.name, "--json").json()
    assert shown["manifest"] == json.loads((run_dir / "manifest.json").read_text())
    assert shown["summary"] == json.loads((run_dir / "summary.json").read_text())


OLD_MANIFEST: dict[str, Any] = {
    # An early run: no repetitions, no runtime/env sections, no "r" or "t" in samples.
    "schema": 1,
    "run_id": "2025-11-02T09-00-00-rpi4-cbnet",
    "status": "complete",
    "created": "2025-11-02T09:00:00+0000",
    "finished": "2025-11-02T09:00:09+0000",
    "error": None,
    "host": {"hostname": "build-7", "pid": 4242},
    "target": {"name": "rpi4", "kind": "linux", "transport": "ssh pi@rpi4"},
    "artifact": {"name": "cbnet.onnx", "format": "onnx", "size": 2048, "sha256": "ab" * 32},
    "settings": {"iterations": 30, "warmup": 5},
    "edgetool": {"version": "0.0.3"},
    "device": {"arch": "aarch64", "cores": 4},
    "retired_field": {"kept": [1, 2, 3]},
}


def old_run(root: Path, summary: dict[str, Any] | None) -> Path:
    run_dir = root / OLD_MANIFEST["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(file_text(OLD_MANIFEST))
    lines = [{"i": i, "ns": [1_000_000 + 1000 * i + 500 * j for j in range(5)]} for i in (0, 5)]
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if summary is not None:
        (run_dir / "summary.json").write_text(file_text(summary))
    return run_dir


OLD_SUMMARY: dict[str, Any] = {
    "count": 10,
    "latency": {"count": 10, "p50": 1.0045, "mean": 1.0046, "std": 0.002, "unit": "ms"},
    "throughput_per_s": 990.0,
}


def test_an_old_run_loads_and_its_files_are_written_back_unchanged(
    tmp_path: Path, cli: Any
) -> None:
    run_dir = old_run(tmp_path, OLD_SUMMARY)
    run = load_run(run_dir)
    assert run.reps is None and run.repetition_tags == [0] * 10 and run.starts_ns is None
    assert run.manifest.target_info.time_base is None and run.manifest.power is None
    assert run.manifest.extra == {"retired_field": {"kept": [1, 2, 3]}}
    assert run.manifest.to_dict() == OLD_MANIFEST
    assert run.summary is not None and run.summary.repetitions is None
    assert run.summary.latency_info.p50 == 1.0045 and run.summary.latency_info.p99 is None
    assert run.summary.to_dict() == OLD_SUMMARY  # no key added, not even as null
    # Every reader copes with what is missing.
    assert "rpi4" in build_report([run])
    assert build_trace(run)["metadata"]["target"] == "rpi4"
    pair = compare_runs(run, run, CompareSettings())
    assert pair.verdict and not pair.regressions
    shown = cli("results", "show", str(run_dir))
    assert shown.code == 0, shown.stderr
    assert "one repetition (a run from before repetitions)" in shown.stdout


def test_an_old_run_without_a_summary_gets_one_from_its_samples(tmp_path: Path) -> None:
    run = load_run(old_run(tmp_path, None))
    assert run.summary is not None
    assert run.summary.count == 10 and run.summary.latency_info.count == 10
    assert run.summary.repetitions is None  # no "r" tags: one repetition, no estimate
    assert set(run.summary.to_dict()) == {"count", "latency"}


def test_unknown_keys_and_odd_values_survive_a_round_trip() -> None:
    data: dict[str, Any] = {
        "count": "12",  # a string where a number belongs: kept as written, read as unknown
        "latency": {"p50": 1.5, "median_ci": [1.0], "vendor_note": "x"},
        "energy": {"meter": "ppk2", "total_mj": {"mean": 2, "ci": None}, "error": None},
        "peak_rss": None,
        "future": {"nested": True},
    }
    summary = Summary.from_dict(data)
    assert summary.count is None and summary.extra["count"] == "12"
    assert summary.latency_info.p50 == 1.5 and summary.latency_info.median_ci is None
    assert summary.energy is not None and summary.energy.total_mj is not None
    assert summary.energy.total_mj.mean == 2 and summary.energy.error is None
    assert summary.to_dict() == data
    assert json.dumps(summary.to_dict(), sort_keys=True) == json.dumps(data, sort_keys=True)


def test_a_value_set_after_loading_replaces_what_was_kept() -> None:
    summary = Summary.from_dict({"count": "twelve"})
    summary.count = 12
    assert summary.to_dict() == {"count": 12}


def test_records_built_in_code_write_the_shape_the_flows_write() -> None:
    """Always-written keys appear as null when unset; optional ones are left out."""
    summary = Summary(count=3, latency=LatencySummary(count=3, p50=1.0), complete=True)
    written = summary.to_dict()
    for key in ("throughput_per_s", "peak_rss", "first_inference_ms", "warmup", "load_ms"):
        assert key in written and written[key] is None
    for key in ("energy", "generation", "synthetic", "emulated", "time_base", "repetitions"):
        assert key not in written
    assert written["latency"]["median_ci"] is None and "source" not in written["latency"]
    assert TargetInfo(name="t", emulated=True).to_dict() == {
        "name": "t",
        "kind": None,
        "description": None,
        "transport": None,
        "source": None,
        "emulated": True,
    }


@pytest.mark.parametrize("section", [[], "broken", 3])
def test_a_section_of_the_wrong_shape_reads_as_missing_and_is_kept(section: Any) -> None:
    manifest = RunManifest.from_dict({"target": section, "status": "complete"})
    assert manifest.target is None and manifest.target_info.name is None
    assert manifest.to_dict() == {"target": section, "status": "complete"}
    summary = Summary.from_dict({"energy": section})
    assert summary.energy is None and summary.to_dict() == {"energy": section}
    assert EnergySummary.from_dict({}).to_dict() == {}
