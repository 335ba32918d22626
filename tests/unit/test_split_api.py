"""`edgetool.api.split` on `local` over the plain link: a small conv chain cut in two,
every route measured in fresh runner processes, the run directory complete."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgetool.api import split
from edgetool.errors import UsageError
from edgetool.split.settings import SplitSettings
from tests.onnx_models import conv_chain


def test_split_measures_every_route_and_keeps_every_inference(home: Path, tmp_path: Path) -> None:
    model = conv_chain(tmp_path / "chain.onnx")
    settings = SplitSettings(points="b", codecs=("fp32", "int8"), repeat=2, inferences=3, warmup=1)
    run = split(model, "local", server="local", settings=settings)
    rows = {(r["cut"], r["codec"]): r for r in run.figures["rows"]}
    assert set(rows) == {
        ("device-only", "none"),
        ("server-only", "fp32"),
        ("server-only", "int8"),
        ("b", "fp32"),
        ("b", "int8"),
    }
    assert rows[("b", "fp32")]["bytes"] == 4 * 4 * 8 * 8
    assert rows[("b", "int8")]["bytes"] == 4 * 8 * 8
    assert rows[("server-only", "fp32")]["bytes"] == 4 * 8 * 8
    assert rows[("b", "fp32")]["reply_bytes"] == 4 * 2 * 8 * 8  # the outputs come back
    assert all(row["count"] == 6 and row["e2e"]["reps"] == 2 for row in rows.values())
    assert rows[("b", "fp32")]["up"]["estimate_ms"] > 0
    assert run.figures["best"]["none"]["cut"] in {cut for cut, _ in rows}
    (cut,) = [c for c in run.plan["cuts"] if c["tensor"] == "b"]
    assert cut["shape"] == [1, 4, 8, 8] and cut["parity"]["max_abs_diff"] < 1e-5
    assert run.plan["links"]["none"]["facts"]["shaper"] == "none"
    journal = (run.run_dir / "split.jsonl").read_text().splitlines()
    assert len(journal) == 5 * 6
    first = json.loads(journal[0])
    parts = sum(first[k] for k in ("device_ns", "encode_ns", "up_ns", "server_ns", "down_ns"))
    assert first["e2e_ns"] == parts
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["split"]["server"]["name"] == "local"


def test_split_refuses_what_it_cannot_measure(home: Path, tmp_path: Path) -> None:
    model = conv_chain(tmp_path / "chain.onnx")
    with pytest.raises(UsageError, match="unknown codec 'jpeg'"):
        split(model, settings=SplitSettings(codecs=("jpeg",)))
    with pytest.raises(UsageError, match="'nope'"):
        split(model, settings=SplitSettings(points="nope"))
    with pytest.raises(UsageError, match="repeat"):
        split(model, settings=SplitSettings(repeat=0))
    with pytest.raises(UsageError, match="Linux-class"):
        split(model, "mcu-m4-qemu")


def test_a_side_without_the_codecs_modules_is_refused_before_measuring(
    home: Path, tmp_path: Path
) -> None:
    """A device whose python lacks numpy/onnxruntime (here: an interpreter with no
    site-packages of ours) fails in one DeviceError naming what is missing."""
    from edgetool.errors import DeviceError

    bare = tmp_path / "bare.toml"
    bare.write_text(
        'kind = "linux"\nworkdir = "edgetool"\npython = "/usr/bin/python3"\n'
        '[transport]\ntype = "local"\n'
    )
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no system python to stand in for a bare device")
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import numpy"], capture_output=True, check=False
    )
    if probe.returncode == 0:
        pytest.skip("the system python has numpy: no bare interpreter to stand in")
    model = conv_chain(tmp_path / "chain.onnx")
    settings = SplitSettings(points="b", codecs=("int8+zstd",), repeat=1, inferences=1)
    with pytest.raises(DeviceError, match="has no numpy, onnxruntime, zstandard") as caught:
        split(model, str(bare), settings=settings)
    assert "+zstd codecs need it" in str(caught.value)
    runs = list((home / "results").glob("*"))
    assert all(json.loads((r / "manifest.json").read_text())["status"] == "failed" for r in runs)
