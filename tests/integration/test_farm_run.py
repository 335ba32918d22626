"""`edgetool farm run` across several real loopback sshds (each its own device on 127.0.0.1):
a device that dies mid-job is retried then fails cleanly while the others pass, a hung job
is killed at its timeout and retried after an emulator restart, and two farm processes
on overlapping plans never use one device at once (local locks)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.emulate.sshd import LoopbackSshd
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration

TARGET = """description = "loopback sshd {name} (farm test)"
kind = "linux"
workdir = "edgetool-{name}"
runtimes = ["onnxruntime"]

[transport]
type = "ssh"
host = "127.0.0.1"
use_ssh_config = false
connect_timeout = 5
idle_timeout = 20

[emulator]
type = "sshd"
"""


@pytest.fixture
def farm(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Three running loopback sshds lb1..lb3 (lb4 has a target file but is not started)."""
    if not (os.access("/usr/sbin/sshd", os.X_OK) or shutil.which("sshd")):
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    targets = home / "targets"
    targets.mkdir()
    for name in ("lb1", "lb2", "lb3", "lb4"):
        (targets / f"{name}.toml").write_text(TARGET.format(name=name))
    monkeypatch.setenv("EDGETOOL_TARGETS", str(targets))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sshds = {name: LoopbackSshd(name) for name in ("lb1", "lb2", "lb3")}
    for sshd in sshds.values():
        sshd.start()
    yield {"home": home, "sshds": sshds}
    for sshd in sshds.values():
        sshd.stop()


def write_plan(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def kill_device(sshd: LoopbackSshd) -> None:
    """The device dies: its sshd listener and every session under it (our own processes)."""
    state = sshd.state()
    assert state is not None
    root = int(state["pid"])
    tree = _children()
    doomed, todo = [], [root]
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo.extend(tree.get(pid, []))
    rehashing = any(b"pyenv" in _cmdline(pid) for pid in doomed)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sshd.state_file.unlink(missing_ok=True)
    if rehashing:
        # The "device" is this host's own account: a login shell killed inside its
        # ~/.bashrc's `pyenv rehash` leaves pyenv's lock behind, and every later SSH
        # login on this host would then wait 60 s for it. A real dead board has no such
        # side effect on the host, so the test clears it.
        root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
        (root / "shims" / ".pyenv-shim").unlink(missing_ok=True)


def jobs_alive(night: Path) -> list[int]:
    """Processes started for this night's jobs (their environment points into it)."""
    marker = f"EDGETOOL_RESULTS={night / 'runs'}".encode()
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                alive.append(int(entry.name))
    return alive


def running_run(night: Path, target: str) -> bool:
    for manifest in night.glob("runs/*/manifest.json"):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if data.get("target", {}).get("name") == target and data.get("status") == "running":
            return True
    return False


DIES_PLAN = """
name = "{name}"
targets = [{targets}]
[run]
duration = 3
warmup = 2
timeout = 60
{extra}
[retry]
retries = 1
backoff = 0.5
[[models]]
name = "tiny-mlp"
formats = ["onnx"]
"""
"""One 3 s tiny-mlp job per device, one retry: the plan whose device dies mid-job."""


def kill_when_running(
    night: Path, target: str, sshd: LoopbackSshd, within: float = 120
) -> tuple[threading.Event, threading.Thread]:
    """Kill the device as soon as its job has started measuring (set when done)."""
    killed = threading.Event()

    def killer() -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if running_run(night, target):
                kill_device(sshd)
                killed.set()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return killed, thread


def load_summary(night: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((night / "summary.json").read_text())
    return data


def by_id(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["id"]: job for job in summary["jobs"]}


def test_night_across_three_devices_one_dies(farm: dict[str, Any], tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "night.toml",
        DIES_PLAN.format(name="three", targets='"lb1", "lb2", "lb3", "lb4"', extra=""),
    )
    night = tmp_path / "night"
    junit = tmp_path / "junit.xml"
    killed, thread = kill_when_running(night, "lb2", farm["sshds"]["lb2"])
    result = run_cli(
        "farm", "run", str(plan), "--out", str(night), "--junit", str(junit), timeout=150
    )
    thread.join(5)
    assert killed.is_set(), result.stderr
    assert result.code == 12, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "1 of 4 jobs failed" in result.stderr

    summary = load_summary(night)
    assert summary["counts"] == {
        "passed": 2, "failed": 1, "skipped": 1, "regressed": 0, "total": 4,
    }  # fmt: skip
    assert summary["exit_code"] == 12
    jobs = by_id(summary)
    for name in ("lb1", "lb3"):
        job = jobs[f"{name}/tiny-mlp:onnx"]
        assert job["status"] == "passed" and job["attempts"] == 1
        assert job["p50_ms"] > 0
        manifest = json.loads((Path(job["run_dir"]) / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["target"]["name"] == name
        assert Path(job["run_dir"]).parent == night / "runs"
    dead = jobs["lb2/tiny-mlp:onnx"]
    assert dead["status"] == "failed"
    assert dead["attempts"] == 2  # retried once, then given up
    assert dead["failure"] == "connect"  # the retry found no sshd
    assert [a["status"] for a in dead["attempt_log"]] == ["failed", "failed"]
    skipped = jobs["lb4/tiny-mlp:onnx"]
    assert skipped["status"] == "skipped" and "not running" in skipped["reason"]

    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    counted = [suite.get(k) for k in ("tests", "errors", "failures", "skipped")]
    assert counted == ["4", "1", "0", "1"]
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert cases[("lb2", "tiny-mlp:onnx")].find("error") is not None
    assert cases[("lb4", "tiny-mlp:onnx")].find("skipped") is not None
    passed = cases[("lb1", "tiny-mlp:onnx")]
    assert f"run: {jobs['lb1/tiny-mlp:onnx']['run_dir']}" in (passed.findtext("system-out") or "")
    assert "log: " in (passed.findtext("system-out") or "")
    assert (night / "junit.xml").read_bytes() == junit.read_bytes()
    report = night / "report.html"
    assert report.is_file() and "tiny-mlp" in report.read_text()


def test_hung_job_is_killed_at_its_timeout_and_retried(
    farm: dict[str, Any], tmp_path: Path
) -> None:
    before = farm["sshds"]["lb3"].state()
    assert before is not None
    plan = write_plan(
        tmp_path / "hang.toml",
        """
name = "hang"
targets = ["lb3"]
[run]
duration = 60
timeout = 6
[retry]
retries = 1
backoff = 0.2
[[models]]
name = "tiny-mlp"
formats = ["onnx"]
""",
    )
    night = tmp_path / "night"
    start = time.monotonic()
    result = run_cli("farm", "run", str(plan), "--out", str(night), "--json", timeout=120)
    took = time.monotonic() - start
    assert result.code == 12, (result.code, result.stderr)
    summary = result.json()
    assert summary == load_summary(night)
    job = summary["jobs"][0]
    assert job["status"] == "failed" and job["failure"] == "timeout"
    assert job["attempts"] == 2
    first, second = job["attempt_log"]
    assert first["status"] == second["status"] == "timeout"
    assert first["recovery"] == "emulator restarted"
    assert 6 <= first["seconds"] < 6 + 8  # killed at the timeout (SIGTERM, then SIGKILL)
    assert took < 60  # never waited for the 60 s run
    after = farm["sshds"]["lb3"].state()
    assert after is not None and after["pid"] != before["pid"]  # restarted
    # the killed deploys left no process behind and kept what they measured
    for attempt in (first, second):
        err = Path(attempt["log"]).with_suffix(".err").read_text()
        assert "Traceback" not in err
    assert jobs_alive(night) == []
    statuses = [
        json.loads(m.read_text())["status"] for m in (night / "runs").glob("*/manifest.json")
    ]
    assert "running" not in statuses


def _intervals(nights: list[Path]) -> dict[str, list[tuple[int, int, str]]]:
    found: dict[str, list[tuple[int, int, str]]] = {}
    for night in nights:
        for manifest_path in night.glob("runs/*/manifest.json"):
            m = json.loads(manifest_path.read_text())
            start, end = m["env_before"]["time_ns"], m["env_after"]["time_ns"]
            found.setdefault(m["target"]["name"], []).append((start, end, str(night.name)))
    return found


def test_two_farms_never_share_a_device(farm: dict[str, Any], tmp_path: Path) -> None:
    body = """
name = "{name}"
targets = {targets}
[run]
duration = 1
warmup = 2
timeout = 60
[[models]]
name = "tiny-mlp"
formats = ["onnx", "tflite"]
"""
    plan_a = write_plan(tmp_path / "a.toml", body.format(name="a", targets='["lb1", "lb2"]'))
    plan_b = write_plan(tmp_path / "b.toml", body.format(name="b", targets='["lb2", "lb1"]'))
    nights = [tmp_path / "night-a", tmp_path / "night-b"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "edgetool", "farm", "run", str(plan), "--out", str(night)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for plan, night in zip((plan_a, plan_b), nights, strict=True)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, (out, err)
    for night in nights:
        assert load_summary(night)["counts"]["passed"] == 4
    intervals = _intervals(nights)
    assert sorted(intervals) == ["lb1", "lb2"]
    for target, spans in intervals.items():
        assert len(spans) == 4, (target, spans)
        spans.sort()
        assert {night for _, _, night in spans} == {"night-a", "night-b"}
        for (_, e1, n1), (s2, _, n2) in itertools.pairwise(spans):
            assert e1 <= s2, f"{target}: {n1} run until {e1} overlaps {n2} run from {s2}"


def test_ctrl_c_stops_jobs_releases_places_and_writes_outputs(
    farm: dict[str, Any], tmp_path: Path
) -> None:
    from edgetool.farm.places import LocalLocks

    plan = write_plan(
        tmp_path / "long.toml",
        """
name = "long"
targets = ["lb1"]
[run]
duration = 60
timeout = 120
[[models]]
name = "tiny-mlp"
formats = ["onnx", "tflite"]
""",
    )
    night = tmp_path / "night"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetool", "farm", "run", str(plan), "--out", str(night)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not running_run(night, "lb1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_run(night, "lb1")
    assert jobs_alive(night)  # the deploy is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    summary = load_summary(night)
    assert summary["interrupted"] is True and summary["exit_code"] == 130
    first, second = summary["jobs"]
    assert first["status"] == "failed" and first["error"] == "interrupted"
    assert second["status"] == "skipped" and second["reason"] == "interrupted before it ran"
    manifest = json.loads(next((night / "runs").glob("*/manifest.json")).read_text())
    # the deploy was stopped by SIGTERM, not killed: it closed its run (partial, or
    # failed when no sample had arrived yet) instead of leaving it "running"
    assert manifest["status"] in ("partial", "failed"), manifest["status"]
    assert jobs_alive(night) == []
    with LocalLocks().hold("lb1", timeout=0.5) as place:  # the place was given back
        assert place.name == "lb1"
    suite = ET.parse(night / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("errors"), suite.get("skipped")) == ("2", "1", "1")


def _wait_until(check: Any, within: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return bool(check())


LONG_PLAN = """
name = "{name}"
targets = [{targets}]
[run]
duration = {duration}
timeout = {timeout}
place_timeout = {place_timeout}
[[models]]
name = "tiny-mlp"
formats = [{formats}]
"""


def test_killed_farm_never_frees_a_board_its_job_still_uses(
    farm: dict[str, Any], tmp_path: Path
) -> None:
    """D2: `kill -9` of `farm run` mid-job. The job must neither keep the board unlocked
    nor run on unsupervised; the next night gets the board only once the job is gone."""
    from edgetool.errors import DeviceError
    from edgetool.farm.places import LocalLocks

    long = write_plan(
        tmp_path / "long.toml",
        LONG_PLAN.format(
            name="long", targets='"lb1"', duration=600, timeout=900, place_timeout=60,
            formats='"onnx"',
        ),
    )  # fmt: skip
    night = tmp_path / "night-killed"
    with (tmp_path / "killed.err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgetool", "farm", "run", str(long), "--out", str(night)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # `setsid edgetool farm run … &`
        )
    try:
        assert _wait_until(lambda: running_run(night, "lb1"), 90)
    finally:
        proc.kill()
        proc.wait(10)
    assert jobs_alive(night), "the job should still be running right after the kill"

    locks = LocalLocks()

    def board_free_while_job_lives() -> bool:
        """Take the lock for an instant: with it held, no job of that night may live."""
        try:
            with locks.hold("lb1", timeout=0):
                return bool(jobs_alive(night))
        except DeviceError:
            return False

    gone = time.monotonic() + 60  # the job's own run would last 600 s
    while jobs_alive(night) and time.monotonic() < gone:
        assert not board_free_while_job_lives(), "lb1 unlocked while the job still ran"
        time.sleep(0.1)
    assert jobs_alive(night) == [], "the job outlived its farm by a minute"
    manifest = json.loads(next((night / "runs").glob("*/manifest.json")).read_text())
    assert manifest["status"] in ("partial", "failed")  # it was stopped, not left running

    short = write_plan(
        tmp_path / "short.toml",
        LONG_PLAN.format(
            name="short", targets='"lb1"', duration=1, timeout=120, place_timeout=60,
            formats='"onnx"',
        ),
    )  # fmt: skip
    again = tmp_path / "night-again"
    result = run_cli("farm", "run", str(short), "--out", str(again), timeout=200)
    assert result.code == 0, (result.code, result.stderr)
    assert load_summary(again)["counts"]["passed"] == 1


@pytest.mark.parametrize("gap", [0.01, 1.5], ids=["relayed", "twice"])
def test_repeated_ctrl_c_leaves_no_job_behind(
    farm: dict[str, Any], tmp_path: Path, gap: float
) -> None:
    """D9: two SIGINTs (a wrapper relaying one Ctrl-C 10 ms apart, or a user pressing it
    twice): every job that ran is stopped and reported as interrupted, never as "skipped
    before it ran", no job process outlives the farm, and the boards are free after."""
    from edgetool.farm.places import LocalLocks

    plan = write_plan(
        tmp_path / "long.toml",
        LONG_PLAN.format(
            name="long", targets='"lb1", "lb2"', duration=120, timeout=300, place_timeout=60,
            formats='"onnx", "tflite"',
        ),
    )  # fmt: skip
    night = tmp_path / "night"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetool", "farm", "run", str(plan), "--out", str(night)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        both = _wait_until(lambda: running_run(night, "lb1") and running_run(night, "lb2"), 120)
        assert both, "both devices should be measuring"
        proc.send_signal(signal.SIGINT)
        time.sleep(gap)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert jobs_alive(night) == [], "a job outlived the farm"
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    jobs = by_id(load_summary(night))
    for name in ("lb1", "lb2"):
        first, second = jobs[f"{name}/tiny-mlp:onnx"], jobs[f"{name}/tiny-mlp:tflite"]
        assert first["status"] == "failed" and first["error"] == "interrupted", first
        assert second["status"] == "skipped", second
        assert second["reason"] == "interrupted before it ran"
        with LocalLocks().hold(name, timeout=0.5):
            pass
    if gap < 1.0:  # one stop request: the deploys got SIGTERM and closed their runs
        for manifest in night.glob("runs/*/manifest.json"):
            assert json.loads(manifest.read_text())["status"] != "running", manifest


def test_unhealthy_device_is_restarted_rechecked_and_fails_the_night(
    farm: dict[str, Any], tmp_path: Path
) -> None:
    """D11: every health check times out (timeout = 0.5 s). The device is restarted (an
    emulated board's power-cycle) and checked again before its job is skipped, and a night
    whose jobs could not run is not green."""
    before = farm["sshds"]["lb1"].state()
    assert before is not None
    plan = write_plan(
        tmp_path / "quick.toml",
        LONG_PLAN.format(
            name="quick", targets='"lb1"', duration=1, timeout=0.5, place_timeout=60,
            formats='"onnx"',
        ),
    )  # fmt: skip
    night = tmp_path / "night"
    result = run_cli("farm", "run", str(plan), "--out", str(night), timeout=200)
    assert result.code == 12, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "1 of 1 jobs could not run" in result.stderr
    summary = load_summary(night)
    assert summary["exit_code"] == 12
    job = summary["jobs"][0]
    assert job["status"] == "skipped"
    assert "health check timed out after 0.5 s; emulator restarted, then" in job["reason"]
    after = farm["sshds"]["lb1"].state()
    assert after is not None and after["pid"] != before["pid"]  # restarted
    assert (night / "logs" / "lb1-check.err").exists()
    assert (night / "logs" / "lb1-check-2.err").exists()  # checked again after it

    # The lenient choice stays available, explicitly.
    night2 = tmp_path / "night2"
    lenient = run_cli(
        "farm", "run", str(plan), "--out", str(night2), "--allow-skipped", timeout=200
    )
    assert lenient.code == 0, (lenient.code, lenient.stderr)
    assert load_summary(night2)["counts"]["skipped"] == 1
