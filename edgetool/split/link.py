"""The link between a split model's device head and server tail: profiles, and a real
TCP connection through a shaped path.

A profile (`links/NAME.toml` or a user's file) has `bandwidth` (tc's notation, "20mbit"),
`rtt_ms`, `jitter_ms`, `loss` (a fraction) and an optional `description`. `open_link`
turns it into a `Channel`: both ends of one TCP connection live in this process (one clock),
so `up`/`down` time a frame from just before its first byte is sent to just after its last
byte arrives on the other end.

Shaping needs root. edgetool creates two network namespaces for the run
(`edgetool-<pid>-<n>-dev` and `-srv`) joined by a private /30, so traffic never leaves
them and the host's routes are never touched:

- `netem` (when the kernel has sch_netem): a veth pair, `netem delay/jitter/loss/rate` on
  each end.
- `tbf+userspace` (kernels without netem, as many CI machines): a TUN device in each
  namespace, the kernel's `tbf` for the rate, and a forwarder thread here that carries each
  IP packet to the other TUN after the one-way delay rtt/2 ± jitter/2 (uniform, never
  reordered) and drops it with probability `loss` (seeded). TCP then sees real delay, real
  retransmissions and the kernel-shaped rate.

`--link none` is a plain TCP connection over 127.0.0.1 and needs no root. Namespaces
left by a killed edgetool (their pid is gone) are removed at the next `open_link`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import math
import os
import platform
import queue
import random
import re
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgetool.config import TableReader, read_toml
from edgetool.errors import ConfigError, DeviceError, TransferError, UsageError
from edgetool.paths import links_dir
from edgetool.procs import pid_alive

LOG = logging.getLogger(__name__)

T = TypeVar("T")

SHAPERS = ("netem", "tbf+userspace")

# tc's rate units (tc-rate(8), case-insensitive): "bit" units count bits, "bps" units
# count BYTES per second; k/m/g/t are powers of 1000, ki/mi/gi/ti powers of 1024.
_PREFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_PREFIXES |= {"ki": 1024.0, "mi": 1024.0**2, "gi": 1024.0**3, "ti": 1024.0**4}
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(|k|m|g|t|ki|mi|gi|ti)(bit|bps)?\s*$", re.I)

_NAMESPACE = re.compile(r"^edgetool-(\d+)-(\d+)-(dev|srv)$")
_DEVICE = "edge0"
_FRAME = struct.Struct("!Q")

# Kernel constants (linux/sched.h, linux/if_tun.h): not exposed by Python's stdlib.
_CLONE_NEWNET = 0x40000000
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000

_counter = 0
_counter_lock = threading.Lock()
_netem_available: bool | None = None


def parse_bandwidth(text: str) -> float:
    """Bits per second of a rate in tc's notation ("20mbit", "800kbit", "1mibit", "100kbps"
    = 800,000 bit/s); ValueError when it is not one or is not positive."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"not a tc rate: {text!r}")
    number, prefix, unit = match.groups()
    bits = (
        float(number) * _PREFIXES[prefix.lower()] * (8.0 if (unit or "").lower() == "bps" else 1.0)
    )
    if bits <= 0:
        raise ValueError(f"rate must be positive: {text!r}")
    return bits


@dataclass(frozen=True)
class LinkProfile:
    """One link's figures, as read from its TOML (`none`: an unshaped loopback link)."""

    name: str
    bandwidth: str
    bits_per_second: float
    rtt_ms: float
    jitter_ms: float
    loss: float
    source: Path | None
    description: str = ""

    @property
    def shaped(self) -> bool:
        return self.source is not None or self.name != "none"

    def describe(self) -> str:
        """One line for a run's header: "wifi: 20mbit, RTT 10 ms ± 2 ms, loss 0 %"."""
        if not self.shaped:
            return "none: plain TCP over 127.0.0.1, unshaped"
        return (
            f"{self.name}: {self.bandwidth}, RTT {self.rtt_ms:g} ms ± {self.jitter_ms:g} ms, "
            f"loss {self.loss * 100:g} %"
        )

    def ideal_seconds(self, size: int) -> float:
        """The floor a frame of SIZE bytes cannot beat: half the RTT plus its bits at the
        rate (what bench/bench_link.py compares measured transfers against)."""
        return self.rtt_ms / 2000.0 + size * 8.0 / self.bits_per_second


NONE = LinkProfile("none", "unshaped", math.inf, 0.0, 0.0, 0.0, None, "plain TCP over loopback")


def link_names() -> list[str]:
    """The shipped profiles' names, then "none"."""
    return [*sorted(p.stem for p in links_dir().glob("*.toml")), "none"]


def load_link(name_or_path: str) -> LinkProfile:
    """A shipped profile by name ("wifi"), a user's profile by path, or "none"."""
    if name_or_path == "none":
        return NONE
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        path = Path(name_or_path).expanduser()
    else:
        path = links_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(link_names())
            raise ConfigError(
                f"unknown link '{name_or_path}' (known: {known}).",
                hint="Pass a profile's .toml path for your own link.",
            )
    return parse_link(path, read_toml(path, "link profile"))


def parse_link(source: Path, data: dict[str, Any]) -> LinkProfile:
    """A profile from its parsed TOML; every problem of the file in one ConfigError."""
    reader = TableReader(source, data)
    bandwidth = reader.required_str("bandwidth")
    bits = 1.0
    if bandwidth:
        try:
            bits = parse_bandwidth(bandwidth)
        except ValueError:
            reader.reject(
                "bandwidth", "a positive rate in tc's notation ('20mbit', '800kbit')", bandwidth
            )
    rtt = _amount(reader, "rtt_ms", "a number of milliseconds ≥ 0", None)
    jitter = _amount(reader, "jitter_ms", "a number of milliseconds ≥ 0", 0.0)
    loss = _amount(reader, "loss", "a fraction from 0 to below 1 (0.01 = 1 %)", 0.0, below=1.0)
    description = reader.text("description", "")
    if jitter > rtt:
        # One-way delay is rtt/2 ± jitter/2: more jitter than RTT would need negative delays.
        reader.problem(f"key 'jitter_ms' ({jitter:g}) must not exceed 'rtt_ms' ({rtt:g})")
    reader.finish()
    return LinkProfile(source.stem, bandwidth, bits, rtt, jitter, loss, source, str(description))


def _amount(
    reader: TableReader, key: str, expected: str, default: float | None, below: float = math.inf
) -> float:
    missing = object()
    value = reader.get(key, (int, float), expected, missing)
    if value is missing:
        if key not in reader.raw and default is None:
            reader.problem(f"missing required key '{reader.key(key)}' ({expected})")
        return default or 0.0
    if not 0 <= value < below or math.isnan(value):
        reader.reject(key, expected, value)
        return default or 0.0
    return float(value)


def _ms(value: float) -> str:
    return f"{value:g}ms"


def _rate(profile: LinkProfile) -> str:
    """The rate as plain bits for tc, so tc and parse_bandwidth can never read it apart."""
    return f"{round(profile.bits_per_second)}bit"


def netem_argv(namespace: str, device: str, profile: LinkProfile) -> list[str]:
    """The tc command shaping one end of the veth pair (each end: one direction)."""
    argv = ["tc", "-n", namespace, "qdisc", "add", "dev", device, "root", "netem"]
    argv += ["delay", _ms(profile.rtt_ms / 2)]
    if profile.jitter_ms:
        argv.append(_ms(profile.jitter_ms / 2))
    if profile.loss:
        argv += ["loss", f"{profile.loss * 100:g}%"]
    return [*argv, "rate", _rate(profile)]


def tbf_burst(profile: LinkProfile) -> int:
    """Bytes tbf may send back to back: one full packet (tbf drops a packet larger than
    its burst) or 2 ms of the rate. Small, because a full bucket lets a small frame beat
    the rate (tbf's watchdog is an hrtimer, so a small bucket costs no precision)."""
    return max(1600, math.ceil(profile.bits_per_second / 8 * 0.002))


def tbf_argv(namespace: str, device: str, profile: LinkProfile) -> list[str]:
    """The tc command rate-limiting one TUN (its egress: one direction). `latency` bounds
    the queue: 200 ms of backlog before tbf drops, as a device's buffer would."""
    return [
        "tc", "-n", namespace, "qdisc", "add", "dev", device, "root", "tbf",
        "rate", _rate(profile), "burst", str(tbf_burst(profile)), "latency", "200ms",
    ]  # fmt: skip


class Channel:
    """One TCP connection through the link, both ends here: `up` sends device → server,
    `down` server → device; each returns seconds from first byte sent to last received."""

    def __init__(
        self,
        device: socket.socket,
        server: socket.socket,
        profile: LinkProfile,
        facts: dict[str, Any],
    ) -> None:
        self.facts = facts
        self.profile = profile
        self.last_received = b""
        """The last frame as the other end received it (checked equal to what was sent)."""
        self._device = device
        self._server = server
        self._inboxes: dict[int, queue.Queue[tuple[float, bytes] | BaseException]] = {}
        self._threads: list[threading.Thread] = []
        for sock in (device, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            inbox: queue.Queue[tuple[float, bytes] | BaseException] = queue.Queue()
            self._inboxes[sock.fileno()] = inbox
            thread = threading.Thread(
                target=_receive, args=(sock, inbox), name="link-receive", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def up(self, data: bytes) -> float:
        """Device side → server side."""
        return self._transfer(self._device, self._server, data)

    def down(self, data: bytes) -> float:
        """Server side → device side."""
        return self._transfer(self._server, self._device, data)

    def _transfer(self, sender: socket.socket, receiver: socket.socket, data: bytes) -> float:
        # Generous: a lossy link's retransmission timeouts double; a dead link still ends.
        timeout = 30.0 + 20.0 * self.profile.ideal_seconds(len(data))
        deadline = time.monotonic() + timeout
        frame = _FRAME.pack(len(data)) + data
        start = time.perf_counter()
        _send_all(sender, frame, deadline, self.profile.name)
        try:
            got = self._inboxes[receiver.fileno()].get(
                timeout=max(0.0, deadline - time.monotonic())
            )
        except queue.Empty:
            raise TransferError(
                f"link '{self.profile.name}': a {len(data)}-byte frame did not arrive "
                f"in {timeout:.0f} s"
            ) from None
        if isinstance(got, BaseException):
            raise TransferError(f"link '{self.profile.name}' closed: {got}") from got
        arrived, payload = got
        if payload != data:
            raise TransferError(
                f"link '{self.profile.name}' delivered {len(payload)} bytes that differ "
                f"from the {len(data)} sent"
            )
        self.last_received = payload
        return arrived - start

    def close(self) -> None:
        """Close both ends and wait for the receiving threads; never raises."""
        for sock in (self._device, self._server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5.0)
        for sock in (self._device, self._server):
            sock.close()


def _receive(sock: socket.socket, inbox: queue.Queue[tuple[float, bytes] | BaseException]) -> None:
    """Read frames until the socket closes, stamping each when its last byte is in."""
    try:
        while True:
            header = _recv_exact(sock, _FRAME.size)
            if header is None:
                inbox.put(ConnectionError("the other end closed the connection"))
                return
            (size,) = _FRAME.unpack(header)
            payload = _recv_exact(sock, size) if size else b""
            if payload is None:
                inbox.put(ConnectionError("connection closed mid-frame"))
                return
            inbox.put((time.perf_counter(), payload))
    except OSError as exc:
        inbox.put(exc)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = sock.recv_into(view[got:], size - got)
        if count == 0:
            return None
        got += count
    return bytes(buffer)


def _send_all(sock: socket.socket, data: bytes, deadline: float, name: str) -> None:
    """sendall with a deadline that leaves the socket blocking for its receiving thread
    (a socket timeout would apply to both threads' calls)."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    sent = 0
    while sent < len(view):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransferError(f"link '{name}': sending {len(data)} bytes did not finish in time")
        if not poller.poll(remaining * 1000):
            continue
        try:
            sent += sock.send(view[sent:], socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise TransferError(f"link '{name}' closed while sending: {exc}") from exc


class Forwarder(threading.Thread):
    """Carries IP packets between the two TUNs with the profile's delay, jitter and loss.

    Release times are monotonic per direction (a packet never overtakes the one before
    it, as on a real serial link), so jitter delays bursts rather than reordering them."""

    def __init__(
        self, fds: tuple[int, int], profile: LinkProfile, seed: int, pair: set[bytes]
    ) -> None:
        super().__init__(name="link-forwarder", daemon=True)
        self.fds = fds
        self.one_way = profile.rtt_ms / 2000.0
        self.half_jitter = profile.jitter_ms / 2000.0
        self.loss = profile.loss
        self.rng = random.Random(seed)
        self.pair = pair
        self.queues: tuple[deque[tuple[float, bytes]], ...] = (deque(), deque())
        self.last_release = [0.0, 0.0]
        self.forwarded = 0
        self.dropped = 0
        self.foreign = 0
        self.error: OSError | None = None
        self._wake_read, self._wake_write = os.pipe()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        self.join(timeout=5.0)
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def run(self) -> None:
        watched = [*self.fds, self._wake_read]
        # select's timeout has microseconds; epoll's rounds up to whole milliseconds,
        # which would add up to 1 ms to every packet of a 5 ms one-way delay.
        wait = _select_wait if max(watched) < _FD_SETSIZE else _epoll_wait
        while True:
            now = time.monotonic()
            self._release(now)
            due = [pending[0][0] for pending in self.queues if pending]
            timeout = max(0.0, min(due) - now) if due else None
            for fd in wait(watched, timeout):
                if fd == self._wake_read:
                    return
                if not self._read(self.fds.index(fd)):
                    return

    def _read(self, side: int) -> bool:
        while True:
            try:
                packet = os.read(self.fds[side], 65536)
            except BlockingIOError:
                return True
            except OSError as exc:
                self.error = exc
                return False
            self._take(side, packet, time.monotonic())

    def _take(self, side: int, packet: bytes, now: float) -> None:
        # Only IPv4 between our two addresses crosses (IPv6 housekeeping the kernel may
        # emit on a fresh TUN stays where it is).
        if len(packet) < 20 or packet[0] >> 4 != 4 or {packet[12:16], packet[16:20]} != self.pair:
            self.foreign += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        delay = self.one_way + (
            self.rng.uniform(-self.half_jitter, self.half_jitter) if self.half_jitter else 0.0
        )
        release = max(now + delay, self.last_release[side])
        self.last_release[side] = release
        self.queues[side].append((release, packet))

    def _release(self, now: float) -> None:
        for side, pending in enumerate(self.queues):
            while pending and pending[0][0] <= now:
                _, packet = pending.popleft()
                try:
                    os.write(self.fds[1 - side], packet)
                    self.forwarded += 1
                except OSError:
                    self.dropped += 1


_FD_SETSIZE = 1024


def _select_wait(fds: list[int], timeout: float | None) -> list[int]:
    readable, _, _ = select.select(fds, [], [], timeout)
    return list(readable)


def _epoll_wait(fds: list[int], timeout: float | None) -> list[int]:
    """For a process with so many files open that ours are past select's limit."""
    with select.epoll() as poller:
        for fd in fds:
            poller.register(fd, select.EPOLLIN)
        return [fd for fd, _ in poller.poll(-1.0 if timeout is None else timeout)]


@contextlib.contextmanager
def open_link(
    profile: LinkProfile, *, seed: int = 0, shaper: str | None = None
) -> Iterator[Channel]:
    """A Channel through PROFILE's link, torn down on exit (exception and Ctrl-C included).

    SEED drives the userspace shaper's jitter and loss; SHAPER forces "netem" or
    "tbf+userspace" (default: netem when the kernel has it)."""
    if not profile.shaped:
        with _loopback_channel(profile) as channel:
            yield channel
        return
    if shaper is not None and shaper not in SHAPERS:
        raise UsageError(f"unknown shaper '{shaper}' (known: {', '.join(SHAPERS)})")
    check_can_shape(profile)
    _remove_stale_namespaces()
    with contextlib.ExitStack() as stack:
        device_ns, server_ns = _new_namespaces(stack)
        chosen = shaper or ("netem" if _has_netem(device_ns) else "tbf+userspace")
        server_ip, device_ip = _addresses()
        facts: dict[str, Any] = {
            "shaper": chosen,
            "profile": profile.describe(),
            "bits_per_second": profile.bits_per_second,
            "namespaces": {"device": device_ns, "server": server_ns},
            "addresses": {"device": device_ip, "server": server_ip},
            "kernel": platform.release(),
            "seed": seed,
        }
        if chosen == "netem":
            _veth_netem(device_ns, server_ns, device_ip, server_ip, profile)
            facts["qdisc"] = " ".join(netem_argv(device_ns, _DEVICE, profile)[5:])
        else:
            forwarder = _tun_tbf(stack, device_ns, server_ns, device_ip, server_ip, profile, seed)
            facts["qdisc"] = " ".join(tbf_argv(device_ns, _DEVICE, profile)[5:])
            stack.callback(_record_forwarder, facts, forwarder)
        listener = _in_namespace(server_ns, lambda: _listener(server_ip))
        stack.callback(listener.close)
        client = _in_namespace(device_ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        stack.callback(client.close)
        channel = _connect(client, listener, profile, facts)
        stack.callback(channel.close)
        LOG.debug("link up: %s", facts)
        yield channel


@contextlib.contextmanager
def _loopback_channel(profile: LinkProfile) -> Iterator[Channel]:
    facts: dict[str, Any] = {
        "shaper": "none",
        "profile": profile.describe(),
        "bits_per_second": None,  # unshaped (the profile's inf is not JSON)
        "namespaces": {},
        "addresses": {"device": "127.0.0.1", "server": "127.0.0.1"},
        "kernel": platform.release(),
    }
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(_listener("127.0.0.1"))
        client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        channel = _connect(client, listener, profile, facts)
        stack.callback(channel.close)
        yield channel


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(1)
    return sock


def _connect(
    client: socket.socket, listener: socket.socket, profile: LinkProfile, facts: dict[str, Any]
) -> Channel:
    client.settimeout(30.0)
    listener.settimeout(30.0)
    try:
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    except OSError as exc:
        raise DeviceError(f"link '{profile.name}': cannot connect across it: {exc}") from exc
    finally:
        listener.close()
    client.settimeout(None)
    server.settimeout(None)
    return Channel(client, server, profile, facts)


def check_can_shape(profile: LinkProfile) -> None:
    """Refuse before touching anything: the one line says what to do instead."""
    if os.geteuid() != 0:
        raise UsageError(
            f"link '{profile.name}' needs root to create network namespaces "
            "(run as root, or use --link none)"
        )
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise UsageError(
            f"link '{profile.name}' needs {' and '.join(missing)} (iproute2) to shape a link "
            "(install iproute2, or use --link none)"
        )


def _run(argv: list[str], what: str) -> None:
    LOG.debug("link: %s", " ".join(argv))
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no error text"])[-1]
        raise DeviceError(f"cannot {what}: `{' '.join(argv)}` failed: {reason}")


def _namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _remove_stale_namespaces() -> None:
    """Namespaces a killed edgetool left behind: their pid no longer runs."""
    for name in _namespaces():
        match = _NAMESPACE.match(name)
        if match and not pid_alive(int(match.group(1))):
            LOG.info("removing stale network namespace %s", name)
            with contextlib.suppress(DeviceError):
                _run(["ip", "netns", "del", name], "remove a stale namespace")


def _new_namespaces(stack: contextlib.ExitStack) -> tuple[str, str]:
    global _counter
    with _counter_lock:
        _counter += 1
        number = _counter
    names = []
    for role in ("dev", "srv"):
        name = f"edgetool-{os.getpid()}-{number}-{role}"
        _run(["ip", "netns", "add", name], "create a network namespace")
        stack.callback(_delete_namespace, name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"], "bring up a namespace's loopback")
        names.append(name)
    return names[0], names[1]


def _delete_namespace(name: str) -> None:
    with contextlib.suppress(DeviceError):
        _run(["ip", "netns", "del", name], "remove a network namespace")


def _addresses() -> tuple[str, str]:
    """A /30 of 10.213.0.0/16 picked by pid and run (it exists only in our namespaces)."""
    third = os.getpid() % 256
    fourth = (_counter % 64) * 4
    return f"10.213.{third}.{fourth + 1}", f"10.213.{third}.{fourth + 2}"


def _has_netem(namespace: str) -> bool:
    """Whether the kernel has sch_netem, tried once on the throwaway namespace's lo."""
    global _netem_available
    if _netem_available is None:
        probe = [
            "tc",
            "-n",
            namespace,
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "netem",
            "delay",
            "1ms",
        ]
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        _netem_available = done.returncode == 0
        if _netem_available:
            _run(
                ["tc", "-n", namespace, "qdisc", "del", "dev", "lo", "root"],
                "remove the netem probe",
            )
        LOG.debug("netem available: %s", _netem_available)
    return _netem_available


def _veth_netem(
    device_ns: str, server_ns: str, device_ip: str, server_ip: str, profile: LinkProfile
) -> None:
    _run(
        [
            "ip",
            "-n",
            device_ns,
            "link",
            "add",
            _DEVICE,
            "type",
            "veth",
            "peer",
            "name",
            _DEVICE,
            "netns",
            server_ns,
        ],
        "create the veth pair",
    )
    for namespace, address in ((device_ns, device_ip), (server_ns, server_ip)):
        _configure(namespace, address)
        _run(netem_argv(namespace, _DEVICE, profile), "shape the link with netem")


def _configure(namespace: str, address: str) -> None:
    _run(
        ["ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", _DEVICE], "address the link"
    )
    _run(["ip", "-n", namespace, "link", "set", _DEVICE, "up"], "bring the link up")


def _tun_tbf(
    stack: contextlib.ExitStack,
    device_ns: str,
    server_ns: str,
    device_ip: str,
    server_ip: str,
    profile: LinkProfile,
    seed: int,
) -> Forwarder:
    fds = []
    for namespace, address in ((device_ns, device_ip), (server_ns, server_ip)):
        # Created from a thread inside the namespace, the TUN never exists in the host's
        # namespace, and it vanishes with our fd even if this process is killed.
        fd = _in_namespace(namespace, _open_tun)
        stack.callback(os.close, fd)
        fds.append(fd)
        _configure(namespace, address)
        _run(tbf_argv(namespace, _DEVICE, profile), "shape the link with tbf")
    pair = {socket.inet_aton(device_ip), socket.inet_aton(server_ip)}
    forwarder = Forwarder((fds[0], fds[1]), profile, seed, pair)
    forwarder.start()
    stack.callback(forwarder.stop)
    return forwarder


def _record_forwarder(facts: dict[str, Any], forwarder: Forwarder) -> None:
    facts["packets"] = {
        "forwarded": forwarder.forwarded,
        "dropped": forwarder.dropped,
        "foreign": forwarder.foreign,
    }


def _open_tun() -> int:
    if not os.path.exists("/dev/net/tun"):
        raise UsageError(
            "the tbf+userspace shaper needs /dev/net/tun (load the tun module, or use --link none)"
        )
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", _DEVICE.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise DeviceError(f"cannot create a TUN device: {exc.strerror}") from exc
    return fd


def _in_namespace(namespace: str, make: Callable[[], T]) -> T:
    """MAKE's result, called in NAMESPACE: setns is per thread, so a short-lived thread
    enters it and the main thread stays put. Sockets and TUNs keep that namespace."""
    result: list[T] = []
    errors: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise DeviceError(
                        f"cannot enter network namespace {namespace}: {os.strerror(errno)}"
                    )
            finally:
                os.close(fd)
            result.append(make())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=enter_and_make, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
