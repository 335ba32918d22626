"""Execution providers and delegates over a real OpenSSH sshd on 127.0.0.1: the device's
runner lists them, and the device's runner refuses one it lacks, after the SSH session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TINY_ONNX, TINY_TFLITE, assert_one_line_error, run_cli

pytestmark = pytest.mark.integration

QUICK = ("-n", "20", "--warmup", "1", "--warmup-seconds", "0", "--repeat", "2")


def test_targets_check_over_ssh_lists_providers_and_delegates(loopback: dict[str, Any]) -> None:
    data = run_cli("targets", "check", "loopback", "--json").json()
    assert "CPUExecutionProvider" in data["accelerators"]["onnxruntime"]
    assert data["accelerators"]["litert"] == ["xnnpack", "none"]
    text = run_cli("targets", "check", "loopback").stdout
    assert "providers" in text and "CPUExecutionProvider" in text


def test_ep_over_ssh_is_recorded_and_an_absent_one_refused(loopback: dict[str, Any]) -> None:
    ok = run_cli("deploy", "-t", "loopback", "-m", str(TINY_ONNX), *QUICK, "--ep", "cpu", "--json")
    assert ok.code == 0, ok.stderr
    assert ok.json()["manifest"]["runtime"]["ep"] == "CPUExecutionProvider"
    refused = run_cli(
        "deploy", "-t", "loopback", "-m", str(TINY_ONNX), *QUICK, "--ep", "CUDAExecutionProvider"
    )
    assert_one_line_error(
        refused, 7, "127.0.0.1", "'CUDAExecutionProvider' is not available", "CPUExecution"
    )


def test_delegate_off_over_ssh(loopback: dict[str, Any]) -> None:
    result = run_cli(
        "deploy", "-t", "loopback", "-m", str(TINY_TFLITE), *QUICK, "--delegate", "none", "--json"
    )
    assert result.code == 0, result.stderr
    runtime = result.json()["manifest"]["runtime"]
    assert (runtime["delegate"], runtime["delegated_nodes"]) == ("none", 0)
