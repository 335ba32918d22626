"""SSH transport over paramiko: verified host keys, key/agent auth, SFTP, argv commands."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import select
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import paramiko

from edgetool.config import TableReader, expand_path
from edgetool.errors import (
    ConnectError,
    DeviceError,
    EdgetoolError,
    HostKeyError,
    TransferError,
)
from edgetool.transport.base import (
    CHUNK,
    FileTransport,
    Progress,
    TransportType,
    corrupted,
    part_name,
    quote_argv,
    receiver_argv,
    shown_argv,
    split_lines,
)
from edgetool.transport.ssh_config import Endpoint, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SshSettings:
    type: ClassVar[str] = "ssh"
    host: str
    port: int | None = None
    user: str | None = None
    identity_file: Path | None = None
    known_hosts: tuple[Path, ...] = ()
    connect_timeout: float = 10.0
    command_timeout: float = 3600.0
    idle_timeout: float = 120.0
    keepalive: int = 15
    use_ssh_config: bool = True
    ssh_config: Path | None = None
    """An ssh config file read instead of ~/.ssh/config (as `ssh -F FILE`)."""

    def where(self) -> str:
        """Where the device is, as `targets list` shows it."""
        return self.host + (f":{self.port}" if self.port else "")


def _parse_ssh(reader: TableReader) -> SshSettings:
    known = reader.get("known_hosts", (str, list), "a path or a list of paths", None)
    known_list = [known] if isinstance(known, str) else (known or [])
    identity = reader.text("identity_file")
    settings = SshSettings(
        host=reader.required_str("host"),
        port=reader.port("port", None),
        user=reader.text("user"),
        identity_file=expand_path(identity) if identity else None,
        known_hosts=tuple(expand_path(str(p)) for p in known_list),
        connect_timeout=reader.number("connect_timeout", 10.0),
        command_timeout=reader.number("command_timeout", 3600.0),
        idle_timeout=reader.number("idle_timeout", 120.0),
        keepalive=int(reader.number("keepalive", 15)),
        use_ssh_config=bool(reader.get("use_ssh_config", bool, "true or false", True)),
        ssh_config=expand_path(config) if (config := reader.text("ssh_config")) else None,
    )
    reader.finish()
    return settings


SFTP_WINDOW = 2 << 20  # larger windows make paramiko's receive path (get) slower
SFTP_PACKET = 32 << 10
_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _fast_transport(sock: Any, **options: Any) -> paramiko.Transport:
    """paramiko offers AES-GCM last; on CPUs with AES-NI it costs ~40 % less than
    aes128-ctr + hmac-sha2 (bench/RESULTS.md). Every other algorithm stays on offer."""
    transport = paramiko.Transport(sock, disabled_algorithms=options.get("disabled_algorithms"))
    security = transport.get_security_options()
    available = tuple(security.ciphers)
    security.ciphers = tuple(c for c in _GCM if c in available) + tuple(
        c for c in available if c not in _GCM
    )
    return transport


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` form, so users can compare with `ssh-keygen -lf`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, endpoint: Endpoint, target_name: str, jump: bool) -> None:
        self.endpoint = endpoint
        self.target_name = target_name
        self.jump = jump

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyError(
            f"host key for {_role(self.jump)}{self.endpoint.known_hosts_name} "
            f"({key.get_name()} {fingerprint(key)}) is not trusted.",
            hint=f"Run `edgetool targets trust {self.target_name}` to see it and record it.",
        )


def _role(jump: bool) -> str:
    return "jump host " if jump else ""


def _load_host_keys(endpoint: Endpoint) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    for path in endpoint.known_hosts:
        if path.is_file():
            try:
                keys.load(str(path))
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyError(f"cannot read known_hosts file {path}: {exc}") from exc
    return keys


class _ShellProxy(paramiko.ProxyCommand):
    """A ProxyCommand run as OpenSSH runs it (`sh -c`, see Endpoint.proxy_argv), where
    paramiko's own splits it with shlex and runs it without a shell. Its stderr goes to a
    file (a full pipe would stall it), its last line is shown when it fails; the command
    itself is never shown or logged (it may carry a password, e.g. sshpass -p)."""

    def __init__(self, argv: list[str]) -> None:
        self.cmd = ["ProxyCommand"]  # what paramiko's own errors would show
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115  # closed by close()
        try:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, bufsize=0
            )
        except OSError as exc:
            self.errors.close()
            raise ConnectError(f"cannot start the ProxyCommand: {exc.strerror or exc}") from exc
        self.timeout: float | None = None

    def recv(self, size: int) -> bytes:
        """Up to SIZE bytes; b"" once the command has ended (paramiko's waits forever)."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], self.timeout)
        if not ready:
            raise TimeoutError
        return os.read(stdout.fileno(), size)

    def said(self) -> str:
        """The command's last stderr line, if it wrote any."""
        with contextlib.suppress(OSError):
            self.errors.seek(0)
            lines = self.errors.read()[-4096:].decode("utf-8", "replace").strip().splitlines()
            return lines[-1].strip() if lines else ""
        return ""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.process.wait(timeout=2)
        self.errors.close()


class _Peek:
    """A server's first bytes, kept while paramiko reads them through this wrapper, so a
    failed handshake can say what the port spoke instead of paramiko's 'Error reading SSH
    protocol banner' (or 'No existing session' for a silent port)."""

    KEEP = 200

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.head = b""
        self.ended = False

    def recv(self, size: int) -> bytes:
        data: bytes = self._sock.recv(size)
        if not data:
            self.ended = True
        self.head += data[: self.KEEP - len(self.head)]
        if len(self.head) >= self.KEEP:
            self.recv = self._sock.recv  # type: ignore[method-assign]  # done: no more cost
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def failure(self, endpoint: Endpoint, timeout: float) -> str | None:
        """Why the handshake failed if it never got an SSH banner, else None."""
        where = f"{endpoint.hostname}:{endpoint.port}"
        lines = self.head.splitlines()
        if any(line.startswith(b"SSH-") for line in lines):
            return None
        if lines:
            first = lines[0].strip()[:40].decode("ascii", "replace")
            return f"port {where} does not speak SSH (got {first!r})"
        if self.ended:
            return f"{where} closed the connection without an SSH banner"
        return f"no SSH banner from {where} within {timeout:g} s"


def _open_socket(endpoint: Endpoint, timeout: float, jump_to: Callable[[Endpoint], Any]) -> Any:
    """A byte stream to ENDPOINT: a direct-tcpip channel through its jump host (opened by
    JUMP_TO), its ProxyCommand's stdin/stdout, or a TCP socket."""
    if endpoint.via is not None:
        return jump_to(endpoint.via)
    if endpoint.proxy_command:
        return _ShellProxy(endpoint.proxy_argv())
    try:
        sock = socket.create_connection((endpoint.hostname, endpoint.port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectError(f"cannot reach {endpoint}: {reason}") from exc
    # Without this every small SFTP request waits ~40 ms for Nagle + delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _failed(endpoint: Endpoint, sock: Any, peek: _Peek, timeout: float, exc: BaseException) -> str:
    """What a failed connection attempt says: what the port spoke, the ProxyCommand's
    complaint, or the SSH library's reason."""
    said = sock.said() if isinstance(sock, _ShellProxy) else ""
    reason = peek.failure(endpoint, timeout) or _reason(exc)
    return f"{reason} (ProxyCommand: {said})" if said else reason


class _Connection:
    """The SSH clients of one connection: its jump hosts in order, then the device.
    Every hop is host-key checked the same way; closing closes them all, last first."""

    def __init__(self, settings: SshSettings, target_name: str, endpoint: Endpoint) -> None:
        self.settings = settings
        self.target_name = target_name
        self.endpoint = endpoint
        self.clients: list[paramiko.SSHClient] = []
        self._next = {id(hop.via): hop for hop in endpoint.hops if hop.via is not None}
        """Each jump host's next hop (Endpoints are compared by identity: one host may
        appear twice in a chain)."""

    def socket_to(self, endpoint: Endpoint) -> Any:
        return _open_socket(endpoint, self.settings.connect_timeout, self._through)

    def _through(self, jump: Endpoint) -> paramiko.Channel:
        """Log in to JUMP (through its own jumps) and open a channel to the next hop."""
        client = self.client(jump, jump=True)
        nxt = self._next[id(jump)]
        transport = client.get_transport()
        assert transport is not None
        try:
            return transport.open_channel(
                "direct-tcpip",
                (nxt.hostname, nxt.port),
                ("127.0.0.1", 0),
                timeout=self.settings.connect_timeout,
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            why = getattr(exc, "text", "") or _reason(exc)
            raise ConnectError(
                f"jump host {jump.hostname}:{jump.port} cannot reach "
                f"{nxt.hostname}:{nxt.port}: {why}"
            ) from exc

    def open(self) -> paramiko.SSHClient:
        """The device's client, logged in through every jump host."""
        try:
            return self.client(self.endpoint, jump=False)
        except BaseException:
            self.close()
            raise

    def client(self, ep: Endpoint, *, jump: bool) -> paramiko.SSHClient:
        s = self.settings
        client = paramiko.SSHClient()
        client.get_host_keys().update(_load_host_keys(ep))
        client.set_missing_host_key_policy(_RefuseUnknown(ep, self.target_name, jump))
        # The ProxyCommand itself is not logged: it may carry a password (sshpass -p).
        how = " via its ProxyCommand" if ep.proxy_command else ""
        log.info("connect to %s%s%s", _role(jump), ep, how)
        sock = self.socket_to(ep)
        peek = _Peek(sock)
        existing = [str(p) for p in ep.identity_files if p.is_file()]
        # paramiko looks a host key up under `host` for port 22, else `[host]:port`; with a
        # HostKeyAlias it must be the alias alone (the socket is ours: the name is only
        # the known_hosts lookup).
        name, port = (ep.host_key_alias, 22) if ep.host_key_alias else (ep.hostname, ep.port)
        try:
            client.connect(
                name,
                port=port,
                username=ep.user,
                key_filename=existing or None,  # type: ignore[arg-type]  # list is accepted
                look_for_keys=not existing,
                allow_agent=True,
                sock=peek,  # type: ignore[arg-type]  # a socket-like object is accepted
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
                channel_timeout=s.connect_timeout,
                transport_factory=_fast_transport,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"host key for {_role(jump)}{ep.known_hosts_name} has CHANGED (now "
                f"{exc.key.get_name()} {fingerprint(exc.key)}): refusing to connect.",
                hint="If the device was reinstalled, remove the old line from "
                f"{ep.known_hosts[0] if ep.known_hosts else '~/.ssh/known_hosts'} "
                f"and run `edgetool targets trust {self.target_name}`.",
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            tried = ", ".join(existing) or "default keys"
            raise ConnectError(
                f"authentication failed for {_role(jump)}{ep} (tried {tried} and the SSH agent).",
                hint="Add your public key to the device's ~/.ssh/authorized_keys "
                "or set 'identity_file' in the target file.",
            ) from exc
        except HostKeyError:
            client.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            why = _failed(ep, sock, peek, s.connect_timeout, exc)
            raise ConnectError(f"cannot connect to {_role(jump)}{ep}: {why}") from exc
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(s.keepalive)
        key = transport.get_remote_server_key()
        log.info(
            "connected to %s%s, host key %s %s", _role(jump), ep, key.get_name(), fingerprint(key)
        )
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Never raises: the device first, then each jump host back to the first."""
        for client in reversed(self.clients):
            with contextlib.suppress(Exception):
                client.close()


def fetch_host_key(
    settings: SshSettings, target_name: str = "", hop: Endpoint | None = None
) -> tuple[Endpoint, paramiko.PKey]:
    """The key the host (or HOP, one of its jump hosts) presents, without authenticating
    to it (for `targets trust`); the jump hosts before it are logged in to, verified."""
    endpoint = hop or resolve(settings)
    log.info("fetch the host key of %s", endpoint)
    connection = _Connection(settings, target_name, endpoint)
    try:
        sock = connection.socket_to(endpoint)
        peek = _Peek(sock)
        transport = paramiko.Transport(peek)  # type: ignore[arg-type]  # socket-like
        try:
            transport.banner_timeout = settings.connect_timeout
            transport.start_client(timeout=settings.connect_timeout)
            return endpoint, transport.get_remote_server_key()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            why = _failed(endpoint, sock, peek, settings.connect_timeout, exc)
            raise ConnectError(f"{endpoint}: SSH handshake failed: {why}") from exc
        finally:
            transport.close()
    finally:
        connection.close()


def known_key(endpoint: Endpoint) -> paramiko.PKey | None:
    """The recorded key for this endpoint, if any."""
    entry = _load_host_keys(endpoint).lookup(endpoint.known_hosts_name)
    if not entry:
        return None
    return next(iter(entry.values()), None)


def record_host_key(endpoint: Endpoint, key: paramiko.PKey) -> Path:
    """Append `[host]:port type base64` to the first known_hosts file, as ssh would."""
    path = endpoint.known_hosts[0] if endpoint.known_hosts else Path("~/.ssh/known_hosts")
    path = path.expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{endpoint.known_hosts_name} {key.get_name()} {key.get_base64()}\n"
    with path.open("a", encoding="ascii") as handle:
        handle.write(line)
    return path


PID_HEADER = b"edgetool-pid "
KILL_GRACE = 2.0
"""Seconds a stopped command's process group has between SIGTERM and SIGKILL."""


def wrapped_command(argv: Sequence[str]) -> str:
    """The shell string for `argv`, first telling its pid on stdout. sshd starts every
    command in a new session (setsid), so that pid is also its process group: the command
    and everything it starts can be signalled later through a second channel."""
    return f"printf '{PID_HEADER.decode()}%s\\n' \"$$\"; exec {quote_argv(argv)}"


class SshProcess:
    """A command on the device, in its own process group (see `wrapped_command`)."""

    def __init__(
        self,
        channel: paramiko.Channel,
        description: str,
        idle: float,
        total: float,
        signal_group: Callable[[int, str], None] | None = None,
    ):
        self.channel = channel
        self._chan = channel
        self._description = description
        self._idle = idle
        self._deadline = time.monotonic() + total
        self._signal_group = signal_group
        self.pid: int | None = None
        self._pending = b""
        self._stopped = False
        self._stderr: list[bytes] = []
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()

    def _drain_stderr(self) -> None:
        while True:
            try:
                data = self._chan.recv_stderr(4096)
            except TimeoutError:
                if self._chan.closed:
                    return
                continue
            except (OSError, EOFError):
                return
            if not data:
                return
            self._stderr.append(data)

    def lines(self) -> Iterator[str]:
        return split_lines(self._chunks())

    def _recv(self) -> bytes:
        if time.monotonic() > self._deadline:
            self.kill()
            raise DeviceError(f"{self._description}: command ran past its time limit.")
        try:
            return self._chan.recv(CHUNK)
        except TimeoutError as exc:
            self.kill()
            raise DeviceError(
                f"{self._description}: device produced no output for {self._idle:.0f} s; "
                "stopped waiting."
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeviceError(f"{self._description}: connection lost: {_reason(exc)}") from exc

    def _read_pid(self) -> None:
        """Consume the pid line `wrapped_command` prints before the command's output."""
        while self.pid is None:
            data = self._recv()
            if not data:
                return
            self._pending += data
            if b"\n" in self._pending:
                header, self._pending = self._pending.split(b"\n", 1)
                if header.startswith(PID_HEADER) and header[len(PID_HEADER) :].isdigit():
                    self.pid = int(header[len(PID_HEADER) :])
                    log.debug("channel %d: pid %d", self._chan.get_id(), self.pid)
                else:  # not our shell's line: keep it as output
                    self._pending = header + b"\n" + self._pending
                    self.pid = 0
            elif len(self._pending) > 64:
                self.pid = 0

    def _chunks(self) -> Iterator[bytes]:
        self._read_pid()
        if self._pending:
            yield self._pending
            self._pending = b""
        while True:
            data = self._recv()
            if not data:
                return
            yield data

    def wait(self) -> int:
        end = time.monotonic() + self._idle
        while not self._chan.exit_status_ready():
            if time.monotonic() > end or self._chan.closed:
                log.debug("channel %d: closed without an exit status", self._chan.get_id())
                return 255
            time.sleep(0.005)
        status = self._chan.recv_exit_status()
        self._drain.join(timeout=5)
        log.debug("channel %d: exit status %d", self._chan.get_id(), status)
        return status

    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def send(self, data: bytes) -> None:
        try:
            self._chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeviceError(f"{self._description}: connection lost: {_reason(exc)}") from exc

    def kill(self) -> None:
        """Stop the command and everything it started: SIGTERM to its process group,
        SIGKILL if it is still running after a grace period, then close the channel.
        Never raises (the connection may be gone: then the runner, which watches its
        stdin, ends by itself)."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            if self.pid is None and not self._chan.closed:
                self._chan.settimeout(KILL_GRACE)
                self._read_pid()
            if self.pid and self._signal_group is not None:
                for sig in ("TERM", "KILL"):
                    if self._chan.exit_status_ready():
                        break
                    log.debug("channel %d: SIG%s to group %d", self._chan.get_id(), sig, self.pid)
                    self._signal_group(self.pid, sig)
                    end = time.monotonic() + KILL_GRACE
                    while not self._chan.exit_status_ready() and time.monotonic() < end:
                        time.sleep(0.02)
        log.debug("channel %d: closed (command stopped)", self._chan.get_id())
        with contextlib.suppress(Exception):
            self._chan.close()


class _Stalled(Exception):
    """No byte of an upload went out for a whole idle_timeout."""


class SshTransport(FileTransport):
    def __init__(self, settings: SshSettings, target_name: str, python: str | None = None):
        self.settings = settings
        self.endpoint = resolve(settings)
        self.python = python or "python3"
        self.description = f"{target_name} ({self.endpoint})"
        self._connection = _Connection(settings, target_name, self.endpoint)
        self._client = self._connection.open()
        self._sftp: paramiko.SFTPClient | None = None

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise DeviceError(f"{self.description}: connection lost.")
        return transport

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            client = paramiko.SFTPClient.from_transport(
                self._transport(), window_size=SFTP_WINDOW, max_packet_size=SFTP_PACKET
            )
            assert client is not None
            client.get_channel().settimeout(self.settings.idle_timeout)  # type: ignore[union-attr]
            log.debug("SFTP session open on %s", self.endpoint)
            self._sftp = client
        return self._sftp

    def run(self, argv: Sequence[str]) -> SshProcess:
        command = wrapped_command(argv)
        log.info("run %s", shown_argv(argv))
        try:
            channel = self._transport().open_session(timeout=self.settings.connect_timeout)
            log.debug("channel %d: open", channel.get_id())
            channel.settimeout(self.settings.idle_timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise DeviceError(f"{self.description}: cannot start {argv[0]!r}: {exc}") from exc
        return SshProcess(
            channel,
            self.description,
            self.settings.idle_timeout,
            self.settings.command_timeout,
            self._signal_group,
        )

    def _signal_group(self, pgid: int, sig: str) -> None:
        """`kill -SIG -- -PGID` on a second channel (the group of a command started by
        `run`); a plain pid when the device's sshd did not make the command a group
        leader. Bounded by KILL_GRACE: a dead link cannot hold up a stop."""
        script = f"kill -{sig} -- -{pgid} 2>/dev/null || kill -{sig} {pgid} 2>/dev/null"
        channel = self._transport().open_session(timeout=KILL_GRACE)
        try:
            channel.settimeout(KILL_GRACE)
            channel.exec_command(script)
            end = time.monotonic() + KILL_GRACE
            while not channel.exit_status_ready() and time.monotonic() < end:
                time.sleep(0.01)
        finally:
            channel.close()

    def deliver(self, remotes: Sequence[str]) -> _Receiver:
        """The whole put_many as one device command (`receiver_argv`), started now: it
        answers what is already there, then receives only what is needed on its stdin,
        hashing each file as it writes a fresh `.part` and renaming it on a match. Each
        remote command starts the device user's login shell (~100-300 ms with pyenv or
        conda in ~/.bashrc, bench/RESULTS.md); scp starts none."""
        return _Receiver(self, remotes)

    def _send_verified(
        self,
        jobs: Sequence[tuple[Path, str, str]],
        progress_for: Callable[[Path], Progress | None],
    ) -> dict[Path, float]:
        """Send every job, whatever is there already (one receiving command)."""
        receiver = self.deliver([remote for _, remote, _ in jobs])
        try:
            receiver.existing()
            return receiver.send(jobs, progress_for)
        finally:
            receiver.close()

    def _stream(self, proc: SshProcess, local: Path, size: int, progress: Progress | None) -> None:
        """Send `local` on the command's stdin. A stalled link (no byte
        accepted for idle_timeout, even when paramiko is blocked inside a socket write)
        closes the connection: raises _Stalled."""
        chan = proc.channel
        idle = self.settings.idle_timeout
        last = [time.monotonic()]
        done = 0
        stop = threading.Event()
        stalled = threading.Event()

        def watch() -> None:
            while not stop.wait(min(idle / 4, 1.0)):
                if time.monotonic() - last[0] > idle:
                    stalled.set()
                    log.debug("upload stalled for %.1f s: closing the connection", idle)
                    with contextlib.suppress(Exception):
                        self._client.close()
                    return

        watchdog = threading.Thread(target=watch, daemon=True)
        watchdog.start()
        try:
            packet = max(chan.out_max_packet_size - 64, 1024)
            with local.open("rb") as src:
                for block in iter(lambda: src.read(CHUNK), b""):
                    for offset in range(0, len(block), packet):
                        piece = block[offset : offset + packet]
                        while piece:
                            sent = chan.send(piece)
                            if sent <= 0:
                                raise EOFError("the channel closed")
                            piece = piece[sent:]
                            last[0] = time.monotonic()
                    done += len(block)
                    if progress:
                        progress(done, size)
        except TimeoutError:
            stalled.set()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not stalled.is_set():
                proc.kill()
                raise TransferError(
                    f"{self.description}: upload of {local.name} failed (connection lost "
                    f"after {done:,} of {size:,} bytes: {_reason(exc)}); "
                    "nothing was written at the final path."
                ) from exc
        finally:
            stop.set()
            watchdog.join()
        if stalled.is_set():
            with contextlib.suppress(Exception):
                self._client.close()
            raise _Stalled(f"after {done:,} of {size:,} bytes")

    def _check_receipt(
        self, proc: SshProcess, local: Path, receipt: dict[str, Any], status: int, sha: str
    ) -> None:
        """The receiver's line for one file: renamed on a match, else a clear error."""
        if "sha256" not in receipt and "error" not in receipt:
            raise self._receiver_failed(proc, status, f"upload of {local.name} failed")
        if "error" in receipt:
            raise TransferError(
                f"{self.description}: upload of {local.name} failed on the device "
                f"({receipt['error']}); nothing was written at the final path."
            )
        if receipt["sha256"] != sha or receipt.get("size") != local.stat().st_size:
            raise corrupted(self.description, local.name, str(receipt["sha256"]), sha)

    def _receiver_failed(self, proc: SshProcess, status: int, what: str) -> EdgetoolError:
        """The receiving command ended without its reply: why, from its stderr."""
        err = proc.stderr_text().strip().splitlines()
        detail = err[-1] if err else f"exit status {status}"
        if status == 127 or "No such file" in detail:
            return DeviceError(
                f"{self.description}: cannot run {self.python!r}: {detail}",
                hint=self.python_hint,
            )
        return TransferError(
            f"{self.description}: {what} on the device ({detail}); "
            "nothing was written at the final path."
        )

    def makedirs(self, path: str) -> None:
        sftp = self.sftp()
        current = ""
        for part in [p for p in path.split("/") if p]:
            current = (
                posixpath.join(current, part)
                if current
                else ("/" + part if path.startswith("/") else part)
            )
            try:
                if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                    raise DeviceError(f"{self.description}: {current} is not a directory")
            except FileNotFoundError:
                sftp.mkdir(current)

    def get(self, remote: str, local: Path) -> None:
        self.sftp().get(remote, str(local))

    def close(self) -> None:
        """Never raises: closing a connection the device already dropped is not an error."""
        log.debug("close the connection to %s", self.endpoint)
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        with contextlib.suppress(Exception):
            self._client.close()
        self._connection.close()


class _Receiver:
    """One put_many over SSH: a single device command (`SshTransport.deliver`)."""

    def __init__(self, transport: SshTransport, remotes: Sequence[str]) -> None:
        self.transport = transport
        self.remotes = list(remotes)
        self.proc = transport.run(receiver_argv(transport.python, self.remotes))
        self.replies = self.proc.lines()

    def existing(self) -> dict[str, dict[str, int | str | None]]:
        first = next(self.replies, None)
        try:
            answer = json.loads(first) if first is not None else None
        except ValueError:
            answer = None
        if not isinstance(answer, list) or len(answer) != len(self.remotes):
            status = self.proc.wait()
            if first is None or status != 0:
                raise self.transport._receiver_failed(self.proc, status, "checking files failed")
            raise DeviceError(f"{self.transport.description}: unexpected reply {first[:80]!r}")
        return dict(zip(self.remotes, answer, strict=True))

    def send(
        self,
        jobs: Sequence[tuple[Path, str, str]],
        progress_for: Callable[[Path], Progress | None],
    ) -> dict[Path, float]:
        if not jobs:
            return {}
        ssh = self.transport
        index = {remote: i for i, remote in enumerate(self.remotes)}
        sizes = [local.stat().st_size for local, _, _ in jobs]
        header = [
            [index[remote], part_name(remote), sha, size]
            for (_, remote, sha), size in zip(jobs, sizes, strict=True)
        ]
        seconds: dict[Path, float] = {}
        local = jobs[0][0]
        try:
            self.proc.send(json.dumps(header).encode() + b"\n")
            for (local, _, _), size in zip(jobs, sizes, strict=True):
                began = time.perf_counter()
                ssh._stream(self.proc, local, size, progress_for(local))
                seconds[local] = time.perf_counter() - began
            began = time.perf_counter()
            self.proc.channel.shutdown_write()
            receipts = list(self.replies)
            status = self.proc.wait()
            seconds[local] += time.perf_counter() - began  # the last file's verdict
        except _Stalled as exc:
            raise TransferError(
                f"upload of {local.name} to {ssh.description} stalled: "
                f"no progress for {ssh.settings.idle_timeout:g} s ({exc}); nothing was "
                "written at the final path."
            ) from None
        except DeviceError as exc:  # no receipt: a silent or lost link
            with contextlib.suppress(Exception):
                ssh._client.close()  # a dead link: do not wait on it to stop the command
            self.proc.kill()
            raise TransferError(
                f"upload of {local.name} to {ssh.description} was not "
                f"confirmed ({str(exc).removeprefix(ssh.description + ': ')}); nothing "
                "was written at the final path."
            ) from exc
        for position, (local, _, sha) in enumerate(jobs):
            try:
                receipt = json.loads(receipts[position]) if position < len(receipts) else {}
            except ValueError:
                receipt = {}
            ssh._check_receipt(self.proc, local, receipt, status, sha)
            log.debug("sent and verified %s in %.3f s", local.name, seconds[local])
        return seconds

    def close(self) -> None:
        """End the command's input: whatever it was not sent, it does not write; it exits
        by itself. Never raises."""
        with contextlib.suppress(Exception):
            if not self.proc.channel.closed:
                self.proc.channel.shutdown_write()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self.proc.channel.close()


def _open(settings: SshSettings, target_name: str, python: str | None) -> SshTransport:
    return SshTransport(settings, target_name, python)


TRANSPORT = TransportType("ssh", SshSettings, _parse_ssh, open_files=_open)


def _reason(exc: BaseException) -> str:
    """What a connection error says; paramiko and the socket layer often say nothing."""
    text = str(exc).strip()
    if text:
        return text
    if isinstance(exc, EOFError):
        return "the connection closed"
    return "the SSH library gave no reason"
