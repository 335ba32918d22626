"""`edgetool split` end to end: heads on `local` and on `loopback` (a real sshd), tails on
`local`, the crossing bytes over a real TCP connection, plain or through a shaped link
in network namespaces the run creates (root only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.as_nobody import nobody_python
from tests.conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.integration

QUICK = ("-r", "2", "-n", "4", "--warmup", "1")


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The zoo's LeNet as ONNX with its manifest (so the recipe's digits calibrate)."""
    where = tmp_path_factory.mktemp("lenet")
    env = {"EDGETOOL_CACHE_DIR": str(where / "cache")}
    made = run_cli("export", "lenet", "-o", str(where / "lenet.onnx"), env=env, timeout=600)
    assert made.code == 0, made.stderr
    yield where / "lenet.onnx"


def _big_input_model(path: Path, features: int) -> Path:
    """A model whose input is `features` floats (4·features bytes when sent raw)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((features, 10)).astype(np.float32) * 0.01, "w"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def _rows(data: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["link"], r["cut"], r["codec"]): r for r in data["figures"]["rows"]}


def test_points_list_names_the_cuts_with_their_sizes(home: Path, lenet: Path) -> None:
    listed = run_cli("split", "-m", str(lenet), "--points", "list", "--json")
    assert listed.code == 0, listed.stderr
    cuts = listed.json()
    assert len(cuts) >= 3
    for cut in cuts:
        numel = 1
        for dim in cut["shape"]:
            numel *= dim
        assert cut["bytes"]["32"] == 4 * numel and cut["bytes"]["8"] == numel
    text = run_cli("split", "-m", str(lenet), "--points", "list")
    assert cuts[0]["tensor"] in text.stdout


def test_split_on_local_over_the_plain_link(home: Path, lenet: Path) -> None:
    cuts = run_cli("split", "-m", str(lenet), "--points", "list", "--json").json()
    cut = cuts[len(cuts) // 2]
    numel = 1
    for dim in cut["shape"]:
        numel *= dim
    result = run_cli(
        "split", "-m", str(lenet), "--points", cut["tensor"], "--codec", "fp32,int8,sgq4+zstd",
        *QUICK, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = result.json()
    rows = _rows(data)
    tensor = cut["tensor"]
    # bytes per codec against the tensor's size
    assert rows[("none", tensor, "fp32")]["bytes"] == 4 * numel
    assert rows[("none", tensor, "int8")]["bytes"] == numel
    assert rows[("none", tensor, "sgq4+zstd")]["bytes"] < numel
    # the baselines ran: the device alone sends nothing; the server alone gets the input
    device_only = rows[("none", "device-only", "none")]
    assert device_only["bytes"] == 0 and device_only["up"]["estimate_ms"] == 0
    assert rows[("none", "server-only", "fp32")]["bytes"] == 4 * 28 * 28
    for row in rows.values():
        assert row["count"] == 2 * 4
        parts = sum(row[p]["estimate_ms"] for p in ("device", "encode", "up", "server", "down"))
        assert row["e2e"]["estimate_ms"] == pytest.approx(parts, rel=0.5)
    # head + tail agree with the whole model, and the codecs' accuracy cost is recorded
    plan = data["plan"]
    (record,) = [c for c in plan["cuts"] if c["tensor"] == tensor]
    assert record["parity"]["max_abs_diff"] < 1e-4
    quality = plan["quality"][tensor]
    assert quality["fp32"]["top1"] == pytest.approx(quality["int8"]["top1"], abs=0.05)
    assert data["figures"]["best"]["none"]["cut"]
    # the run directory reads back
    shown = run_cli("results", "show", "latest")
    assert shown.code == 0, shown.stderr
    assert tensor in shown.stdout and "device-only" in shown.stdout
    journal = Path(data["dir"]) / "split.jsonl"
    assert len(journal.read_text().splitlines()) == sum(r["count"] for r in rows.values())


def test_unknown_point_and_codec_are_one_line_errors(home: Path, lenet: Path) -> None:
    assert_one_line_error(
        run_cli("split", "-m", str(lenet), "--points", "no_such_tensor"), 2, "no_such_tensor"
    )
    assert_one_line_error(run_cli("split", "-m", str(lenet), "--codec", "jpeg"), 2, "jpeg")
    assert_one_line_error(run_cli("split", "-m", str(lenet), "--link", "nowhere"), 5, "nowhere")


def test_shaped_link_needs_root(home: Path, lenet: Path) -> None:
    """As a real non-root user: one line, exit 2, before any export or connection."""
    drop = nobody_python("import edgetool.cli", candidates=(sys.executable,))
    shared = Path(tempfile.mkdtemp(prefix="edgetool-nobody-"))
    try:
        shared.chmod(0o777)
        shutil.copy(lenet, shared / "lenet.onnx")
        (shared / "lenet.onnx").chmod(0o644)
        env = {**os.environ, "HOME": str(shared)}
        for var, sub in (
            ("EDGETOOL_CACHE_DIR", "cache"),
            ("EDGETOOL_STATE_DIR", "state"),
            ("EDGETOOL_RESULTS", "results"),
            ("EDGETOOL_CONFIG_DIR", "config"),
        ):
            env[var] = str(shared / sub)  # fmt: skip
        result = subprocess.run(
            [*drop, "-m", "edgetool", "split", "-m", str(shared / "lenet.onnx"),
             "--link", "wifi"],
            capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
            cwd=shared,
        )  # fmt: skip
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs root" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="shaped links need root (network namespaces)")
def test_a_100kb_input_over_1mbit_takes_at_least_0_8_s(home: Path, tmp_path: Path) -> None:
    model = _big_input_model(tmp_path / "wide.onnx", 25_600)  # 102 400 bytes as fp32
    link = tmp_path / "slow.toml"
    link.write_text('bandwidth = "1mbit"\nrtt_ms = 40\njitter_ms = 0\nloss = 0\n')
    result = run_cli(
        "split", "-m", str(model), "--link", str(link), "--codec", "fp32",
        "-r", "2", "-n", "1", "--warmup", "0", "--json", timeout=200,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = _rows(result.json())
    sent = rows[("slow", "server-only", "fp32")]
    assert sent["bytes"] == 102_400
    assert sent["up"]["estimate_ms"] >= 800
    for row in rows.values():
        if row["cut"] != "device-only":
            assert row["e2e"]["estimate_ms"] >= 40  # at least the link's RTT
    facts = result.json()["plan"]["links"]["slow"]["facts"]
    assert facts["shaper"] in ("netem", "tbf+userspace")
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"edgetool-{os.getpid()}" not in leftover


def test_head_over_ssh(loopback: dict[str, Any], lenet: Path) -> None:
    cuts = run_cli("split", "-m", str(lenet), "--points", "list", "--json").json()
    result = run_cli(
        "split", "-t", "loopback", "-m", str(lenet), "--points", cuts[0]["tensor"],
        "--codec", "fp16", *QUICK, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = _rows(result.json())
    assert rows[("none", cuts[0]["tensor"], "fp16")]["device"]["estimate_ms"] > 0
    manifest = json.loads((Path(result.json()["dir"]) / "manifest.json").read_text())
    assert "127.0.0.1" in manifest["target"]["transport"]
