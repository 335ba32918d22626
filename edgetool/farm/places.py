"""Places: how a farm job gets a shared device to itself, and gives it back.

Two providers behind one interface (`PlaceProvider`), chosen by `open_places`:

- `LabgridPlaces`: the lab's labgrid coordinator arbitrates. `hold()` creates a
  reservation for the place (``name=PLACE``, with a priority), waits until the coordinator
  allocates it to us, acquires the place, reads its resources (SSH address, serial URL,
  power port) and turns them into ``EDGETOOL_<TARGET>_*`` variables for the deploy
  subprocess. On the way out it always releases the place and cancels the reservation.
- `LocalLocks`: no coordinator. One ``fcntl.flock`` per target on this host, so two
  edgetool processes never drive one device at once; the kernel drops the lock of a
  holder that dies, whatever killed it.

Why labgrid-client as a subprocess rather than labgrid's Python API: labgrid's client
session (``labgrid.remote.client.ClientSession``) is an internal asyncio class whose
construction and event-loop handling changed with the move from crossbar to gRPC (24.0)
and since; the ``labgrid-client`` command line (``-x``, ``-p``, ``reserve --prio``, ``wait``,
``acquire``, ``release``, ``cancel-reservation``, ``show``, ``-v places``) is what labs script
against and has kept its syntax. It also keeps grpc and labgrid out of the edgetool process
(labgrid's pyserial fork, its asyncio loop). The price is ~0.5-1 s of interpreter start per
call, a few calls per hold, which is nothing next to a deploy. Output is parsed by anchored
patterns on the lines labgrid prints for people (``Reservation 'TOKEN':``, ``state: …``,
``Place 'NAME':``, ``Acquired resource 'N' (path):`` + a pprint'ed dict read with
``ast.literal_eval``); an unexpected shape is a clear `DeviceError`, never a guess.

Labgrid semantics worth knowing (labgrid 26.0, checked in its coordinator):

- Priority only orders *waiting* reservations (highest prio first, then oldest); it never
  takes a place away from a holder.
- A waiting or allocated reservation expires ~60 s after its owner last polled it, so a
  killed edgetool leaves no reservation behind for long. An *acquired* place does not
  expire: a holder killed with SIGKILL leaves the place acquired until someone runs
  ``labgrid-client -p PLACE release --kick`` (or the coordinator restarts).
- The coordinator checks a reservation's owner as ``host/user``, not per process, so
  edgetool only acquires a place once the coordinator says *our* token is allocated.

Stale holds: each hold is recorded in the state dir (``labgrid-holds/COORDINATOR/TOKEN.json``:
place, token, our pid and the job's, with their start times) from its reservation until it is
given back. `release_stale()` (a farm night calls it first) releases a place still acquired
by this ``host/user`` under a recorded token once both recorded processes are gone, so a
SIGKILLed night costs the next one nothing; a place whose job still runs stays held.

Interrupts: while a place is held from the main thread, SIGTERM (if nobody installed a
handler for it) raises `PlaceTerminated`, a KeyboardInterrupt, so the same unwinding
releases the place; while releasing, SIGINT and SIGTERM are ignored for the few seconds the
two bounded labgrid-client calls take, so a second Ctrl-C cannot strand the place.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from edgetool.errors import ConfigError, ConnectError, DeviceError, EdgetoolError
from edgetool.files import write_json_atomic
from edgetool.paths import state_dir

log = logging.getLogger(__name__)

DEFAULT_COORDINATOR_PORT = 20408
"""labgrid's default coordinator port, used when a coordinator is given without one."""

CALL_TIMEOUT = 30.0
"""Seconds one labgrid-client call may take before the coordinator counts as hung."""

CLEANUP_TIMEOUT = 15.0
"""Seconds each release step may take: bounded, because signals are ignored meanwhile."""

POWER_TIMEOUT = 120.0

# Resource classes `labgrid-client power` can drive (labgrid 26.0, client.power()).
POWER_CLASSES = frozenset(
    {
        "NetworkPowerPort",
        "PDUDaemonPort",
        "NetworkUSBPowerPort",
        "NetworkSiSPMPowerPort",
        "TasmotaPowerPort",
        "NetworkYKUSHPowerPort",
        "NetworkSysfsGPIO",
    }
)

# Variables through which a user's own labgrid setup would redirect our calls: LG_ENV makes
# `acquire` act on the env file's places, LG_TOKEN/LG_PLACE pick others, LG_PROXY tunnels.
_SCRUBBED_ENV = frozenset(
    {"LG_ENV", "LG_PLACE", "LG_TOKEN", "LG_STATE", "LG_INITIAL_STATE", "LG_PROXY"}
    | {"LG_COORDINATOR", "PLACE", "STATE"}
)

_UNREACHABLE = (
    "could not connect to coordinator",
    "coordinator is unavailable",
    "failed to connect to all addresses",
)


class _NoAnswer(ConnectError):
    """A labgrid-client call outlived its timeout (for `wait`: the place stayed busy)."""


class PlaceTerminated(KeyboardInterrupt):
    """SIGTERM arrived while a place was held: unwinds like Ctrl-C so the place is freed."""


@dataclass
class Place:
    """A device held for one job; valid only inside the `hold()` that yielded it."""

    target: str
    """edgetool target name."""
    name: str
    """labgrid place name (== target for local locks)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment for the deploy subprocess, e.g. EDGETOOL_<T>_HOST/_PORT/_USER."""
    resources: dict[str, Any] = field(default_factory=dict)
    """What was read from the coordinator (for the log and the summary)."""
    lock_fd: int | None = None
    """A descriptor holding the place (a local flock): passed to the job's process, so the
    place stays held for as long as the job runs, even if the farm that started it dies."""
    _power: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    _on_job: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    def power_cycle(self) -> bool:
        """Cycle the place's power port; False (and nothing done) if it has none."""
        if self._power is None:
            return False
        self._power()
        return True

    def job_started(self, pid: int) -> None:
        """Record the process now using the place: a later holder names it, and a stale
        hold is only given back once that process, too, is gone."""
        if self._on_job is not None:
            self._on_job(pid)


class PlaceProvider(Protocol):
    """Where places come from: a labgrid coordinator, or locks on this host."""

    description: str

    def hold(
        self, target: str, *, timeout: float, priority: int = 0, place: str | None = None
    ) -> AbstractContextManager[Place]: ...

    def places_with_tags(self, tags: dict[str, str]) -> list[str]: ...

    def release_stale(self) -> list[str]:
        """Give back what an earlier, killed edgetool of this host left held; say what."""
        ...


def env_prefix(target: str) -> str:
    """``EDGETOOL_<NAME>_``: the same spelling `edgetool.targets` reads overrides from."""
    return "EDGETOOL_" + re.sub(r"[^A-Za-z0-9]", "_", target).upper() + "_"


def open_places(coordinator: str | None) -> PlaceProvider:
    """A coordinator (argument, else $EDGETOOL_COORDINATOR) means labgrid; none, local locks."""
    chosen = coordinator or os.environ.get("EDGETOOL_COORDINATOR") or None
    if chosen:
        return LabgridPlaces(chosen)
    return LocalLocks()


# --------------------------------------------------------------------------- local locks


class LocalLocks:
    """One flock per target under the state dir: serializes edgetool processes on this host.

    Waiting polls (no queue, no priority). Nothing to clean up on SIGTERM or SIGKILL: the
    lock belongs to an open file the kernel closes when the holder dies. A farm passes the
    descriptor (`Place.lock_fd`) to its job's process, so the lock lasts until the last of
    the two is gone: a killed farm never frees a board its job still uses.
    """

    poll_interval = 0.1

    def __init__(self, lock_dir: Path | None = None) -> None:
        self.lock_dir = lock_dir if lock_dir is not None else state_dir() / "locks"
        self.description = f"local locks in {self.lock_dir}"

    def lock_path(self, name: str) -> Path:
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise ConfigError(f"target name {name!r} cannot name a lock file")
        return self.lock_dir / f"{name}.lock"

    @contextlib.contextmanager
    def hold(
        self, target: str, *, timeout: float, priority: int = 0, place: str | None = None
    ) -> Iterator[Place]:
        """Wait up to `timeout` s for the target's lock (priority has no meaning locally)."""
        name = place or target
        path = self.lock_path(name)
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: no subprocess inherits the lock by accident (an emulator daemon would
        # hold it forever); a farm job gets it on purpose (Popen pass_fds).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DeviceError(
                            f"target {target} is in use by {_lock_holder(path)}; "
                            f"gave up after {timeout:g} s (lock {path})"
                        ) from None
                    time.sleep(min(self.poll_interval, left))
            command = " ".join(sys.argv)[:300].replace("\n", " ")
            note = f"pid {os.getpid()} ({command})"
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{note}\n".encode(), 0)

            def job_started(pid: int) -> None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"job pid {pid} started by {note}\n".encode(), 0)

            try:
                yield Place(
                    target=target,
                    name=name,
                    env={},
                    resources={"lock": str(path)},
                    lock_fd=fd,
                    _on_job=job_started,
                )
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # still ours: no stale holder text for the next one
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def places_with_tags(self, tags: dict[str, str]) -> list[str]:
        """Tags live in a labgrid coordinator: without one, asking for them is a config error."""
        if not tags:
            return []
        wanted = " ".join(f"{k}={v}" for k, v in tags.items())
        raise ConfigError(
            f"targets by labgrid tag ({wanted}) need a labgrid coordinator",
            hint="pass --coordinator HOST:PORT or set EDGETOOL_COORDINATOR",
        )

    def release_stale(self) -> list[str]:
        """Nothing to do: the kernel drops the lock of a holder that died."""
        return []


def _lock_holder(path: Path) -> str:
    """The holder's own note ("pid N (command)"), or a neutral phrase if it has none yet."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "another process (no holder recorded yet)"


# --------------------------------------------------------------------------- labgrid


def labgrid_tool(name: str) -> str:
    """A labgrid executable: the one beside our interpreter (same venv) first, else PATH."""
    sibling = Path(sys.executable).parent / name
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which(name)
    if found:
        return found
    raise ConfigError(
        f"{name} not found: places on a labgrid coordinator need labgrid",
        hint="pip install 'edgetool[farm]'",
    )


@dataclass
class _PlaceInfo:
    """One place as `labgrid-client -v places` shows it."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    acquired: str | None = None
    reservation: str | None = None


_PLACE_HEAD = re.compile(r"^Place '(?P<name>.+)':$")
_PLACE_ITEM = re.compile(r"^  (?P<key>tags|acquired|reservation): ?(?P<value>.*)$")
_RES_HEAD = re.compile(r"^Reservation '(?P<token>[^']+)':$")
_RES_STATE = re.compile(r"^\s*state: (?P<state>\w+)\s*$")
_RESOURCE_HEAD = re.compile(
    r"^(?:Acquired|Matching) resource '(?P<name>[^']+)' \((?P<path>[^)]+)\):$"
)


def parse_places(text: str) -> dict[str, _PlaceInfo]:
    """Places, their tags, holder and reservation from `labgrid-client -v places`."""
    places: dict[str, _PlaceInfo] = {}
    current: _PlaceInfo | None = None
    for line in text.splitlines():
        head = _PLACE_HEAD.match(line)
        if head:
            current = places[head["name"]] = _PlaceInfo(head["name"])
            continue
        item = _PLACE_ITEM.match(line)
        if current is None or item is None:
            continue
        key, value = item["key"], item["value"].strip()
        if key == "tags":
            pairs = (pair.split("=", 1) for pair in value.split(", ") if "=" in pair)
            current.tags = {k: v for k, v in pairs}
        elif key == "acquired":
            current.acquired = None if value in ("", "None") else value
        else:
            current.reservation = value or None
    return places


def parse_resources(text: str) -> dict[str, dict[str, Any]]:
    """Resources of a place from `labgrid-client show`: name → {cls, path, params…}."""
    resources: dict[str, dict[str, Any]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        head = _RESOURCE_HEAD.match(lines[i])
        i += 1
        if not head:
            continue
        body: list[str] = []
        while i < len(lines) and lines[i].startswith("  "):
            body.append(lines[i])
            i += 1
        try:
            data = ast.literal_eval(textwrap.dedent("\n".join(body)))
        except (ValueError, SyntaxError) as exc:
            raise DeviceError(
                f"cannot read resource {head['path']} from labgrid-client show: {exc}"
            ) from None
        if not isinstance(data, dict):
            continue
        params = {k: v for k, v in dict(data.get("params") or {}).items() if k != "extra"}
        parts = head["path"].split("/")  # exporter/group/cls/name
        cls = str(data.get("cls") or (parts[2] if len(parts) > 2 else ""))
        resources[head["name"]] = {"cls": cls, "path": head["path"], **params}
    return resources


def resources_env(target: str, resources: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """EDGETOOL_<TARGET>_HOST/_PORT/_USER from a NetworkService, _URL from a serial port."""
    prefix = env_prefix(target)
    env: dict[str, str] = {}
    for _name, res in sorted(resources.items()):
        cls = res.get("cls")
        if cls == "NetworkService" and prefix + "HOST" not in env:
            env[prefix + "HOST"] = str(res["address"])
            env[prefix + "PORT"] = str(res.get("port", 22))
            if res.get("username"):
                env[prefix + "USER"] = str(res["username"])
        elif cls == "NetworkSerialPort" and prefix + "URL" not in env:
            scheme = "socket" if res.get("protocol") == "raw" else "rfc2217"
            env[prefix + "URL"] = f"{scheme}://{res['host']}:{res['port']}"
    return env


class LabgridPlaces:
    """Places reserved, acquired and released through a labgrid coordinator."""

    def __init__(self, coordinator: str) -> None:
        self.coordinator = _normalize_coordinator(coordinator)
        self.description = f"labgrid coordinator {self.coordinator}"

    # -- labgrid-client

    def client(
        self, *args: str, timeout: float = CALL_TIMEOUT, place: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run labgrid-client against our coordinator; an unreachable one is a ConnectError."""
        argv = [labgrid_tool("labgrid-client"), "-x", self.coordinator]
        if place is not None:
            argv += ["-p", place]
        argv += args
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        try:
            # Own session: a Ctrl-C at the terminal reaches us, not the release we run after it.
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise _NoAnswer(
                f"labgrid coordinator {self.coordinator} did not answer "
                f"`labgrid-client {args[0]}` within {timeout:g} s"
            ) from None
        if proc.returncode != 0:
            lowered = (proc.stderr + proc.stdout).lower()
            if any(marker in lowered for marker in _UNREACHABLE):
                reason = "connection refused" if "refused" in lowered else "no answer"
                raise ConnectError(
                    f"cannot reach the labgrid coordinator at {self.coordinator} ({reason})",
                    hint="is labgrid-coordinator running there? see --coordinator / "
                    "EDGETOOL_COORDINATOR",
                )
        return proc

    def _checked(self, *args: str, place: str | None = None, what: str) -> str:
        proc = self.client(*args, place=place)
        if proc.returncode != 0:
            raise DeviceError(f"{what}: {_last_line(proc)}")
        return proc.stdout

    def places(self) -> dict[str, _PlaceInfo]:
        """Every place on the coordinator, with tags, holder and reservation."""
        return parse_places(self._checked("-v", "places", what="cannot list labgrid places"))

    # -- PlaceProvider

    def places_with_tags(self, tags: dict[str, str]) -> list[str]:
        """Target names (tag ``edgetool``, else the place name) of places carrying all `tags`."""
        found = []
        for name, info in self.places().items():
            have = {**info.tags, "name": name}
            if all(have.get(k) == v for k, v in tags.items()):
                found.append(info.tags.get("edgetool", name))
        return sorted(found)

    @contextlib.contextmanager
    def hold(
        self, target: str, *, timeout: float, priority: int = 0, place: str | None = None
    ) -> Iterator[Place]:
        """Reserve (with `priority`), wait ≤ `timeout` s, acquire, yield; always give back."""
        started = time.monotonic()
        name = self._resolve(target, place, self.places())
        with _sigterm_as_interrupt():
            token: str | None = None
            record: _HoldRecord | None = None
            acquired = False
            body_failed = False
            try:
                token, state = self._reserve(name, priority)
                record = _HoldRecord(self._holds_dir() / f"{_safe_name(token)}.json", name, token)
                record.write()
                if state != "allocated":
                    self._wait(name, token, started + timeout, timeout)
                self._checked("acquire", place=name, what=f"cannot acquire labgrid place {name}")
                acquired = True
                resources = parse_resources(
                    self._checked("show", place=name, what=f"cannot show labgrid place {name}")
                )
                has_power = any(r.get("cls") in POWER_CLASSES for r in resources.values())
                held = Place(
                    target=target,
                    name=name,
                    env=resources_env(target, resources),
                    resources=resources,
                    _power=(lambda: self._power_cycle(name)) if has_power else None,
                    _on_job=record.job_started,
                )
                log.info("holding labgrid place %s (reservation %s)", name, token)
                yield held
            except BaseException:
                body_failed = True
                raise
            finally:
                if token is not None:
                    self._give_back(name, token, acquired, quiet=body_failed, record=record)

    # -- steps

    def _resolve(self, target: str, place: str | None, known: Mapping[str, _PlaceInfo]) -> str:
        """The place to hold: `place`, else one named like the target, else tagged edgetool=T."""
        if place is None and target not in known:
            tagged = [n for n, info in known.items() if info.tags.get("edgetool") == target]
            if len(tagged) == 1:
                return tagged[0]
            if len(tagged) > 1:
                raise ConfigError(
                    f"several labgrid places are tagged edgetool={target}: {', '.join(tagged)}",
                    hint="name one in the plan (place = ...)",
                )
        wanted = place or target
        if wanted not in known:
            listing = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"no labgrid place {wanted!r} on coordinator {self.coordinator} "
                f"(known places: {listing})",
                hint=f"create it: labgrid-client -x {self.coordinator} -p {wanted} create",
            )
        return wanted

    def _reserve(self, name: str, priority: int) -> tuple[str, str]:
        out = self._checked(
            "reserve",
            "--prio",
            str(priority),
            f"name={name}",
            what=f"cannot reserve labgrid place {name}",
        )
        token = state = None
        for line in out.splitlines():
            head = _RES_HEAD.match(line)
            token = head["token"] if head and token is None else token
            found = _RES_STATE.match(line)
            state = found["state"] if found and state is None else state
        if token is None or state is None:
            raise DeviceError(f"cannot read the reservation for place {name}: {out.strip()!r}")
        return token, state

    def _wait(self, name: str, token: str, deadline: float, timeout: float) -> None:
        """Block in `labgrid-client wait` (it polls, keeping the reservation alive)."""
        left = max(deadline - time.monotonic(), 1.0)  # one poll at least: wait polls each 1 s
        try:
            proc = self.client("wait", token, timeout=left)
        except _NoAnswer:
            info = self.places().get(name)
            who = (
                f"acquired by {info.acquired}"
                if info and info.acquired
                else f"reserved for another job ({info.reservation})"
                if info and info.reservation
                else "busy"
            )
            raise DeviceError(
                f"labgrid place {name} is {who}; gave up after {timeout:g} s",
                hint="raise the plan's timeout or a job's priority",
            ) from None
        states = [m["state"] for m in map(_RES_STATE.match, proc.stdout.splitlines()) if m]
        if proc.returncode != 0 or not states or states[-1] != "allocated":
            last = states[-1] if states else _last_line(proc)
            raise DeviceError(f"reservation {token} for labgrid place {name} ended as {last}")

    def _give_back(
        self,
        name: str,
        token: str,
        acquired: bool,
        *,
        quiet: bool,
        record: _HoldRecord | None = None,
    ) -> None:
        """Release the place (if ours) and cancel the reservation, signals held off. The
        hold's record goes once both worked (else a later `release_stale` retries)."""
        problems: list[str] = []
        with _signals_ignored():
            try:
                if not acquired:  # acquire may have landed before an interrupt killed it
                    info = self.places().get(name)
                    acquired = bool(info and info.acquired and info.reservation == token)
                if acquired:
                    proc = self.client("release", place=name, timeout=CLEANUP_TIMEOUT)
                    if proc.returncode != 0 and "is not acquired" not in proc.stderr:
                        problems.append(f"release: {_last_line(proc)}")
            except EdgetoolError as exc:
                problems.append(f"release: {exc}")
            try:
                proc = self.client("cancel-reservation", token, timeout=CLEANUP_TIMEOUT)
                if proc.returncode != 0 and "does not exist" not in proc.stderr:
                    problems.append(f"cancel-reservation: {_last_line(proc)}")
            except EdgetoolError as exc:
                problems.append(f"cancel-reservation: {exc}")
        if not problems:
            if record is not None:
                record.drop()
            log.info("released labgrid place %s (reservation %s)", name, token)
            return
        message = f"could not give back labgrid place {name}: {'; '.join(problems)}"
        hint = f"labgrid-client -x {self.coordinator} -p {name} release; cancel-reservation {token}"
        if quiet:  # the body's own error is the one to report
            log.warning("%s (by hand: %s)", message, hint)
        else:
            raise DeviceError(message, hint=f"by hand: {hint}")

    def _holds_dir(self) -> Path:
        return state_dir() / "labgrid-holds" / _safe_name(self.coordinator)

    def release_stale(self) -> list[str]:
        """Release places this host/user still holds for an edgetool that was killed (its
        process and its job's are gone, the place is acquired by us under its token)."""
        folder = self._holds_dir()
        records = sorted(folder.glob("*.json")) if folder.is_dir() else []
        said: list[str] = []
        known: dict[str, _PlaceInfo] | None = None
        me = labgrid_identity()
        for path in records:
            record = _HoldRecord.read(path)
            if record is None:
                continue
            if record.holder_alive():
                continue  # a live edgetool's hold, not ours to touch
            whose = f"a killed edgetool (pid {record.pid}, since {record.since})"
            if record.job_alive():
                said.append(
                    f"labgrid place {record.place} stays acquired: job pid {record.job_pid} "
                    f"of {whose} still runs"
                )
                continue
            if known is None:
                known = self.places()
            info = known.get(record.place)
            if info is not None and info.acquired == me and info.reservation == record.token:
                proc = self.client("release", place=record.place, timeout=CLEANUP_TIMEOUT)
                if proc.returncode != 0:
                    said.append(
                        f"could not release labgrid place {record.place} left acquired by "
                        f"{whose}: {_last_line(proc)}"
                    )
                    continue
                said.append(f"released labgrid place {record.place}, left acquired by {whose}")
            with contextlib.suppress(EdgetoolError):
                self.client("cancel-reservation", record.token, timeout=CLEANUP_TIMEOUT)
            record.drop()
        for text in said:
            log.warning("%s", text)
        return said

    def _power_cycle(self, name: str) -> None:
        proc = self.client("power", "cycle", place=name, timeout=POWER_TIMEOUT)
        if proc.returncode != 0:
            raise DeviceError(f"power cycle of labgrid place {name} failed: {_last_line(proc)}")


def labgrid_identity() -> str:
    """``host/user`` as labgrid-client reports itself to the coordinator (place.acquired)."""
    host = os.environ.get("LG_HOSTNAME") or socket.gethostname()
    user = os.environ.get("LG_USERNAME") or getpass.getuser()
    return f"{host}/{user}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:120]


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart), ""
    where /proc has none, None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if stat:
        fields = stat.rsplit(")", 1)[1].split()
        return fields[19] if fields[0] != "Z" else None  # a zombie has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def _same_process(pid: int | None, start: str | None) -> bool:
    if pid is None:
        return False
    now = _process_start(pid)
    return now is not None and (not start or not now or now == start)


@dataclass
class _HoldRecord:
    """One labgrid hold of this host, as a small JSON file, from reservation to give-back."""

    path: Path
    place: str
    token: str
    pid: int = field(default_factory=os.getpid)
    start: str | None = None
    since: str = ""
    job_pid: int | None = None
    job_start: str | None = None

    def write(self) -> None:
        if self.start is None:
            self.start = _process_start(self.pid) or ""
            self.since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, data)
        except OSError as exc:  # without it only the stale-hold cleanup is lost
            log.warning("cannot record the hold of labgrid place %s: %s", self.place, exc)

    def job_started(self, pid: int) -> None:
        self.job_pid, self.job_start = pid, _process_start(pid) or ""
        self.write()

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def holder_alive(self) -> bool:
        return _same_process(self.pid, self.start)

    def job_alive(self) -> bool:
        return _same_process(self.job_pid, self.job_start)

    @classmethod
    def read(cls, path: Path) -> _HoldRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                path,
                str(data["place"]),
                str(data["token"]),
                int(data["pid"]),
                str(data.get("start") or ""),
                str(data.get("since") or "?"),
                int(data["job_pid"]) if data.get("job_pid") else None,
                str(data.get("job_start") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable labgrid hold record %s", path)
            return None


def _normalize_coordinator(value: str) -> str:
    """``HOST[:PORT]`` → ``HOST:PORT`` (labgrid's default port when none is given)."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_COORDINATOR_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"coordinator {value!r} is not HOST:PORT")
    return f"{host}:{port}"


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """labgrid-client's own error line, without its ``labgrid-client: Error:`` prefix."""
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit status {proc.returncode}"
    return re.sub(r"^(labgrid-client: )?(Error: )?", "", last)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM → PlaceTerminated while a place is held, unless someone else handles SIGTERM."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise PlaceTerminated(f"terminated by signal {signum} while holding a place")

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Hold off SIGINT/SIGTERM for a bounded cleanup (main thread only; signals land there)."""
    if not _in_main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
