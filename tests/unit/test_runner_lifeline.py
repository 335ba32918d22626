"""The device runner ends itself when the host is gone or the run overstays its deadline."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from edgetool.flows.base import RunSettings
from edgetool.flows.linux import RUN_DEADLINE_SLACK, runner_argv, runner_deadline
from edgetool.runner import RUNNER_PATH
from tests.conftest import TINY_ONNX


def _long_warmup(*extra: str) -> subprocess.Popen[str]:
    """A runner warming up for 120 s: it writes nothing meanwhile."""
    return subprocess.Popen(
        [sys.executable, str(RUNNER_PATH), "run", "--model", str(TINY_ONNX),
         "--iterations", "5", "--warmup-seconds", "120", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def _until_warming_up(runner: subprocess.Popen[str]) -> None:
    assert runner.stdout is not None
    for line in runner.stdout:
        if json.loads(line).get("when") == "before":  # the last event before warm-up
            return
    raise AssertionError("the runner ended before warming up")


def test_the_runner_exits_when_its_stdin_closes() -> None:
    runner = _long_warmup("--lifeline")
    try:
        _until_warming_up(runner)
        assert runner.stdin is not None
        runner.stdin.close()  # what the host's death looks like from the device
        assert runner.wait(timeout=20) == 129
    finally:
        runner.kill()


def test_without_a_lifeline_a_closed_stdin_does_not_stop_a_run() -> None:
    runner = _long_warmup()
    try:
        _until_warming_up(runner)
        assert runner.stdin is not None
        runner.stdin.close()
        time.sleep(2)
        assert runner.poll() is None
    finally:
        runner.kill()


def test_the_runner_stops_itself_at_its_deadline_with_one_error_line() -> None:
    runner = _long_warmup("--deadline", "3")
    try:
        _until_warming_up(runner)
        out, _ = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 124
    last = json.loads(out.strip().splitlines()[-1])
    assert last["event"] == "error" and last["kind"] == "deadline"


def test_the_deadline_follows_the_settings_generously() -> None:
    timed = RunSettings(duration=60, warmup_seconds=5)
    assert runner_deadline(timed, 3600) == 2 * 65 + RUN_DEADLINE_SLACK
    assert runner_deadline(timed, 100) == 100  # never past the host's own command limit
    counted = RunSettings(iterations=1000)  # no expected length: the host's limit
    assert runner_deadline(counted, 3600) == 3600
    argv = runner_argv("python3", "r.py", "m.onnx", counted, None, deadline=3600)
    assert argv[-3:] == ["--deadline", "3600", "--lifeline"]
