"""NusPort over the TCP NUS bridge, the Espruino REPL driver, the Bangle fit check."""

from __future__ import annotations

import builtins
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest

from edgetool.errors import ConfigError, DeviceError, ModelError
from edgetool.targets import McuSettings, Target
from edgetool.testing.nus_peer import NusPeer
from edgetool.transport.ble_uart import BleUartSettings, open_nus_port
from edgetool.watch.espruino import EspruinoConsole


def _read_until(port: Any, needle: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    end = time.monotonic() + timeout
    while needle not in data and time.monotonic() < end:
        data += port.read(1)
        data += port.read(port.in_waiting)
    return data


def test_writes_are_split_into_20_byte_packets_and_notifications_reassembled() -> None:
    with NusPeer() as peer:
        port = open_nus_port(BleUartSettings(peer.address, timeout=5))
        try:
            line = b"\x10" + b"frobnicate(" + b"x" * 90 + b")\n"
            port.write(line)
            reply = _read_until(port, b"\r\n")
        finally:
            port.close()
    assert peer.write_sizes and max(peer.write_sizes) <= 20
    assert len(peer.write_sizes) == math.ceil(len(line) / 20)
    assert sum(peer.write_sizes) == len(line)
    assert peer.violations == []
    # The error line is longer than one notification: it arrived in pieces, read as one.
    assert reply.startswith(b"Uncaught SyntaxError") and len(reply) > 20
    assert max(peer.notify_sizes) <= 20 and len(peer.notify_sizes) >= 2
    assert port.stats.packets_out == len(peer.write_sizes)
    assert port.stats.bytes_in == len(reply)


def test_a_longer_write_is_a_violation_that_drops_the_link() -> None:
    with NusPeer() as peer:
        port = open_nus_port(BleUartSettings(peer.address, timeout=5, write_size=40))
        try:
            port.write(b"\x10" + b"y" * 39)
            with pytest.raises(DeviceError, match="dropped"):
                end = time.monotonic() + 5
                while time.monotonic() < end:
                    port.read(1)
        finally:
            port.close()
    assert peer.violations == ["GATT write of 40 bytes"]


def test_read_honours_the_port_timeout() -> None:
    with NusPeer() as peer:
        port = open_nus_port(BleUartSettings(peer.address, timeout=5))
        try:
            port.timeout = 0.3
            started = time.monotonic()
            assert port.read(10) == b""
            elapsed = time.monotonic() - started
        finally:
            port.close()
    assert 0.25 <= elapsed < 2.0


class ScriptedPort:
    """Answers each line with noise around the marker the driver asked for."""

    def __init__(self, reply: str | None, noise: bool = True) -> None:
        self.timeout: float | None = 0.1
        self.reply = reply
        self.noise = noise
        self.out = bytearray()
        self.sent = bytearray()
        self.marks: list[str] = []

    @property
    def in_waiting(self) -> int:
        return len(self.out)

    def read(self, size: int = 1) -> bytes:
        if not self.out:
            time.sleep(0.01)
        data = bytes(self.out[:size])
        del self.out[:size]
        return data

    def write(self, data: bytes) -> int:
        self.sent += data
        if data.endswith(b"\n") and self.reply is not None:
            text = data.decode().lstrip("\x10")
            mark = "".join(re.findall(r'"(@ET)"\+"([^"]+)"', text)[0])
            if self.noise:
                # an echo (as if DLE were ignored), a stale marker-like line, a prompt
                self.out += text.replace("\n", "\r\n").encode()
                self.out += b"=undefined\r\n>old output @ETzz.1#[9]\r\n>"
            self.marks.append(mark)
            self.out += f"{mark}{self.reply}\r\n>".encode()
        return len(data)

    def close(self) -> None: ...


def test_evaluate_finds_its_marker_among_echo_prompts_and_old_output() -> None:
    console = EspruinoConsole(ScriptedPort('{"free":11000,"ok":true}'), "scripted", 2.0)
    assert console.evaluate("process.memory()") == {"free": 11000, "ok": True}
    # Every line went out echo-off (DLE) and the sent text never contains the marker.
    port = console.port
    assert isinstance(port, ScriptedPort)
    assert port.sent.startswith(b"\x10print(")
    assert port.marks and port.marks[0].encode() not in port.sent


def test_uncaught_and_silence_are_device_errors() -> None:
    port = ScriptedPort(None)
    console = EspruinoConsole(port, "scripted", 0.5)
    port.out += b'Uncaught ReferenceError: "nope" is not defined\r\n'
    with pytest.raises(DeviceError, match="Uncaught ReferenceError"):
        console.evaluate("nope")
    with pytest.raises(DeviceError, match="stopped answering"):
        console.evaluate("1+1")


def test_missing_bleak_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "bleak" or name.startswith("bleak."):
            raise ImportError("No module named 'bleak'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError, match="needs bleak") as info:
        open_nus_port(BleUartSettings("AA:BB:CC:DD:EE:FF"))
    assert info.value.hint == "pip install 'edgetool[ble]'"


def _bangle(tmp_path: Path) -> Target:
    mcu = McuSettings("bangle2", "none", 8 << 20, 140_000, arena_bytes=32768)
    return Target(
        "bangle2", "mcu", BleUartSettings("tcp://127.0.0.1:1"), tmp_path / "b.toml", mcu=mcu
    )


@pytest.mark.slow
def test_fit_check_counts_model_arena_and_tflm(home: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from edgetool.export.build import export
    from edgetool.flows.bangle import TFDATA_BYTES, check_fit

    target = _bangle(tmp_path)
    cbnet = export("cbnet-classifier", "tflite", "int8")
    fit = check_fit(target, cbnet)
    assert fit.model_bytes == cbnet.size < 20_000
    assert 4_000 < fit.arena_needed <= fit.arena_bytes == 32768
    assert fit.ram_needed == cbnet.size + 32768 + TFDATA_BYTES <= 140_000
    stepped = export("l2mu-watch", "tflite", "fp32")  # float32 I/O: accepted too
    assert check_fit(target, stepped).ram_needed == stepped.size + 32768 + TFDATA_BYTES
    assert target.mcu is not None
    small = replace(target, mcu=replace(target.mcu, ram_bytes=100_000))
    with pytest.raises(ModelError) as info:
        check_fit(small, stepped)
    message = info.value.message
    assert f"{stepped.size:,} B" in message and "100,000 B" in message
    assert "\n" not in message
