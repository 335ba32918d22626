"""The ssh config as OpenSSH reads it: edgetool's resolution against `ssh -G` itself, the
paramiko fallback (Include inlined), jump specs, ProxyCommand quoting; and ports that do
not speak SSH."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetool.errors import ConfigError
from edgetool.transport import ssh_config
from edgetool.transport.ssh import SshSettings
from edgetool.transport.ssh_config import Endpoint, parse_jump, resolve
from tests.conftest import assert_one_line_error, run_cli

CONFIG = """Include {dir}/conf.d/*.conf
Host plain
  HostName 127.0.0.1
  Port 2201
  User alice
  IdentityFile {dir}/id_one
  IdentityFile {dir}/id_two
Host aliased
  HostName 127.0.0.1
  Port 2202
  User bob
  HostKeyAlias lab-board-7
Host viajump
  HostName 127.0.0.1
  Port 2203
  User carol
  ProxyJump dave@127.0.0.1:2204,bastion
Host piped
  HostName 127.0.0.1
  User erin
  ProxyCommand python3 relay.py %h %p %r --literal 100%%
Host bastion
  HostName 127.0.0.1
  Port 2205
  User frank
Host *
  UserKnownHostsFile {dir}/known_hosts
"""
INCLUDED = """Host included
  HostName 127.0.0.1
  Port 2206
  User gina
  IdentityFile {dir}/id_inc
"""
ALIASES = ("plain", "aliased", "viajump", "piped", "bastion", "included")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "lab.conf").write_text(INCLUDED.format(dir=tmp_path))
    path = tmp_path / "config"
    path.write_text(CONFIG.format(dir=tmp_path))
    return path


def settings(host: str, config: Path, **kw: object) -> SshSettings:
    return SshSettings(host=host, ssh_config=config, **kw)  # type: ignore[arg-type]


def shape(endpoint: Endpoint | None) -> list[tuple[object, ...]]:
    """What a connection depends on, hop by hop."""
    if endpoint is None:
        return []
    return [
        (
            hop.hostname,
            hop.port,
            hop.user,
            hop.host_key_alias,
            hop.proxy_command,
            tuple(hop.identity_files),
            tuple(hop.known_hosts),
        )
        for hop in endpoint.hops
    ]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
@pytest.mark.parametrize("alias", ALIASES)
def test_fallback_resolves_like_openssh(
    config: Path, alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    openssh = resolve(settings(alias, config))
    monkeypatch.setattr(ssh_config.shutil, "which", lambda name: None)
    fallback = resolve(settings(alias, config))
    if not [
        line for line in CONFIG.split("Host ") if line.startswith(alias) and "Identity" in line
    ]:
        # Without IdentityFile, ssh -G lists OpenSSH's default keys; paramiko none (it
        # looks for the same keys itself at connect time).
        fallback = _with_identities(fallback, openssh)
    assert shape(fallback) == shape(openssh)


def _with_identities(endpoint: Endpoint, like: Endpoint) -> Endpoint:
    import dataclasses

    via = _with_identities(endpoint.via, like.via) if endpoint.via and like.via else None
    return dataclasses.replace(endpoint, identity_files=like.identity_files, via=via)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_openssh_resolution_of_each_feature(config: Path, tmp_path: Path) -> None:
    included = resolve(settings("included", config))
    assert (included.hostname, included.port, included.user) == ("127.0.0.1", 2206, "gina")
    assert included.identity_files == (tmp_path / "id_inc",)
    aliased = resolve(settings("aliased", config))
    assert aliased.known_hosts_name == "lab-board-7"  # no [ ]:port around an alias
    assert aliased.known_hosts == (tmp_path / "known_hosts",)
    jumped = resolve(settings("viajump", config))
    assert [(h.user, h.port) for h in jumped.hops] == [
        ("dave", 2204),
        ("frank", 2205),
        ("carol", 2203),
    ]
    assert jumped.hops[1].proxy_command is None  # a later hop goes through the earlier one
    explicit = resolve(settings("plain", config, port=2222, user="root"))
    assert (explicit.port, explicit.user) == (2222, "root")  # the target file wins


def test_proxy_command_values_are_shell_quoted(config: Path) -> None:
    endpoint = resolve(settings("piped", config, user="x; touch pwned"))
    argv = endpoint.proxy_argv()
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[2] == "exec python3 relay.py 127.0.0.1 22 'x; touch pwned' --literal 100%"


def test_proxy_command_runs_through_sh(tmp_path: Path) -> None:
    endpoint = Endpoint(
        "a", "host with space", 2200, "u", (), (), 'printf "%%s|" %h %p %r > ' + str(tmp_path / "o")
    )
    subprocess.run(endpoint.proxy_argv(), check=True)
    assert (tmp_path / "o").read_text() == "host with space|2200|u|"


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("bastion", (None, "bastion", None)),
        ("me@bastion:2222", ("me", "bastion", 2222)),
        ("ssh://me@bastion:2222", ("me", "bastion", 2222)),
        ("me@[::1]:2222", ("me", "::1", 2222)),
    ],
)
def test_jump_specs(spec: str, parsed: tuple[object, ...]) -> None:
    assert parse_jump(spec) == parsed


@pytest.mark.parametrize("spec", ["", "me@", "-oProxyCommand=x", "host:99999", "a b"])
def test_bad_jump_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_jump(spec)


def test_a_host_read_as_an_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a host name"):
        resolve(settings("-oProxyCommand=touch x", tmp_path / "none"))


@pytest.fixture
def http_port() -> Iterator[int]:
    """A local TCP server that answers anything with an HTTP 400 and hangs up."""
    yield from _server(lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local TCP server that accepts and says nothing."""
    yield from _server(lambda conn: conn.recv(1024) and conn.recv(1024))


def _server(answer: object) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(10)
                answer(conn)  # type: ignore[operator]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def _target(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(
        f'[transport]\ntype = "ssh"\nhost = "127.0.0.1"\nport = {port}\n'
        "use_ssh_config = false\nconnect_timeout = 1\n"
    )
    return path


@pytest.mark.parametrize("command", [("targets", "check"), ("targets", "trust")])
def test_a_port_speaking_http_says_so(http_port: int, tmp_path: Path, command: tuple[str]) -> None:
    result = run_cli(*command, str(_target(tmp_path, http_port)))
    assert_one_line_error(
        result, 6, f"port 127.0.0.1:{http_port} does not speak SSH (got 'HTTP/1.1 400 Bad Request')"
    )
    assert "paramiko" not in result.stderr


@pytest.mark.parametrize("command", [("targets", "check"), ("targets", "trust")])
def test_a_silent_port_says_no_banner(
    silent_port: int, tmp_path: Path, command: tuple[str]
) -> None:
    result = run_cli(*command, str(_target(tmp_path, silent_port)))
    assert_one_line_error(result, 6, f"no SSH banner from 127.0.0.1:{silent_port} within 1 s")
    assert "paramiko" not in result.stderr and "No existing session" not in result.stderr
