"""Energy over a real OpenSSH sshd on 127.0.0.1: the clock probe's round trips go through
SSH like they would to a Raspberry Pi, and the device shares this host's clock, so the
true offset is known to be zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgetool.flows.base import Observer, connect, push
from edgetool.power.align import estimate_offset, probe_clock
from edgetool.power.base import host_ns
from edgetool.results.store import load_run
from edgetool.runner import RUNNER_PATH
from edgetool.targets import load_target
from edgetool.testing.hwmon_peer import HwmonPeer
from edgetool.testing.waveform import Sine
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def loopback_with_meter(tmp_path: Path, state: dict[str, Any], meter: dict[str, Any]) -> Path:
    """The running loopback device as a target file of its own, with a [meter] table."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    transport = {"type": "ssh", "host": "127.0.0.1", "use_ssh_config": False}
    transport.update(state["transport"])
    lines = ['kind = "linux"', f"workdir = {value(state['workdir'])}"]
    # the loopback device runs this interpreter; `python3` on its login PATH may not be it
    lines += [f"python = {value(state['python'])}", "[transport]"]
    lines += [f"{k} = {value(v)}" for k, v in transport.items()]
    lines += ["[meter]"] + [f"{k} = {value(v)}" for k, v in meter.items()]
    targets = tmp_path / "targets"
    targets.mkdir(exist_ok=True)
    (targets / "pi-meter.toml").write_text("\n".join(lines) + "\n")
    return targets


def test_clock_offset_over_ssh_is_within_its_uncertainty(loopback: dict[str, Any]) -> None:
    target = load_target("loopback")
    with connect(target) as transport:
        remote = f"{target.workdir}/runner/{RUNNER_PATH.name}"
        push(transport, [(RUNNER_PATH, remote)], Observer())
        estimate = estimate_offset(
            probe_clock(transport.run([transport.python, remote, "clock"]), 32)
        )
    assert abs(estimate.offset_ns) <= estimate.uncertainty_ns
    assert estimate.uncertainty_ns < 20_000_000  # loopback round trips are ~1 ms


def test_hwmon_energy_over_ssh(loopback: dict[str, Any], tmp_path: Path) -> None:
    peer = HwmonPeer(tmp_path / "hwmon", Sine(900_000_000, 0.5, 0.1, host_ns()), 5.0)
    try:
        targets = loopback_with_meter(
            tmp_path, loopback, {"type": "hwmon", "chip": "ina260", "root": str(tmp_path / "hwmon")}
        )
        out = run_cli("--targets-dir", str(targets), "deploy", "-t", "pi-meter", "-m", "tiny-mlp",
                      "--energy", "--idle-seconds", "0.5", "-d", "1", "--json")  # fmt: skip
    finally:
        peer.close()
    assert out.code == 0, out.stderr
    data = out.json()
    run = load_run(Path(data["run_dir"]))
    assert run.starts_ns is not None
    start, end = run.starts_ns[0], run.starts_ns[-1] + run.samples_ns[-1]
    exact_mean_w = peer.watts_energy(start, end) / ((end - start) / 1e9)
    assert data["summary"]["energy"]["mean_power_w"] == pytest.approx(exact_mean_w, rel=0.02)
