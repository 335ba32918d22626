"""Link profiles, tc's rate notation, the shapers' tc commands, and the refusal without
root (in a real unprivileged process). The links themselves: tests/integration."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgetool
from edgetool.errors import ConfigError, UsageError
from edgetool.paths import links_dir
from edgetool.split.link import (
    NONE,
    Forwarder,
    LinkProfile,
    link_names,
    load_link,
    netem_argv,
    open_link,
    parse_bandwidth,
    tbf_argv,
    tbf_burst,
)
from tests.as_nobody import nobody_python


def _profile(path: Path, text: str) -> LinkProfile:
    path.write_text(text, encoding="utf-8")
    return load_link(str(path))


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("20mbit", 20e6),
        ("800kbit", 800e3),
        ("1gbit", 1e9),
        ("1Mbit", 1e6),
        ("2.5mbit", 2.5e6),
        ("9600", 9600.0),
        ("9600bit", 9600.0),
        ("1mibit", 1024.0**2),
        ("100kbps", 800e3),
        ("1mbps", 8e6),
        ("125bps", 1000.0),
    ],
)
def test_bandwidth_in_tc_notation(text: str, bits: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(bits)


@pytest.mark.parametrize("text", ["", "fast", "20 mbits", "-1mbit", "0kbit", "1xbit", "mbit"])
def test_bandwidth_that_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bandwidth(text)


def test_shipped_profiles_load_with_their_figures() -> None:
    assert link_names() == ["ble", "lte", "wifi", "none"]
    wifi = load_link("wifi")
    assert (wifi.bits_per_second, wifi.rtt_ms, wifi.jitter_ms, wifi.loss) == (20e6, 10, 2, 0)
    assert wifi.source == links_dir() / "wifi.toml"
    assert wifi.describe() == "wifi: 20mbit, RTT 10 ms ± 2 ms, loss 0 %"
    assert load_link("lte").describe() == "lte: 5mbit, RTT 50 ms ± 10 ms, loss 0.5 %"
    assert load_link("ble").bits_per_second == 800e3
    for name in ("wifi", "lte", "ble"):
        assert "assumption" in (links_dir() / f"{name}.toml").read_text(encoding="utf-8")


def test_none_is_the_unshaped_loopback_link() -> None:
    assert load_link("none") is NONE
    assert NONE.source is None and math.isinf(NONE.bits_per_second)
    assert "unshaped" in NONE.describe()


def test_a_users_profile_by_path(tmp_path: Path) -> None:
    profile = _profile(tmp_path / "lab.toml", 'bandwidth = "1mbit"\nrtt_ms = 40\n')
    assert (profile.name, profile.bits_per_second, profile.rtt_ms) == ("lab", 1e6, 40.0)
    assert (profile.jitter_ms, profile.loss) == (0.0, 0.0)
    assert profile.ideal_seconds(100_000) == pytest.approx(0.02 + 0.8)


def test_unknown_link_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown link 'wifi6' \(known: ble, lte, wifi, none\)"):
        load_link("wifi6")


def test_every_problem_of_a_profile_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    text = 'bandwidth = "fast"\njitter_ms = -1\nloss = 1.5\nspeed = 3\n'
    with pytest.raises(ConfigError) as caught:
        _profile(path, text)
    message = str(caught.value)
    assert message.startswith(f"{path}: 5 problems:")
    assert "key 'bandwidth' must be a positive rate in tc's notation" in message
    assert "missing required key 'rtt_ms'" in message
    assert "key 'jitter_ms' must be a number of milliseconds ≥ 0, got -1" in message
    assert "key 'loss' must be a fraction from 0 to below 1 (0.01 = 1 %), got 1.5" in message
    assert "unknown key 'speed'" in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rtt_ms = 10\n", "missing required key 'bandwidth'"),
        ("bandwidth = 20\nrtt_ms = 10\n", "key 'bandwidth' must be a string, got 20"),
        ('bandwidth = "1mbit"\nrtt_ms = "10"\n', "key 'rtt_ms' must be a number"),
        ('bandwidth = "1mbit"\nrtt_ms = true\n', "key 'rtt_ms' must be a number"),
        (
            'bandwidth = "1mbit"\nrtt_ms = 10\njitter_ms = 20\n',
            "'jitter_ms' (20) must not exceed 'rtt_ms' (10)",
        ),
        ('bandwidth = "1mbit"\nrtt_ms = 10\nloss = 1\n', "key 'loss' must be a fraction"),
        ('bandwidth = "1mbit"\nrtt_ms = 10\nloss = nan\n', "key 'loss' must be a fraction"),
        ('bandwidth = "1mbit"\nrtt_ms = [10', "malformed TOML"),
    ],
)
def test_one_bad_key_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _profile(tmp_path / "bad.toml", text)
    assert "\n" not in str(caught.value)
    assert needle in str(caught.value)


def test_netem_argv_halves_rtt_and_jitter_per_direction(tmp_path: Path) -> None:
    lte = load_link("lte")
    assert netem_argv("ns-dev", "edge0", lte) == [
        "tc", "-n", "ns-dev", "qdisc", "add", "dev", "edge0", "root", "netem",
        "delay", "25ms", "5ms", "loss", "0.5%", "rate", "5000000bit",
    ]  # fmt: skip
    plain = _profile(tmp_path / "plain.toml", 'bandwidth = "800kbit"\nrtt_ms = 3\n')
    assert netem_argv("n", "d", plain)[9:] == ["delay", "1.5ms", "rate", "800000bit"]


def test_tbf_argv_and_its_burst_fit_one_packet_at_least() -> None:
    ble = load_link("ble")
    assert tbf_argv("ns-srv", "edge0", ble) == [
        "tc", "-n", "ns-srv", "qdisc", "add", "dev", "edge0", "root", "tbf",
        "rate", "800000bit", "burst", "1600", "latency", "200ms",
    ]  # fmt: skip
    assert tbf_burst(load_link("wifi")) == 5000  # 2 ms of 20 Mbit/s


def test_shaping_is_refused_without_root_in_one_line() -> None:
    script = (
        "import sys\n"
        "from edgetool.errors import EdgetoolError\n"
        "from edgetool.split.link import load_link, open_link\n"
        "try:\n"
        "    with open_link(load_link('wifi')):\n"
        "        print('opened')\n"
        "except EdgetoolError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "    sys.exit(exc.exit_code)\n"
    )
    repo = Path(edgetool.__file__).resolve().parents[1]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [*nobody_python(), "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == UsageError.exit_code, done.stderr
    assert done.stdout.splitlines() == [
        "UsageError link 'wifi' needs root to create network namespaces "
        "(run as root, or use --link none)"
    ]


def test_none_link_carries_frames_both_ways() -> None:
    with open_link(NONE) as channel:
        assert channel.facts["shaper"] == "none"
        assert channel.facts["addresses"] == {"device": "127.0.0.1", "server": "127.0.0.1"}
        json.dumps(channel.facts, allow_nan=False)  # facts go into a run's manifest
        assert channel.up(b"x" * 70_000) >= 0
        assert channel.last_received == b"x" * 70_000
        assert channel.down(b"") >= 0
        assert channel.last_received == b""


def _ipv4(source: bytes, destination: bytes, number: int) -> bytes:
    """Enough of an IPv4 packet for the forwarder: version, addresses, a sequence number."""
    return bytes([0x45]) + bytes(11) + source + destination + number.to_bytes(4, "big")


def test_forwarder_delays_drops_and_never_reorders() -> None:
    device, device_far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    server, server_far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (device, server, device_far, server_far):
        sock.setblocking(False)
    a, b = socket.inet_aton("10.213.0.2"), socket.inet_aton("10.213.0.1")
    profile = LinkProfile("t", "1gbit", 1e9, rtt_ms=40.0, jitter_ms=20.0, loss=0.2, source=None)
    forwarder = Forwarder((device.fileno(), server.fileno()), profile, 11, {a, b})
    forwarder.start()
    try:
        sent = time.monotonic()
        for number in range(200):
            device_far.send(_ipv4(a, b, number))
        device_far.send(_ipv4(a, socket.inet_aton("192.0.2.1"), 999))  # not ours: stays
        got: list[int] = []
        first_arrival = None
        deadline = sent + 10.0
        while len(got) < 200 - forwarder.dropped and time.monotonic() < deadline:
            select.select([server_far], [], [], 0.5)
            with contextlib.suppress(BlockingIOError):
                packet = server_far.recv(100)
                first_arrival = first_arrival or time.monotonic()
                got.append(int.from_bytes(packet[20:24], "big"))
    finally:
        forwarder.stop()
    assert first_arrival is not None and first_arrival - sent >= 0.010  # one way: 20 ± 10 ms
    assert got == sorted(got) and 999 not in got  # jitter never reorders
    assert forwarder.foreign == 1
    assert 20 <= forwarder.dropped <= 60 and len(got) == 200 - forwarder.dropped


@pytest.mark.skipif(os.geteuid() != 0, reason="as non-root the root check refuses first")
def test_shaping_without_iproute2_is_refused_in_one_line(tmp_path: Path) -> None:
    repo = Path(edgetool.__file__).resolve().parents[1]
    script = (
        "import sys\n"
        "from edgetool.errors import EdgetoolError\n"
        "from edgetool.split.link import load_link, open_link\n"
        "try:\n"
        "    with open_link(load_link('lte')):\n"
        "        print('opened')\n"
        "except EdgetoolError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(exc.exit_code)\n"
    )
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(repo)}  # no ip, no tc on it
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == UsageError.exit_code, done.stderr
    assert done.stdout.splitlines() == [
        "link 'lte' needs ip and tc (iproute2) to shape a link "
        "(install iproute2, or use --link none)"
    ]


def test_an_unknown_shaper_is_refused_before_anything_is_created() -> None:
    with (
        pytest.raises(UsageError, match="unknown shaper 'htb'"),
        open_link(load_link("wifi"), shaper="htb"),
    ):
        pass
