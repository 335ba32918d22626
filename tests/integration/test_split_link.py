"""Real shaped links: namespaces, TUNs or veths, tc qdiscs and TCP, as a split run uses
them. Shaping needs root; `--link none` is checked as user nobody."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

import edgetool
from edgetool.split.link import NONE, LinkProfile, open_link, parse_link
from tests.as_nobody import nobody_python

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="shaping a link needs root (network namespaces)"),
]


def _profile(
    name: str, bandwidth: str, rtt_ms: float, jitter_ms: float = 0, loss: float = 0
) -> LinkProfile:
    data = {"bandwidth": bandwidth, "rtt_ms": rtt_ms, "jitter_ms": jitter_ms, "loss": loss}
    return parse_link(Path(f"{name}.toml"), data)


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def _ours(facts: dict[str, object]) -> set[str]:
    spaces = facts["namespaces"]
    assert isinstance(spaces, dict)
    return set(spaces.values())


def test_100_kb_over_1_mbit_takes_at_least_the_serialisation_time() -> None:
    profile = _profile("slow", "1mbit", rtt_ms=20)
    data = os.urandom(100_000)
    with open_link(profile) as channel:
        assert channel.facts["shaper"] in ("netem", "tbf+userspace")
        assert _ours(channel.facts) <= _namespaces()
        json.dumps(channel.facts, allow_nan=False)  # facts go into a run's manifest
        up = channel.up(data)
        down = channel.down(data)
    # 800,000 bits at 1 Mbit/s: 0.8 s whatever the bucket or the headers add.
    assert up >= 0.8 and down >= 0.8, (up, down)


def test_a_tiny_frame_there_and_back_takes_at_least_the_rtt() -> None:
    profile = _profile("far", "20mbit", rtt_ms=60, jitter_ms=10)
    with open_link(profile, seed=3) as channel:
        round_trips = [channel.up(b"ping") + channel.down(b"pong") for _ in range(5)]
    # Each way is rtt/2 ± jitter/2, so a round trip is at least rtt - jitter.
    assert min(round_trips) >= 0.050, round_trips


def test_a_lossy_link_still_delivers_every_byte() -> None:
    profile = _profile("lossy", "5mbit", rtt_ms=20, jitter_ms=4, loss=0.05)
    data = os.urandom(300_000)
    with open_link(profile, seed=7) as channel:
        channel.up(data)
        arrived_up = hashlib.sha256(channel.last_received).hexdigest()
        channel.down(data[::-1])
        arrived_down = hashlib.sha256(channel.last_received).hexdigest()
    assert arrived_up == hashlib.sha256(data).hexdigest()
    assert arrived_down == hashlib.sha256(data[::-1]).hexdigest()
    if channel.facts["shaper"] == "tbf+userspace":
        packets = channel.facts["packets"]
        assert isinstance(packets, dict)
        assert packets["dropped"] > 0, packets  # TCP retransmitted what the link lost


def test_namespaces_are_removed_on_exit_an_exception_and_ctrl_c() -> None:
    with open_link(_profile("a", "10mbit", rtt_ms=2)) as channel:
        first = _ours(channel.facts)
        assert first <= _namespaces()
    assert not first & _namespaces()
    with (
        pytest.raises(RuntimeError, match="boom"),
        open_link(_profile("b", "10mbit", rtt_ms=2)) as channel,
    ):
        second = _ours(channel.facts)
        channel.up(b"half a run")
        raise RuntimeError("boom")
    assert second and not second & _namespaces()
    with pytest.raises(KeyboardInterrupt), open_link(_profile("c", "10mbit", rtt_ms=2)) as channel:
        third = _ours(channel.facts)
        raise KeyboardInterrupt
    assert third and not third & _namespaces()


def test_stale_namespaces_of_dead_runs_go_and_live_ones_stay() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"edgetool-{dead.pid}-1-dev"
    live = f"edgetool-{os.getpid()}-999-srv"
    for name in (stale, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with open_link(_profile("c", "10mbit", rtt_ms=2)):
            present = _namespaces()
        assert stale not in present
        assert live in present
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_netem_shaper_where_the_kernel_has_it() -> None:
    profile = _profile("netem", "1mbit", rtt_ms=40)
    with open_link(profile) as channel:
        if channel.facts["shaper"] != "netem":
            pytest.skip("kernel has no sch_netem: tbf+userspace ran instead (the tests above)")
        ping = channel.up(b"ping") + channel.down(b"pong")
        bulk = channel.up(os.urandom(100_000))
    assert ping >= 0.040 and bulk >= 0.8


def test_none_needs_no_root() -> None:
    script = (
        "from edgetool.split.link import load_link, open_link\n"
        "with open_link(load_link('none')) as channel:\n"
        "    channel.up(b'u' * 50000); channel.down(b'd' * 10)\n"
        "    print(channel.facts['shaper'], len(channel.last_received), channel.last_received)\n"
    )
    repo = Path(edgetool.__file__).resolve().parents[1]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [*nobody_python(), "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["none", "10", "b'dddddddddd'"]
    assert NONE.describe().startswith("none:")
