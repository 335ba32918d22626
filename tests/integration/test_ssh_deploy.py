"""`edgetool deploy` over a real OpenSSH sshd on 127.0.0.1, as against a Raspberry Pi."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool.errors import TransferError
from edgetool.targets import load_target
from edgetool.transport.ssh import SshTransport
from tests.conftest import TINY_ONNX, assert_one_line_error, run_cli
from tests.onnx_models import detector, embedding, gather

pytestmark = pytest.mark.integration


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair that the loopback device has never seen."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_deploy_over_ssh_then_second_deploy_uploads_nothing(loopback: dict[str, Any]) -> None:
    first = run_cli("deploy", "-t", "loopback", "-m", "tiny-mlp", "-n", "200", "--json")
    assert first.code == 0, first.stderr
    data = first.json()
    assert data["manifest"]["status"] == "complete"
    assert "127.0.0.1" in data["manifest"]["target"]["transport"]
    assert data["manifest"]["target"]["emulated"] is False  # host CPU: real times
    # Five repetitions (fresh runner processes) of 200 over the one SSH connection.
    assert data["summary"]["latency"]["count"] == 1000
    assert data["summary"]["repetitions"]["count"] == 5
    assert len({f["env_before"]["time_ns"] for f in data["manifest"]["repetitions"]}) == 5
    device_dir = Path(loopback["workdir"])
    model_copies = list(device_dir.rglob("tiny-mlp.onnx"))
    assert len(model_copies) == 1 and model_copies[0].read_bytes() == TINY_ONNX.read_bytes()
    second = run_cli(
        "deploy", "-t", "loopback", "-m", "tiny-mlp", "-n", "20", "--save-outputs", "--json"
    )
    assert second.code == 0, second.stderr
    assert sum(p["bytes_sent"] for p in second.json()["pushes"]) == 0
    outputs = np.load(Path(second.json()["run_dir"]) / "outputs.npz")  # fetched over SFTP
    assert outputs["logits"].shape == (1, 10)


def test_models_with_symbolic_dims_and_integer_inputs_over_ssh(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    """The shapes and values asked for on this host are what the device runs."""
    det = detector(tmp_path / "det.onnx")
    quick = ("-t", "loopback", "-n", "5", "-r", "1", "--warmup", "1")
    refused = run_cli("deploy", *quick, "-m", str(det))
    assert_one_line_error(refused, 3, "'x'", "N, H, W", "--input-shape x=")
    shaped = run_cli(
        "deploy", *quick, "-m", str(det), "--input-shape", "x=1x3x40x24", "--save-outputs",
        "--json",
    )  # fmt: skip
    assert shaped.code == 0, shaped.stderr
    data = shaped.json()
    assert data["manifest"]["inputs"][0]["shape"] == [1, 3, 40, 24]
    assert np.load(Path(data["run_dir"]) / "outputs.npz")["y"].shape == (1, 4, 40, 24)
    emb = gather(tmp_path / "emb.onnx")
    ids = np.array([[7, 2]], dtype=np.int64)
    np.savez(tmp_path / "ids.npz", ids=ids)
    looked_up = run_cli(
        "deploy", *quick, "-m", str(emb), "--input", str(tmp_path / "ids.npz"),
        "--save-outputs", "--json",
    )  # fmt: skip
    assert looked_up.code == 0, looked_up.stderr
    outputs = np.load(Path(looked_up.json()["run_dir"]) / "outputs.npz")
    assert (outputs["emb"] == embedding()[ids]).all()
    np.savez(tmp_path / "bad.npz", ids=np.array([[99, 2]], dtype=np.int64))
    overrun = run_cli("deploy", *quick, "-m", str(emb), "--input", str(tmp_path / "bad.npz"))
    assert_one_line_error(overrun, 3, "127.0.0.1", "input 'ids' is int64")


def test_verbose_deploy_over_ssh_shows_what_is_sent(loopback: dict[str, Any]) -> None:
    args = ("deploy", "-t", "loopback", "-m", "tiny-mlp", "-n", "20", "-r", "1")
    first = run_cli("-v", *args)
    assert first.code == 0, first.stderr
    said = first.stderr
    port = loopback["transport"]["port"]
    assert re.search(
        rf"^edgetool\.transport\.ssh: connected to \S+@127\.0\.0\.1:{port}, host key "
        r"ssh-ed25519 SHA256:[\w+/]+$",
        said,
        re.M,
    ), said
    assert re.search(
        r"^edgetool\.transport\.ssh: run \S+ \S+/runner/device_runner\.py run --model "
        r"\S+/tiny-mlp\.onnx --runtime auto --iterations 20 ",
        said,
        re.M,
    ), said
    assert re.search(r"^edgetool\.transport\.base: put tiny-mlp\.onnx -> \S+ (\(\d+ bytes\)|"
                     r"skipped, hash matches)$", said, re.M), said  # fmt: skip
    # No key material: not one line of the client's private key.
    private = Path(loopback["transport"]["identity_file"]).read_text().splitlines()
    assert not [line for line in private if "PRIVATE KEY" not in line and line in said]
    # -vv: the channel story and paramiko's own log.
    second = run_cli("-vv", *args, "--json")
    assert second.code == 0, second.stderr
    assert second.json()["manifest"]["status"] == "complete"
    assert "edgetool.transport.base: put tiny-mlp.onnx" in second.stderr
    assert "skipped, hash matches" in second.stderr
    assert re.search(r"^edgetool\.transport\.ssh: channel \d+: exit status 0$", second.stderr, re.M)
    assert re.search(r"^paramiko\.transport: ", second.stderr, re.M), second.stderr


def test_targets_check_over_ssh(loopback: dict[str, Any]) -> None:
    result = run_cli("targets", "check", "loopback", "--json")
    assert result.code == 0, result.stderr
    facts = result.json()
    assert facts["device"]["python_path"]
    assert facts["runtimes"]["onnxruntime"]


def test_unknown_host_key_is_refused_until_trusted(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    env = {"EDGETOOL_LOOPBACK_KNOWN_HOSTS": str(known)}
    refused = run_cli("deploy", "-t", "loopback", "-m", "tiny-mlp", env=env)
    assert_one_line_error(refused, 4, "not trusted", "edgetool targets trust loopback")
    assert known.read_text() == ""  # nothing auto-accepted
    declined = subprocess.run(
        [sys.executable, "-m", "edgetool", "targets", "trust", "loopback"],
        input="n\n",
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert declined.returncode == 4 and known.read_text() == ""
    assert "SHA256:" in declined.stdout
    trusted = run_cli("targets", "trust", "loopback", "--yes", env=env)
    assert trusted.code == 0, trusted.stderr
    port = loopback["transport"]["port"]
    assert known.read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    ok = run_cli("deploy", "-t", "loopback", "-m", "tiny-mlp", "-n", "5", env=env)
    assert ok.code == 0, ok.stderr


def test_changed_host_key_is_refused(loopback: dict[str, Any], tmp_path: Path) -> None:
    kind, blob = Path(f"{keygen(tmp_path / 'other')}.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{loopback['transport']['port']} {kind} {blob}\n")
    env = {"EDGETOOL_LOOPBACK_KNOWN_HOSTS": str(known)}
    result = run_cli("deploy", "-t", "loopback", "-m", "tiny-mlp", env=env)
    assert_one_line_error(result, 4, "CHANGED")
    trust = run_cli("targets", "trust", "loopback", "--yes", env=env)
    assert_one_line_error(trust, 4, "different key is recorded")


def test_authentication_failure(loopback: dict[str, Any], tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    result = run_cli(
        "deploy",
        "-t",
        "loopback",
        "-m",
        "tiny-mlp",
        env={"EDGETOOL_LOOPBACK_IDENTITY_FILE": str(stranger), "SSH_AUTH_SOCK": ""},
    )
    assert_one_line_error(result, 6, "authentication failed")


def test_unreachable_host(loopback: dict[str, Any]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    result = run_cli(
        "deploy",
        "-t",
        "loopback",
        "-m",
        "tiny-mlp",
        env={"EDGETOOL_LOOPBACK_PORT": str(closed_port)},
    )
    assert_one_line_error(result, 6, "cannot reach", str(closed_port))


def test_hostile_file_names_are_never_executed(loopback: dict[str, Any], tmp_path: Path) -> None:
    name = "we ird;touch PWNED;$(touch PWNED2)`touch PWNED3`'q\"'.onnx"
    model = tmp_path / name
    shutil.copyfile(TINY_ONNX, model)
    result = run_cli("deploy", "-t", "loopback", "-m", str(model), "-n", "5", "--json")
    assert result.code == 0, result.stderr
    device_dir = Path(loopback["workdir"])
    assert [p.name for p in device_dir.rglob("*.onnx") if p.name == name] == [name]
    home = Path.home()
    for marker in ("PWNED", "PWNED2", "PWNED3"):
        assert not (home / marker).exists()
        assert not list(device_dir.rglob(marker))


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_connection_killed_mid_upload_leaves_nothing_at_final_path(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 << 20))
    target = load_target("loopback")
    remote = f"{loopback['workdir']}/killed/big.bin"
    transport = SshTransport(target.transport, "loopback", target.python)  # type: ignore[arg-type]
    killed: list[int] = []

    def kill_connection(done: int, total: int) -> None:
        if done >= (4 << 20) and not killed:
            killed.extend(_descendants(loopback["pid"]))  # this session's sshd processes
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(TransferError, match="nothing was written at the final path"):
        transport.put(big, remote, kill_connection)
    transport.close()
    assert killed
    assert not Path(remote).exists()
    fresh = SshTransport(target.transport, "loopback", target.python)  # type: ignore[arg-type]
    try:
        result = fresh.put(big, remote)
    finally:
        fresh.close()
    assert not result.skipped and result.bytes_sent == big.stat().st_size
    assert Path(remote).read_bytes() == big.read_bytes()
    # At most the cut upload's own temporary is left (the connection died before it could
    # be removed); the next commit of this file clears it once it is 10 minutes old.
    parts = [p for p in Path(remote).parent.iterdir() if p.name.endswith(".part")]
    assert len(parts) <= 1 and all(p.name.startswith(f".{Path(remote).name}.") for p in parts)


def test_a_link_planted_at_the_temporary_name_redirects_nothing(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    """Anyone who can write the workdir used to plant `<file>.part -> ~/victim` and make the
    next deploy overwrite the victim; the temporary is now unpredictable and opened O_EXCL."""
    from edgetool.targets import load_target
    from edgetool.transport.ssh import SshTransport

    target = load_target("loopback")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = Path(loopback["workdir"]) / "planted"
    folder.mkdir(parents=True)
    remote = str(folder / "m.onnx")
    os.symlink(victim, remote + ".part")
    src = tmp_path / "m.onnx"
    src.write_bytes(TINY_ONNX.read_bytes())
    transport = SshTransport(target.transport, "loopback", target.python)  # type: ignore[arg-type]
    try:
        first = transport.put(src, remote)
        again = transport.put(src, remote)
    finally:
        transport.close()
    assert victim.read_bytes() == b"precious"
    assert Path(remote).read_bytes() == src.read_bytes() and not Path(remote).is_symlink()
    assert not first.skipped and again.skipped


def _wait_for_samples(results: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for samples in results.glob("*/samples.jsonl"):
            if samples.stat().st_size > 0:
                return samples.parent
        time.sleep(0.05)
    raise AssertionError("no samples appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_deploy_leaves_a_readable_partial_result(
    loopback: dict[str, Any], home: Path, sig: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetool",
            "deploy",
            "-t",
            "loopback",
            "-m",
            "tiny-mlp",
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        run_dir = _wait_for_samples(home / "results")
        time.sleep(0.3)
        proc.send_signal(sig)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Seen twice on a heavily loaded machine, never reproduced: show where it hangs
            # (faulthandler dumps every thread's stack on SIGABRT).
            proc.send_signal(signal.SIGABRT)
            _, stderr = proc.communicate(timeout=30)
            raise AssertionError(
                "deploy did not exit after SIGINT:\n" + stderr.decode(errors="replace")[-6000:]
            ) from None
    finally:
        proc.kill()
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert b"kept in" in stderr and b"Traceback" not in stderr
    shown = run_cli("results", "show", run_dir.name, "--json")
    assert shown.code == 0, shown.stderr
    data = shown.json()
    assert data["manifest"]["status"] == "partial"
    assert data["summary"]["count"] > 0
    assert data["summary"]["latency"]["p50"] > 0
    human = run_cli("results", "show", run_dir.name)
    assert "status: partial" in human.stdout


def test_op_profile_over_ssh_comes_back_summarised(loopback: dict[str, Any]) -> None:
    """The profiler's JSON is parsed on the device; the run gets op_profile.json, and its
    timed samples are the repetitions' only."""
    result = run_cli(
        "deploy", "-t", "loopback", "-m", "tiny-mlp", "-n", "40", "-r", "2", "--op-profile",
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["summary"]["latency"]["count"] == 80
    shown = run_cli("results", "show", data["manifest"]["run_id"], "--ops", "--json")
    assert shown.code == 0, shown.stderr
    profile = shown.json()
    assert profile["source"] == "onnxruntime profiler" and profile["inferences"] == 10
    assert {row["op_type"] for row in profile["op_types"]} and profile["nodes"]
    refused = run_cli("deploy", "-t", "loopback", "-m", "tiny-mlp:tflite", "--op-profile")
    assert_one_line_error(refused, 2, "--op-profile", "benchmark_model")
