"""`edgetool` against a synthetic Bangle.js 2 behind a TCP NUS bridge (edgetool.testing.nus_peer):
facts, deploy with upload/skip, fit refusal, corrupt storage, a watch that goes silent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetool.testing.nus_peer import NusPeer
from tests.conftest import REPO, CliResult, assert_one_line_error, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One export cache for the module: exporting per test would take minutes."""
    cache = tmp_path_factory.mktemp("cache")
    env = {"EDGETOOL_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    for spec in ("cbnet-classifier:int8", "l2mu:int8", "l2mu-watch:fp32"):
        name, quant = spec.split(":")
        result = run_cli("export", name, "--format", "tflite", "--quant", quant, env=env)
        assert result.code == 0, result.stderr
    return env


def _targets(tmp_path: Path, address: str) -> Path:
    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    text = (REPO / "targets" / "bangle2.toml").read_text()
    (folder / "bangle2.toml").write_text(text.replace("XX:XX:XX:XX:XX:XX", address))
    return folder


@pytest.fixture
def watch(home: Path) -> Iterator[NusPeer]:
    with NusPeer() as peer:
        yield peer


def _cli(tmp_path: Path, peer: NusPeer, env: dict[str, str], *args: str) -> CliResult:
    folder = _targets(tmp_path, peer.address)
    return run_cli(*args, env={**env, "EDGETOOL_TARGETS": str(folder)})


def test_targets_check_reports_the_watch(
    home: Path, watch: NusPeer, exports: dict[str, str]
) -> None:
    text = _cli(home, watch, exports, "targets", "check", "bangle2")
    assert text.code == 0, text.stderr
    assert "synthetic peer" in text.stdout and "2v25" in text.stdout
    as_json = _cli(home, watch, exports, "targets", "check", "bangle2", "--json").json()
    assert as_json["synthetic"] is True
    assert as_json["tensorflow"] is True
    assert as_json["memory_free_bytes"] == 11000 * 14
    assert as_json["link"] == "tcp bridge"


def test_deploy_runs_journals_and_skips_a_second_upload(
    home: Path, watch: NusPeer, exports: dict[str, str]
) -> None:
    args = ("deploy", "--target", "bangle2", "--model", "cbnet-classifier", "--json", "-n", "20")
    first = _cli(home, watch, exports, *args, "-r", "3")
    assert first.code == 0, first.stderr
    out = first.json()
    summary = out["summary"]
    # No process to restart on a watch: three windows, each after its own warm-up.
    assert summary["count"] == 60 and summary["complete"] is True
    assert summary["repetitions"]["count"] == 3 and summary["repetitions"]["kind"] == "window"
    assert summary["parity"]["ok"] is True and summary["parity"]["max_abs"] <= 1
    assert summary["synthetic"] is True
    manifest = json.loads((Path(out["run_dir"]) / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["target"]["synthetic"] is True
    assert manifest["target"]["board"] == "bangle2"
    assert manifest["target"]["time_base"].startswith("watch getTime()")
    assert out["pushes"][0]["skipped"] is False
    assert max(watch.write_sizes) <= 20 and watch.violations == []
    writes_after_first = len(watch.statements)

    second = _cli(home, watch, exports, *args, "-r", "1")
    assert second.code == 0, second.stderr
    assert second.json()["pushes"][0]["skipped"] is True
    new = watch.statements[writes_after_first:]
    assert not any('Storage").write(' in s for s in new)


def test_a_model_that_does_not_fit_is_refused_before_sending(
    home: Path, watch: NusPeer, exports: dict[str, str]
) -> None:
    result = _cli(
        home, watch, exports, "deploy", "--target", "bangle2", "--model", "l2mu:tflite:int8"
    )
    assert_one_line_error(result, 3, "does not fit", "452,056 B")
    assert watch.write_sizes == []  # not even a connection's worth of bytes


def test_l2mu_runs_stepped_a_window_per_sample(
    home: Path, watch: NusPeer, exports: dict[str, str]
) -> None:
    # bangle2.toml's [models] makes `l2mu` the stepped l2mu-watch; the peer's TFLM steps it
    result = _cli(
        home, watch, exports, "deploy", "--target", "bangle2", "--model", "l2mu", "--json",
        "-n", "3", "--warmup", "1", "-r", "1",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    out = result.json()
    summary = out["summary"]
    assert summary["count"] == 3 and summary["synthetic"] is True
    parity = summary["parity"]
    assert parity["ok"] is True and "stepped" in parity["reference"]
    counts = parity["outputs"]
    assert len(counts) == 7 and counts == [int(c) for c in counts]
    assert 0 < sum(counts) <= 7 * 40  # spike counts over a 40-step window
    assert parity["max_abs"] <= 1
    manifest = json.loads((Path(out["run_dir"]) / "manifest.json").read_text())
    assert manifest["artifact"]["model"] == "l2mu-watch"
    assert manifest["stepped"]["steps"] == 40 and "whole window" in manifest["stepped"]["sample"]
    stepping = [s for s in watch.statements if s.startswith("ET.z=new Float32Array(276)")]
    assert len(stepping) == 1 and "t<40" in stepping[0]
    assert max(watch.write_sizes) <= 20 and watch.violations == []


def test_corrupt_storage_is_a_transfer_error(home: Path, exports: dict[str, str]) -> None:
    with NusPeer(corrupt_storage=True) as peer:
        result = _cli(
            home, peer, exports, "deploy", "--target", "bangle2", "--model", "cbnet-classifier"
        )
    assert_one_line_error(result, 8, "did not verify")
    assert peer.storage == {}  # the bad copy was erased
    assert not any(".create(" in s for s in peer.statements)  # nothing was used


def test_a_silent_watch_keeps_the_samples_measured_so_far(
    home: Path, exports: dict[str, str]
) -> None:
    with NusPeer(go_silent_after=60) as peer:
        result = _cli(
            home, peer, exports, "deploy", "--target", "bangle2", "--model", "cbnet-classifier",
            "-n", "200",
        )  # fmt: skip
    assert_one_line_error(result, 7, "stopped answering")
    runs = list((home / "results").iterdir())
    assert len(runs) == 1
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "partial"
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["count"] == 50  # the first batch; the second was cut off
    assert summary["synthetic"] is True
