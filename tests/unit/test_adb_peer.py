"""The ADB test peer against real clients: adb-shell (what edgetool's transport uses) and, in
the integration test, Debian's `adb`. The peer must be a faithful watch, not merely
self-consistent, since CI tests edgetool's ADB transport against it. These tests also pin
what adb-shell 0.4.4 does in each failure mode, so the transport can map its exceptions."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.exceptions import (
    AdbCommandFailureException,
    InvalidCommandError,
    TcpTimeoutException,
)

from edgetool.testing.adb_peer import (
    A_AUTH,
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_WRTE,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    HEADER,
    AdbPeer,
    checksum,
    map_command,
)

V1, V_SKIP = 0x01000000, 0x01000001


class Key:
    """An adb key pair made by adb-shell's own keygen."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        keygen(str(directory / "adbkey"))
        self.pub = (directory / "adbkey.pub").read_text()
        self.signer = PythonRSASigner(self.pub, (directory / "adbkey").read_text())


@pytest.fixture
def key(tmp_path: Path) -> Key:
    return Key(tmp_path / "key")


@pytest.fixture
def peer(tmp_path: Path, key: Key) -> Iterator[AdbPeer]:
    with AdbPeer(tmp_path / "watch", authorized_keys=[key.pub]) as p:
        yield p


def connect(peer: AdbPeer, key: Key, transport_timeout_s: float = 5.0) -> AdbDeviceTcp:
    dev = AdbDeviceTcp("127.0.0.1", peer.port, default_transport_timeout_s=transport_timeout_s)
    assert dev.connect(rsa_keys=[key.signer], auth_timeout_s=1, read_timeout_s=5)
    # adb-shell writes a packet's header and payload in two send()s on a socket without
    # TCP_NODELAY: Nagle plus delayed ACK cost ~40 ms per WRTE (a 300 KiB push at 4 KiB
    # payloads took 6.7 s instead of 0.02 s). edgetool's transport must set it too.
    dev._io_manager._transport._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return dev


# -- raw ADB, for what adb-shell cannot send ------------------------------------------------


class Raw:
    """A bare ADB client over a socket: packets as bytes, for malformed-input tests."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        self.buf = b""

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"", **kw: int) -> None:
        crc = kw.get("crc", checksum(data))
        magic = kw.get("magic", cmd ^ 0xFFFFFFFF)
        self.sock.sendall(HEADER.pack(cmd, arg0, arg1, len(data), crc, magic) + data)

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> tuple[int, int, int, bytes, int]:
        """(command, arg0, arg1, payload, magic)"""
        cmd, arg0, arg1, length, _, magic = HEADER.unpack(self._exact(HEADER.size))
        return cmd, arg0, arg1, self._exact(length), magic

    def is_dropped(self) -> bool:
        """True if the peer closed the connection (EOF) rather than answering."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def handshake(self, key: Key, version: int = V1) -> int:
        """CNXN + signature; returns the peer's max payload."""
        self.send(A_CNXN, version, 1 << 20, b"host::raw\0")
        cmd, arg0, _, token, _ = self.recv()
        assert (cmd, arg0) == (A_AUTH, AUTH_TOKEN)
        self.send(A_AUTH, AUTH_SIGNATURE, 0, key.signer.Sign(token))
        cmd, _, max_payload, banner, _ = self.recv()
        assert cmd == A_CNXN, banner
        return max_payload

    def close(self) -> None:
        self.sock.close()


# -- shell ---------------------------------------------------------------------------------


def test_shell_and_getprop(peer: AdbPeer, key: Key) -> None:
    dev = connect(peer, key)
    assert dev.shell("echo hi; getprop ro.product.cpu.abi") == "hi\narm64-v8a\n"
    listing = dev.shell("getprop")
    assert "[ro.product.model]: [Peer Watch (synthetic)]\n" in listing
    assert dev.shell("getprop no.such.prop fallback") == "fallback\n"
    assert dev.shell("echo to-stderr >&2") == "to-stderr\n"  # v1: stderr merged, raw
    assert peer.auth_log == [("signature-ok", key.pub.split()[1])]
    dev.close()


def test_shell_maps_device_paths_and_sets_env(peer: AdbPeer, key: Key) -> None:
    dev = connect(peer, key)
    out = dev.shell("cd /data/local/tmp && pwd; echo $EDGETOOL_PEER_LOAD_FLAG; echo $PATH")
    assert out.splitlines() == [
        f"{peer.root}/data/local/tmp",
        str(peer.load_flag),
        f"{peer.root}/system/bin:/usr/bin:/bin",
    ]
    # Only whole device prefixes are rewritten, once.
    assert map_command("ls /sdcard/x /sdcardy /x/sdcard", peer.root) == (
        f"ls {peer.root}/sdcard/x /sdcardy /x/sdcard"
    )
    dev.close()


def test_long_command_streams(peer: AdbPeer, key: Key) -> None:
    dev = connect(peer, key)
    start = time.monotonic()
    arrivals = []
    for chunk in dev.streaming_shell("echo first; sleep 1.5; echo second"):
        arrivals.append((time.monotonic() - start, chunk))
    assert arrivals[0][1] == "first\n"
    assert arrivals[0][0] < 1.0, "the first line waited for the command to end"
    assert "".join(c for _, c in arrivals) == "first\nsecond\n"
    assert arrivals[-1][0] >= 1.4
    dev.close()


def test_streams_run_concurrently(peer: AdbPeer, key: Key) -> None:
    """Two streams on one connection: the quick one finishes while the slow one runs.
    (Raw packets: adb-shell serialises threads on its transport lock, see the report.)"""
    raw = Raw(peer.port)
    raw.handshake(key)
    raw.send(A_OPEN, 1, 0, b"shell:sleep 1; echo slow\0")
    raw.send(A_OPEN, 2, 0, b"shell:echo fast\0")
    start = time.monotonic()
    seen: list[tuple[int, int, bytes, float]] = []
    while sum(1 for cmd, *_ in seen if cmd == A_CLSE) < 2:
        cmd, lid, rid, data, _ = raw.recv()
        seen.append((cmd, rid, data, time.monotonic() - start))
        if cmd == A_WRTE:
            raw.send(A_OKAY, rid, lid)
    writes = [(rid, data, t) for cmd, rid, data, t in seen if cmd == A_WRTE]
    assert [(rid, data) for rid, data, _ in writes] == [(2, b"fast\n"), (1, b"slow\n")]
    assert writes[1][2] >= 0.95, "the slow command did not sleep"
    assert writes[0][2] < writes[1][2] - 0.3, "the second stream waited for the first"
    raw.close()


def _process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_client_clse_kills_the_command(peer: AdbPeer, key: Key) -> None:
    raw = Raw(peer.port)
    raw.handshake(key)
    raw.send(A_OPEN, 7, 0, b"shell:sleep 30 & echo $!; wait\0")
    cmd, local_id, remote_id, _, _ = raw.recv()
    assert (cmd, remote_id) == (A_OKAY, 7)
    cmd, _, _, data, _ = raw.recv()
    assert cmd == A_WRTE
    pid = int(data)
    assert not _process_gone(pid)
    raw.send(A_OKAY, 7, local_id)
    raw.send(A_CLSE, 7, local_id)
    cmd, arg0, arg1, _, _ = raw.recv()
    assert (cmd, arg0, arg1) == (A_CLSE, local_id, 7)  # adbd answers a CLSE with a CLSE
    deadline = time.monotonic() + 3
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(pid), "the command outlived its stream"
    raw.close()


def test_unknown_service_is_refused(peer: AdbPeer, key: Key) -> None:
    raw = Raw(peer.port)
    raw.handshake(key)
    raw.send(A_OPEN, 3, 0, b"jdwp:1234\0")
    cmd, arg0, arg1, _, _ = raw.recv()
    assert (cmd, arg0, arg1) == (A_CLSE, 0, 3)
    raw.close()


# -- authentication --------------------------------------------------------------------------


def test_unknown_key_without_allow_times_out(tmp_path: Path, key: Key) -> None:
    with AdbPeer(tmp_path / "watch", accept_new_keys=False) as peer:
        dev = AdbDeviceTcp("127.0.0.1", peer.port, default_transport_timeout_s=5)
        start = time.monotonic()
        # After AUTH RSAPUBLICKEY adb-shell waits auth_timeout_s (as a socket timeout).
        with pytest.raises(TcpTimeoutException):
            dev.connect(rsa_keys=[key.signer], auth_timeout_s=1)
        assert time.monotonic() - start < 4
        assert [e for e, _ in peer.auth_log] == ["signature-rejected", "public-key-ignored"]
        assert peer.authorized_keys == []
        dev.close()


def test_allowed_key_is_remembered(tmp_path: Path, key: Key) -> None:
    with AdbPeer(tmp_path / "watch", accept_new_keys=True) as peer:
        first = connect(peer, key)
        assert first.shell("echo one") == "one\n"
        first.close()
        assert [e for e, _ in peer.auth_log] == ["signature-rejected", "public-key-accepted"]
        second = connect(peer, key)  # now by signature: no RSAPUBLICKEY round
        assert second.shell("echo two") == "two\n"
        assert peer.auth_log[-1][0] == "signature-ok"
        second.close()


def test_other_key_is_rejected(tmp_path: Path, key: Key) -> None:
    other = Key(tmp_path / "other")
    with AdbPeer(tmp_path / "watch", authorized_keys=[other.pub]) as peer:
        raw = Raw(peer.port)
        raw.send(A_CNXN, V1, 4096, b"host::raw\0")
        _, _, _, token, _ = raw.recv()
        raw.send(A_AUTH, AUTH_SIGNATURE, 0, key.signer.Sign(token))
        cmd, arg0, _, token2, _ = raw.recv()
        assert (cmd, arg0) == (A_AUTH, AUTH_TOKEN) and token2 != token  # a fresh token
        raw.send(A_AUTH, AUTH_SIGNATURE, 0, other.signer.Sign(token2))
        assert raw.recv()[0] == A_CNXN
        raw.close()


# -- file sync -------------------------------------------------------------------------------


def test_push_pull_300k_with_small_payload(tmp_path: Path, key: Key) -> None:
    data = os.urandom(300 * 1024)
    src, back = tmp_path / "src.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    with AdbPeer(tmp_path / "watch", authorized_keys=[key.pub], max_payload=4096) as peer:
        dev = connect(peer, key)
        dev.push(str(src), "/data/local/tmp/models/x.bin", read_timeout_s=5)
        host = peer.root / "data/local/tmp/models/x.bin"  # parent made, as adbd does
        assert host.read_bytes() == data
        digest = hashlib.sha256(data).hexdigest()
        assert dev.shell("sha256sum /data/local/tmp/models/x.bin").split()[0] == digest
        dev.pull("/data/local/tmp/models/x.bin", str(back), read_timeout_s=5)
        assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
        mode, size, _ = dev.stat("/data/local/tmp/models/x.bin")
        assert size == len(data) and mode & 0o170000 == 0o100000
        names = {bytes(f.filename) for f in dev.list("/data/local/tmp/models")}
        assert names == {b".", b"..", b"x.bin"}
        dev.close()


def test_missing_file(peer: AdbPeer, key: Key, tmp_path: Path) -> None:
    dev = connect(peer, key)
    assert dev.stat("/data/local/tmp/nope") == (0, 0, 0)
    with pytest.raises(AdbCommandFailureException, match="No such file or directory"):
        dev.pull("/data/local/tmp/nope", str(tmp_path / "nope"), read_timeout_s=5)
    assert dev.shell("echo still-usable") == "still-usable\n"
    dev.close()


def _records(stream: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while stream:
        ident, n = stream[:4], struct.unpack("<I", stream[4:8])[0]
        if ident == b"DONE":
            out.append((ident, b""))
            stream = stream[8:]
        else:
            out.append((ident, stream[8 : 8 + n]))
            stream = stream[8 + n :]
    return out


def test_sync_records_straddle_wrtes_both_ways(tmp_path: Path, key: Key) -> None:
    """A sync byte stream cut at arbitrary points (as the real adb client's is) parses; the
    peer's replies are cut at max_payload, not one record per WRTE."""
    data = os.urandom(70_000)  # more than one 64 KiB DATA record
    with AdbPeer(tmp_path / "watch", authorized_keys=[key.pub], max_payload=1000) as peer:
        raw = Raw(peer.port)
        assert raw.handshake(key) == 1000
        raw.send(A_OPEN, 5, 0, b"sync:\0")
        cmd, lid, _, _, _ = raw.recv()
        assert cmd == A_OKAY
        path = b"/sdcard/a/b.bin,33188"
        req = b"SEND" + struct.pack("<I", len(path)) + path
        for i in range(0, len(data), 65536):
            part = data[i : i + 65536]
            req += b"DATA" + struct.pack("<I", len(part)) + part
        req += b"DONE" + struct.pack("<I", 1_700_000_000)
        req += b"RECV" + struct.pack("<I", 15) + b"/sdcard/a/b.bin" + b"QUIT" + bytes(4)
        for i in range(0, len(req), 997):  # 997: every record straddles somewhere
            raw.send(A_WRTE, 5, lid, req[i : i + 997])
            assert raw.recv()[0] == A_OKAY
        got, sizes = b"", []
        while True:
            cmd, _, _, payload, _ = raw.recv()
            if cmd == A_CLSE:
                break
            assert cmd == A_WRTE
            sizes.append(len(payload))
            got += payload
            raw.send(A_OKAY, 5, lid)
        records = _records(got)
        assert records[0] == (b"OKAY", b"")
        assert b"".join(d for i, d in records[1:] if i == b"DATA") == data
        assert records[-1][0] == b"DONE"
        assert max(sizes) == 1000 and len(sizes) > 70
        host = peer.root / "sdcard/a/b.bin"
        assert host.read_bytes() == data and host.stat().st_mtime == 1_700_000_000
        raw.close()


# -- failure modes ---------------------------------------------------------------------------


def test_tls_mode(tmp_path: Path, key: Key) -> None:
    with AdbPeer(tmp_path / "watch", mode="tls", authorized_keys=[key.pub]) as peer:
        dev = AdbDeviceTcp("127.0.0.1", peer.port, default_transport_timeout_s=2)
        # adb-shell knows no STLS: "Unknown command: 1397511251 = 'b'STLS'' ..."
        with pytest.raises(InvalidCommandError, match="STLS"):
            dev.connect(rsa_keys=[key.signer], auth_timeout_s=1)
        dev.close()


def test_bad_magic_mode(tmp_path: Path, key: Key) -> None:
    with AdbPeer(tmp_path / "watch", mode="bad-magic", authorized_keys=[key.pub]) as peer:
        raw = Raw(peer.port)
        raw.send(A_CNXN, V1, 4096, b"host::raw\0")
        cmd, _, _, banner, magic = raw.recv()
        assert cmd == A_CNXN and banner.startswith(b"device::")
        assert magic != cmd ^ 0xFFFFFFFF
        raw.close()
        # adb-shell 0.4.4 never checks the magic: connect() "succeeds", and the first
        # command times out on the socket (the wedged peer answers nothing).
        dev = AdbDeviceTcp("127.0.0.1", peer.port, default_transport_timeout_s=1)
        assert dev.connect(rsa_keys=[key.signer], auth_timeout_s=1)
        with pytest.raises(TcpTimeoutException):
            dev.shell("echo x", read_timeout_s=1)
        dev.close()


def test_silent_mode(tmp_path: Path, key: Key) -> None:
    with AdbPeer(tmp_path / "watch", mode="silent") as peer:
        dev = AdbDeviceTcp("127.0.0.1", peer.port, default_transport_timeout_s=1)
        start = time.monotonic()
        with pytest.raises(TcpTimeoutException):
            dev.connect(rsa_keys=[key.signer], auth_timeout_s=1)
        assert 0.9 < time.monotonic() - start < 3
        dev.close()


@pytest.mark.parametrize(
    ("fault", "dropped"),
    [({}, False), ({"magic": A_CNXN}, True), ({"crc": 1}, True), ({"crc": 0}, True)],
)
def test_malformed_cnxn_drops_the_connection(
    peer: AdbPeer, fault: dict[str, int], dropped: bool
) -> None:
    """The CNXN itself always carries a checksum (the version is not negotiated yet)."""
    raw = Raw(peer.port)
    raw.send(A_CNXN, V_SKIP, 4096, b"host::raw\0", **fault)
    if dropped:
        assert raw.is_dropped()
        assert peer.events and peer.events[-1].startswith("drop:")
    else:
        cmd, arg0, _, token, _ = raw.recv()
        assert (cmd, arg0, len(token)) == (A_AUTH, AUTH_TOKEN, 20)
    raw.close()


@pytest.mark.parametrize(
    ("version", "crc", "dropped"),
    [
        (V1, 12345, True),
        (V1, 0, True),  # a v1 client must send the byte sum
        (V_SKIP, 0, False),  # from 0x01000001 on, 0 means "not computed"
        (V_SKIP, 12345, True),
    ],
)
def test_checksum_after_handshake(
    peer: AdbPeer, key: Key, version: int, crc: int, dropped: bool
) -> None:
    raw = Raw(peer.port)
    raw.handshake(key, version)
    raw.send(A_OPEN, 1, 0, b"shell:echo x\0", crc=crc)
    if dropped:
        assert raw.is_dropped()
    else:
        assert raw.recv()[0] == A_OKAY
        cmd, _, _, data, _ = raw.recv()
        assert (cmd, data) == (A_WRTE, b"x\n")
    raw.close()


# -- battery ---------------------------------------------------------------------------------


def _read_battery(peer: AdbPeer, name: str) -> str:
    return (peer.root / "sys/class/power_supply/battery" / name).read_text().strip()


def _wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_battery_files_sign_and_units(tmp_path: Path, key: Key) -> None:
    with AdbPeer(tmp_path / "watch", authorized_keys=[key.pub]) as peer:
        assert _read_battery(peer, "status") == "Discharging"
        assert _read_battery(peer, "present") == "1"
        assert _read_battery(peer, "voltage_now") == "3850000"  # µV
        assert _read_battery(peer, "current_now") == "-80000"  # µA, negative: discharging
        peer.load_flag.touch()
        _wait_for(lambda: _read_battery(peer, "current_now") == "-200000")
        peer.load_flag.unlink()
        _wait_for(lambda: _read_battery(peer, "current_now") == "-80000")
        dev = connect(peer, key)  # and through the device path
        out = dev.shell("cat /sys/class/power_supply/battery/current_now")
        assert out == "-80000\n"
        dev.close()
    with AdbPeer(tmp_path / "w2", current_sign=1, charging=True, charge_ua=500_000) as peer:
        assert _read_battery(peer, "status") == "Charging"
        assert _read_battery(peer, "current_now") == "-420000"  # opposite sign: into battery


def test_battery_energy_of_a_load_phase(tmp_path: Path, key: Key) -> None:
    idle, load, volts = 80_000, 120_000, 3.85
    with AdbPeer(tmp_path / "watch", authorized_keys=[key.pub], battery_period=0.01) as peer:
        dev = connect(peer, key)
        time.sleep(0.05)
        t0 = time.monotonic_ns()
        out = dev.shell(
            'touch "$EDGETOOL_PEER_LOAD_FLAG"; sleep 0.5; rm "$EDGETOOL_PEER_LOAD_FLAG"'
        )
        assert out == ""
        time.sleep(0.2)
        t1 = time.monotonic_ns()
        intervals = peer.battery.load_intervals()
        assert len(intervals) == 1
        start, end = intervals[0]
        assert end is not None and t0 < start < end < t1
        assert 0.45 < (end - start) / 1e9 < 1.0
        expected = volts * (idle * (t1 - t0) + load * (end - start)) * 1e-6 / 1e9
        assert peer.battery.energy_j(t0, t1) == pytest.approx(expected, rel=0.01)
        # The idle-only window right after: no load energy.
        t2 = time.monotonic_ns()
        time.sleep(0.1)
        t3 = time.monotonic_ns()
        idle_j = volts * idle * 1e-6 * (t3 - t2) / 1e9
        assert peer.battery.energy_j(t2, t3) == pytest.approx(idle_j, rel=0.01)
        dev.close()


# -- standalone ------------------------------------------------------------------------------


def test_standalone_main(tmp_path: Path, key: Key) -> None:
    (tmp_path / "keys").write_text(key.pub)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetool.testing.adb_peer",
            "--root",
            str(tmp_path / "watch"),
            "--authorized-keys",
            str(tmp_path / "keys"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        dev = AdbDeviceTcp("127.0.0.1", port, default_transport_timeout_s=5)
        assert dev.connect(rsa_keys=[key.signer], auth_timeout_s=1)
        assert dev.shell("getprop ro.build.version.sdk") == "33\n"
        dev.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the real adb client ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("adb") is None, reason="no real adb client (apt install adb)")
def test_real_adb_client(tmp_path: Path) -> None:
    adb = shutil.which("adb")
    assert adb is not None
    server_port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ANDROID_SDK_HOME", "ADB_VENDOR_KEYS")}
    env |= {"HOME": str(tmp_path / "home"), "ANDROID_ADB_SERVER_PORT": str(server_port)}
    (tmp_path / "home").mkdir()

    def run(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [adb, "-P", str(server_port), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    data = os.urandom(200 * 1024)
    (tmp_path / "up.bin").write_bytes(data)
    with AdbPeer(tmp_path / "watch", accept_new_keys=True, max_payload=4096) as peer:
        serial = f"127.0.0.1:{peer.port}"
        try:
            run("start-server")
            # The server's fresh key is unknown: it offers it, the "user" allows it. adb
            # connect may report "failed to authenticate" before the CNXN arrives.
            connected = run("connect", serial)
            assert connected.returncode == 0, connected.stderr
            waited = run("-s", serial, "wait-for-device", timeout=10)
            assert waited.returncode == 0, waited.stderr
            assert (tmp_path / "home/.android/adbkey.pub").exists()
            assert [e for e, _ in peer.auth_log][-1] == "public-key-accepted"

            shell = run("-s", serial, "shell", "echo hello; getprop ro.product.model")
            assert shell.stdout == "hello\nPeer Watch (synthetic)\n", shell.stderr

            push = run("-s", serial, "push", str(tmp_path / "up.bin"), "/data/local/tmp/d/x.bin")
            assert push.returncode == 0, push.stdout + push.stderr
            assert (peer.root / "data/local/tmp/d/x.bin").read_bytes() == data
            pull = run("-s", serial, "pull", "/data/local/tmp/d/x.bin", str(tmp_path / "dn.bin"))
            assert pull.returncode == 0, pull.stdout + pull.stderr
            assert (tmp_path / "dn.bin").read_bytes() == data

            missing = run("-s", serial, "pull", "/data/local/tmp/nope", str(tmp_path / "n"))
            assert missing.returncode != 0
            assert "does not exist" in missing.stdout + missing.stderr
            devices = run("devices", "-l").stdout
            assert f"{serial}" in devices and "model:Peer_Watch__synthetic_" in devices
        finally:
            run("kill-server", timeout=10)
