"""Android devices (Wear OS watches) over ADB.

Two clients behind one transport:
- **adb-shell** (pure Python) for a watch in plain-TCP ADB mode (`adb tcpip 5555`), with an
  RSA key kept in edgetool's config dir that the watch is asked to allow once;
- the platform-tools **`adb` client**, for a watch that only offers Android 11+ "Wireless
  debugging" (pairing + TLS, which adb-shell cannot speak). `client = "auto"` tries
  adb-shell and falls back to `adb` when the watch answers with TLS; the description says
  which one is in use.

Android has no Python, so the verified put's probe and commit are POSIX sh + toybox
(`sha256sum`, `df -Pk`, `mv`), with every path passed as an argument, never as code. adb's
`shell:` service returns no exit status, so each command ends by echoing a random marker
with `$?`; stdout and stderr arrive merged (`2>&1`), as benchmark_model logs to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import queue
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgetool import paths
from edgetool.config import TableReader, expand_path
from edgetool.errors import ConnectError, DeviceError, TransferError
from edgetool.transport.base import (
    FileTransport,
    Progress,
    TransportType,
    quote_argv,
    shown_argv,
    split_lines,
)

log = logging.getLogger(__name__)

ADB_CLIENTS = ("auto", "adb-shell", "adb")


@dataclass(frozen=True)
class AdbSettings:
    """A watch or phone in ADB-over-TCP mode (`adb tcpip 5555`), or paired for Wireless
    debugging, which only the real `adb` client can speak (TLS)."""

    type: ClassVar[str] = "adb"

    host: str
    port: int = 5555
    client: str = "auto"
    """'adb-shell' (pure Python, plain TCP), 'adb' (the platform-tools client), or 'auto':
    adb-shell, and the `adb` binary when the device answers with TLS only."""
    key: Path | None = None
    """The RSA key the device has allowed (default: <config dir>/adbkey, made on first use)."""
    adb: str = "adb"
    timeout: float = 10.0
    command_timeout: float = 3600.0

    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    def where(self) -> str:
        """Where the device is, as `targets list` shows it."""
        return f"{self.host}:{self.port}"


def _parse_adb(reader: TableReader) -> AdbSettings:
    key = reader.text("key")
    settings = AdbSettings(
        host=reader.required_str("host"),
        port=reader.port("port", 5555),
        client=reader.choice("client", ADB_CLIENTS, "auto"),
        key=expand_path(key) if key else None,
        adb=reader.text("adb", "adb"),
        timeout=reader.number("timeout", 10.0),
        command_timeout=reader.number("command_timeout", 3600.0),
    )
    reader.finish()
    return settings


ADB_MAGIC_XOR = 0xFFFFFFFF
A_STLS = 0x534C5453
_ALLOW_HINT = (
    "Tap 'Allow' on the watch's debugging prompt (tick 'Always allow'), then retry; "
    "or set key = a key it already trusts (~/.android/adbkey)."
)
"""The command a device sends instead of AUTH when it insists on TLS (Wireless debugging)."""

# Also creates each file's folder: the upload needs it, and a separate mkdir is one more
# shell round trip per file (about 0.1 s on loopback, more over Wi-Fi).
_PROBE_SH = r"""
for p do
  d=${p%/*}; [ -n "$d" ] || d=/
  mkdir -p "$d" 2>/dev/null
  while [ ! -d "$d" ]; do d=${d%/*}; [ -n "$d" ] || d=/; done
  free=$(df -Pk "$d" | tail -n 1 | { read -r _fs _blocks _used avail _rest; echo "$avail"; })
  sum=-
  if [ -f "$p" ]; then sum=$(sha256sum "$p"); sum=${sum%% *}; fi
  echo "edgetool-probe ${free:-0} $sum"
done
"""

_COMMIT_SH = r"""
while [ $# -ge 3 ]; do
  part=$1 final=$2 want=$3; shift 3
  got=$(sha256sum "$part"); got=${got%% *}
  if [ "$got" = "$want" ] && mv -f "$part" "$final"; then
    echo "edgetool-commit ok"
  else
    rm -f "$part"; echo "edgetool-commit bad ${got:-missing}"
  fi
done
"""


def default_key_path() -> Path:
    return paths.config_dir() / "adbkey"


def load_signer(path: Path) -> Any:
    """The RSA key edgetool authenticates with; made on first use (mode 600), so the
    watch's "Allow debugging?" prompt is answered once per host, not per run."""
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        keygen(str(path))
        path.chmod(0o600)
    return PythonRSASigner.FromRSAKeyPath(str(path))


class _ChunkProcess:
    """A `shell:` stream read on a thread, so a silent watch is noticed after the idle
    timeout instead of blocking forever inside adb-shell."""

    def __init__(self, chunks: Iterator[bytes], idle: float, label: str, on_kill: Any) -> None:
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue()
        self._idle = idle
        self._label = label
        self._on_kill = on_kill
        self._killed = False
        self._status = 0
        self._thread = threading.Thread(target=self._pump, args=(chunks,), daemon=True)
        self._thread.start()

    def _pump(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                self._queue.put(chunk)
        except BaseException as exc:  # reported to the reader, never lost on the thread
            self._queue.put(exc)
        self._queue.put(None)

    def _chunks(self) -> Iterator[bytes]:
        while True:
            try:
                item = self._queue.get(timeout=self._idle)
            except queue.Empty:
                self.kill()
                raise DeviceError(
                    f"{self._label}: no output for {self._idle:.0f} s; the watch stopped "
                    "answering (asleep, or off the network?)",
                    hint="Keep the watch on its charger-free stand with the screen awake, "
                    "or raise command_timeout in the target file.",
                ) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                if self._killed:
                    return
                self._status = 255
                raise DeviceError(f"{self._label}: connection lost ({item})") from item
            yield item

    def lines(self) -> Iterator[str]:
        return split_lines(self._chunks())

    def wait(self) -> int:
        self._thread.join(timeout=self._idle)
        return 255 if self._killed else self._status

    def stderr_text(self) -> str:
        return ""

    def send(self, data: bytes) -> None:
        raise DeviceError(f"{self._label}: ADB shell commands take no input")

    def kill(self) -> None:
        self._killed = True
        self._on_kill()


class MarkedProcess:
    """Recovers the remote exit status from the marker line the command ends with; the
    output is merged stdout+stderr, so the last lines stand in for stderr."""

    def __init__(self, inner: Any, marker: str) -> None:
        self._inner = inner
        self._marker = marker
        self._status: int | None = None
        self._tail: list[str] = []

    def lines(self) -> Iterator[str]:
        for line in self._inner.lines():
            log.debug("< %s", line)
            at = line.find(self._marker)
            if at >= 0:
                code = line[at + len(self._marker) :].strip()
                self._status = int(code) if code.isdigit() else 255
                log.debug("exit status %d", self._status)
                line = line[:at]
                if not line:
                    continue
            self._tail = [*self._tail[-4:], line]
            yield line

    def wait(self) -> int:
        transport_status = self._inner.wait()
        if self._status is None:  # the stream ended without the marker: killed or dropped
            return transport_status or 255
        return self._status

    def stderr_text(self) -> str:
        return "\n".join([self._inner.stderr_text(), *self._tail]).strip()

    def send(self, data: bytes) -> None:
        self._inner.send(data)

    def kill(self) -> None:
        self._inner.kill()


def byte_sum(data: bytes | bytearray | str) -> int:
    """ADB's payload checksum (a 32-bit byte sum) with numpy: adb-shell's `sum(data)`
    runs at ~120 MB/s and was half of a push's time on a fast link."""
    import numpy as np

    raw = data.encode("utf-8") if isinstance(data, str) else data
    return int(np.frombuffer(raw, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


def _use_fast_checksum() -> None:
    """Point adb-shell's checksum at `byte_sum` (same results; checked by a test)."""
    import adb_shell.adb_device
    import adb_shell.adb_message

    adb_shell.adb_message.checksum = byte_sum
    adb_shell.adb_device.checksum = byte_sum  # imported by name there


def _checked_tcp_transport(host: str, port: int) -> Any:
    """adb-shell's TCP transport plus what adb-shell itself skips: the header's magic.
    Headers are tracked across reads, so checks hold however the stream is chunked."""
    from adb_shell.exceptions import InvalidResponseError
    from adb_shell.transport.tcp_transport import TcpTransport

    class CheckedTcpTransport(TcpTransport):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(host, port)
            self._header = b""
            self._body_left = 0
            self.packets_seen = 0

        def connect(self, transport_timeout_s: float | None) -> None:
            super().connect(transport_timeout_s)
            # adb-shell writes header and payload separately: without NODELAY every
            # packet waits ~40 ms for the device's delayed ACK (6.7 s vs 0.02 s for 300 KiB).
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            data: bytes = super().bulk_read(numbytes, transport_timeout_s)
            if numbytes and not data:
                # adb-shell would spin on a closed socket until its read timeout.
                raise ConnectionResetError("the device closed the connection")
            view = data
            while view:
                if self._body_left:
                    used = min(self._body_left, len(view))
                    self._body_left -= used
                    view = view[used:]
                    continue
                need = 24 - len(self._header)
                self._header += view[:need]
                view = view[need:]
                if len(self._header) == 24:
                    command = int.from_bytes(self._header[0:4], "little")
                    length = int.from_bytes(self._header[12:16], "little")
                    magic = int.from_bytes(self._header[20:24], "little")
                    self._header = b""
                    self.packets_seen += 1
                    if command == A_STLS:
                        raise InvalidResponseError("STLS: the device requires TLS")
                    if magic != command ^ ADB_MAGIC_XOR:
                        raise InvalidResponseError(
                            f"bad ADB header magic {magic:#010x} for command {command:#010x}"
                        )
                    self._body_left = length
            return data

    return CheckedTcpTransport()


class AdbTransport(FileTransport):
    """One ADB connection; commands run one at a time (adb-shell is not re-entrant)."""

    python = ""  # Android has no Python: no runner, no remote_json
    python_hint = "Android targets run benchmark_model, not Python."

    def __init__(self, settings: AdbSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self._device: Any = None
        self._adb: str | None = None
        self._ready_dirs: set[str] = set()
        self.client = settings.client
        if settings.client == "adb":
            self._connect_adb_client(reason="client = 'adb'")
        else:
            try:
                self._connect_adb_shell()
            except _NeedsTls:
                if settings.client == "adb-shell":
                    raise ConnectError(
                        f"{settings.serial} only offers Wireless debugging (TLS), which "
                        "adb-shell cannot speak.",
                        hint="Pair it with `adb pair HOST:PAIRPORT CODE` and set client = "
                        "'adb' (or 'auto') in the target file.",
                    ) from None
                self._connect_adb_client(reason="the watch requires TLS")
        self.description = (
            f"adb {settings.serial} (adb-shell)"
            if self._device is not None
            else f"adb {settings.serial} (adb client {self._adb}; {self._reason})"
        )

    # --- connecting -----------------------------------------------------------------

    def _connect_adb_shell(self) -> None:
        from adb_shell import exceptions as adb_errors
        from adb_shell.adb_device import AdbDevice

        settings = self.settings
        key = settings.key or default_key_path()
        signer = load_signer(key)
        log.info("connect to %s (adb-shell, key %s)", settings.serial, key)
        _use_fast_checksum()
        wire = _checked_tcp_transport(settings.host, settings.port)
        device = AdbDevice(wire, default_transport_timeout_s=settings.timeout)
        where = settings.serial
        try:
            device.connect(
                rsa_keys=[signer],
                auth_timeout_s=settings.timeout,
                read_timeout_s=settings.timeout,
            )
        except adb_errors.InvalidResponseError as exc:
            device.close()
            if "STLS" in str(exc):
                raise _NeedsTls from exc
            raise ConnectError(f"{where} does not speak the ADB protocol ({exc})") from exc
        except (adb_errors.InvalidCommandError, adb_errors.InvalidChecksumError) as exc:
            device.close()
            raise ConnectError(f"{where} does not speak the ADB protocol ({exc})") from exc
        except adb_errors.DeviceAuthError as exc:
            device.close()
            raise ConnectError(
                f"{where} did not accept edgetool's ADB key {key}",
                hint=_ALLOW_HINT,
            ) from exc
        except (adb_errors.TcpTimeoutException, adb_errors.AdbTimeoutError, TimeoutError) as exc:
            device.close()
            if wire.packets_seen:  # it asked for our key and then never let us in
                raise ConnectError(
                    f"{where} did not accept edgetool's ADB key {key} within "
                    f"{settings.timeout:g} s",
                    hint=_ALLOW_HINT,
                ) from exc
            raise ConnectError(
                f"{where} did not answer the ADB handshake within {settings.timeout:g} s",
                hint="If the watch shows a debugging prompt, allow it; check that ADB "
                "debugging over Wi-Fi is on and the address is right.",
            ) from exc
        except OSError as exc:
            device.close()
            raise ConnectError(
                f"cannot reach {where}: {exc.strerror or exc}",
                hint="Is the watch on this network with ADB over Wi-Fi on (`adb tcpip 5555` "
                "over USB once), and host/port right?",
            ) from exc
        self._device = device

    def _connect_adb_client(self, reason: str) -> None:
        found = shutil.which(self.settings.adb)
        if found is None:
            raise ConnectError(
                f"{self.settings.serial}: {reason}, which needs the platform-tools `adb` "
                f"client, and {self.settings.adb!r} is not installed.",
                hint="apt-get install adb (or Android platform-tools), then `adb pair`.",
            )
        self._adb = found
        self._reason = reason
        serial = self.settings.serial
        result = self._adb_run(["connect", serial], self.settings.timeout + 5)
        said = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        # "failed to authenticate" is normal until the watch's Allow arrives.
        reached = any(
            marker in line for line in said for marker in ("connected to", "failed to authenticate")
        )
        if result.returncode != 0 or not reached:
            raise ConnectError(
                f"adb could not connect to {serial}: {said[-1] if said else result.returncode}",
                hint="Pair first (`adb pair HOST:PAIRPORT CODE`, from the watch's Wireless "
                "debugging screen), and check the port it shows.",
            )
        try:
            ready = self._adb_run(
                ["-s", serial, "wait-for-device"], self.settings.timeout
            ).returncode
        except DeviceError:
            ready = -1
        if ready != 0:
            raise ConnectError(
                f"{serial} did not accept the adb client's key within {self.settings.timeout:g} s",
                hint=_ALLOW_HINT,
            )

    def _adb_run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        assert self._adb is not None
        log.info("run %s", shown_argv([self._adb, *args]))
        try:
            return subprocess.run(
                [self._adb, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"adb {args[0]} {self.settings.serial} timed out") from exc

    # --- commands -------------------------------------------------------------------

    def run(self, argv: Sequence[str]) -> MarkedProcess:
        marker = f"edgetool-exit-{secrets.token_hex(4)}="
        command = f"{quote_argv(argv)} 2>&1; echo {marker}$?"
        log.info("run %s", shown_argv(argv))
        idle = self.settings.command_timeout
        if self._device is not None:
            chunks = self._device.streaming_shell(
                command,
                transport_timeout_s=idle,
                read_timeout_s=idle,
                decode=False,
            )
            inner: Any = _ChunkProcess(chunks, idle, self.description, self._drop)
        else:
            from edgetool.transport.local import LocalProcess

            assert self._adb is not None
            inner = LocalProcess(
                [self._adb, "-s", self.settings.serial, "shell", command],
                Path.cwd(),
                idle,
                idle,
            )
        return MarkedProcess(inner, marker)

    def _drop(self) -> None:
        """Abandon a running command: close the connection (adb has no per-stream kill)."""
        log.debug("close the ADB connection to stop a command")
        if self._device is not None:
            with contextlib.suppress(Exception):
                self._device.close()

    # --- files ----------------------------------------------------------------------

    def probe(self, remotes: Sequence[str]) -> dict[str, dict[str, int | str | None]]:
        for remote in remotes:
            if "\n" in remote or not remote.startswith("/"):
                raise DeviceError(f"{self.description}: device path must be absolute: {remote!r}")
        out = self.run_checked(["sh", "-c", _PROBE_SH, "sh", *remotes])
        rows = [line.split() for line in out.splitlines() if line.startswith("edgetool-probe ")]
        if len(rows) != len(remotes):
            raise DeviceError(f"{self.description}: unexpected probe reply {out[-120:]!r}")
        self._ready_dirs.update(posixpath.dirname(remote) for remote in remotes)
        return {
            remote: {
                "free": int(row[1]) * 1024 if row[1].isdigit() else 0,
                "sha256": None if row[2] == "-" else row[2],
            }
            for remote, row in zip(remotes, rows, strict=True)
        }

    def commit(self, jobs: Sequence[tuple[str, str, str]]) -> dict[str, str | None]:
        args = [item for job in jobs for item in job]
        out = self.run_checked(["sh", "-c", _COMMIT_SH, "sh", *args])
        rows = [line.split() for line in out.splitlines() if line.startswith("edgetool-commit ")]
        if len(rows) != len(jobs):
            raise DeviceError(f"{self.description}: unexpected commit reply {out[-120:]!r}")
        return {
            final: (None if row[1] == "ok" else row[2] if len(row) > 2 else "?")
            for (_, final, _), row in zip(jobs, rows, strict=True)
        }

    def makedirs(self, path: str) -> None:
        if path and path not in self._ready_dirs:
            self.run_checked(["mkdir", "-p", path])
            self._ready_dirs.add(path)

    def _upload(self, local: Path, remote: str, progress: Progress | None) -> None:
        size = local.stat().st_size
        if self._device is not None:
            from adb_shell import exceptions as adb_errors

            def report(_path: str, done: int, _total: int) -> None:
                if progress:
                    progress(done, size)

            try:
                self._device.push(
                    str(local),
                    remote,
                    st_mode=0o100644,
                    progress_callback=report,
                    transport_timeout_s=self.settings.command_timeout,
                    read_timeout_s=self.settings.command_timeout,
                )
            except (adb_errors.PushFailedError, adb_errors.AdbCommandFailureException) as exc:
                raise OSError(str(exc)) from exc
            except (adb_errors.TcpTimeoutException, adb_errors.AdbTimeoutError) as exc:
                raise OSError(f"timed out: {exc}") from exc
        else:
            result = self._adb_run(
                ["-s", self.settings.serial, "push", str(local), remote],
                self.settings.command_timeout,
            )
            if result.returncode != 0:
                raise OSError((result.stderr or result.stdout).strip()[-200:])
            if progress:
                progress(size, size)

    def _remove(self, path: str) -> None:
        self.run_checked(["rm", "-f", path])

    def get(self, remote: str, local: Path) -> None:
        """Pull into a temporary name first: a dropped link never leaves a half file."""
        partial = local.with_name(local.name + ".part")
        try:
            if self._device is not None:
                self._device.pull(
                    remote,
                    str(partial),
                    transport_timeout_s=self.settings.command_timeout,
                    read_timeout_s=self.settings.command_timeout,
                )
            else:
                result = self._adb_run(
                    ["-s", self.settings.serial, "pull", remote, str(partial)],
                    self.settings.command_timeout,
                )
                if result.returncode != 0:
                    raise OSError((result.stderr or result.stdout).strip()[-200:])
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise TransferError(f"{self.description}: could not pull {remote}: {exc}") from exc
        partial.replace(local)

    def close(self) -> None:
        if self._device is not None:
            with contextlib.suppress(Exception):
                self._device.close()
            self._device = None


class _NeedsTls(Exception):
    """The device sent STLS: only the real adb client can go on."""


def _open(settings: AdbSettings, target_name: str, python: str | None) -> AdbTransport:
    return AdbTransport(settings, target_name)


TRANSPORT = TransportType("adb", AdbSettings, _parse_adb, open_files=_open)
