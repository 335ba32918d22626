"""edgetool's ADB transport against the ADB device peer (real wire protocol, 127.0.0.1):
the verified put (probe, `.part`, sha256 on the device, rename), argv quoting through the
device shell, exit statuses recovered from the marker, and a connection that dies."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgetool.errors import DeviceError
from edgetool.testing.adb_peer import AdbPeer
from edgetool.transport.adb import AdbSettings, AdbTransport


@pytest.fixture
def device(tmp_path: Path) -> Iterator[tuple[AdbPeer, AdbTransport]]:
    with AdbPeer(tmp_path / "watch", accept_new_keys=True, max_payload=4096) as peer:
        settings = AdbSettings(host="127.0.0.1", port=peer.port, key=tmp_path / "adbkey", timeout=5)
        transport = AdbTransport(settings, "test")
        yield peer, transport
        transport.close()


def _on_device(peer: AdbPeer, remote: str) -> Path:
    return peer.root / remote.lstrip("/")


def test_put_many_verifies_on_the_device_and_skips_unchanged_files(
    device: tuple[AdbPeer, AdbTransport], tmp_path: Path
) -> None:
    peer, transport = device
    big, small = tmp_path / "big.bin", tmp_path / "small.txt"
    big.write_bytes(os.urandom(300 * 1024))  # sync DATA records straddle 4 KiB WRTEs
    small.write_text("hello\n")
    files = [(big, "/data/local/tmp/e/a/big.bin"), (small, "/data/local/tmp/e/b/small.txt")]
    first = transport.put_many(files)
    assert [r.skipped for r in first] == [False, False]
    for local, remote in files:
        arrived = _on_device(peer, remote)
        assert (
            hashlib.sha256(arrived.read_bytes()).hexdigest()
            == first[0 if local == big else 1].sha256
        )
        assert not arrived.with_name(arrived.name + ".part").exists()
    second = transport.put_many(files)
    assert [r.skipped for r in second] == [True, True]
    assert all(r.bytes_sent == 0 for r in second)
    pulled = tmp_path / "back.bin"
    transport.get(files[0][1], pulled)
    assert pulled.read_bytes() == big.read_bytes()


def test_commit_refuses_a_part_whose_hash_is_wrong(
    device: tuple[AdbPeer, AdbTransport], tmp_path: Path
) -> None:
    peer, transport = device
    local = tmp_path / "m.bin"
    local.write_bytes(b"model bytes")
    transport.makedirs("/data/local/tmp/c")
    transport._upload(local, "/data/local/tmp/c/m.bin.part", None)
    verdict = transport.commit(
        [("/data/local/tmp/c/m.bin.part", "/data/local/tmp/c/m.bin", "0" * 64)]
    )
    assert verdict["/data/local/tmp/c/m.bin"] == hashlib.sha256(b"model bytes").hexdigest()
    assert not _on_device(peer, "/data/local/tmp/c/m.bin").exists()
    assert not _on_device(peer, "/data/local/tmp/c/m.bin.part").exists()


def test_argv_reaches_the_device_shell_unmangled(
    device: tuple[AdbPeer, AdbTransport],
) -> None:
    peer, transport = device
    hostile = "a b; touch pwned $(touch pwned2) `touch pwned3` 'q' \"d\" \\ * \t|&"
    out = transport.run_checked(["printf", "%s\n", hostile])
    assert out == hostile
    assert not list(peer.root.rglob("pwned*"))


def test_exit_status_comes_back_from_the_marker(device: tuple[AdbPeer, AdbTransport]) -> None:
    _, transport = device
    process = transport.run(["sh", "-c", "echo partial-line-without-newline; printf tail; exit 3"])
    lines = list(process.lines())
    assert lines == ["partial-line-without-newline", "tail"]
    assert process.wait() == 3
    with pytest.raises(DeviceError, match="failed"):
        transport.run_checked(["sh", "-c", "echo nope >&2; exit 4"])


def test_a_watch_that_drops_the_connection_mid_command_is_a_device_error(
    device: tuple[AdbPeer, AdbTransport],
) -> None:
    peer, transport = device
    process = transport.run(["sh", "-c", "echo started; sleep 30; echo never"])
    threading.Timer(0.5, peer.stop).start()
    began = time.monotonic()
    with pytest.raises(DeviceError, match="connection lost"):
        list(process.lines())
    assert time.monotonic() - began < 15


def test_fast_checksum_is_adb_shells_byte_sum() -> None:
    from edgetool.transport.adb import byte_sum

    rng = np.random.default_rng(0)
    for size in (0, 1, 4095, 1 << 20):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert byte_sum(data) == sum(data) & 0xFFFFFFFF
        assert byte_sum(bytearray(data)) == byte_sum(data)
    big = b"\xff" * (17 << 20)  # wraps at 32 bits like the wire field
    assert byte_sum(big) == (255 * len(big)) & 0xFFFFFFFF
    assert byte_sum("host::\0") == sum(b"host::\0")
