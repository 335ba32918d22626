"""-v and -vv: what edgetool sends to a device goes to stderr through `logging`; stdout
(human or --json) is the same as without them."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.cli import setup_logging
from edgetool.testing.mlperf_dut import MlperfDut
from edgetool.transport.base import shown_argv
from tests.conftest import run_cli

RUNNER_ARGV = re.compile(
    r"^edgetool\.transport\.local: run \S+ edgetool/runner/device_runner\.py run "
    r"--model edgetool/artifacts/\w+/tiny-mlp\.onnx --runtime auto --iterations 20 ",
    re.M,
)


def _shape(stdout: str) -> str:
    """The output with its measured numbers (and the padding they move) masked."""
    # Two deploys in one second get run ids `…-tiny-mlp` and `…-tiny-mlp-2`: same shape.
    stdout = re.sub(r"(-tiny-mlp)-\d+\b", r"\1", stdout)
    return re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?", "N", stdout))


def test_v_shows_the_runner_argv_and_uploads_and_leaves_stdout_alone(cli: Any) -> None:
    args = ("deploy", "--model", "tiny-mlp", "-r", "1", "-n", "20")
    quiet = cli(*args)
    loud = cli("-v", *args)
    assert quiet.code == 0 and loud.code == 0, (quiet.stderr, loud.stderr)
    assert RUNNER_ARGV.search(loud.stderr), loud.stderr
    # The first deploy sent both files; this one finds them on the device.
    assert re.search(
        r"^edgetool\.transport\.base: put tiny-mlp\.onnx -> \S+: skipped, hash matches$",
        loud.stderr,
        re.M,
    ), loud.stderr
    assert not re.search(r"^edgetool\.", quiet.stderr, re.M), quiet.stderr
    assert "edgetool." not in loud.stdout
    assert _shape(loud.stdout) == _shape(quiet.stdout)


def test_vv_adds_process_detail_and_json_stays_parseable(cli: Any, home: Path) -> None:
    result = cli("-vv", "deploy", "--model", "tiny-mlp", "-r", "1", "-n", "20", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["manifest"]["status"] == "complete"
    assert RUNNER_ARGV.search(result.stderr), result.stderr
    assert re.search(r"^edgetool\.transport\.base: put tiny-mlp\.onnx -> \S+ \(\d+ bytes\)$",
                     result.stderr, re.M)  # fmt: skip
    assert re.search(r"^edgetool\.transport\.local: \S+ \(pid \d+\) exited with status 0$",
                     result.stderr, re.M)  # fmt: skip


@pytest.mark.parametrize("verbosity", [1, 2])
def test_serial_protocol_commands_at_v_and_every_line_at_vv(home: Path, verbosity: int) -> None:
    with MlperfDut().serve() as url:
        result = run_cli(
            "-" + "v" * verbosity,
            "deploy", "-t", "mlperf-tiny-dut", "-n", "3", "-r", "1", "--json",
            env={"EDGETOOL_MLPERF_TINY_DUT_URL": url},
        )  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["manifest"]["device"]["name"] == "reference"
    said = result.stderr.splitlines()
    assert f"edgetool.transport.serial: open {url} at 115200 baud" in said
    assert "edgetool.mcu.protocol: > name%" in said
    assert "edgetool.mcu.protocol: > infer 1 0%" in said
    wire = {"edgetool.mcu.protocol: < m-name-dut-[reference]", "edgetool.mcu.protocol: < m-ready"}
    if verbosity == 1:
        assert not wire & set(said), result.stderr
    else:
        assert wire <= set(said), result.stderr


@pytest.fixture
def configured() -> Iterator[None]:
    """Undo setup_logging: this process's other tests see logging as they found it."""
    from edgetool import cli

    root = logging.getLogger()
    level = root.level
    yield
    if cli._handler is not None:
        root.removeHandler(cli._handler)
        cli._handler = None
    for name in ("edgetool", "paramiko"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    root.setLevel(level)


def test_levels_and_line_format_per_verbosity(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, paramiko, other = (logging.getLogger(n) for n in ("edgetool.x", "paramiko.t", "lib"))

    def emit() -> list[str]:
        for logger in (ours, paramiko, other):
            logger.debug("d")
            logger.info("i")
            logger.warning("w")
        out, err = capsys.readouterr()
        assert out == ""
        return err.splitlines()

    setup_logging(0)
    assert emit() == ["warning: w"]  # a library's lines only with -v: edgetool's error says it
    setup_logging(1)
    assert emit() == ["edgetool.x: i", "warning: edgetool.x: w", "paramiko.t: w", "lib: w"]
    setup_logging(2)
    assert emit() == [
        "edgetool.x: d",
        "edgetool.x: i",
        "warning: edgetool.x: w",
        "paramiko.t: i",
        "paramiko.t: w",
        "lib: w",
    ]


def test_without_v_no_library_record_reaches_stderr(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """paramiko logs a cut connection at ERROR from its own thread ("Socket exception:
    Connection reset by peer (104)") next to edgetool's `error:` line that says the same."""
    setup_logging(0)
    for name in ("paramiko.transport", "urllib3.connectionpool", "lib"):
        for level in (logging.WARNING, logging.ERROR, logging.CRITICAL):
            logging.getLogger(name).log(level, "Socket exception: reset")
    logging.getLogger("edgetool.x").error("ours")
    assert capsys.readouterr() == ("", "error: ours\n")
    setup_logging(1)
    logging.getLogger("paramiko.transport").error("Socket exception: reset")
    assert capsys.readouterr().err == "paramiko.transport: Socket exception: reset\n"


def test_logged_argv_is_shell_quoted_with_inline_scripts_shortened() -> None:
    argv = ["python3", "-S", "-c", "import sys\nprint(sys.argv)\n", "a b", "it's"]
    assert shown_argv(argv) == "python3 -S -c '<2-line script>' 'a b' 'it'\"'\"'s'"
