"""Offline runtime provisioning: wheels fetched on the host, installed into a device venv.

A board in a lab often has no internet. The host knows (or asks the device) its machine,
Python and glibc, lets pip pick the matching wheels (`pip download --platform ...`), keeps
them in a cache with a lock so a second fetch needs no network, pushes them with the
verified put, and has the device's own pip install them with `--no-index`. A marker in the
venv, written only after a successful install, makes the next run a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool import __version__, paths
from edgetool.errors import ConfigError, ConnectError, DeviceError, EdgetoolError
from edgetool.files import file_sha256
from edgetool.flows.base import Observer, connect, push
from edgetool.targets import ProvisionSettings, Target, device_path
from edgetool.transport import FileTransport

log = logging.getLogger(__name__)

MARKER = "edgetool-provision.json"
LOCK = "lock.json"

# Runs on the device with its *base* interpreter (the venv may not exist yet).
_FACTS = r"""
import json, os, platform, sys
venv, marker = sys.argv[1], sys.argv[2]
try:
    glibc = os.confstr("CS_GNU_LIBC_VERSION")
except (AttributeError, ValueError, OSError):
    glibc = None
try:
    with open(marker) as f:
        mark = json.load(f)
except Exception:
    mark = None
print(json.dumps({
    "machine": platform.machine(),
    "python": "%d.%d" % sys.version_info[:2],
    "implementation": sys.implementation.name,
    "glibc": glibc,
    "venv": os.path.isfile(os.path.join(venv, "bin", "python")),
    "venv_dir": os.path.lexists(venv),
    "venv_dir_empty": os.path.isdir(venv) and not os.path.islink(venv) and not os.listdir(venv),
    "marker": mark,
}))
"""

# Runs a long command on the device, merging its stderr into stdout and printing a
# heartbeat every 10 s, so a slow board installing numpy is not taken for a hung one.
_STREAM = r"""
import subprocess, sys, threading
lock = threading.Lock()
def say(text):
    with lock:
        sys.stdout.write(text)
        sys.stdout.flush()
try:
    p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
except OSError as exc:
    say("ERROR: cannot run %s: %s\n" % (sys.argv[1], exc.strerror))
    sys.exit(127)
done = threading.Event()
def beat():
    while not done.wait(10):
        say("edgetool: still working\n")
threading.Thread(target=beat, daemon=True).start()
for line in iter(p.stdout.readline, b""):
    say(line.decode("utf-8", "replace"))
rc = p.wait()
done.set()
sys.exit(rc)
"""

# Before installing a new set: drop the marker (an interrupted install is never "done")
# and wheels of older sets (pip would otherwise be free to pick them from the dir).
_PREPARE = r"""
import os, sys
marker, wheels, keep = sys.argv[1], sys.argv[2], set(sys.argv[3:])
try:
    os.remove(marker)
except FileNotFoundError:
    pass
removed = []
if os.path.isdir(wheels):
    for name in sorted(os.listdir(wheels)):
        partial = name.endswith(".part") and ".whl" in name  # an upload's temporary
        if (name.endswith(".whl") or partial) and name not in keep:
            os.remove(os.path.join(wheels, name))
            removed.append(name)
print("\n".join(removed))
"""

# os.sync() first: the venv's files reach the disk before the marker says they are there,
# so a board powered off (or an emulator stopped) right after provisioning keeps a whole
# venv rather than a marker over half-written files.
_WRITE_MARKER = r"""
import os, sys
os.sync()
path, text = sys.argv[1], sys.argv[2]
tmp = path + ".tmp"
with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, path)
"""

_REMOVE_TREE = "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)"

# Runs under the venv's python: import each module, report each distribution's version.
_CHECK = r"""
import importlib, json, sys
from importlib import metadata
want = json.loads(sys.argv[1])
failed = {}
for module in want["modules"]:
    try:
        importlib.import_module(module)
    except Exception as exc:
        failed[module] = "%s: %s" % (type(exc).__name__, exc)
versions = {}
for dist in want["dists"]:
    try:
        versions[dist] = metadata.version(dist)
    except Exception:
        versions[dist] = None
print(json.dumps({"versions": versions, "failed": failed, "python": sys.executable}))
sys.exit(1 if failed else 0)
"""


@dataclass(frozen=True)
class DeviceFacts:
    """What decides which wheels fit: read from the device, or declared in [provision]."""

    machine: str
    python_version: str
    glibc: str
    implementation: str = "cpython"
    venv_exists: bool = False
    marker: dict[str, Any] | None = None
    venv_dir: bool = False
    """Something is at the venv's path already (a venv or not): never ours to delete."""
    venv_dir_empty: bool = False

    @property
    def cache_key(self) -> str:
        return f"cp{self.python_version.replace('.', '')}-{self.machine}-glibc{self.glibc}"


@dataclass(frozen=True)
class Wheel:
    filename: str
    sha256: str
    size: int


@dataclass
class Fetched:
    """The wheel set for one requirement list on one platform, in the host cache."""

    directory: Path
    wheels: list[Wheel]
    cache_hit: bool
    source: str
    """'index' (pip's configured index) or the wheelhouse directory."""

    @property
    def bytes(self) -> int:
        return sum(w.size for w in self.wheels)

    def paths(self) -> list[Path]:
        return [self.directory / w.filename for w in self.wheels]


@dataclass
class Outcome:
    target: str
    facts: DeviceFacts
    fetched: Fetched
    requirements: list[str]
    transport: str | None = None
    venv: str | None = None
    python: str | None = None
    nothing_to_do: bool = False
    fetch_only: bool = False
    sent: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    removed: list[str] = field(default_factory=list)
    created_venv: bool = False
    installed: bool = False
    versions: dict[str, str | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "transport": self.transport,
            "device": {
                "machine": self.facts.machine,
                "python": self.facts.python_version,
                "implementation": self.facts.implementation,
                "glibc": self.facts.glibc,
            },
            "requirements": self.requirements,
            "fetch": {
                "source": self.fetched.source,
                "cache": "hit" if self.fetched.cache_hit else "downloaded",
                "dir": str(self.fetched.directory),
                "count": len(self.fetched.wheels),
                "bytes": self.fetched.bytes,
                "wheels": [dataclasses.asdict(w) for w in self.fetched.wheels],
            },
            "fetch_only": self.fetch_only,
            "nothing_to_do": self.nothing_to_do,
            "push": {
                "sent": self.sent,
                "skipped": self.skipped,
                "bytes_sent": self.bytes_sent,
                "removed": self.removed,
            },
            "venv": self.venv,
            "python": self.python,
            "created_venv": self.created_venv,
            "installed": self.installed,
            "versions": self.versions,
            "warnings": self.warnings,
        }


class ProvisionObserver(Observer):
    """Adds the long steps (download, install) to what a deploy's observer hears."""

    def step(self, text: str) -> None:
        """A step that may take minutes begins."""

    def detail(self, text: str) -> None:
        """A line of the running step's own output (pip's), for a live status."""

    def step_done(self, text: str) -> None: ...


# ---------------------------------------------------------------------------------------
# Host side: which wheels, fetched by pip, cached with a lock


def platform_tags(machine: str, glibc: str) -> list[str]:
    """pip `--platform` values a device with glibc 2.N accepts, newest first."""
    major, _, minor = glibc.partition(".")
    if major != "2" or not minor.isdigit():
        raise ConfigError(f"glibc version {glibc!r} is not of the form 2.N")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(int(minor), 16, -1)]
    return [*tags, f"manylinux2014_{machine}", f"linux_{machine}"]


def requirements_for(settings: ProvisionSettings) -> list[str]:
    return list(dict.fromkeys(settings.packages))


def _wheelhouse_listing(directory: Path) -> list[list[Any]]:
    if not directory.is_dir():
        raise ConfigError(f"wheelhouse {directory} is not a directory")
    return [
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(directory.iterdir())
        if p.is_file()
    ]


def _lock_key(requirements: Sequence[str], wheelhouse: Path | None) -> str:
    """The requirement set and where it comes from (a wheelhouse by its file listing, so
    a changed wheelhouse is fetched again)."""
    source: Any = "index"
    if wheelhouse is not None:
        source = {"wheelhouse": str(wheelhouse.resolve()), "files": _wheelhouse_listing(wheelhouse)}
    text = json.dumps({"requirements": sorted(requirements), "source": source}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_lock(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / LOCK).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cached(directory: Path, entry: Any) -> list[Wheel] | None:
    """The locked wheels when every one is still there with its recorded hash."""
    if not isinstance(entry, dict) or not isinstance(entry.get("wheels"), list):
        return None
    wheels = []
    for item in entry["wheels"]:
        try:
            wheel = Wheel(str(item["filename"]), str(item["sha256"]), int(item["size"]))
        except (KeyError, TypeError, ValueError):
            return None
        path = directory / wheel.filename
        if not path.is_file() or path.stat().st_size != wheel.size:
            return None
        if file_sha256(path) != wheel.sha256:
            return None
        wheels.append(wheel)
    return wheels or None


def _pip_failure(lines: Sequence[str], wheelhouse: Path | None, what: str) -> EdgetoolError:
    """pip's last meaningful line as the message; a network failure is a ConnectError."""
    text = "\n".join(lines)
    errors = [ln.strip() for ln in lines if ln.strip().startswith("ERROR:")]
    meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.startswith(" ")]
    last = (errors or meaningful or ["pip failed without a message"])[-1]
    last = re.sub(r"^ERROR:\s*", "", last).rstrip()
    last = last if last.endswith((".", ")")) else last + "."
    network = re.search(
        r"NewConnectionError|Max retries exceeded|Could not fetch URL|"
        r"Temporary failure in name resolution|Network is unreachable|ConnectTimeout",
        text,
    )
    if network and wheelhouse is None:
        return ConnectError(
            f"{what}: no network to the package index ({last.rstrip('.')}).",
            hint="Run `edgetool provision --fetch-only` on a machine with internet first, "
            "or set 'wheelhouse' in [provision].",
        )
    where = f"in the wheelhouse {wheelhouse}" if wheelhouse else "on the index"
    return ConfigError(
        f"{what}: {last}", hint=f"Check the [provision] packages and the wheels {where}."
    )


def _run_pip(argv: list[str], env: dict[str, str], on_line: Callable[[str], None]) -> list[str]:
    """Run pip on the host, streaming its (merged) output; returns every line."""
    lines: list[str] = []
    log.info("run %s", shlex.join(argv))
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            on_line(lines[-1])
        status = proc.wait()
    if status != 0:
        raise _PipFailed(lines)
    return lines


class _PipFailed(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__("pip failed")
        self.lines = lines


def fetch(
    facts: DeviceFacts,
    requirements: Sequence[str],
    wheelhouse: Path | None = None,
    refresh: bool = False,
    observer: ProvisionObserver | None = None,
) -> Fetched:
    """The wheels for `requirements` on the device `facts` describe, in the host cache.

    pip resolves (dependencies, platform tags, pip's own config and mirrors); a lock in
    the cache dir makes the same set a cache hit with no network next time."""
    obs = observer or ProvisionObserver()
    directory = paths.cache_dir() / "wheels" / facts.cache_key
    directory.mkdir(parents=True, exist_ok=True)
    key = _lock_key(requirements, wheelhouse)
    source = str(wheelhouse) if wheelhouse else "index"
    if not refresh:
        hit = _cached(directory, _read_lock(directory).get(key))
        if hit is not None:
            log.info("wheels for %s are cached in %s", facts.cache_key, directory)
            return Fetched(directory, hit, True, source)
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:"]
    for tag in platform_tags(facts.machine, facts.glibc):
        argv += ["--platform", tag]
    argv += ["--python-version", facts.python_version, "--implementation", "cp"]
    argv += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    env = dict(os.environ)
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise ConfigError(f"wheelhouse {wheelhouse} is not a directory")
        argv += ["--no-index", "--find-links", str(wheelhouse)]
        # pip's config may add find-links of its own; a wheelhouse means only its wheels.
        env.update(PIP_FIND_LINKS=str(wheelhouse), PIP_NO_INDEX="1")
    obs.step(
        f"fetch  {len(requirements)} requirement(s) for {facts.cache_key} "
        f"from {'the wheelhouse' if wheelhouse else 'the index'} (pip download)"
    )
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=directory) as tmp:
        try:
            _run_pip([*argv, "--dest", tmp, "--", *requirements], env, obs.detail)
        except _PipFailed as exc:
            raise _pip_failure(exc.lines, wheelhouse, "pip download failed") from None
        except OSError as exc:
            raise ConfigError(f"cannot run pip: {exc.strerror}") from exc
        wheels = []
        for path in sorted(Path(tmp).iterdir()):
            if not path.name.endswith(".whl"):
                raise ConfigError(
                    f"pip download gave {path.name}, not a wheel",
                    hint="Only binary wheels can be installed offline.",
                )
            wheels.append(Wheel(path.name, file_sha256(path), path.stat().st_size))
            os.replace(path, directory / path.name)
    if not wheels:
        raise ConfigError("pip download gave no wheels")
    lock = _read_lock(directory)
    lock[key] = {
        "requirements": list(requirements),
        "source": source,
        "wheels": [dataclasses.asdict(w) for w in wheels],
    }
    tmp_lock = directory / f".{LOCK}.tmp"
    tmp_lock.write_text(json.dumps(lock, indent=2, sort_keys=True))
    tmp_lock.replace(directory / LOCK)
    obs.step_done(f"fetch  {len(wheels)} wheel(s) downloaded")
    return Fetched(directory, wheels, False, source)


# ---------------------------------------------------------------------------------------
# Device side


def _dist_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    return match.group(0) if match else requirement


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def import_names(wheel: Path) -> list[str]:
    """Top-level importable names a wheel installs (its packages and modules)."""
    names: set[str] = set()
    with zipfile.ZipFile(wheel) as archive:
        for entry in archive.namelist():
            head, _, rest = entry.partition("/")
            if head.endswith((".dist-info", ".data")):
                continue
            if rest == "__init__.py":
                names.add(head)
            elif not rest and head.endswith(".py"):
                names.add(head[:-3])
    return sorted(names)


def _modules_to_check(fetched: Fetched, requirements: Sequence[str]) -> tuple[list[str], list[str]]:
    """Distributions asked for and the modules to import to prove they are usable."""
    dists = [_dist_name(r) for r in requirements]
    modules: list[str] = []
    for dist in dists:
        wanted = _normalize(dist)
        found = [
            fetched.directory / w.filename
            for w in fetched.wheels
            if _normalize(w.filename.split("-")[0]) == wanted
        ]
        names = import_names(found[0]) if found else []
        modules += names or [wanted.replace("-", "_")]
    return dists, list(dict.fromkeys(modules))


def provision_hash(wheels: Sequence[Wheel], requirements: Sequence[str], venv: str) -> str:
    text = json.dumps(
        {
            "wheels": sorted([w.filename, w.sha256] for w in wheels),
            "requirements": list(requirements),
            "venv": venv,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def base_target(target: Target) -> Target:
    """The target with the device's base interpreter, for work before the venv exists."""
    python = target.python if target.python != target.venv_python else None
    return dataclasses.replace(target, python=python)


def read_facts(transport: FileTransport, venv: str) -> DeviceFacts:
    raw = transport.remote_json(_FACTS, venv, f"{venv}/{MARKER}")
    if raw["implementation"] != "cpython":
        raise DeviceError(
            f"{transport.description}: {transport.python} is {raw['implementation']}, "
            "but provisioning installs CPython wheels"
        )
    glibc = str(raw.get("glibc") or "")
    if not glibc.startswith("glibc "):
        raise DeviceError(
            f"{transport.description}: no glibc on the device ({glibc or 'unknown libc'}); "
            "manylinux wheels need glibc"
        )
    marker = raw.get("marker")
    log.info(
        "device: %s, Python %s, %s; venv %s %s",
        raw["machine"],
        raw["python"],
        glibc,
        venv,
        "exists" if raw["venv"] else "missing",
    )
    return DeviceFacts(
        machine=str(raw["machine"]),
        python_version=str(raw["python"]),
        glibc=glibc.split()[1],
        implementation=str(raw["implementation"]),
        venv_exists=bool(raw["venv"]),
        marker=marker if isinstance(marker, dict) else None,
        venv_dir=bool(raw.get("venv_dir", raw["venv"])),
        venv_dir_empty=bool(raw.get("venv_dir_empty", False)),
    )


def check_declared(target: Target, settings: ProvisionSettings, facts: DeviceFacts) -> None:
    """Declared facts are what `--fetch-only` trusts: the device must agree with them."""
    for key, declared, actual in (
        ("machine", settings.machine, facts.machine),
        ("python_version", settings.python_version, facts.python_version),
        ("glibc", settings.glibc, facts.glibc),
    ):
        if declared is not None and declared != actual:
            raise ConfigError(
                f"{target.source}: key 'provision.{key}' says {declared!r} but the device "
                f"has {actual!r}",
                hint="Fix the declared value (or remove it: the device is asked).",
            )


def declared_facts(settings: ProvisionSettings) -> DeviceFacts | None:
    if settings.machine and settings.python_version and settings.glibc:
        return DeviceFacts(settings.machine, settings.python_version, settings.glibc)
    return None


def _stream(
    transport: FileTransport, argv: list[str], obs: ProvisionObserver
) -> tuple[int, list[str]]:
    """Run a long device command through the heartbeat wrapper (base interpreter)."""
    proc = transport.run([transport.python, "-S", "-c", _STREAM, *argv])
    lines: list[str] = []
    for line in proc.lines():
        if line.startswith("edgetool: still working"):
            continue
        lines.append(line)
        obs.detail(line)
    status = proc.wait()
    if status != 0 and not lines:
        lines = proc.stderr_text().strip().splitlines()
    return status, lines


def _check_venv(
    transport: FileTransport, python: str, dists: list[str], modules: list[str]
) -> tuple[bool, dict[str, Any]]:
    """Whether the venv imports every module, and each distribution's version."""
    proc = transport.run([python, "-c", _CHECK, json.dumps({"dists": dists, "modules": modules})])
    out = "\n".join(proc.lines())
    status = proc.wait()
    try:
        reply: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, {"failed": {"python": proc.stderr_text().strip() or f"exit {status}"}}
    return status == 0, reply


def provision(
    target: Target,
    *,
    wheelhouse: Path | None = None,
    refresh: bool = False,
    fetch_only: bool = False,
    observer: ProvisionObserver | None = None,
) -> Outcome:
    """Make `target` ready offline: fetch on the host, push, install into its venv."""
    obs = observer or ProvisionObserver()
    if target.kind != "linux":
        raise ConfigError(
            f"target {target.name} is of kind '{target.kind}': provisioning installs Python "
            "wheels on Linux devices only"
        )
    settings = target.provision
    if settings is None or target.venv_dir is None:
        raise ConfigError(
            f"target {target.name} has no [provision] section",
            hint=f"Add one to {target.source} (see targets/rpi4.toml for an example).",
        )
    venv = target.venv_dir
    requirements = requirements_for(settings)
    house = wheelhouse or settings.wheelhouse
    warnings = []
    if target.python != target.venv_python:
        warnings.append(
            f"the target's python ({target.python}) is set explicitly, so the runner does "
            f"not use this venv ({venv}/bin/python)"
        )
    declared = declared_facts(settings)
    if fetch_only and declared is not None:
        fetched = fetch(declared, requirements, house, refresh, obs)
        return Outcome(
            target.name, declared, fetched, requirements, fetch_only=True, warnings=warnings
        )
    with connect(base_target(target)) as transport:
        obs.connected(transport.description)
        facts = read_facts(transport, venv)
        check_declared(target, settings, facts)
        fetched = fetch(facts, requirements, house, refresh, obs)
        outcome = Outcome(
            target.name,
            facts,
            fetched,
            requirements,
            transport=transport.description,
            venv=venv,
            python=f"{venv}/bin/python",
            fetch_only=fetch_only,
            warnings=warnings,
        )
        if fetch_only:
            return outcome
        _install(transport, target, outcome, obs)
    return outcome


def _install(
    transport: FileTransport, target: Target, outcome: Outcome, obs: ProvisionObserver
) -> None:
    facts, fetched, venv = outcome.facts, outcome.fetched, outcome.venv
    assert venv is not None and outcome.python is not None
    python = outcome.python
    digest = provision_hash(fetched.wheels, outcome.requirements, venv)
    dists, modules = _modules_to_check(fetched, outcome.requirements)
    marker = facts.marker or {}
    if facts.venv_exists and marker.get("hash") == digest:
        ok, reply = _check_venv(transport, python, dists, modules)
        log.info("venv %s is provisioned with this set: %s", venv, "checked" if ok else "broken")
        if ok:
            outcome.nothing_to_do = True
            outcome.versions = reply.get("versions", {})
            return
    wheel_dir = device_path(target.workdir, "wheels")
    results = push(transport, [(p, f"{wheel_dir}/{p.name}") for p in fetched.paths()], obs)
    outcome.sent = sum(not r.skipped for r in results)
    outcome.skipped = sum(r.skipped for r in results)
    outcome.bytes_sent = sum(r.bytes_sent for r in results)
    keep = [w.filename for w in fetched.wheels]
    removed = transport.run_checked(
        [transport.python, "-S", "-c", _PREPARE, f"{venv}/{MARKER}", wheel_dir, *keep]
    )
    outcome.removed = [line for line in removed.splitlines() if line]
    if not facts.venv_exists:
        if facts.venv_dir and not facts.venv_dir_empty:
            raise ConfigError(
                f"{transport.description}: {venv} exists and is not a venv (it holds other "
                "files): edgetool creates its venv only where nothing is",
                hint="Point [provision] venv at a new directory, or empty that one yourself.",
            )
        obs.step(f"venv  creating {venv} ({transport.python} -m venv)")
        log.info("create the venv %s", venv)
        status, lines = _stream(transport, [transport.python, "-m", "venv", "--", venv], obs)
        if status != 0:
            if not facts.venv_dir:  # only a directory this call created is removed
                transport.run_checked([transport.python, "-S", "-c", _REMOVE_TREE, venv])
            text = "\n".join(lines)
            if "ensurepip" in text or "python3-venv" in text:
                raise DeviceError(
                    f"{transport.description}: cannot create a venv: ensurepip is missing",
                    hint="Install python3-venv on the device (apt-get install python3-venv).",
                )
            raise DeviceError(
                f"{transport.description}: python -m venv failed: "
                + (lines[-1].strip() if lines else f"exit status {status}")
            )
        outcome.created_venv = True
        obs.step_done(f"venv  created {venv}")
    obs.step(f"install  {', '.join(outcome.requirements)} into {venv} (pip, --no-index)")
    log.info("install %s into %s", ", ".join(outcome.requirements), venv)
    status, lines = _stream(
        transport,
        [python, "-m", "pip", "install", "--no-index", "--find-links", wheel_dir, "--upgrade",
         "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
         "--", *outcome.requirements],
        obs,
    )  # fmt: skip
    if status != 0:
        failure = _pip_failure(lines, None, "pip install on the device failed")
        raise DeviceError(f"{transport.description}: {failure.message}")
    ok, reply = _check_venv(transport, python, dists, modules)
    if not ok:
        failed = reply.get("failed", {})
        module, why = next(iter(failed.items()), ("?", "unknown"))
        raise DeviceError(
            f"{transport.description}: installed, but {module} does not import: {why}"
        )
    outcome.installed = True
    outcome.versions = reply.get("versions", {})
    record = {
        "hash": digest,
        "requirements": outcome.requirements,
        "wheels": [[w.filename, w.sha256] for w in fetched.wheels],
        "venv": venv,
        "versions": outcome.versions,
        "edgetool": __version__,
    }
    log.info("record the provision marker %s/%s", venv, MARKER)
    transport.run_checked(
        [transport.python, "-S", "-c", _WRITE_MARKER, f"{venv}/{MARKER}", json.dumps(record)]
    )
    obs.step_done("install  " + ", ".join(f"{k} {v}" for k, v in outcome.versions.items()))
