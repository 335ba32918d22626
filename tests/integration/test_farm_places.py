"""Places for the device farm: local flock locks, and a real labgrid coordinator on loopback.

Holders run in child processes (the same `hold()` a farm job uses) so that waiting,
SIGKILL, SIGTERM and Ctrl-C are real; the coordinator's own view (`labgrid-client
places` / `reservations`) is the judge of whether a place was given back.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.errors import ConfigError, ConnectError, DeviceError
from edgetool.farm.places import (
    LabgridPlaces,
    LocalLocks,
    open_places,
    parse_places,
    parse_resources,
)

pytestmark = pytest.mark.integration

HAVE_LABGRID = importlib.util.find_spec("labgrid") is not None
needs_labgrid = pytest.mark.skipif(
    not HAVE_LABGRID, reason="labgrid not installed (pip install -e '.[farm]')"
)

# A farm job in miniature: hold a place, report as JSON lines, keep it until told or killed.
HOLDER = r"""
import json, sys, time
from pathlib import Path
from edgetool.farm.places import LabgridPlaces, LocalLocks
kind, where, target, hold_s, timeout, prio = sys.argv[1:7]
provider = LocalLocks(Path(where)) if kind == "local" else LabgridPlaces(where)
def say(**event):
    print(json.dumps({"t": time.time(), **event}), flush=True)
started = time.monotonic()
say(event="start")
try:
    with provider.hold(target, timeout=float(timeout), priority=int(prio)) as place:
        say(event="held", waited=time.monotonic() - started, env=place.env)
        time.sleep(float(hold_s))
    say(event="released")
except KeyboardInterrupt as exc:
    say(event="interrupted", type=type(exc).__name__)
    sys.exit(130)
except Exception as exc:
    say(event="error", type=type(exc).__name__, message=str(exc))
    sys.exit(1)
"""


class Holder:
    """A child process holding a place; `expect()` reads its next JSON event."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""  # own buffer: select() cannot see lines a file object already read

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return b""
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return b""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def expect(self, event: str, timeout: float = 60) -> dict[str, Any]:
        """The next event (skipping "start" unless that is the one wanted)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if not line:
                code = self.proc.poll()
                err = ""
                if code is not None and self.proc.stderr is not None:
                    err = self.proc.stderr.read().decode(errors="replace")
                raise AssertionError(f"holder sent no {event!r} within {timeout} s ({code}) {err}")
            got: dict[str, Any] = json.loads(line)
            if got["event"] == "start" and event != "start":
                continue
            assert got["event"] == event, got
            return got

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


# --------------------------------------------------------------------------- local locks


def test_local_second_holder_waits_then_gets_it(tmp_path: Path, holders: list[Holder]) -> None:
    with LocalLocks(tmp_path).hold("rpi4", timeout=5) as place:
        assert place.resources == {"lock": str(tmp_path / "rpi4.lock")}
        second = Holder("local", str(tmp_path), "rpi4", "0", "60", "0")
        holders.append(second)
        second.expect("start")
        time.sleep(1.0)  # second is in hold() by now, polling
        released = time.time()
    got = second.expect("held")
    assert got["t"] >= released
    assert got["waited"] > 0.9
    second.expect("released")


def test_local_timeout_names_the_holder_pid(tmp_path: Path, holders: list[Holder]) -> None:
    first = Holder("local", str(tmp_path), "rpi4", "60", "5", "0")
    holders.append(first)
    first.expect("held")
    locks = LocalLocks(tmp_path)
    started = time.monotonic()
    with pytest.raises(DeviceError) as info, locks.hold("rpi4", timeout=0.5):
        pass
    assert 0.4 < time.monotonic() - started < 3
    message = str(info.value)
    assert "\n" not in message
    assert f"target rpi4 is in use by pid {first.proc.pid} (" in message
    assert info.value.exit_code == 7


def test_local_sigkilled_holder_frees_the_lock(tmp_path: Path, holders: list[Holder]) -> None:
    first = Holder("local", str(tmp_path), "rpi4", "600", "5", "0")
    holders.append(first)
    first.expect("held")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    with LocalLocks(tmp_path).hold("rpi4", timeout=5) as place:
        assert place.name == "rpi4" and place.env == {}
        assert not place.power_cycle()


def test_local_different_targets_do_not_block(tmp_path: Path) -> None:
    locks = LocalLocks(tmp_path)
    inside = threading.Barrier(2, timeout=5)

    def hold(target: str) -> None:
        with locks.hold(target, timeout=1):
            inside.wait()  # both inside at once, or the barrier times out

    threads = [threading.Thread(target=hold, args=(t,)) for t in ("rpi4", "watch")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not inside.broken


def test_local_lock_released_on_exception_and_keyboard_interrupt(tmp_path: Path) -> None:
    locks = LocalLocks(tmp_path)
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), locks.hold("rpi4", timeout=1):
            raise exc
        with locks.hold("rpi4", timeout=0):
            pass
    assert (tmp_path / "rpi4.lock").read_text() == ""  # no stale holder note left


def test_local_provider_has_no_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGETOOL_COORDINATOR", raising=False)
    monkeypatch.setenv("EDGETOOL_STATE_DIR", str(tmp_path))
    provider = open_places(None)
    assert isinstance(provider, LocalLocks)
    assert provider.lock_dir == tmp_path / "locks"
    assert provider.places_with_tags({}) == []
    with pytest.raises(ConfigError, match="need a labgrid coordinator"):
        provider.places_with_tags({"lab": "x"})
    monkeypatch.setenv("EDGETOOL_COORDINATOR", "127.0.0.1:1")
    assert isinstance(open_places(None), LabgridPlaces)


# --------------------------------------------------------------------------- labgrid

SERVICES = {
    "board-a": ("127.0.0.1", 2201, "root"),
    "board-b": ("127.0.0.1", 2202, "pi"),
    "rpi4.lab": ("127.0.0.1", 2203, "edge"),
    "relay-board": ("127.0.0.1", 2204, "root"),
}


class Relay(http.server.ThreadingHTTPServer):
    """A "simplerest" power switch on loopback: records each GET /relay/INDEX/VALUE."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                relay.calls.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"1")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    server = Relay()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, relay: Relay) -> Iterator[Any]:
    if not HAVE_LABGRID:
        pytest.skip("labgrid not installed (pip install -e '.[farm]')")
    from tests.labgrid_env import labgrid_env

    relay_url = f"http://127.0.0.1:{relay.server_address[1]}/relay/{{index}}/{{value}}"
    with labgrid_env(
        tmp_path_factory.mktemp("lab"),
        SERVICES,
        tags={"board-a": {"lab": "x"}, "board-b": {"lab": "x", "soc": "bcm2711"}},
        extra_resources={
            "rpi4.lab": {"NetworkSerialPort": {"host": "127.0.0.1", "port": 4000}},
            "relay-board": {
                "NetworkPowerPort": {"model": "simplerest", "host": relay_url, "index": 3}
            },
        },
    ) as env:
        print(f"labgrid coordinator up in {env.coordinator_startup_s:.2f} s")
        yield env


def assert_given_back(lab: Any) -> None:
    """The coordinator's own view: nothing acquired, no reservation left."""
    assert lab.acquired() == set(), lab.client("-v", "places").stdout
    assert lab.reservations() == [], lab.client("reservations").stdout


@needs_labgrid
def test_hold_gives_env_and_gives_back(lab: Any) -> None:
    places = LabgridPlaces(lab.url)
    started = time.monotonic()
    with places.hold("board-a", timeout=30) as place:
        held_after = time.monotonic() - started
        assert place.env == {
            "EDGETOOL_BOARD_A_HOST": "127.0.0.1",
            "EDGETOOL_BOARD_A_PORT": "2201",
            "EDGETOOL_BOARD_A_USER": "root",
        }
        assert place.name == "board-a" and place.target == "board-a"
        assert place.resources["NetworkService"]["cls"] == "NetworkService"
        assert lab.acquired() == {"board-a"}
        assert not place.power_cycle()  # no power resource
        released_at = time.monotonic()
    released_after = time.monotonic() - released_at
    print(f"hold: {held_after:.2f} s, release: {released_after:.2f} s")
    assert_given_back(lab)


@needs_labgrid
def test_serial_port_becomes_url_and_odd_names_are_env_safe(lab: Any) -> None:
    with LabgridPlaces(lab.url).hold("rpi4.lab", timeout=30) as place:
        assert place.env == {
            "EDGETOOL_RPI4_LAB_HOST": "127.0.0.1",
            "EDGETOOL_RPI4_LAB_PORT": "2203",
            "EDGETOOL_RPI4_LAB_USER": "edge",
            "EDGETOOL_RPI4_LAB_URL": "rfc2217://127.0.0.1:4000",
        }
    assert_given_back(lab)


@needs_labgrid
def test_exception_in_body_gives_back(lab: Any) -> None:
    with pytest.raises(RuntimeError, match="deploy failed"):  # noqa: SIM117
        with LabgridPlaces(lab.url).hold("board-b", timeout=30):
            raise RuntimeError("deploy failed")
    assert_given_back(lab)


@needs_labgrid
def wait_for_reservations(lab: Any, count: int, timeout: float = 60) -> None:
    """Until the coordinator has `count` reservations (a waiter has queued)."""
    deadline = time.monotonic() + timeout
    while len(lab.reservations()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} reservations after {timeout} s"
        time.sleep(0.2)


@needs_labgrid
def test_second_holder_waits_for_release(lab: Any, holders: list[Holder]) -> None:
    with LabgridPlaces(lab.url).hold("board-b", timeout=60) as place:
        assert place.env["EDGETOOL_BOARD_B_USER"] == "pi"
        second = Holder("labgrid", lab.url, "board-b", "0", "120", "0")
        holders.append(second)
        wait_for_reservations(lab, 2)  # second is queued behind us
        time.sleep(1.5)  # ...and stays queued while we hold
        assert lab.acquired() == {"board-b"}
        released = time.time()
    got = second.expect("held")
    assert got["t"] >= released, "second holder got the place while we held it"
    assert got["env"]["EDGETOOL_BOARD_B_PORT"] == "2202"
    second.expect("released")
    assert_given_back(lab)


@needs_labgrid
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_busy_place_times_out_and_signalled_holder_gives_back(
    lab: Any, holders: list[Holder], sig: signal.Signals
) -> None:
    first = Holder("labgrid", lab.url, "board-a", "600", "30", "0")
    holders.append(first)
    first.expect("held")
    started = time.monotonic()
    with pytest.raises(DeviceError) as info, LabgridPlaces(lab.url).hold("board-a", timeout=2):
        pass
    assert time.monotonic() - started < 60  # 2 s wait + ~5 labgrid-client calls, on a busy CI
    assert "labgrid place board-a is acquired by" in str(info.value)
    assert "\n" not in str(info.value)
    assert len(lab.reservations()) == 1  # ours was cancelled; the holder's is left
    first.proc.send_signal(sig)
    got = first.expect("interrupted", timeout=30)
    assert got["type"] == ("PlaceTerminated" if sig == signal.SIGTERM else "KeyboardInterrupt")
    assert first.proc.wait(10) == 130
    assert_given_back(lab)


@needs_labgrid
def test_stale_hold_of_a_killed_holder_is_released_a_live_one_kept(
    lab: Any, holders: list[Holder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D14: labgrid never expires an acquired place, so a SIGKILLed holder left it acquired
    for good. `release_stale` gives back only what a dead edgetool of ours left."""
    monkeypatch.setenv("EDGETOOL_STATE_DIR", str(tmp_path))  # the holder's records, too
    places = LabgridPlaces(lab.url)
    holder = Holder("labgrid", lab.url, "board-b", "600", "30", "0")
    holders.append(holder)
    holder.expect("held")
    assert places.release_stale() == []  # a live holder's place is not ours to touch
    assert lab.acquired() == {"board-b"}
    holder.proc.kill()
    holder.proc.wait(10)
    assert lab.acquired() == {"board-b"}  # what a killed holder left, until someone acts
    said = places.release_stale()
    assert len(said) == 1, said
    assert said[0].startswith(
        f"released labgrid place board-b, left acquired by a killed edgetool (pid {holder.proc.pid}"
    )
    assert_given_back(lab)
    assert places.release_stale() == []  # its record went with it


@needs_labgrid
def test_unknown_place_lists_known_ones(lab: Any) -> None:
    with pytest.raises(ConfigError) as info, LabgridPlaces(lab.url).hold("board", timeout=5):
        pass
    message = str(info.value)
    assert "no labgrid place 'board'" in message
    assert "board-a, board-b, relay-board, rpi4.lab" in message
    assert_given_back(lab)


@needs_labgrid
def test_coordinator_down_is_a_quick_connect_error(lab: Any) -> None:
    from tests.labgrid_env import _free_port

    places = LabgridPlaces(f"127.0.0.1:{_free_port()}")
    started = time.monotonic()
    with pytest.raises(ConnectError) as info, places.hold("board-a", timeout=30):
        pass
    assert time.monotonic() - started < 15  # one labgrid-client call (~1 s idle)
    assert "cannot reach the labgrid coordinator at 127.0.0.1:" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConnectError):
        places.places_with_tags({"lab": "x"})


@needs_labgrid
def test_places_with_tags(lab: Any) -> None:
    places = LabgridPlaces(lab.url)
    assert places.places_with_tags({"lab": "x"}) == ["board-a", "board-b"]
    assert places.places_with_tags({"lab": "x", "soc": "bcm2711"}) == ["board-b"]
    assert places.places_with_tags({"edgetool": "rpi4.lab"}) == ["rpi4.lab"]
    assert places.places_with_tags({"lab": "y"}) == []


@needs_labgrid
def test_higher_priority_waiter_goes_first(lab: Any, holders: list[Holder]) -> None:
    """labgrid orders *waiting* reservations by priority, then age; it never preempts."""
    with LabgridPlaces(lab.url).hold("board-a", timeout=30):
        low = Holder("labgrid", lab.url, "board-a", "1", "120", "0")
        holders.append(low)
        wait_for_reservations(lab, 2)  # low's reservation is the older one
        high = Holder("labgrid", lab.url, "board-a", "1", "120", "5")
        holders.append(high)
        wait_for_reservations(lab, 3)
        time.sleep(1.5)
        assert lab.acquired() == {"board-a"}  # a higher priority does not preempt
    got_high = high.expect("held")
    got_low = low.expect("held")
    assert got_high["t"] < got_low["t"]
    high.expect("released")
    low.expect("released")
    assert_given_back(lab)


@needs_labgrid
def test_power_cycle_through_the_place(
    lab: Any, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the relay is on loopback
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with LabgridPlaces(lab.url).hold("relay-board", timeout=30) as place:
        assert place.resources["NetworkPowerPort"]["model"] == "simplerest"
        assert place.power_cycle()
    assert relay.calls == ["/relay/3/0", "/relay/3/1"]  # off, then on
    assert_given_back(lab)


def test_place_found_by_edgetool_tag_and_coordinator_spelling() -> None:
    places = LabgridPlaces("127.0.0.1")
    assert places.coordinator == "127.0.0.1:20408"  # labgrid's default port
    known = parse_places(
        "Place 'lab-rpi4-01':\n  tags: edgetool=rpi4, lab=x\n  acquired: None\n"
        "Place 'lab-watch-01':\n  acquired: vm/root\n  reservation: ABC\n"
    )
    assert known["lab-watch-01"].acquired == "vm/root"
    assert known["lab-watch-01"].reservation == "ABC"
    assert places._resolve("rpi4", None, known) == "lab-rpi4-01"
    assert places._resolve("x", "lab-watch-01", known) == "lab-watch-01"
    with pytest.raises(ConfigError, match="known places: lab-rpi4-01, lab-watch-01"):
        places._resolve("watch", None, known)
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        LabgridPlaces("127.0.0.1:http")


def test_parse_resources_reads_show_output() -> None:
    text = """Place 'p':
  matches:
    e/g/*
  acquired: vm/root
Acquired resource 'pdu' (e/g/NetworkPowerPort/pdu):
  {'acquired': 'p',
   'avail': True,
   'cls': 'NetworkPowerPort',
   'params': {'extra': {'proxy': 'localhost'}, 'host': 'http://127.0.0.1:9', 'index': '1',
              'model': 'simplerest'}}
"""
    assert parse_resources(text) == {
        "pdu": {
            "cls": "NetworkPowerPort",
            "path": "e/g/NetworkPowerPort/pdu",
            "host": "http://127.0.0.1:9",
            "index": "1",
            "model": "simplerest",
        }
    }
