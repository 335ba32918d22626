"""`edgetool` as a user runs it, on the `local` target (no hardware, no sshd)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TINY_ONNX, TINY_TFLITE, assert_one_line_error, run_cli


def test_help_is_fast_and_lists_commands() -> None:
    start = time.perf_counter()
    result = run_cli("--help")
    assert result.code == 0
    for name in ("deploy", "targets", "results", "emulate", "Exit codes"):
        assert name in result.stdout
    assert time.perf_counter() - start < 5  # generous: the point is no torch import
    modules = run_cli_imports()
    assert not {"torch", "onnxruntime", "paramiko", "numpy", "rich"} & modules


def run_cli_imports() -> set[str]:
    import subprocess

    code = (
        "import sys; from edgetool.cli import cli; "
        "sys.argv=['edgetool','--help'];\n"
        "try:\n cli.main(standalone_mode=False)\nexcept SystemExit: pass\n"
        "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split("\n")[-2].split())


@pytest.mark.parametrize("model", ["tiny-mlp", str(TINY_ONNX), "tiny-mlp:tflite"])
def test_deploy_local_writes_a_complete_run(cli: Any, home: Path, model: str) -> None:
    result = cli("deploy", "--model", model, "-n", "60", "--warmup", "2", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    run_dir = Path(data["run_dir"])
    assert run_dir.parent == home / "results"
    manifest = data["manifest"]
    assert manifest["status"] == "complete"
    assert manifest["target"]["name"] == "local"
    assert manifest["runtime"]["runtime"] == ("litert" if "tflite" in model else "onnxruntime")
    assert manifest["device"]["cores"] >= 1
    assert "env_before" in manifest and "env_after" in manifest
    lat = data["summary"]["latency"]
    # Five repetitions by default, each a fresh runner process of 60 inferences.
    assert lat["count"] == 300 and lat["unit"] == "ms"
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["median_ci"][0] <= lat["p50"] <= lat["median_ci"][1]
    assert lat["tail_support"]["p999"] == pytest.approx(0.3)
    reps = data["summary"]["repetitions"]
    assert reps["count"] == 5 and reps["kind"] == "process" and len(reps["medians_ms"]) == 5
    assert reps["ci"][0] <= reps["estimate_ms"] <= reps["ci"][1]
    facts = manifest["repetitions"]
    assert [f["repetition"] for f in facts] == [0, 1, 2, 3, 4]
    assert all(f["count"] == 60 and f["env_before"] and f["env_after"] for f in facts)
    assert all("process_threads" in f["env_after"] for f in facts)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    tags = [r["r"] for r in records for _ in r["ns"]]
    assert tags == sorted(tags) and set(tags) == {0, 1, 2, 3, 4}
    for name in ("manifest.json", "samples.jsonl", "summary.json"):
        assert (run_dir / name).is_file()
    shown = cli("results", "show", run_dir.name, "--json").json()
    assert shown["summary"]["latency"]["p50"] == lat["p50"]


def test_deploy_human_output_and_results_views(cli: Any) -> None:
    result = cli("deploy", "--model", "tiny-mlp", "-n", "50", "--repeat", "1")
    assert result.code == 0, result.stderr
    assert "p50" in result.stdout and "uncertainty: unknown (one repetition)" in result.stdout
    assert "n too small" in result.stdout  # p99.9 of 50 samples is not a tail
    assert "push" in result.stderr  # progress goes to stderr
    listing = cli("results", "list")
    assert "complete" in listing.stdout and "tiny-mlp.onnx" in listing.stdout
    exported = cli("results", "export", "latest", "--csv")
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[0] == ["index", "latency_ns", "latency_ms"]
    assert len(rows) == 51
    assert float(rows[1][2]) == pytest.approx(int(rows[1][1]) / 1e6, rel=1e-5)


def test_second_deploy_skips_unchanged_files(cli: Any) -> None:
    first = cli("deploy", "--model", "tiny-mlp", "-n", "5", "--json").json()
    assert [p["skipped"] for p in first["pushes"]] == [False, False]
    second = cli("deploy", "--model", "tiny-mlp", "-n", "5", "--json").json()
    assert [p["bytes_sent"] for p in second["pushes"]] == [0, 0]


def test_input_file_and_duration(cli: Any, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((1, 64), np.float32))
    result = cli(
        "deploy",
        "-m",
        "tiny-mlp",
        "--input",
        str(tmp_path / "x.npy"),
        "--duration",
        "0.3",
        "--json",
    )
    assert result.code == 0, result.stderr
    assert result.json()["summary"]["count"] > 10


def test_unknown_target(cli: Any) -> None:
    assert_one_line_error(cli("deploy", "-t", "nope", "-m", "tiny-mlp"), 5, "unknown target 'nope'")


def test_malformed_target_toml(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "lab.toml").write_text("[transport\ntype='ssh'\n")
    result = cli("--targets-dir", str(tmp_path / "t"), "deploy", "-t", "lab", "-m", "tiny-mlp")
    assert_one_line_error(result, 5, "lab.toml", "malformed TOML")


def test_missing_model_file(cli: Any) -> None:
    assert_one_line_error(cli("deploy", "-m", "/no/such/model.onnx"), 3, "not found")


def test_unknown_model_name(cli: Any) -> None:
    assert_one_line_error(cli("deploy", "-m", "resnet9000"), 3, "tiny-mlp")


def test_corrupt_model_keeps_a_failed_run_and_exits_3(cli: Any, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(os.urandom(4096))
    result = cli("deploy", "-m", str(bad))
    assert_one_line_error(result, 3, "corrupt.onnx")
    runs = cli("results", "list", "--json").json()
    assert [(r["status"], r["count"]) for r in runs] == [("failed", 0)]


def test_input_shape_mismatch(cli: Any, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    result = cli("deploy", "-m", "tiny-mlp", "--input", str(tmp_path / "x.npy"))
    assert_one_line_error(result, 3, "expects shape [1, 64]", "[2, 3]")


def test_runtime_missing_on_device(cli: Any, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "onnxruntime.py").write_text("raise ImportError('no')\n")
    python = tmp_path / "bare-python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={shadow} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "bare.toml").write_text(f'python = "{python}"\n[transport]\ntype = "local"\n')
    result = cli("--targets-dir", str(tdir), "deploy", "-t", "bare", "-m", "tiny-mlp")
    assert_one_line_error(result, 7, "onnxruntime is not installed")


def test_wrong_python_on_device(cli: Any, tmp_path: Path) -> None:
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "nopy.toml").write_text('python = "/no/python3"\n[transport]\ntype = "local"\n')
    result = cli("--targets-dir", str(tdir), "deploy", "-t", "nopy", "-m", "tiny-mlp")
    assert_one_line_error(result, 7, "/no/python3")


def test_verbose_shows_traceback(cli: Any) -> None:
    result = cli("-v", "deploy", "-m", "/no/such/model.onnx")
    assert result.code == 3 and "Traceback" in result.stderr


def test_usage_errors_exit_2(cli: Any) -> None:
    assert cli("deploy").code == 2
    assert cli("deploy", "-m", "tiny-mlp", "-n", "5", "-d", "1").code == 2


def test_results_errors(cli: Any) -> None:
    assert_one_line_error(cli("results", "show", "nothing-here"), 9, "no run")


def test_targets_list_show_check_local(cli: Any) -> None:
    listing = cli("targets", "list", "--json").json()
    assert {t["name"] for t in listing} >= {"local", "rpi4", "loopback"}
    shown = cli("targets", "show", "rpi4", "--json").json()
    assert shown["transport"]["type"] == "ssh" and shown["transport"]["host"] == "rpi4"
    check = cli("targets", "check", "local", "--json")
    assert check.code == 0, check.stderr
    facts = check.json()
    assert facts["device"]["cores"] >= 1 and facts["runtimes"]["onnxruntime"]


def test_emulator_not_running_is_a_clear_error(cli: Any) -> None:
    assert_one_line_error(
        cli("deploy", "-t", "loopback", "-m", "tiny-mlp"), 6, "emulate start loopback"
    )


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount")
def test_disk_full_on_device(cli: Any, tmp_path: Path) -> None:
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        big = tmp_path / "big.onnx"
        big.write_bytes(TINY_ONNX.read_bytes() * 4)  # 420 KB > the 256 KB device
        tdir = tmp_path / "targets"
        tdir.mkdir()
        (tdir / "tiny.toml").write_text(f'[transport]\ntype = "local"\nroot = "{small}"\n')
        result = cli("--targets-dir", str(tdir), "deploy", "-t", "tiny", "-m", str(big))
        assert_one_line_error(result, 7, "disk full", "big.onnx")
        leftovers = [p.name for p in small.rglob("*") if p.is_file()]
        assert leftovers == []  # refused before sending a byte
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_tflite_model_runs_in_litert(cli: Any) -> None:
    result = cli("deploy", "-m", str(TINY_TFLITE), "-n", "20", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["manifest"]["runtime"]["runtime"] == "litert"


def test_save_outputs_brings_back_the_models_answer(cli: Any, tmp_path: Path) -> None:
    from edgetool.zoo.tinymlp import TINY, reference_forward

    x = np.random.default_rng(5).uniform(-1, 1, size=(1, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = cli(
        "deploy",
        "-m",
        "tiny-mlp:tflite",
        "--input",
        str(tmp_path / "x.npy"),
        "-n",
        "3",
        "--save-outputs",
        "--json",
    )
    assert result.code == 0, result.stderr
    outputs = np.load(Path(result.json()["run_dir"]) / "outputs.npz")
    np.testing.assert_allclose(outputs["logits"], reference_forward(TINY, x), atol=1e-4)


def test_ab_alternates_repetitions_and_compares(cli: Any) -> None:
    result = cli(
        "ab", "-m", "tiny-mlp", "-m", "tiny-mlp:tflite", "-n", "30", "--warmup", "2",
        "--warmup-seconds", "0", "--repeat", "3", "--json",
    )  # fmt: skip
    assert result.code in (0, 10, 13), result.stderr
    data = result.json()
    runs = {}
    for role in ("a", "b"):
        run_dir = Path(data[role]["run_dir"])
        runs[role] = json.loads((run_dir / "manifest.json").read_text())
        assert data[role]["summary"]["repetitions"]["count"] == 3
    assert runs["a"]["ab"]["role"] == "A" and runs["b"]["ab"]["other_run"] == runs["a"]["run_id"]
    # Blocks AB, BA, AB: each repetition's start on the device clock tells the order.
    starts = sorted(
        (facts["env_before"]["time_ns"], role, facts["repetition"])
        for role, manifest in runs.items()
        for facts in manifest["repetitions"]
    )
    assert [(role, rep) for _, role, rep in starts] == [
        ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2),
    ]  # fmt: skip
    pair = data["pairs"][0]
    assert pair["model"] == "tiny-mlp:onnx → tiny-mlp:tflite"
    assert pair["effect"]["repetitions"] == {"base": 3, "new": 3}
    assert pair["verdict"] in ("regression", "improvement", "no change", "inconclusive")
    expected = {"regression": 10, "inconclusive": 13}.get(pair["verdict"], 0)
    assert result.code == expected


def test_ab_refuses_what_it_cannot_do(cli: Any) -> None:
    assert cli("ab", "-m", "tiny-mlp").code == 2
    assert cli("ab", "-m", "tiny-mlp", "-m", "tiny-mlp", "--repeat", "1").code == 2
    assert_one_line_error(
        cli("ab", "-t", "mcu-m4-qemu", "-m", "tiny-mlp", "-m", "tiny-mlp"), 5, "Linux-class"
    )
