"""A Wear OS watch's adbd over plain TCP (port-5555 mode), on 127.0.0.1, for tests.

It speaks the device side of the real ADB protocol, so edgetool's ADB transport (and the real
`adb` client) can be tested against it: 24-byte little-endian packets (CNXN, AUTH, OPEN, OKAY,
WRTE, CLSE, STLS) with magic and byte-sum checksum checked on everything the client sends
(a bad one drops the connection; checksum 0 is accepted once the client's CNXN announced
version 0x01000001 or later, whose senders may skip it; the CNXN itself must carry it),
RSA token authentication against adb-format public keys, one WRTE in flight per direction,
several streams at once, the `shell:` (v1) service and the `sync:` file protocol (v1: STAT,
LIST, SEND, RECV, QUIT).

What it is not: Android. Honest differences, so nobody trusts it for more than the wire:

* `shell:COMMAND` runs the *host's* `/bin/sh -c` (dash here, not Android's mksh + toybox),
  with cwd = `root`, PATH = `<root>/system/bin:/usr/bin:/bin`, and the client's stdin is not
  forwarded (adb-shell cannot write it anyway). Output is stdout+stderr merged, raw, streamed
  as it arrives; there is no exit status (v1), which is why clients append `; echo M$?`.
* The watch's file system is a host directory `root`. In shell commands every occurrence of
  the device prefixes `/data/local/tmp`, `/sdcard`, `/sys/class/power_supply` and
  `/system/bin` is rewritten, as text, to `<root>/data/local/tmp` etc.; other absolute paths
  (`/proc`, `/etc`, ...) are the host's. Sync paths are always resolved under `root`.
* `getprop` is a small sh script in `<root>/system/bin` reading a table (`props`).
* The battery is files under `<root>/sys/class/power_supply/battery`, rewritten every
  `battery_period` by a thread; the values it exposed, with host `time.monotonic_ns()`
  stamps, are the ground truth for energy tests (`peer.battery.energy_j`).
* The banner does not advertise `shell_v2`, `stat_v2`, `ls_v2` or `sendrecv_v2`, so clients
  use the v1 services implemented here (the real `adb` client falls back to them).

Modes, for error tests: "plain"; "tls" (answers CNXN with STLS, as a watch that only offers
Android 11+ Wireless debugging, then closes once the client sends anything else or after a
few seconds); "bad-magic" (answers CNXN with a CNXN whose magic field is wrong, then reads and
ignores everything until the client hangs up);
"silent" (accepts TCP, never answers).

Standalone: `python -m edgetool.testing.adb_peer --root DIR [--port N] [--accept-new-keys]
[--mode M]`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import posixpath
import re
import secrets
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


A_SYNC, A_CNXN, A_OPEN, A_OKAY = _cmd(b"SYNC"), _cmd(b"CNXN"), _cmd(b"OPEN"), _cmd(b"OKAY")
A_CLSE, A_WRTE, A_AUTH, A_STLS = _cmd(b"CLSE"), _cmd(b"WRTE"), _cmd(b"AUTH"), _cmd(b"STLS")
KNOWN_COMMANDS = {A_SYNC, A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH, A_STLS}
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001  # from this version on, senders may put 0 as checksum
A_VERSION = A_VERSION_SKIP_CHECKSUM  # what adbd announces (Android 9+)
A_STLS_VERSION = 0x01000000
MAX_PAYLOAD = 1024 * 1024  # adbd refuses any packet larger than this, whatever was negotiated
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
TOKEN_SIZE = 20
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
HEADER = struct.Struct("<6I")

#: Features in the CNXN banner. No `shell_v2`/`stat_v2`/`ls_v2`/`sendrecv_v2`: clients then
#: use `shell:` v1 and sync v1, which this peer implements. `fixed_push_mkdir`: SEND creates
#: the parent directories, as adbd does since Android 7.
FEATURES = ("fixed_push_mkdir",)

#: Device path prefixes that live under the peer's root.
DEVICE_PREFIXES = ("/data/local/tmp", "/sdcard", "/sys/class/power_supply", "/system/bin")
_PREFIX_RE = re.compile(
    r"(?<![\w./-])(" + "|".join(re.escape(p) for p in DEVICE_PREFIXES) + r")(?![\w.-])"
)

DEFAULT_PROPS: dict[str, str] = {
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.model": "Peer Watch (synthetic)",
    "ro.product.manufacturer": "edgetool",
    "ro.product.name": "peerwatch",
    "ro.product.device": "peerwatch",
    "ro.build.version.release": "13",
    "ro.build.version.sdk": "33",
    "ro.hardware": "peer",
    "ro.build.characteristics": "nosdcard,watch",
    # edgetool reads this (edgetool.android.session.SYNTHETIC_PROP) and labels every figure
    # measured through the peer SYNTHETIC, so a peer's numbers never pass for a watch's.
    "ro.edgetool.synthetic": "1",
}

MODES = ("plain", "tls", "bad-magic", "silent")

_GETPROP = r"""#!/bin/sh
# getprop of the ADB test peer: answers from the peer's property table.
table=%(table)s
if [ $# -eq 0 ]; then
    awk '{ i = index($0, "=")
           printf "[%%s]: [%%s]\n", substr($0, 1, i - 1), substr($0, i + 1) }' "$table"
    exit 0
fi
awk -v k="$1" -v d="$2" '
    { i = index($0, "=")
      if (substr($0, 1, i - 1) == k) { print substr($0, i + 1); found = 1; exit } }
    END { if (!found) print d }' "$table"
"""


def checksum(data: bytes) -> int:
    """ADB's "crc32" field: a plain byte sum (numpy: the peer must not be the bottleneck
    of a throughput benchmark)."""
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


def pack(
    command: int, arg0: int, arg1: int, data: bytes = b"", *, with_checksum: bool = True
) -> bytes:
    """One packet: header then payload."""
    crc = checksum(data) if with_checksum else 0
    return HEADER.pack(command, arg0, arg1, len(data), crc, command ^ 0xFFFFFFFF) + data


def decode_adb_pubkey(line: str) -> rsa.RSAPublicKey:
    """An adb public key (base64 of Android's RSAPublicKey struct, then " user@host")."""
    blob = base64.b64decode(line.strip().split()[0], validate=True)
    if len(blob) < 12:
        raise ValueError("adb public key too short")
    words = struct.unpack_from("<I", blob, 0)[0]
    size = 4 * words
    if words == 0 or len(blob) != 8 + 2 * size + 4:
        raise ValueError(f"adb public key of {len(blob)} bytes does not match {words} words")
    n = int.from_bytes(blob[8 : 8 + size], "little")
    e = struct.unpack_from("<I", blob, 8 + 2 * size)[0]
    return rsa.RSAPublicNumbers(e, n).public_key()


def verify_token_signature(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """adbd's check: PKCS#1 v1.5 with a SHA-1 DigestInfo over the token *as the digest*."""
    if len(token) != 20:
        return False
    try:
        key.verify(signature, token, padding.PKCS1v15(), Prehashed(hashes.SHA1()))
    except (InvalidSignature, ValueError):
        return False
    return True


def map_command(command: str, root: Path) -> str:
    """Rewrite the device prefixes in a shell command to their place under root."""
    return _PREFIX_RE.sub(lambda m: f"{root}{m.group(1)}", command)


def map_sync_path(path: str, root: Path) -> Path:
    """A sync path on the watch to the host file under root (never outside it)."""
    return root / posixpath.normpath("/" + path).lstrip("/")


class Battery:
    """`/sys/class/power_supply/battery` as files, rewritten every `period` seconds.

    Each value is replaced atomically (rename), so a reader sees a whole number, and stamped
    with the host time it became visible: the recorded step function is what a reader of the
    files could have seen, which is the ground truth for energy (a late writer thread on a busy
    CI host would make the nominal waveform wrong, see edgetool.testing.hwmon_peer)."""

    def __init__(
        self,
        directory: Path,
        load_flag: Path,
        *,
        charging: bool,
        idle_ua: int,
        load_ua: int,
        charge_ua: int,
        current_sign: int,
        voltage_uv: int,
        period: float,
    ) -> None:
        if current_sign not in (-1, 1):
            raise ValueError("current_sign must be -1 or +1")
        self.dir = directory
        self.load_flag = load_flag
        self.charging = charging
        self.idle_ua, self.load_ua, self.charge_ua = idle_ua, load_ua, charge_ua
        self.current_sign = current_sign
        self.voltage_uv = voltage_uv
        self.period = period
        #: (host ns the value became visible, current_now in µA, load flag seen)
        self.samples: list[tuple[int, int, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._put("present", "1")
        self._put("status", "Charging" if self.charging else "Discharging")
        self._put("voltage_now", str(self.voltage_uv))
        self._write()
        self._thread = threading.Thread(target=self._loop, name="adb-peer-battery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def current_ua(self, loaded: bool) -> int:
        """current_now for a load state: `current_sign` * draw while discharging; while
        charging the charger's current minus the draw, with the opposite sign."""
        draw = self.idle_ua + (self.load_ua if loaded else 0)
        if self.charging:
            return -self.current_sign * (self.charge_ua - draw)
        return self.current_sign * draw

    def _put(self, name: str, value: str) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(value + "\n")
        os.replace(tmp, self.dir / name)

    def _write(self) -> None:
        loaded = self.load_flag.exists()
        ua = self.current_ua(loaded)
        self._put("current_now", str(ua))
        stamp = time.monotonic_ns()  # after the rename: from here on readers see `ua`
        with self._lock:
            self.samples.append((stamp, ua, loaded))

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._write()

    def energy_j(self, t0_ns: int, t1_ns: int) -> float:
        """Exact joules drawn from the battery between two host times, as the files showed
        them: the integral of voltage * current_sign * current_now (negative while charging)."""
        with self._lock:
            samples = list(self.samples)
        if not samples or t0_ns < samples[0][0]:
            raise ValueError("window starts before the battery's first value")
        charge_uas = 0.0
        for i, (since, ua, _) in enumerate(samples):
            until = samples[i + 1][0] if i + 1 < len(samples) else max(t1_ns, since)
            lo, hi = max(since, t0_ns), min(until, t1_ns)
            if hi > lo:
                charge_uas += self.current_sign * ua * (hi - lo) / 1e9
        return self.voltage_uv * 1e-6 * charge_uas * 1e-6

    def load_intervals(self) -> list[tuple[int, int | None]]:
        """Host-time intervals [start, end) during which the writer saw the load flag;
        end is None while it still exists."""
        with self._lock:
            samples = list(self.samples)
        out: list[tuple[int, int | None]] = []
        start: int | None = None
        for stamp, _, loaded in samples:
            if loaded and start is None:
                start = stamp
            elif not loaded and start is not None:
                out.append((start, stamp))
                start = None
        if start is not None:
            out.append((start, None))
        return out


class _Closed(Exception):
    """The stream or connection went away."""


class _Stream:
    """One open stream: flow control (one WRTE in flight) and an inbound byte buffer."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.cond = threading.Condition()
        self.can_send = True  # the client's OPEN means it is ready for one WRTE
        self.closed = False
        self.inbound = bytearray()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- from the connection's reader thread
    def on_okay(self) -> None:
        with self.cond:
            self.can_send = True
            self.cond.notify_all()

    def on_data(self, data: bytes) -> None:
        with self.cond:
            self.inbound += data
            self.cond.notify_all()

    def on_close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    # -- from the service thread
    def write(self, data: bytes) -> None:
        """Send bytes in WRTEs of at most the negotiated size, each after the last OKAY."""
        step = self.conn.max_send
        for i in range(0, len(data), step):
            with self.cond:
                while not self.can_send and not self.closed:
                    self.cond.wait()
                if self.closed:
                    raise _Closed
                self.can_send = False
            self.conn.send(A_WRTE, self.local_id, self.remote_id, data[i : i + step])

    def read_exact(self, n: int) -> bytes:
        with self.cond:
            while len(self.inbound) < n and not self.closed:
                self.cond.wait()
            if len(self.inbound) < n:
                raise _Closed
            out = bytes(self.inbound[:n])
            del self.inbound[:n]
            return out

    def close(self) -> None:
        """The service ended: CLSE to the client unless it closed first."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        self.conn.forget(self.local_id)
        self.conn.send(A_CLSE, self.local_id, self.remote_id)


class _SyncWriter:
    """Sync replies as a byte stream, cut into WRTEs at max-payload boundaries (records
    straddle WRTEs, as with adbd), flushed whenever the service waits for the client."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    def put(self, data: bytes) -> None:
        self.buf += data
        step = self.stream.conn.max_send
        if len(self.buf) >= step:
            cut = len(self.buf) - len(self.buf) % step
            chunk = bytes(self.buf[:cut])
            del self.buf[:cut]
            self.stream.write(chunk)

    def flush(self) -> None:
        if self.buf:
            chunk = bytes(self.buf)
            self.buf.clear()
            self.stream.write(chunk)


class _Connection:
    """One TCP client: handshake, auth, then packets dispatched to streams."""

    def __init__(self, peer: AdbPeer, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.streams_lock = threading.Lock()
        self.version = A_VERSION_MIN
        self.client_max = 4096
        self.online = False
        self.token = b""
        self.dead = False

    @property
    def max_send(self) -> int:
        return max(1, min(self.client_max, self.peer.max_payload))

    def send_raw(self, data: bytes) -> None:
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError as e:
                raise _Closed from e

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.send_raw(
            pack(command, arg0, arg1, data, with_checksum=self.version < A_VERSION_SKIP_CHECKSUM)
        )

    def forget(self, local_id: int) -> None:
        with self.streams_lock:
            self.streams.pop(local_id, None)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError as e:
                raise _Closed from e
            if not chunk:
                raise _Closed
            buf += chunk
        return bytes(buf)

    def _read_packet(self) -> tuple[int, int, int, bytes]:
        """One packet; a bad magic, size or checksum drops the connection (as adbd)."""
        command, arg0, arg1, length, crc, magic = HEADER.unpack(self._recv_exact(HEADER.size))
        if magic != command ^ 0xFFFFFFFF:
            self.peer.log(f"drop: bad magic {magic:#010x} for command {command:#010x}")
            raise _Closed
        if length > MAX_PAYLOAD:
            self.peer.log(f"drop: payload of {length} bytes")
            raise _Closed
        data = self._recv_exact(length) if length else b""
        skip_ok = self.version >= A_VERSION_SKIP_CHECKSUM and crc == 0
        if not skip_ok and crc != checksum(data):
            self.peer.log(f"drop: checksum {crc} != {checksum(data)}")
            raise _Closed
        return command, arg0, arg1, data

    def serve(self) -> None:
        try:
            mode = self.peer.mode
            if mode == "silent":
                while self.sock.recv(65536):
                    pass
                return
            while not self.peer.stopping.is_set():
                command, arg0, arg1, data = self._read_packet()
                if command == A_CNXN:
                    self._on_cnxn(arg0, arg1, data)
                    if mode != "plain":
                        self._misbehave(mode)
                        return
                elif command == A_AUTH:
                    self._on_auth(arg0, data)
                elif not self.online:
                    continue  # adbd ignores everything else until the transport is online
                elif command == A_OPEN:
                    self._on_open(arg0, data)
                elif command in (A_OKAY, A_WRTE, A_CLSE):
                    self._on_stream_packet(command, arg0, arg1, data)
                # STLS from a client, SYNC and unknown commands with a valid magic: ignored
        except (_Closed, OSError):
            pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.dead = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with self.streams_lock:
            streams = list(self.streams.values())
            self.streams.clear()
        for s in streams:
            s.on_close()

    def _misbehave(self, mode: str) -> None:
        if mode == "tls":
            self.send_raw(pack(A_STLS, A_STLS_VERSION, 0))
            # A real client would now start a TLS handshake; this peer cannot, so it waits a
            # little for anything and then hangs up.
            self.sock.settimeout(3.0)
            with contextlib.suppress(OSError):
                self.sock.recv(1)
        elif mode == "bad-magic":
            banner = self._banner()
            header = HEADER.pack(
                A_CNXN, A_VERSION, self.peer.max_payload, len(banner), checksum(banner), A_CNXN
            )  # magic should be ~A_CNXN
            self.send_raw(header + banner)
            # Then a wedged device: it keeps the connection open and answers nothing, so a
            # client that does not check the magic fails deterministically on its next read.
            while self.sock.recv(65536):
                pass

    def _banner(self) -> bytes:
        p = self.peer.props
        fields = [
            f"ro.product.name={p.get('ro.product.name', '')}",
            f"ro.product.model={p.get('ro.product.model', '')}",
            f"ro.product.device={p.get('ro.product.device', '')}",
            "features=" + ",".join(FEATURES),
        ]
        return ("device::" + ";".join(fields)).encode()

    def _on_cnxn(self, version: int, max_data: int, data: bytes) -> None:
        self.version = min(version, A_VERSION)
        self.client_max = min(max_data, MAX_PAYLOAD)
        self.online = False
        with self.streams_lock:  # a new CNXN restarts the session, as with adbd
            streams = list(self.streams.values())
            self.streams.clear()
        for stream in streams:
            stream.on_close()
        self.peer.log(f"CNXN version={version:#x} maxdata={max_data} {data[:64]!r}")
        if self.peer.mode != "plain":
            return
        self._send_token()

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def _go_online(self) -> None:
        self.online = True
        self.send(A_CNXN, A_VERSION, self.peer.max_payload, self._banner())

    def _on_auth(self, kind: int, data: bytes) -> None:
        if self.online or not self.token:
            return
        if kind == AUTH_SIGNATURE:
            for line in self.peer.authorized_keys_snapshot():
                try:
                    key = decode_adb_pubkey(line)
                except ValueError:
                    continue
                if verify_token_signature(key, self.token, data):
                    self.peer.record_auth("signature-ok", _comment(line))
                    self._go_online()
                    return
            self.peer.record_auth("signature-rejected", "")
            self._send_token()  # adbd offers a new token; the client may try another key
        elif kind == AUTH_RSAPUBLICKEY:
            line = data.rstrip(b"\0").decode("utf-8", "replace").strip()
            try:
                decode_adb_pubkey(line)
            except ValueError:
                self.peer.record_auth("public-key-invalid", line[:40])
                return
            if self.peer.accept_new_keys:
                self.peer.add_authorized_key(line)
                self.peer.record_auth("public-key-accepted", _comment(line))
                self._go_online()
            else:
                # Nobody pressed "Allow" on the watch: no answer, the client times out.
                self.peer.record_auth("public-key-ignored", _comment(line))

    def _on_open(self, remote_id: int, data: bytes) -> None:
        service = data.rstrip(b"\0").decode("utf-8", "replace")
        if remote_id == 0:
            raise _Closed  # adbd treats this as a protocol error
        handler: Callable[[_Stream, str], None] | None = None
        if service.startswith("shell:"):
            handler = self.peer._run_shell
        elif service == "sync:":
            handler = self.peer._run_sync
        if handler is None:
            self.peer.log(f"OPEN refused: {service!r}")
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = self.peer.next_id()
        stream = _Stream(self, local_id, remote_id)
        with self.streams_lock:
            self.streams[local_id] = stream
        self.peer.log(f"OPEN {local_id}<-{remote_id} {service!r}")
        self.send(A_OKAY, local_id, remote_id)
        arg = service.split(":", 1)[1]
        threading.Thread(
            target=self.peer._service_thread,
            args=(handler, stream, arg),
            daemon=True,
            name=f"adb-peer-{service[:20]}",
        ).start()

    def _on_stream_packet(self, command: int, remote_id: int, local_id: int, data: bytes) -> None:
        with self.streams_lock:
            stream = self.streams.get(local_id)
        if stream is None or (remote_id and stream.remote_id != remote_id):
            return  # late packet for a stream that is gone: adbd ignores it
        if command == A_OKAY:
            stream.on_okay()
        elif command == A_WRTE:
            stream.on_data(data)
            self.send(A_OKAY, local_id, stream.remote_id)
        else:  # CLSE from the client: close our side and answer, as adbd does
            self.forget(local_id)
            was_closed = stream.closed
            stream.on_close()
            if not was_closed:
                self.send(A_CLSE, local_id, stream.remote_id)


def _comment(line: str) -> str:
    parts = line.strip().split(None, 1)
    return parts[1] if len(parts) > 1 else ""


class AdbPeer:
    """The watch: serves ADB on 127.0.0.1, one daemon thread per connection and stream."""

    def __init__(
        self,
        root: Path,
        *,
        authorized_keys: list[str] | None = None,
        accept_new_keys: bool = False,
        mode: str = "plain",
        props: dict[str, str] | None = None,
        max_payload: int = 256 * 1024,
        charging: bool = False,
        idle_ua: int = 80_000,
        load_ua: int = 120_000,
        charge_ua: int = 500_000,
        current_sign: int = -1,
        voltage_uv: int = 3_850_000,
        battery_period: float = 0.020,
        port: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if not 1 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in 1..{MAX_PAYLOAD}")
        self.root = Path(root).resolve()
        if not re.fullmatch(r"[\w./+-]+", str(self.root)):
            raise ValueError(f"root {self.root} must be shell-safe: it is pasted into commands")
        self.authorized_keys: list[str] = [k.strip() for k in authorized_keys or [] if k.strip()]
        self.accept_new_keys = accept_new_keys
        self.mode = mode
        self.props: dict[str, str] = {**DEFAULT_PROPS, **(props or {})}
        self.max_payload = max_payload
        self.requested_port = port
        self.port = 0
        self.load_flag = self.root / ".load"
        #: (event, detail): signature-ok, signature-rejected, public-key-accepted,
        #: public-key-ignored, public-key-invalid
        self.auth_log: list[tuple[str, str]] = []
        #: Human-readable protocol events (drops, OPENs, refused services), for debugging.
        self.events: list[str] = []
        self.battery = Battery(
            self.root / "sys/class/power_supply/battery",
            self.load_flag,
            charging=charging,
            idle_ua=idle_ua,
            load_ua=load_ua,
            charge_ua=charge_ua,
            current_sign=current_sign,
            voltage_uv=voltage_uv,
            period=battery_period,
        )
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._next_id = 0
        self._conns: list[_Connection] = []
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> AdbPeer:
        for sub in ("data/local/tmp", "sdcard", "system/bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_getprop()
        self.battery.start()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.requested_port))
        listener.listen(16)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="adb-peer-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
            procs = list(self._procs)
        for conn in conns:
            conn.shutdown()
        for proc in procs:
            _kill_group(proc)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        self.battery.stop()

    def __enter__(self) -> AdbPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- shared state
    def log(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def record_auth(self, event: str, detail: str) -> None:
        with self._lock:
            self.auth_log.append((event, detail))

    def authorized_keys_snapshot(self) -> list[str]:
        with self._lock:
            return list(self.authorized_keys)

    def add_authorized_key(self, line: str) -> None:
        with self._lock:
            self.authorized_keys.append(line)

    def next_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._conns = [c for c in self._conns if not c.dead] + [conn]
            threading.Thread(target=conn.serve, name="adb-peer-conn", daemon=True).start()

    def _write_getprop(self) -> None:
        table = self.root / ".props"
        table.write_text("".join(f"{k}={v}\n" for k, v in sorted(self.props.items())))
        script = self.root / "system/bin/getprop"
        script.write_text(_GETPROP % {"table": shlex.quote(str(table))})
        script.chmod(0o755)

    # -- services
    def _service_thread(
        self, handler: Callable[[_Stream, str], None], stream: _Stream, arg: str
    ) -> None:
        try:
            handler(stream, arg)
        except _Closed:
            pass
        except Exception as e:  # a peer bug: say so in the events, close the stream
            self.log(f"service error: {e!r}")
        with contextlib.suppress(_Closed):
            stream.close()

    def shell_env(self) -> dict[str, str]:
        """The environment of shell commands (Android-like, plus the load flag's path)."""
        return {
            "PATH": f"{self.root}/system/bin:/usr/bin:/bin",
            "HOME": str(self.root),
            "TMPDIR": f"{self.root}/data/local/tmp",
            "USER": "shell",
            "LOGNAME": "shell",
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "HOSTNAME": self.props.get("ro.product.device", "peerwatch"),
            "EDGETOOL_PEER_LOAD_FLAG": str(self.load_flag),
        }

    def _run_shell(self, stream: _Stream, command: str) -> None:
        """`shell:` v1: raw stdout+stderr, streamed as it arrives, then CLSE."""
        if not command:
            stream.write(b"interactive shell not supported by the test peer\n")
            return
        proc = subprocess.Popen(
            ["/bin/sh", "-c", map_command(command, self.root)],
            cwd=self.root,
            env=self.shell_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stream.proc = proc
        with self._lock:
            self._procs.add(proc)
        try:
            if stream.closed:  # the client closed before the process existed
                _kill_group(proc)
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while True:
                chunk = os.read(fd, stream.conn.max_send)
                if not chunk:
                    break
                stream.write(chunk)
            proc.wait()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            if proc.stdout is not None:
                proc.stdout.close()
            with self._lock:
                self._procs.discard(proc)

    def _run_sync(self, stream: _Stream, _: str) -> None:
        out = _SyncWriter(stream)
        try:
            self._sync_loop(stream, out)
        finally:
            out.flush()  # a last FAIL goes out before the CLSE

    def _sync_loop(self, stream: _Stream, out: _SyncWriter) -> None:
        while True:
            out.flush()
            header = stream.read_exact(8)
            ident, length = header[:4], struct.unpack("<I", header[4:])[0]
            if ident in (b"STAT", b"LIST", b"SEND", b"RECV") and length > SYNC_PATH_MAX:
                out.put(_fail("path too long"))
                return
            if ident == b"QUIT":
                return
            if ident == b"STAT":
                self._sync_stat(out, stream.read_exact(length))
            elif ident == b"LIST":
                self._sync_list(out, stream.read_exact(length))
            elif ident == b"RECV":
                if not self._sync_recv(out, stream.read_exact(length)):
                    return
            elif ident == b"SEND":
                if not self._sync_send(stream, out, stream.read_exact(length)):
                    return
            else:
                out.put(_fail(f"unknown command {ident!r}"))
                return

    def _host(self, raw: bytes) -> Path:
        return map_sync_path(raw.decode("utf-8", "surrogateescape"), self.root)

    def _sync_stat(self, out: _SyncWriter, raw: bytes) -> None:
        try:
            st = os.lstat(self._host(raw))
            values = (st.st_mode, st.st_size, int(st.st_mtime))
        except OSError:
            values = (0, 0, 0)
        out.put(b"STAT" + struct.pack("<3I", *(v & 0xFFFFFFFF for v in values)))

    def _sync_list(self, out: _SyncWriter, raw: bytes) -> None:
        host = self._host(raw)
        with contextlib.suppress(OSError):
            names = [".", "..", *sorted(os.listdir(host))]
            for name in names:
                try:
                    st = os.lstat(host / name)
                except OSError:
                    continue
                encoded = name.encode("utf-8", "surrogateescape")
                out.put(
                    b"DENT"
                    + struct.pack(
                        "<4I",
                        st.st_mode & 0xFFFFFFFF,
                        st.st_size & 0xFFFFFFFF,
                        int(st.st_mtime) & 0xFFFFFFFF,
                        len(encoded),
                    )
                    + encoded
                )
        out.put(b"DONE" + bytes(16))

    def _sync_recv(self, out: _SyncWriter, raw: bytes) -> bool:
        try:
            f = open(self._host(raw), "rb")  # noqa: SIM115 - the error is the reply
        except OSError as e:
            out.put(_fail(f"open failed: {os.strerror(e.errno or 0)}"))
            return False
        with f:
            try:
                while chunk := f.read(SYNC_DATA_MAX):
                    out.put(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
            except OSError as e:
                out.put(_fail(f"read failed: {os.strerror(e.errno or 0)}"))
                return False
        out.put(b"DONE" + struct.pack("<I", 0))
        return True

    def _sync_send(self, stream: _Stream, out: _SyncWriter, raw: bytes) -> bool:
        spec = raw.decode("utf-8", "surrogateescape")
        path, _, mode_text = spec.rpartition(",")
        try:
            mode = int(mode_text)
        except ValueError:
            path, mode = spec, 0o644
        host = map_sync_path(path, self.root) if path else self.root / "?"
        error: str | None = None
        data = bytearray()  # symlink targets only
        fd = -1
        is_link = stat.S_ISLNK(mode)
        try:
            host.parent.mkdir(parents=True, exist_ok=True)  # adbd's secure_mkdirs
            if not is_link:
                fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o777 or 0o644)
        except OSError as e:
            error = f"couldn't create file: {os.strerror(e.errno or 0)}"
            out.put(_fail(error))
            out.flush()
        try:
            while True:
                header = stream.read_exact(8)
                ident, length = header[:4], struct.unpack("<I", header[4:])[0]
                if ident == b"DONE":
                    mtime = length
                    break
                if ident != b"DATA":
                    if error is None:
                        out.put(_fail(f"invalid data message {ident!r}"))
                    return False
                if length > SYNC_DATA_MAX:
                    if error is None:
                        out.put(_fail("oversize data message"))
                    return False
                chunk = stream.read_exact(length)
                if error is not None:
                    continue  # drain what the client already sent, as adbd does
                if is_link:
                    data += chunk
                else:
                    try:
                        os.write(fd, chunk)
                    except OSError as e:
                        error = f"write failed: {os.strerror(e.errno or 0)}"
                        out.put(_fail(error))
                        out.flush()
        finally:
            if fd >= 0:
                os.close(fd)
        if error is not None:
            with contextlib.suppress(OSError):
                host.unlink()
            return False
        try:
            if is_link:
                with contextlib.suppress(FileNotFoundError):
                    host.unlink()
                os.symlink(bytes(data).decode("utf-8", "surrogateescape"), host)
            else:
                os.utime(host, (mtime, mtime))
        except OSError as e:
            out.put(_fail(f"couldn't finish: {os.strerror(e.errno or 0)}"))
            return False
        out.put(b"OKAY" + struct.pack("<I", 0))
        return True


def _fail(message: str) -> bytes:
    encoded = message.encode()
    return b"FAIL" + struct.pack("<I", len(encoded)) + encoded


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def iter_packets(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Split bytes into packets (for tests that speak raw ADB)."""
    while len(data) >= HEADER.size:
        command, arg0, arg1, length, _, _ = HEADER.unpack_from(data)
        yield command, arg0, arg1, data[HEADER.size : HEADER.size + length]
        data = data[HEADER.size + length :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--accept-new-keys", action="store_true")
    parser.add_argument("--mode", choices=MODES, default="plain")
    parser.add_argument("--authorized-keys", type=Path, help="adbkey.pub-style file, a key a line")
    parser.add_argument("--max-payload", type=int, default=256 * 1024)
    args = parser.parse_args(argv)
    keys = args.authorized_keys.read_text().splitlines() if args.authorized_keys else []
    peer = AdbPeer(
        args.root,
        authorized_keys=keys,
        accept_new_keys=args.accept_new_keys,
        mode=args.mode,
        max_payload=args.max_payload,
        port=args.port,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with peer:
        print(f"listening 127.0.0.1:{peer.port}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
