"""Where an SSH target really is: ~/.ssh/config read the way OpenSSH reads it.

Labs keep their hosts in ~/.ssh/config with `Include`, `ProxyJump` (bastions, often more
than one), `HostKeyAlias` (one name for a board whose address changes) and ProxyCommand.
The only exact reader of that file is OpenSSH itself: `ssh -G ALIAS` prints the effective
options after every Include, Host and Match block, so that is what edgetool asks when an
`ssh` binary exists. Without one (a minimal container, Windows without OpenSSH) it falls
back to paramiko.SSHConfig, which knows neither Include (inlined here) nor quoting (its
ProxyCommand tokens are substituted raw, so `%` there is kept from it and substituted
here, shell-quoted). The fallback does not run `Match exec`, canonicalize host names or
read /etc/ssh/ssh_config.
"""

from __future__ import annotations

import glob
import logging
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from edgetool.errors import ConfigError

log = logging.getLogger(__name__)

MAX_HOPS = 8
"""Jump hosts one connection may pass through (a ProxyJump loop ends here)."""
_INCLUDE_DEPTH = 16  # OpenSSH's own limit on nested Include
_PERCENT = "\ue000"  # stands for '%' in a ProxyCommand while paramiko reads the file


class HostSettings(Protocol):
    """What resolution needs of a target's [transport] table (SshSettings)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def identity_file(self) -> Path | None: ...
    @property
    def known_hosts(self) -> tuple[Path, ...]: ...
    @property
    def use_ssh_config(self) -> bool: ...
    @property
    def ssh_config(self) -> Path | None: ...


@dataclass(frozen=True)
class Endpoint:
    """One SSH server to reach, after the ssh config has had its say; `via` is the jump
    host (itself an Endpoint) the connection goes through, None for a direct one."""

    alias: str
    hostname: str
    port: int
    user: str | None
    identity_files: tuple[Path, ...]
    known_hosts: tuple[Path, ...]
    proxy_command: str | None
    host_key_alias: str | None = None
    via: Endpoint | None = None

    @property
    def known_hosts_name(self) -> str:
        """The name its key is recorded under: HostKeyAlias as is (OpenSSH adds no port
        to it), else `host` or `[host]:port`."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def hops(self) -> tuple[Endpoint, ...]:
        """The jump hosts in the order they are connected, then this endpoint."""
        return (*(self.via.hops if self.via else ()), self)

    def proxy_argv(self) -> list[str]:
        """The ProxyCommand as OpenSSH runs it: the user's own command through `sh -c`,
        with %h, %p, %r and %n shell-quoted (a host name never becomes shell syntax)."""
        assert self.proxy_command is not None
        values = {
            "h": self.hostname,
            "p": str(self.port),
            "r": self.user or "",
            "n": self.alias,
            "%": "%",
        }

        def token(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise ConfigError(
                    f"ProxyCommand of {self.alias}: unsupported token %{key} "
                    "(edgetool substitutes %h, %p, %r, %n and %%)"
                )
            return "%" if key == "%" else shlex.quote(values[key])

        command = re.sub(r"%(.)", token, self.proxy_command)
        return ["/bin/sh", "-c", "exec " + command]

    def __str__(self) -> str:
        who = f"{self.user}@" if self.user else ""
        through = f" via {self.via.hostname}:{self.via.port}" if self.via else ""
        return f"{who}{self.hostname}:{self.port}{through}"


Options = Mapping[str, list[str]]


def resolve(settings: HostSettings) -> Endpoint:
    """Apply the ssh config (HostName, Port, User, IdentityFile, UserKnownHostsFile,
    HostKeyAlias, ProxyJump, ProxyCommand) the way `ssh ALIAS` would; explicit target
    settings win over it."""
    _check_host(settings.host, "host")
    return _resolve(settings, settings.host, settings.port, settings.user, top=True, depth=0)


def _resolve(
    settings: HostSettings,
    alias: str,
    port: int | None,
    user: str | None,
    *,
    top: bool,
    depth: int,
    via: Endpoint | None = None,
    direct: bool = False,
) -> Endpoint:
    if depth > MAX_HOPS:
        raise ConfigError(f"ProxyJump for {settings.host} passes more than {MAX_HOPS} hosts")
    options = config_options(alias, settings.ssh_config) if settings.use_ssh_config else {}
    first = {key: values[0] for key, values in options.items() if values}
    identities = tuple(Path(p).expanduser() for p in options.get("identityfile", []))
    known = tuple(Path(p).expanduser() for p in first.get("userknownhostsfile", "").split())
    if top:
        # The target file's own settings win, as options on ssh's command line would.
        if settings.identity_file:
            identities = (settings.identity_file,)
        if settings.known_hosts:
            known = settings.known_hosts
    else:
        # A jump host is checked against the target's known_hosts too, and may log in
        # with its key: a lab's bastion and boards usually share both.
        if settings.identity_file:
            identities = (*identities, settings.identity_file)
        known = (*settings.known_hosts, *known)
    if not known:
        known = (Path("~/.ssh/known_hosts").expanduser(),)
    proxy_command: str | None = None
    if via is None and not direct:
        jump = first.get("proxyjump")
        command = first.get("proxycommand")
        if jump and jump.lower() != "none":
            via = _jump_chain(settings, jump, depth)
        elif command and command.lower() != "none":
            proxy_command = command
    return Endpoint(
        alias=alias,
        hostname=first.get("hostname", alias),
        port=port or int(first.get("port", "22")),
        user=user or first.get("user"),
        identity_files=identities,
        known_hosts=known,
        proxy_command=proxy_command,
        host_key_alias=first.get("hostkeyalias"),
        via=via,
    )


def _jump_chain(settings: HostSettings, spec: str, depth: int) -> Endpoint:
    """`ProxyJump a,b`: a is reached as its own config says (its own ProxyJump too),
    b through a, the target through b -- as OpenSSH builds `-J a,b`."""
    via: Endpoint | None = None
    for position, hop in enumerate(spec.split(",")):
        user, host, port = parse_jump(hop.strip())
        via = _resolve(
            settings,
            host,
            port,
            user,
            top=False,
            depth=depth + 1 + position,
            via=via,
            direct=position > 0,
        )
    assert via is not None  # split() gives at least one hop
    return via


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]`, `[user@][v6addr]:port` or `ssh://[user@]host[:port]`."""
    text = spec.removeprefix("ssh://")
    user, _, hostport = text.rpartition("@")
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", hostport)
    if not spec or not match:
        raise ConfigError(
            f"ProxyJump: cannot read jump host {spec!r} (expected [user@]host[:port])"
        )
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    _check_host(host, "ProxyJump host")
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"ProxyJump: port {port} of {spec!r} is not a TCP port")
    return user or None, host, port


def _check_host(host: str, what: str) -> None:
    # A leading '-' would be read as an option by `ssh -G`; whitespace is never a host.
    if not host or host.startswith("-") or any(c.isspace() or c == "\x00" for c in host):
        raise ConfigError(f"SSH {what} {host!r} is not a host name or alias")


def config_options(alias: str, config_file: Path | None) -> dict[str, list[str]]:
    """The effective ssh options for ALIAS: lower-case keyword -> values in order."""
    ssh = shutil.which("ssh")
    if ssh is not None:
        return openssh_options(ssh, alias, config_file)
    log.debug("no ssh binary: reading the ssh config with paramiko")
    return paramiko_options(alias, config_file)


def openssh_options(ssh: str, alias: str, config_file: Path | None) -> dict[str, list[str]]:
    """`ssh -G [-F FILE] -- ALIAS`: OpenSSH's own resolution, printed without connecting."""
    argv = [ssh, "-G", *(["-F", str(config_file)] if config_file else []), "--", alias]
    log.debug("run %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot read the ssh config with {ssh} -G: {exc}") from exc
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if "Pseudo-terminal" not in line]
        raise ConfigError(
            f"ssh config for {alias!r}: {said[-1] if said else f'ssh -G exit {proc.returncode}'}"
        )
    options: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key:
            options.setdefault(key.lower(), []).append(value)
    return options


def paramiko_options(alias: str, config_file: Path | None) -> dict[str, list[str]]:
    """paramiko.SSHConfig's lookup of ALIAS, Include inlined and ProxyCommand kept raw."""
    path = config_file or Path("~/.ssh/config").expanduser()
    if config_file is None and not path.is_file():
        return {}
    try:
        text = _inline_includes(path, Path("~/.ssh").expanduser(), 0)
        found = paramiko.SSHConfig.from_text(text).lookup(alias)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except paramiko.SSHException as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    options: dict[str, list[str]] = {}
    for key, value in found.items():
        values = value if isinstance(value, list) else [value]
        options[key.lower()] = [str(v).replace(_PERCENT, "%") for v in values]
    if "userknownhostsfile" not in options:
        options["userknownhostsfile"] = ["~/.ssh/known_hosts ~/.ssh/known_hosts2"]
    return options


_INCLUDE = re.compile(r"^\s*include(?:\s*=\s*|\s+)(.*)$", re.I)
_BLOCK = re.compile(r"^\s*(host|match)(\s*=\s*|\s+)", re.I)
_PROXY = re.compile(r"^\s*(proxycommand|proxyjump)(\s*=\s*|\s+)", re.I)


def _inline_includes(path: Path, base: Path, depth: int) -> str:
    """PATH's text with every `Include` replaced by the files it names (globs, sorted;
    relative names from ~/.ssh, as OpenSSH does for a user config). A block interrupted
    by an Include is reopened after it, so its remaining lines keep their Host."""
    if depth > _INCLUDE_DEPTH:
        raise ConfigError(f"{path}: Include nested deeper than {_INCLUDE_DEPTH}")
    out: list[str] = []
    block = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        include = _INCLUDE.match(line)
        if include is None:
            if _BLOCK.match(line):
                block = line
            if _PROXY.match(line):
                line = line.replace("%", _PERCENT)
            out.append(line)
            continue
        for pattern in shlex.split(include.group(1)):
            full = Path(pattern).expanduser()
            full = full if full.is_absolute() else base / full
            for name in sorted(glob.glob(str(full))):
                out.append(_inline_includes(Path(name), base, depth + 1))
        if block:
            out.append(block)
    return "\n".join(out) + "\n"
