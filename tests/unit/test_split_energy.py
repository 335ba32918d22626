"""`edgetool split --energy` on the local device: the device's energy per inference on each
route, from a declared estimate and from a PPK2 on a pty whose current follows a known
waveform (its exact integral is the reference); the meters split cannot read are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgetool.power.base import host_ns
from edgetool.power.energy import MIN_PERIODS, group_windows
from edgetool.testing.waveform import Sine
from tests.conftest import assert_one_line_error
from tests.onnx_models import conv_chain

QUICK = ("--points", "b", "--codec", "int8", "-r", "2", "-n", "4", "--warmup", "1")


def _target(tmp_path: Path, meter: str) -> Path:
    targets = tmp_path / "targets"
    targets.mkdir(exist_ok=True)
    (targets / "metered.toml").write_text(
        f'kind = "linux"\n[transport]\ntype = "local"\n[meter]\n{meter}'
    )
    return targets


def _journal(run_dir: Path) -> dict[tuple[str, str], dict[int, list[dict[str, Any]]]]:
    routes: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for line in (run_dir / "split.jsonl").read_text().splitlines():
        record = json.loads(line)
        routes.setdefault((record["cut"], record["codec"]), {}).setdefault(
            record["rep"], []
        ).append(record)
    return routes


def _split(cli: Any, targets: Path, model: Path, *extra: str) -> Any:
    return cli("--targets-dir", str(targets), "split", "-t", "metered", "-m", str(model),
               *QUICK, "--energy", "--idle-seconds", "0.5", "--json", *extra)  # fmt: skip


def test_an_estimate_charges_active_watts_for_the_devices_work_only(
    cli: Any, tmp_path: Path
) -> None:
    model = conv_chain(tmp_path / "chain.onnx")
    targets = _target(tmp_path, 'type = "estimate"\nidle_w = 2.0\nactive_w = 6.5\n')
    out = _split(cli, targets, model)
    assert out.code == 0, out.stderr
    data = out.json()
    assert data["figures"]["energy"]["estimate"] is True
    routes = _journal(Path(data["dir"]))
    rows = {(r["cut"], r["codec"]): r for r in data["figures"]["rows"]}
    assert set(rows) == set(routes) == {("device-only", "none"), ("server-only", "int8"),
                                        ("b", "int8")}  # fmt: skip
    for key, reps in routes.items():
        per_rep = []
        for records in reps.values():
            busy = [r["device_ns"] + r["encode_ns"] for r in records]
            rest = [r["e2e_ns"] - b for r, b in zip(records, busy, strict=True)]
            per_rep.append((6.5 * sum(busy) + 2.0 * sum(rest)) / 1e6 / len(records))
        energy = rows[key]["energy"]
        assert energy["reps"] == 2
        assert energy["total_mj"]["mean"] == pytest.approx(sum(per_rep) / 2, rel=1e-9)
        assert energy["total_mj"]["ci"] is not None
    shown = cli("results", "show", data["run_id"])
    assert shown.code == 0, shown.stderr
    assert "device mJ" in shown.stdout and "an estimate" in shown.stdout
    report = cli("report", data["run_id"], "-o", str(tmp_path / "r.html"))
    assert report.code == 0, report.stderr
    html = (tmp_path / "r.html").read_text()
    device_only = rows[("device-only", "none")]["energy"]["total_mj"]["mean"]
    assert "device mJ" in html and f"{device_only:.3g}" in html


def test_a_host_meter_integrates_each_inference_window_on_its_own_clock(
    cli: Any, tmp_path: Path
) -> None:
    """A PPK2 on a pty speaking the real protocol; each route's energy per inference must
    be the waveform's exact charge over the route's windows, at its volts."""
    from edgetool.testing.meters import start_peer

    volts = 3.3
    # Slow enough that a sample time stamped late under load moves no window noticeably.
    waveform = Sine(period_ns=1_000_000_000, mean_amps=0.4, amplitude=0.15, phase_ns=host_ns())
    model = conv_chain(tmp_path / "chain.onnx")
    with start_peer("ppk2", waveform, volts) as peer:
        targets = _target(tmp_path, f'type = "ppk2"\nport = "{peer.port}"\nvolts = {volts}\n')
        out = _split(cli, targets, model)
    assert out.code == 0, out.stderr
    data = out.json()
    about = data["figures"]["energy"]
    assert about["estimate"] is False and about["meter"].startswith("ppk2")
    manifest = json.loads((Path(data["dir"]) / "manifest.json").read_text())
    idle_a, idle_b = manifest["power"]["idle_window"]
    exact_idle = volts * waveform.charge(idle_a, idle_b) / ((idle_b - idle_a) / 1e9)
    assert about["idle_w"] == pytest.approx(exact_idle, rel=0.02)
    assert manifest["power"]["alignment"]["method"] == "same-clock"
    assert (Path(data["dir"]) / "power.jsonl").stat().st_size > 0  # the samples are kept
    period_ns = 10_000  # the peer's 100 kHz
    rows = {(r["cut"], r["codec"]): r for r in data["figures"]["rows"]}
    for key, reps in _journal(Path(data["dir"])).items():
        per_rep = []
        for records in reps.values():
            windows = [(r["t0_ns"], r["t0_ns"] + r["wall_ns"]) for r in records]
            groups = group_windows(windows, MIN_PERIODS * period_ns)
            charge = sum(waveform.charge(a, b) for a, b, _ in groups)
            per_rep.append(1e3 * volts * charge / len(records))
        assert rows[key]["energy"]["total_mj"]["mean"] == pytest.approx(
            sum(per_rep) / len(per_rep), rel=0.03
        )


def test_a_meter_read_on_the_device_is_refused_before_anything_runs(
    cli: Any, tmp_path: Path
) -> None:
    model = conv_chain(tmp_path / "chain.onnx")
    targets = _target(tmp_path, f'type = "hwmon"\nchip = "ina260"\nroot = "{tmp_path}"\n')
    out = _split(cli, targets, model)
    assert_one_line_error(out, 5, "hwmon", "deploy runner")
    assert not (tmp_path / "results").exists()


def test_energy_without_a_meter_says_how_to_add_one(cli: Any, tmp_path: Path) -> None:
    model = conv_chain(tmp_path / "chain.onnx")
    out = cli("split", "-m", str(model), *QUICK, "--energy")
    assert_one_line_error(out, 5, "no [meter] section")
    assert not (tmp_path / "results").exists()
