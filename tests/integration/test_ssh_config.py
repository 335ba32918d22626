"""A lab's ~/.ssh/config against real OpenSSH sshds on 127.0.0.1: the device (the
loopback sshd) behind one or two jump hosts (more loopback sshds), an alias from an
Include'd file, a HostKeyAlias and a ProxyCommand. The jump sshds log at DEBUG1, so their
logs show each direct-tcpip forward: proof the connection went through them."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.emulate.sshd import LoopbackSshd
from tests.conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jumps(sshd_state_dir: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Two more loopback sshds, j1 and j2, logging each channel they open (DEBUG1)."""
    states = {}
    for name in ("j1", "j2"):
        sshd = LoopbackSshd(name)
        state = sshd.start()
        config = sshd.dir / "sshd_config"
        config.write_text(config.read_text().replace("LogLevel VERBOSE", "LogLevel DEBUG1"))
        os.kill(int(state["pid"]), signal.SIGHUP)  # sshd re-executes itself: new config
        assert LoopbackSshd._wait_listening(state["transport"]["port"], 10)
        states[name] = state
    yield states
    for name in states:
        LoopbackSshd(name).stop()


def forwarded_to(state: dict[str, Any], port: int) -> int:
    """How many direct-tcpip channels a jump sshd opened to 127.0.0.1:PORT."""
    text = Path(state["log"]).read_text(errors="replace")
    pattern = (
        rf"server_request_direct_tcpip: originator \S+ port \d+, target 127\.0\.0\.1 port {port}$"
    )
    return len(re.findall(pattern, text, re.M))


def host_block(name: str, state: dict[str, Any], *extra: str) -> str:
    t = state["transport"]
    return "\n".join(
        [f"Host {name}", "  HostName 127.0.0.1", f"  Port {t['port']}", f"  User {t['user']}",
         f"  IdentityFile {t['identity_file']}", *(f"  {line}" for line in extra), ""]
    )  # fmt: skip


def known_hosts(*states: dict[str, Any]) -> str:
    return "".join(Path(s["transport"]["known_hosts"]).read_text() for s in states)


def lab(tmp_path: Path, config: str, known: str) -> Path:
    """An ssh config (+ known_hosts) and a target file `dev` that names only its alias."""
    (tmp_path / "known_hosts").write_text(known)
    (tmp_path / "ssh_config").write_text(
        config + f"Host *\n  UserKnownHostsFile {tmp_path / 'known_hosts'}\n"
    )
    return tmp_path / "ssh_config"


def target(tmp_path: Path, loopback: dict[str, Any], config: Path, host: str = "dev") -> Path:
    path = tmp_path / "dev.toml"
    path.write_text(
        f'kind = "linux"\npython = "{loopback["python"]}"\nworkdir = "{loopback["workdir"]}"\n'
        f'[transport]\ntype = "ssh"\nhost = "{host}"\nssh_config = "{config}"\n'
        "connect_timeout = 10\n"
    )
    return path


def test_deploy_through_a_proxyjump(
    loopback: dict[str, Any], jumps: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    dev_port = loopback["transport"]["port"]
    config = lab(
        tmp_path,
        host_block("j1", jumps["j1"]) + host_block("dev", loopback, "ProxyJump j1"),
        known_hosts(loopback, jumps["j1"]),
    )
    before = forwarded_to(jumps["j1"], dev_port)
    result = run_cli("deploy", "-t", str(target(tmp_path, loopback, config)), "-m", "tiny-mlp",
                     "-n", "5", "-r", "1", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.json()["manifest"]["status"] == "complete"
    assert forwarded_to(jumps["j1"], dev_port) == before + 1


def test_two_hops_with_a_user_host_port_jump_spec(
    loopback: dict[str, Any], jumps: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    j1, j2 = jumps["j1"]["transport"], jumps["j2"]["transport"]
    config = lab(
        tmp_path,
        f"Host 127.0.0.1\n  IdentityFile {j1['identity_file']}\n"
        + host_block("j2", jumps["j2"])
        + host_block("dev", loopback, f"ProxyJump {j1['user']}@127.0.0.1:{j1['port']},j2"),
        known_hosts(loopback, jumps["j1"], jumps["j2"]),
    )
    before = (
        forwarded_to(jumps["j1"], j2["port"]),
        forwarded_to(jumps["j2"], loopback["transport"]["port"]),
    )
    result = run_cli("targets", "check", str(target(tmp_path, loopback, config)))
    assert result.code == 0, result.stderr
    assert f"via 127.0.0.1:{j2['port']}" in result.stdout
    after = (
        forwarded_to(jumps["j1"], j2["port"]),
        forwarded_to(jumps["j2"], loopback["transport"]["port"]),
    )
    assert after == (before[0] + 1, before[1] + 1)


def test_an_untrusted_jump_host_is_refused(
    loopback: dict[str, Any], jumps: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    config = lab(
        tmp_path,
        host_block("j1", jumps["j1"]) + host_block("dev", loopback, "ProxyJump j1"),
        known_hosts(loopback),  # the device's key only
    )
    result = run_cli("targets", "check", str(target(tmp_path, loopback, config)))
    port = jumps["j1"]["transport"]["port"]
    assert_one_line_error(result, 4, f"host key for jump host [127.0.0.1]:{port}", "not trusted")


def test_alias_from_an_included_file(loopback: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "lab.d").mkdir()
    (tmp_path / "lab.d" / "boards.conf").write_text(host_block("board-in-include", loopback))
    config = lab(tmp_path, f"Include {tmp_path}/lab.d/*.conf\n", known_hosts(loopback))
    result = run_cli(
        "targets", "check", str(target(tmp_path, loopback, config, "board-in-include"))
    )
    assert result.code == 0, result.stderr
    assert f"127.0.0.1:{loopback['transport']['port']}" in result.stdout


def test_host_key_alias_is_the_known_hosts_name(loopback: dict[str, Any], tmp_path: Path) -> None:
    key = known_hosts(loopback).split(maxsplit=1)[1]  # "ssh-ed25519 AAAA..."
    config = lab(
        tmp_path, host_block("dev", loopback, "HostKeyAlias lab-board-7"), f"lab-board-7 {key}"
    )
    dev = target(tmp_path, loopback, config)
    assert run_cli("targets", "check", str(dev)).code == 0
    (tmp_path / "known_hosts").write_text("")
    refused = run_cli("targets", "check", str(dev))
    assert_one_line_error(refused, 4, "host key for lab-board-7 ", "not trusted")
    trusted = run_cli("targets", "trust", str(dev), "--yes")
    assert trusted.code == 0, trusted.stderr
    assert (tmp_path / "known_hosts").read_text() == f"lab-board-7 {key}"
    assert run_cli("targets", "check", str(dev)).code == 0


def test_proxy_command_through_ssh_w(
    loopback: dict[str, Any], jumps: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    dev_port = loopback["transport"]["port"]
    config_path = tmp_path / "ssh_config"
    config = lab(
        tmp_path,
        host_block("j1", jumps["j1"], "StrictHostKeyChecking yes", "BatchMode yes")
        + host_block("dev", loopback, f"ProxyCommand ssh -F {config_path} -W %h:%p j1"),
        known_hosts(loopback, jumps["j1"]),
    )
    before = forwarded_to(jumps["j1"], dev_port)
    result = run_cli("targets", "check", str(target(tmp_path, loopback, config)))
    assert result.code == 0, result.stderr
    assert forwarded_to(jumps["j1"], dev_port) == before + 1
