from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetool.errors import ResultsError
from edgetool.results.manifest import RunManifest, Summary
from edgetool.results.store import RunWriter, find_run, load_run
from tests.conftest import all_at_once


def test_complete_run_round_trip(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, "r1", RunManifest.from_dict({"target": {"name": "t"}}))
    writer.append_samples(0, [1_000_000, 2_000_000])
    writer.append_samples(2, [3_000_000])
    writer.finish("complete", Summary.from_dict({"latency": {"p50": 2.0}}))
    run = load_run(tmp_path / "r1")
    assert run.status == "complete"
    assert run.samples_ns == [1_000_000, 2_000_000, 3_000_000]
    assert run.summary is not None and run.summary.to_dict() == {"latency": {"p50": 2.0}}
    assert run.summary.latency_info.p50 == 2.0


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, "r1", RunManifest())
    writer.append_samples(0, [5, 6])
    with (tmp_path / "r1" / "samples.jsonl").open("a") as handle:
        handle.write('{"i": 2, "ns": [7, 8')  # killed mid-write
    run = load_run(tmp_path / "r1")
    assert run.samples_ns == [5, 6]


def test_running_run_whose_process_died_reads_as_partial(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from edgetool.results.store import RunWriter;"
        "from edgetool.results.manifest import RunManifest;"
        f"w = RunWriter(Path({str(tmp_path)!r}), 'r1', RunManifest());"
        "w.append_samples(0, [1000000] * 10)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # exits without finish()
    manifest = json.loads((tmp_path / "r1" / "manifest.json").read_text())
    assert manifest["status"] == "running"
    run = load_run(tmp_path / "r1")
    assert run.status == "partial"
    assert run.summary is not None and run.summary.count == 10


def test_live_run_is_still_running(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, "r1", RunManifest())
    assert load_run(tmp_path / "r1").status == "running"
    assert writer.manifest.host is not None and writer.manifest.host.pid == os.getpid()


def test_find_run_by_id_prefix_path_and_latest(tmp_path: Path) -> None:
    for run_id in ("2026-01-01-a", "2026-01-02-b"):
        RunWriter(tmp_path, run_id, RunManifest()).finish("complete", None)
    assert find_run("2026-01-02", tmp_path).run_id == "2026-01-02-b"
    assert find_run("latest", tmp_path).run_id == "2026-01-02-b"
    assert find_run(str(tmp_path / "2026-01-01-a"), tmp_path).run_id == "2026-01-01-a"
    with pytest.raises(ResultsError, match="matches 2 runs"):
        find_run("2026", tmp_path)
    with pytest.raises(ResultsError, match="no run 'zzz'"):
        find_run("zzz", tmp_path)


def test_concurrent_deploys_with_the_same_run_id_get_their_own_directories(
    tmp_path: Path,
) -> None:
    """Run ids are second-resolution: two deploys started together used to check, then
    create, and one died with an internal error. mkdir is now the check."""
    made, errors = all_at_once(
        16, lambda: RunWriter(tmp_path, "2026-12-06T10-00-00-local-m", RunManifest()).run_id
    )
    assert errors == []
    assert len(set(made)) == 16
    assert "2026-12-06T10-00-00-local-m" in made
    assert all((tmp_path / str(run_id) / "manifest.json").is_file() for run_id in made)
