"""Faults on the SSH path against the real loopback sshd: remote processes that must not
outlive edgetool, a link that goes silent mid-upload, and the verified streaming put."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetool.errors import DeviceError, TransferError
from edgetool.targets import load_target
from edgetool.testing.cut_link import BlackholeProxy, CuttingProxy
from edgetool.transport.base import FileTransport
from edgetool.transport.local import LocalSettings, LocalTransport
from edgetool.transport.ssh import SshTransport
from tests.conftest import TINY_ONNX, all_at_once, assert_one_line_error

pytestmark = pytest.mark.integration


def processes_with(needle: str) -> list[int]:
    """Pids whose command line contains `needle` (not this test process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def wait_until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def open_ssh(**changes: Any) -> SshTransport:
    target = load_target("loopback")
    settings = dataclasses.replace(target.transport, **changes)
    return SshTransport(settings, "loopback", target.python)


# A command that starts a child and then sleeps without writing: closing its channel
# (all the old kill did) ends neither of them.
def sleeper_argv(marker: str) -> list[str]:
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]]); "
        "print('started', flush=True); time.sleep(300)"
    )
    return [sys.executable, "-c", code, marker]


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_command_that_goes_silent_is_stopped_with_its_whole_group(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    marker = f"edgetool-test-sleeper-{os.getpid()}-{where}"
    if where == "ssh":
        request.getfixturevalue("loopback")
        transport: FileTransport = open_ssh(idle_timeout=2.0)
    else:
        transport = LocalTransport(LocalSettings(root=tmp_path, idle_timeout=2.0))
    try:
        process = transport.run(sleeper_argv(marker))
        lines = process.lines()
        assert next(lines) == "started"
        assert wait_until(lambda: len(processes_with(marker)) == 2, 10)
        with pytest.raises(DeviceError, match="no output for 2 s"):
            next(lines)
        assert wait_until(lambda: not processes_with(marker), 10), processes_with(marker)
    finally:
        transport.close()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def _deploy_in_long_warmup(
    target: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A deploy whose runner spends 120 s warming up: it writes nothing meanwhile, so
    only its own lifeline (or a signal) can end it once the host is gone."""
    return subprocess.Popen(
        [sys.executable, "-m", "edgetool", "deploy", "-t", target, "-m", "tiny-mlp",
         "-n", "5", "-r", "1", "--warmup-seconds", "120"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _runners_in(workdir_marker: str) -> list[int]:
    return [
        pid
        for pid in processes_with("device_runner.py run")
        if workdir_marker in _cmdline_and_cwd(pid)
    ]


def _warming_up(results: Path) -> bool:
    return any('"env_before"' in m.read_text() for m in results.glob("*/manifest.json"))


def _cmdline_and_cwd(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        return cmdline + " " + os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


@pytest.mark.parametrize("target", ["loopback", "local"])
def test_a_killed_deploy_leaves_no_runner_behind(
    loopback: dict[str, Any], home: Path, target: str
) -> None:
    where = loopback["workdir"] if target == "loopback" else str(home)
    deploy = _deploy_in_long_warmup(target)
    try:
        # The runner's last event before warming up: from here on it writes nothing.
        assert wait_until(lambda: _warming_up(home / "results"), 120), deploy.stderr
        runners = _runners_in(where)
        assert runners
        deploy.send_signal(signal.SIGKILL)
        deploy.wait(timeout=30)
        # Before: the runner lived on (ppid 1) until its next write, 120 s away.
        assert wait_until(lambda: not _runners_in(where), 15), runners
    finally:
        deploy.kill()
        for pid in _runners_in(where):
            os.kill(pid, signal.SIGKILL)


# --- a link that goes silent mid-upload ----------------------------------------------


def proxied_target(home: Path, loopback: dict[str, Any], port: int, name: str) -> None:
    """A target `name` for the loopback device reached through 127.0.0.1:`port`."""
    known = home / f"{name}_known_hosts"
    key = Path(loopback["transport"]["known_hosts"]).read_text().split()[1:3]
    known.write_text(f"[127.0.0.1]:{port} {' '.join(key)}\n")
    targets = home / "config" / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    (targets / f"{name}.toml").write_text(
        f'kind = "linux"\nworkdir = "{loopback["workdir"]}/{name}"\n'
        f'python = "{loopback["python"]}"\n[transport]\ntype = "ssh"\nhost = "127.0.0.1"\n'
        f'port = {port}\nuser = "{loopback["transport"]["user"]}"\n'
        f'identity_file = "{loopback["transport"]["identity_file"]}"\n'
        f'known_hosts = "{known}"\nuse_ssh_config = false\nidle_timeout = 20\n'
    )


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
def test_an_upload_cut_mid_stream_shows_one_error_line_and_no_library_text(
    loopback: dict[str, Any], home: Path, tmp_path: Path, reset: bool
) -> None:
    """paramiko logs its transport thread's end ("Socket exception: Connection reset by
    peer") at ERROR; without -v the user sees edgetool's one line only."""
    model = big_onnx(tmp_path / "m.onnx")
    for attempt in range(3):  # paramiko's line came in 35 of 50 cuts: three tries
        proxy = CuttingProxy(loopback["transport"]["port"], cut_after=4 << 20, reset=reset)
        proxied_target(home, loopback, proxy.address[1], "cut")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edgetool", "deploy", "-t", "cut", "-m", str(model)],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=240,
            )
        finally:
            proxy.close()
        assert proxy.cut_at is not None, proc.stderr
        result = type("R", (), {"code": proc.returncode, "stderr": proc.stderr})()
        assert_one_line_error(result, TransferError.exit_code, "upload of m.onnx", "nothing was")
        assert ": )" not in proc.stderr and ":  " not in proc.stderr, proc.stderr  # a reason
        for stray in ("paramiko", "Socket exception", "Traceback", "EOFError", "Exception"):
            assert stray not in proc.stderr, (attempt, proc.stderr)
    assert list(Path(loopback["workdir"], "cut").rglob("m.onnx")) == []


def big_onnx(path: Path, rows: int = 2048, cols: int = 2048) -> Path:
    """A valid ONNX model of ~16 MB (one MatMul with random weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_upload_into_a_silent_link_fails_within_one_idle_timeout(
    loopback: dict[str, Any], home: Path, tmp_path: Path
) -> None:
    idle = 3.0
    proxy = BlackholeProxy(loopback["transport"]["port"], cut_after=4 << 20)
    known = tmp_path / "known_hosts"
    key = Path(loopback["transport"]["known_hosts"]).read_text().split()[1:3]
    known.write_text(f"[127.0.0.1]:{proxy.address[1]} {' '.join(key)}\n")
    targets = home / "config" / "targets"
    targets.mkdir(parents=True)
    (targets / "holed.toml").write_text(
        f'kind = "linux"\nworkdir = "{loopback["workdir"]}/holed"\n'
        f'python = "{loopback["python"]}"\n[transport]\ntype = "ssh"\nhost = "127.0.0.1"\n'
        f'port = {proxy.address[1]}\nuser = "{loopback["transport"]["user"]}"\n'
        f'identity_file = "{loopback["transport"]["identity_file"]}"\n'
        f'known_hosts = "{known}"\nuse_ssh_config = false\nidle_timeout = {idle}\n'
    )
    model = big_onnx(tmp_path / "m.onnx")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgetool", "deploy", "-t", "holed", "-m", str(model)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=240,
        )
        ended = time.monotonic()
    finally:
        proxy.close()
    assert proxy.cut_at is not None, proc.stderr
    result = type("R", (), {"code": proc.returncode, "stderr": proc.stderr})()
    assert_one_line_error(result, TransferError.exit_code, "upload of m.onnx to ", "stalled")
    assert f"no progress for {idle:g} s" in proc.stderr
    # Progress lines and one error line: no stray paramiko line, no traceback.
    for stray in ("paramiko", "Traceback", "Exception", "Socket", "EOF"):
        assert stray not in proc.stderr, proc.stderr
    # Before: three idle_timeouts (SFTP write, close, remove) before giving up.
    assert ended - proxy.cut_at < 2 * idle, ended - proxy.cut_at
    final = list(Path(loopback["workdir"], "holed").rglob("m.onnx"))
    assert final == []


# --- the verified streaming put ------------------------------------------------------


def test_a_put_is_one_remote_command_and_an_unchanged_one_sends_nothing(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    """Each remote command starts the device user's login shell (~300 ms on a loaded
    machine with pyenv in ~/.bashrc): a put_many is one command that answers what is
    already there, then receives only what is not."""
    srcs = [tmp_path / "m.onnx", tmp_path / "runner.py"]
    for src in srcs:
        src.write_bytes(os.urandom(3 << 20))
    remotes = [f"{loopback['workdir']}/streamed/deep/m.onnx", f"{loopback['workdir']}/r/runner.py"]
    files = list(zip(srcs, remotes, strict=True))
    transport = open_ssh()
    ran: list[list[str]] = []
    real_run = transport.run

    def counting_run(argv: Any) -> Any:
        ran.append(list(argv))
        return real_run(argv)

    transport.run = counting_run  # type: ignore[method-assign]
    try:
        first = transport.put_many(files)
        assert len(ran) == 1  # answer, receive both, make the folders: one shell
        again = transport.put_many(files)
        assert len(ran) == 2  # matching files: the one command sends nothing back
        srcs[1].write_bytes(os.urandom(1 << 20))
        changed = transport.put(srcs[1], remotes[1])
        assert len(ran) == 3
    finally:
        transport.close()
    assert [(r.skipped, r.bytes_sent) for r in first] == [(False, 3 << 20), (False, 3 << 20)]
    assert [(r.skipped, r.bytes_sent) for r in again] == [(True, 0), (True, 0)]
    assert not changed.skipped and changed.bytes_sent == 1 << 20
    for src, remote in files:
        assert Path(remote).read_bytes() == src.read_bytes()
        assert [p.name for p in Path(remote).parent.iterdir()] == [src.name]


def test_a_stream_that_arrives_different_is_refused_and_removed(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(TINY_ONNX.read_bytes())
    remote = f"{loopback['workdir']}/mismatch/m.onnx"
    transport = open_ssh()
    try:
        with pytest.raises(TransferError, match=r"arrived corrupted .* nothing was written"):
            transport._send_verified([(src, remote, "0" * 64)], lambda _path: None)
    finally:
        transport.close()
    assert list(Path(remote).parent.iterdir()) == []  # no final file, no .part


def test_concurrent_puts_of_one_new_file_over_ssh_all_land_whole(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    """Each receiving command writes its own exclusive temporary, so deploys of the same
    new model at once all succeed and leave one whole file."""
    src = tmp_path / "big.onnx"
    src.write_bytes(os.urandom(6 << 20))
    remote = f"{loopback['workdir']}/together/big.onnx"

    def deploy() -> object:
        transport = open_ssh()
        try:
            return transport.put(src, remote)
        finally:
            transport.close()

    results, errors = all_at_once(6, deploy)
    assert errors == []
    assert len(results) == 6
    assert Path(remote).read_bytes() == src.read_bytes()
    assert [p.name for p in Path(remote).parent.iterdir()] == ["big.onnx"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_put_that_cannot_fit_sends_nothing_and_leaves_no_receiver(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    small = Path(loopback["workdir"]) / f"small-{os.getpid()}"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        src = tmp_path / "big.onnx"
        src.write_bytes(os.urandom(400_000))
        transport = open_ssh()
        try:
            with pytest.raises(DeviceError, match=r"disk full: big\.onnx needs"):
                transport.put(src, str(small / "m" / "big.onnx"))
        finally:
            transport.close()
        assert [p for p in small.rglob("*")] == []
        # This put's receiver only (its destination is in its argv): other uploads on the
        # machine run the same script.
        assert wait_until(lambda: not processes_with(str(small / "m" / "big.onnx")), 10)
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_missing_device_python_is_one_clear_error(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(TINY_ONNX.read_bytes())
    target = load_target("loopback")
    transport = SshTransport(target.transport, "loopback", "/nonexistent/python3")  # type: ignore[arg-type]
    try:
        with pytest.raises(DeviceError, match="cannot run '/nonexistent/python3'") as caught:
            transport.put(src, f"{loopback['workdir']}/nopython/m.onnx")
    finally:
        transport.close()
    assert caught.value.hint == transport.python_hint
    assert not Path(loopback["workdir"], "nopython").exists()
