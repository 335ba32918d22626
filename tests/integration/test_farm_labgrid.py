"""A night through a real labgrid coordinator: `labgrid-coordinator` and a
`labgrid-exporter` on 127.0.0.1 export one `NetworkService` per loopback sshd; the plan's
targets know only their keys, so host, port and user reach each deploy from the place's
resources. One sshd is killed mid-job: that job is retried, then fails cleanly, while the
others pass; afterwards no place is left acquired or reserved and the JUnit XML counts
the failure."""

from __future__ import annotations

import getpass
import importlib.util
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.emulate.sshd import LoopbackSshd
from tests.conftest import run_cli
from tests.integration.test_farm_run import (
    DIES_PLAN,
    LONG_PLAN,
    _wait_until,
    by_id,
    jobs_alive,
    kill_when_running,
    load_summary,
    running_run,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("labgrid") is None,
        reason="labgrid not installed (pip install -e '.[farm]')",
    ),
]

NAMES = ("lg1", "lg2", "lg3")

# No [emulator] and no port: where the device is comes only from the labgrid place.
TARGET = """description = "loopback sshd {name}, reached through a labgrid place"
kind = "linux"
python = "{python}"
workdir = "edgetool-{name}"
runtimes = ["onnxruntime"]

[transport]
type = "ssh"
host = "127.0.0.2"   # no sshd there: the place's NetworkService must override it
identity_file = "{identity}"
known_hosts = "{known_hosts}"
use_ssh_config = false
connect_timeout = 5
idle_timeout = 20
"""


@pytest.fixture
def lab(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from tests.labgrid_env import labgrid_env

    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sshds = {name: LoopbackSshd(name, home / "sshd" / name) for name in NAMES}
    targets = home / "targets"
    targets.mkdir()
    services: dict[str, tuple[str, int, str]] = {}
    try:
        for name, sshd in sshds.items():
            state = sshd.start()
            t = state["transport"]
            (targets / f"{name}.toml").write_text(
                TARGET.format(
                    name=name,
                    python=sys.executable,  # this host's venv, as `loopback` uses
                    identity=t["identity_file"],
                    known_hosts=t["known_hosts"],
                )
            )
            services[name] = ("127.0.0.1", int(t["port"]), getpass.getuser())
        monkeypatch.setenv("EDGETOOL_TARGETS", str(targets))
        with labgrid_env(tmp_path / "lab", services) as env:
            yield {"env": env, "sshds": sshds}
    finally:
        for sshd in sshds.values():
            sshd.stop()


def test_night_through_the_coordinator_one_device_dies(lab: dict[str, Any], tmp_path: Path) -> None:
    env = lab["env"]
    plan = tmp_path / "lab.toml"
    plan.write_text(
        DIES_PLAN.format(name="lab", targets='"lg1", "lg2", "lg3"', extra="place_timeout = 60")
    )
    night = tmp_path / "night"
    junit = tmp_path / "junit.xml"
    killed, thread = kill_when_running(night, "lg2", lab["sshds"]["lg2"])
    result = run_cli(
        "farm", "run", str(plan), "--coordinator", env.url, "--out", str(night),
        "--junit", str(junit), timeout=280,
    )  # fmt: skip
    thread.join(5)
    assert killed.is_set(), result.stderr
    assert result.code == 12, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr

    jobs = by_id(load_summary(night))
    for name in ("lg1", "lg3"):
        job = jobs[f"{name}/tiny-mlp:onnx"]
        assert job["status"] == "passed", job
        # The deploy went where the place said: the sshd's real port, not the TOML's host.
        port = lab["sshds"][name].dir.joinpath("sshd_config").read_text().split("Port ")[1]
        manifest = (Path(job["run_dir"]) / "manifest.json").read_text()
        assert f"127.0.0.1:{port.split()[0]}" in manifest
    dead = jobs["lg2/tiny-mlp:onnx"]
    assert dead["status"] == "failed" and dead["attempts"] == 2

    # Nothing left behind on the coordinator: every place released, no reservation.
    assert env.acquired() == set()
    assert env.reservations() == []

    root = ET.parse(junit).getroot()
    assert root.get("tests") == "3"
    assert int(root.get("errors") or 0) + int(root.get("failures") or 0) == 1
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    failed = cases[("lg2", "tiny-mlp:onnx")]
    assert failed.find("error") is not None or failed.find("failure") is not None


def test_next_night_releases_what_a_killed_night_left_acquired(
    lab: dict[str, Any], tmp_path: Path
) -> None:
    """D14: `kill -9` of a night mid-job leaves its place acquired (labgrid never expires
    an acquired place). The next night of this host/user releases it once the killed
    night's job is gone, says so, and runs; before, it waited and blamed the timeout."""
    env = lab["env"]
    long = tmp_path / "long.toml"
    long.write_text(
        LONG_PLAN.format(
            name="long", targets='"lg1"', duration=600, timeout=900, place_timeout=60,
            formats='"onnx"',
        )
    )  # fmt: skip
    night = tmp_path / "night-killed"
    argv = [sys.executable, "-m", "edgetool", "farm", "run", str(long)]
    with (tmp_path / "killed.err").open("wb") as err:
        proc = subprocess.Popen(
            [*argv, "--coordinator", env.url, "--out", str(night)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        assert _wait_until(lambda: running_run(night, "lg1"), 120)
    finally:
        proc.kill()
        proc.wait(10)
    assert env.acquired() == {"lg1"}
    assert _wait_until(lambda: not jobs_alive(night), 60), "the job outlived its farm"
    assert env.acquired() == {"lg1"}  # still: nobody released it

    short = tmp_path / "short.toml"
    short.write_text(
        LONG_PLAN.format(
            name="short", targets='"lg1"', duration=1, timeout=120, place_timeout=20,
            formats='"onnx"',
        )
    )  # fmt: skip
    again = tmp_path / "night-again"
    result = run_cli(
        "farm", "run", str(short), "--coordinator", env.url, "--out", str(again), timeout=200
    )
    assert result.code == 0, (result.code, result.stdout, result.stderr)
    assert "released labgrid place lg1, left acquired by a killed edgetool (pid" in result.stderr
    summary = load_summary(again)
    assert summary["counts"]["passed"] == 1
    assert any("released labgrid place lg1" in note for note in summary["notes"])
    assert env.acquired() == set()
    assert env.reservations() == []
