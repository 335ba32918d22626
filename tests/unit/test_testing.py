"""edgetool.testing used the way the README shows a user: the meter peer's example run as
written, the noisy link and the watch peers started as documented, and the package's
promises (importing it loads no double; no double needs an optional extra to import;
production code never imports it)."""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetool.testing.adb_peer import AdbPeer
from edgetool.testing.nus_peer import NusPeer
from tests.conftest import REPO, run_cli

DOUBLES = ("meters", "waveform", "hwmon_peer", "noisy_link", "adb_peer", "nus_peer")
OPTIONAL = ("adb_shell", "bleak", "tflite_micro", "torch", "ai_edge_litert", "labgrid")


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Testing your own code: `edgetool.testing`")
    return text[start : text.index("\n## ", start + 1)]


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def test_importing_the_package_loads_no_double_and_no_optional_extra() -> None:
    loaded = json.loads(
        _python("import json, sys, edgetool.testing\nprint(json.dumps(sorted(sys.modules)))")
    )
    assert [name for name in loaded if name.startswith("edgetool.testing.")] == []
    assert not set(OPTIONAL) & {name.split(".")[0] for name in loaded}


def test_every_double_imports_with_the_optional_extras_missing() -> None:
    """As after a plain `pip install edgetool`: the extras' packages cannot be found."""
    blocked = json.dumps(OPTIONAL)
    code = f"""
import importlib, importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Missing())
for double in {list(DOUBLES)!r}:
    importlib.import_module("edgetool.testing." + double)
print("ok")
"""
    assert _python(code) == "ok\n"


def test_production_code_never_imports_edgetool_testing() -> None:
    offenders = []
    for path in sorted((REPO / "edgetool").rglob("*.py")):
        if "testing" in path.relative_to(REPO / "edgetool").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "edgetool":
                    names += [f"edgetool.{alias.name}" for alias in node.names]
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno}"
                for name in names
                if name == "edgetool.testing" or name.startswith("edgetool.testing.")
            ]
    assert offenders == []


def test_readme_meter_example_runs_as_written(cli: object, tmp_path: Path) -> None:
    """The README's PPK2 peer command and `[meter]` table, with the link under tmp_path:
    a constant 0.2 A at 5 V must come out as 1 W, idle and under load."""
    section = _readme_section()
    command = re.search(r"^python -m edgetool\.testing\.meters .*$", section, re.M)
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert command is not None and toml is not None
    link = tmp_path / "ppk2"
    argv = command.group(0).replace("/tmp/ppk2", str(link)).split()
    assert argv[:3] == ["python", "-m", "edgetool.testing.meters"]
    proc = subprocess.Popen(
        [sys.executable, *argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        assert link.resolve() == Path(port)
        targets = tmp_path / "targets"
        targets.mkdir()
        (targets / "metered.toml").write_text(toml.group(1).replace("/tmp/ppk2", str(link)))
        out = run_cli("--targets-dir", str(targets), "deploy", "-t", "metered", "-m", "tiny-mlp",
                      "--energy", "--idle-seconds", "1", "-d", "1", "--json")  # fmt: skip
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # documented: the peer stops when its stdin closes
        assert proc.wait(timeout=10) == 0
    assert out.code == 0, out.stderr
    energy = out.json()["summary"]["energy"]
    assert energy["idle_w"] == pytest.approx(1.0, rel=0.01)
    assert energy["mean_power_w"] == pytest.approx(1.0, rel=0.01)
    assert not link.exists()  # the peer removes its link when it stops


@pytest.fixture
def uart() -> Iterator[tuple[int, bytearray]]:
    """A TCP 'device' that keeps what it receives and echoes it back."""
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                received.extend(data)
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    server.close()
    thread.join(timeout=5)


def test_noisy_link_flips_what_the_host_sends_at_the_given_rate(
    uart: tuple[int, bytearray],
) -> None:
    port, received = uart
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetool.testing.noisy_link", f"127.0.0.1:{port}",
         "--ber", "0.01", "--seed", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    sent = bytes(range(256)) * 40  # 81,920 bits: ~819 flips expected
    echoed = bytearray()
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        assert url.startswith("socket://127.0.0.1:")
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as conn:
            conn.sendall(sent)
            conn.settimeout(10)
            while len(echoed) < len(sent):
                chunk = conn.recv(65536)
                assert chunk, "the link hung up early"
                echoed += chunk
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    flips = sum(bin(a ^ b).count("1") for a, b in zip(sent, received, strict=True))
    assert 600 < flips < 1050  # binomial(81920, 0.01): mean 819, sd 28
    assert bytes(echoed) == bytes(received)  # the device's replies arrive untouched


def test_adb_peer_is_a_synthetic_watch_for_targets_check(home: Path) -> None:
    with AdbPeer(home / "watch", accept_new_keys=True) as peer:
        env = {
            "EDGETOOL_WATCH_WEAROS_HOST": "127.0.0.1",
            "EDGETOOL_WATCH_WEAROS_PORT": str(peer.port),
            "EDGETOOL_CONFIG_DIR": str(home / "config"),
        }
        result = run_cli("targets", "check", "watch-wearos", "--json", env=env)
    assert result.code == 0, result.stderr
    facts = result.json()
    assert facts["synthetic"] is True and facts["abi"] == "arm64-v8a"


def test_nus_peer_is_a_synthetic_bangle_for_targets_check(home: Path) -> None:
    with NusPeer() as peer:
        env = {"EDGETOOL_BANGLE2_ADDRESS": peer.address}
        result = run_cli("targets", "check", "bangle2", "--json", env=env)
        statements = list(peer.statements)
    assert result.code == 0, result.stderr
    facts = result.json()
    assert facts["synthetic"] is True and facts["board"] == "BANGLEJS2"
    assert statements  # the check really went through the peer
