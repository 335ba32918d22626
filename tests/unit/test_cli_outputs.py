"""CLI conventions every command shares: --json (also on failure), whole identifiers in
pipes, one meaning for -o and -f, exit codes for ordinary mistakes, refused options."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool.cli.common import json_text
from edgetool.flows.base import ALL_RUN_OPTIONS, DeployFlow, RunSettings, refuse_unsupported
from tests.conftest import assert_one_line_error
from tests.unit.test_compare import make_run

LONG_ID = "2026-11-21T19-02-11-rpi4-a-model-with-a-rather-long-name-for-a-table"


def results(home: Path) -> Path:
    return home / "results"


def one_run(home: Path, **kwargs: Any) -> Path:
    return make_run(results(home), LONG_ID, [[1_000_000, 1_100_000, 1_200_000]], **kwargs)


# --- 1. --json everywhere, and on failure ------------------------------------------------


def test_json_encoder_writes_null_for_non_finite_values() -> None:
    text = json_text(
        {"inf": float("inf"), "nested": [float("nan"), -float("inf")], "np": np.float32("inf")}
    )
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert data == {"inf": None, "nested": [None, None], "np": None}


def test_a_failure_with_json_prints_one_error_object_on_stdout(cli: Any) -> None:
    result = cli("results", "show", "no-such-run", "--json")
    assert_one_line_error(result, 9, "no-such-run")
    error = result.json()["error"]
    assert error["exit_code"] == 9 and error["kind"] == "ResultsError"
    assert "no-such-run" in error["message"]


def test_a_usage_error_with_json_is_json_too(cli: Any) -> None:
    result = cli("results", "list", "--no-such-option", "--json")
    assert result.code == 2
    assert result.json()["error"]["exit_code"] == 2
    without = cli("results", "list", "--no-such-option")
    assert without.code == 2 and without.stdout == ""


def test_commands_that_lacked_json_have_it(cli: Any, home: Path) -> None:
    one_run(home)
    out = home / "samples.csv"
    exported = cli("results", "export", "latest", "-o", str(out), "--json")
    assert exported.code == 0, exported.stderr
    assert exported.json() == {"path": str(out), "run_id": LONG_ID, "format": "csv", "rows": 3}
    stopped = cli("emulate", "stop", "mcu-m4-qemu", "--json")
    assert stopped.code == 0, stopped.stderr
    assert stopped.json()["stopped"] is False
    trust = cli("targets", "trust", "local", "--json")
    assert trust.code == 5 and trust.json()["error"]["kind"] == "ConfigError"


# --- 2. whole identifiers when stdout is not a terminal ---------------------------------


def test_piped_lists_keep_every_name_and_run_id_whole(cli: Any, home: Path) -> None:
    one_run(home, model="a-model-with-a-rather-long-name-for-a-table")
    listed = cli("results", "list")  # stdout is a pipe here
    assert LONG_ID in listed.stdout and "…" not in listed.stdout
    assert "a-model-with-a-rather-long-name-for-a-table.onnx" in listed.stdout
    models = cli("models", "list")
    assert "…" not in models.stdout
    assert "exported as ONE time step (x_t + state in, state out)" in models.stdout


def test_a_narrow_terminal_never_cuts_a_run_id(home: Path) -> None:
    one_run(home)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    env = {**os.environ, "COLUMNS": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetool", "results", "list"],
        stdout=follower,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())
    assert LONG_ID in text.replace("\r\n", "\n").replace("\n", "") or LONG_ID in text
    assert "…" not in text


# --- 3. one meaning for -o and -f ------------------------------------------------------


def test_results_export_o_is_the_output_file_and_f_the_format(cli: Any, home: Path) -> None:
    one_run(home)
    out = home / "x.csv"
    assert cli("results", "export", "latest", "--csv", "-o", str(out)).code == 0
    assert out.read_text().splitlines()[0] == "index,latency_ns,latency_ms"
    again = home / "y.csv"
    assert cli("results", "export", "latest", "-f", "csv", "--file", str(again)).code == 0
    assert again.read_text() == out.read_text()  # --file: the old long name still works
    old_f = cli("results", "export", "latest", "-f", str(home / "z.csv"))
    assert old_f.code == 2 and "-o PATH" in old_f.stderr
    old_o = cli("results", "export", "latest", "-o", str(results(home)))
    assert old_o.code == 2 and "--results-dir" in old_o.stderr


def test_o_never_means_the_results_directory(cli: Any, home: Path) -> None:
    one_run(home)
    refused = cli("results", "list", "-o", str(results(home)))
    assert refused.code == 2 and "--results-dir" in refused.stderr
    for option in ("--results-dir", "--out"):
        listed = cli("results", "list", option, str(results(home)))
        assert listed.code == 0 and LONG_ID in listed.stdout


# --- 4. exit 1 only for bugs -------------------------------------------------------------


def test_a_binary_target_file_is_a_config_error(cli: Any, home: Path) -> None:
    junk = home / "junk.toml"
    junk.write_bytes(b"\x00\xff\xfe\x80 not toml")
    assert_one_line_error(cli("targets", "show", str(junk)), 5, str(junk), "UTF-8")


def test_an_unwritable_output_is_refused_before_connecting(cli: Any, home: Path) -> None:
    target = home / "far.toml"
    target.write_text(
        'kind = "linux"\n[transport]\ntype = "ssh"\nhost = "nowhere.invalid"\nuser = "pi"\n'
    )
    bad = home / "a-file"
    bad.write_text("")
    result = cli("deploy", "-t", str(target), "-m", "tiny-mlp", "-o", str(bad / "runs"))
    assert_one_line_error(result, 2, str(bad / "runs"))
    one_run(home)
    export = cli("results", "export", "latest", "-o", "/proc/x.csv")
    assert_one_line_error(export, 2, "/proc/x.csv")


def test_a_reader_that_stops_early_ends_quietly(home: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetool", "targets", "list", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # gone before the interpreter has even started: every write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""


# --- 5. options a flow cannot honour are refused ----------------------------------------


def test_op_profile_on_a_board_is_refused_and_nothing_is_recorded(cli: Any, home: Path) -> None:
    result = cli("deploy", "-t", "mcu-m4-qemu", "--op-profile", "-n", "5")
    assert_one_line_error(result, 2, "--op-profile", "mcu-m4-qemu")
    assert not results(home).exists() or not any(results(home).iterdir())


def test_a_board_refuses_threads_and_energy(cli: Any) -> None:
    result = cli("deploy", "-t", "mcu-m4-qemu", "--threads", "2", "--energy")
    assert_one_line_error(result, 2, "--threads, --energy", "mcu-m4-qemu")


def test_a_flow_declares_what_it_supports() -> None:
    from edgetool.flows import flow_for
    from edgetool.targets import load_target

    local = load_target("local")
    plugin = DeployFlow(lambda *args: None, lambda target: None)  # type: ignore[arg-type,return-value]
    assert plugin.supports == ALL_RUN_OPTIONS
    refuse_unsupported(plugin, local, RunSettings(op_profile=True))  # a plugin is trusted
    board = load_target("mcu-m4-qemu")
    with pytest.raises(Exception, match="--op-profile") as caught:
        refuse_unsupported(flow_for(board), board, RunSettings(op_profile=True))
    assert getattr(caught.value, "exit_code", None) == 2
    refuse_unsupported(flow_for(local), local, RunSettings(threads=2, op_profile=True))


# --- 6. readable shapes and board facts ------------------------------------------------


def test_models_show_prints_shapes_as_a_user_types_them(cli: Any) -> None:
    shown = cli("models", "show", "cbnet")
    assert shown.code == 0, shown.stderr
    assert "image  1x1x28x28  float32" in shown.stdout
    assert "(1, 1, 28, 28)" not in shown.stdout and "{'" not in shown.stdout


def test_results_show_of_a_board_run_says_board_and_timer(cli: Any, home: Path) -> None:
    device = {
        "board": "nucleo-l476rg",
        "name": "edgetool-nucleo",
        "profile": "edgetool",
        "timer": "dwt-cycles",
        "tick-hz": "80000000",
    }
    one_run(home, device=device, time_base="device timer (dwt-cycles)")
    shown = cli("results", "show", "latest")
    assert shown.code == 0, shown.stderr
    assert "None" not in shown.stdout
    line = next(x for x in shown.stdout.splitlines() if x.strip().startswith("device"))
    assert "board nucleo-l476rg" in line and "timer dwt-cycles at 80 MHz" in line
    assert "time base: device timer (dwt-cycles)" in shown.stdout
