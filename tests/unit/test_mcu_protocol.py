"""The host side of the bench protocol against a pty peer: a plain MLPerf Tiny DUT (text
only, no `x` extensions), a silent device and a device that prints garbage. The serial
link is a real pty opened through pyserial, as a USB UART would be."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgetool.errors import ConfigError, DeviceError, ModelError
from edgetool.export.c_export import glue
from edgetool.firmware.build import Firmware, check_fit
from edgetool.mcu.protocol import BenchClient, checked_body, crc16
from edgetool.targets import parse_target
from edgetool.testing.mlperf_dut import MlperfDut
from edgetool.transport.serial import open_port

Peer = Callable[[int, threading.Event], None]


def mlperf_dut(fd: int, stop: threading.Event) -> None:
    """The MLPerf Tiny reference DUT (edgetool.testing), 0.25 ms per inference."""
    MlperfDut().run(fd, stop)


def silent(fd: int, stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            os.read(fd, 256)


def garbage(fd: int, stop: threading.Event) -> None:
    rng = random.Random(0)
    while not stop.is_set():
        with contextlib.suppress(OSError):
            os.write(fd, bytes(rng.randrange(256) for _ in range(64)).replace(b"\n", b"."))
        time.sleep(0.01)


@contextlib.contextmanager
def pty_device(peer: Peer, timeout: float = 2.0) -> Iterator[BenchClient]:
    master, slave = os.openpty()
    stop = threading.Event()
    thread = threading.Thread(target=peer, args=(master, stop), daemon=True)
    thread.start()
    path = os.ttyname(slave)
    client = BenchClient(open_port(path, 115200, timeout), path, timeout)
    try:
        yield client
    finally:
        stop.set()
        client.close()
        os.close(slave)
        os.close(master)
        thread.join(timeout=2)


def test_plain_mlperf_tiny_device_is_driven_without_extensions() -> None:
    dut = MlperfDut()
    with pty_device(dut.run) as client:
        client.sync()
        info = client.info()
        assert (info.name, info.profile, info.model) == ("reference", "ulp-mlperf", "ic01")
        assert not info.is_edgetool and info.tick_hz is None
        data = bytes(range(100))
        client.load_hex(data)
        # MLPerf's hex loading: 31 bytes a command, so 4 `db` lines for 100 bytes.
        assert client.stats.sent > 2 * len(data)
        elapsed_us, results = client.infer(4, 1)
        assert elapsed_us == 1000
        assert results == list(dut.expected_scores(dut.buffer))


def test_events_from_a_plain_device_fill_the_same_schema() -> None:
    from edgetool import events as schema
    from edgetool.flows.base import RunSettings
    from edgetool.flows.mcu import events

    with pty_device(mlperf_dut) as client:
        client.sync()
        info = client.info()
        got = list(events(client, info, RunSettings(iterations=5, warmup=2, repeat=3), 5))
    kinds = [type(e) for e in got]
    assert kinds[:3] == [schema.Hello, schema.ModelInfo, schema.Warmup]
    assert kinds[-1] is schema.Summary
    samples = [ns for e in got if isinstance(e, schema.Samples) for ns in e.ns]
    assert samples == [250_000] * 15  # one `infer 1 0` per sample, µs -> ns
    # No process to restart on a board: each repetition is its own warm-up and window.
    assert kinds.count(schema.Warmup) == 3
    windows = [e.repetition for e in got if isinstance(e, schema.Samples) for _ in e.ns]
    assert windows == [0] * 5 + [1] * 5 + [2] * 5


def test_silent_device_times_out_with_a_clear_error() -> None:
    started = time.monotonic()
    with pty_device(silent, timeout=0.5) as client, pytest.raises(DeviceError) as err:
        client.sync(attempts=2)
    assert time.monotonic() - started < 10
    assert "does not answer" in err.value.message


def test_garbage_on_the_line_is_an_error_not_a_hang() -> None:
    started = time.monotonic()
    with pty_device(garbage, timeout=0.5) as client, pytest.raises(DeviceError) as err:
        client.sync(attempts=2)
    assert time.monotonic() - started < 10
    assert "m-ready" in err.value.message


def _mcu_toml(**mcu: object) -> dict[str, object]:
    table = {"board": "mps2-an386", "flash": "qemu", "flash_bytes": 1024, "ram_bytes": 512}
    table.update(mcu)
    return {"kind": "mcu", "transport": {"type": "serial", "url": "loop://"}, "mcu": table}


def test_mcu_targets_are_validated(tmp_path: Path) -> None:
    target = parse_target(tmp_path / "m.toml", _mcu_toml())
    assert target.mcu is not None and target.mcu.flash_bytes == 1024
    assert target.transport_type == "serial"
    with pytest.raises(ConfigError, match=r"mcu\.flash"):
        parse_target(tmp_path / "m.toml", _mcu_toml(flash="jtag"))
    with pytest.raises(ConfigError, match="ram_bytes"):
        parse_target(tmp_path / "m.toml", _mcu_toml(ram_bytes=0))
    with pytest.raises(ConfigError, match="needs an \\[mcu\\] table"):
        parse_target(tmp_path / "m.toml", {"kind": "mcu", "transport": {"type": "local"}})


def test_fit_check_names_the_bytes_over() -> None:
    firmware = Firmware("b", Path("f.elf"), 2000, 400, 256, 100, {})
    check_fit(firmware, 2000, 400, "m", "t")  # exactly full fits
    with pytest.raises(ModelError) as err:
        check_fit(firmware, 1500, 400, "cbnet:c:fp32", "nucleo")
    assert "2,000 bytes flash; nucleo has 1,500 (500 over)" in err.value.message


def test_c_glue_maps_buffers_and_refuses_non_float() -> None:
    text = glue(
        "two",
        [
            {"name": "a", "shape": [1, 4], "dtype": "float32"},
            {"name": "b", "shape": [2], "dtype": "float32"},
        ],
        [{"name": "y", "shape": [1, 3], "dtype": "float32"}],
    )
    assert "edgetool_input_bytes = 24u" in text
    assert "(edgetool_input_buffer + 16)" in text
    with pytest.raises(ModelError, match="float32"):
        glue("q", [{"name": "a", "shape": [1], "dtype": "int8"}], [])


def test_a_garbled_number_is_asked_again_never_a_sample_nor_an_internal_error() -> None:
    """Noise that turns a digit of a lap line into another character used to raise
    ValueError (exit 1) and leave the run `running`; now the line is counted as bad and
    the command asked again (issue 19 D16)."""

    def flip_a_digit(line: str) -> str:
        return "m-lap-us-10#0" if line == "m-lap-us-1000" else line

    noisy_dut = MlperfDut(noise=flip_a_digit).run

    with pty_device(noisy_dut) as client:
        client.sync()
        assert client.infer(2, 0)[0] == 500  # laps 0 and 500: clean
        # Laps 500 and 10#0, then 10#0 and 1500: both garbled; then 1500 and 2000.
        assert client.infer(2, 0)[0] == 500
        assert (client.stats.bad_lines, client.stats.retries) == (2, 2)


def test_a_reply_garbled_every_time_is_one_device_error_after_bounded_retries() -> None:
    def garble_laps(line: str) -> str:
        return line.replace("m-lap-us-", "m-lap-us-#") if line.startswith("m-lap") else line

    with pty_device(MlperfDut(noise=garble_laps).run) as client:
        client.sync()
        with pytest.raises(DeviceError) as err:
            client.infer(1, 0)
    assert "`infer 1 0%` failed 8 times" in err.value.message
    assert "garbled reply 'm-lap-us-#" in err.value.message and "\n" not in err.value.message
    assert client.stats.retries == 7


def test_a_lost_command_is_sent_again_within_the_timeout() -> None:
    """Issue 19 D16: noise ate the `%` of a command: no reply. The client waits one
    timeout, ends the half command and asks again, instead of failing the run."""
    lost = [0]

    def lose_first_infer(command: str) -> bool:
        if command.startswith("infer") and not lost[0]:
            lost[0] = 1
            return True
        return False

    with pty_device(MlperfDut(drop=lose_first_infer).run, 0.5) as client:
        client.sync()
        started = time.monotonic()
        assert client.infer(4, 1)[0] == 1000
        assert time.monotonic() - started < 30
    assert lost[0] == 1 and client.stats.retries == 1


def test_plain_device_runs_are_marked_unverified() -> None:
    with pty_device(mlperf_dut) as client:
        client.sync()
        info = client.info()
        assert not info.wire_checksum and not client.line_check
        assert client.wire_report()["wire_checksum"] is False


def test_line_crc_matches_the_firmware() -> None:
    """CRC-16/CCITT-FALSE: the catalogue's check value, and lines the mps2-an386 firmware
    printed (captured from QEMU)."""
    assert crc16(b"123456789") == 0x29B1
    for line, body in [
        ("m-xlap-ticks-48*e48f", "m-xlap-ticks-48"),
        ("m-infer-done*5622", "m-infer-done"),
        ("m-infer-start-2*36e3", "m-infer-start-2"),
        ("m-xresults-0-[0000000000000000]*4545", "m-xresults-0-[0000000000000000]"),
    ]:
        assert checked_body(line) == body
    # Every single-bit error of a tick line is caught, the digit-to-digit ones included.
    raw = b"m-xlap-ticks-48*e48f"
    for i in range(len(raw)):
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[i] ^= 1 << bit
            assert checked_body(damaged.decode("latin-1")) is None
    assert checked_body("m-xlap-ticks-48") is None  # no checksum at all
