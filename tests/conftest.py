"""Shared fixtures: an isolated edgetool home per test, and a CLI runner that runs the
real `edgetool` entry point in a subprocess (exit codes, stderr, no tracebacks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_ONNX = REPO / "models" / "tiny-mlp" / "tiny-mlp.onnx"
TINY_TFLITE = REPO / "models" / "tiny-mlp" / "tiny-mlp.tflite"

# A suite started in the background (`nohup make test &` in a script) inherits SIGINT
# ignored, and so would every process it starts: the tests that press Ctrl-C on a deploy
# or a farm job need it delivered. A handler here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cache, state, config and results of this test live under tmp_path only."""
    for var, sub in (
        ("EDGETOOL_CACHE_DIR", "cache"),
        ("EDGETOOL_STATE_DIR", "state"),
        ("EDGETOOL_RESULTS", "results"),
        ("EDGETOOL_CONFIG_DIR", "config"),  # the user's own targets/ stay out of tests
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("EDGETOOL_TARGETS", raising=False)
    monkeypatch.delenv("EDGETOOL_TARGET", raising=False)
    return tmp_path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> CliResult:
    # 240 s: an export + verify took >120 s once on a CI host loaded 8x; pytest's own
    # per-test limit (300 s, pyproject) still catches a hang.
    proc = subprocess.run(
        [sys.executable, "-m", "edgetool", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(home: Path) -> Iterator[Any]:
    yield run_cli


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> None:
    """A user error: the documented exit code, one `error:` line, no traceback."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def all_at_once(
    count: int, action: Callable[[], object]
) -> tuple[list[object], list[BaseException]]:
    """Run `action` in `count` threads released together by a barrier (a race, on
    purpose): (what the calls returned, what they raised)."""
    import threading

    barrier = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            results.append(action())
        except BaseException as exc:  # any failure is what the caller looks for
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors
