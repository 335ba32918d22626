"""Targets: TOML files in `targets/` (and user dirs) validated into frozen objects.

Validation is strict on purpose: a typo in a lab's target file should fail at load
with the file, the key and what was expected, not as a confusing SSH error later.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool import paths
from edgetool.config import Section, TableReader, expand_path, read_toml
from edgetool.errors import ConfigError, ConnectError
from edgetool.registry import Registry
from edgetool.transport import TRANSPORTS, BytePort, FileTransport, TransportSettings

KINDS: Registry[Any] = Registry(
    "target kind",
    "edgetool.flows",
    {
        "linux": "edgetool.flows.linux:FLOW",
        "android": "edgetool.flows.android:FLOW",
        "mcu": "edgetool.flows.mcu:FLOW",
        "mcu/ble-uart": "edgetool.flows.bangle:FLOW",
    },
)
"""Target kinds and the deploy flow of each (edgetool.flows.base.DeployFlow), by name only:
`kind/transport` (Bangle.js: mcu over ble-uart) wins over the kind's own flow. Declared
here, where kinds are validated, so loading a target imports no flow."""


def kind_names() -> tuple[str, ...]:
    return tuple(sorted({name.split("/")[0] for name in KINDS.names()}))


RUNTIMES = ("onnxruntime", "litert", "firmware")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class AndroidSettings:
    """`[android]`: Android has no Python, so the runner is LiteRT's `benchmark_model`,
    a binary per ABI that the user downloads or builds (it cannot be fetched here)."""

    benchmark_model: Mapping[str, Path]
    """ABI (`getprop ro.product.cpu.abi`) -> host path; the key '*' matches any ABI."""
    threads: int = 1
    use_xnnpack: bool | None = None
    """None leaves benchmark_model's default."""

    def binary_for(self, abi: str) -> Path | None:
        return self.benchmark_model.get(abi) or self.benchmark_model.get("*")


FLASH_METHODS = ("qemu", "pyocd", "none")


@dataclass(frozen=True)
class McuSettings:
    """`[mcu]`: what the firmware is built for and the limits a model must fit in."""

    board: str
    flash: str
    flash_bytes: int
    ram_bytes: int
    pyocd_target: str | None = None
    arena_bytes: int | None = None
    """Tensor arena a model-loading firmware gives TFLite Micro (Bangle.js: JS code sets it)."""
    input_shape: tuple[int, ...] | None = None
    """What a fixed firmware (flash = "none") reads with `db load`, when its model code is
    not one edgetool knows: the input's shape and numpy dtype."""
    input_dtype: str | None = None


_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\], <>=!~*;:'\"()+]*$")
_FACT_RES = {
    "machine": (re.compile(r"^[A-Za-z0-9_]+$"), "a machine name such as 'aarch64'"),
    "python_version": (re.compile(r"^3\.[0-9]+$"), "a Python version such as '3.11'"),
    "glibc": (re.compile(r"^2\.[0-9]+$"), "a glibc version such as '2.36'"),
}
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert"}
"""The PyPI distribution that provides each runtime on a Linux device."""


@dataclass(frozen=True)
class ProvisionSettings:
    """`[provision]`: a venv on the device that `edgetool provision` fills from wheels
    fetched on the host, so an offline board needs no internet and no apt/pip of its own."""

    venv: str = "venv"
    """Relative to the target's workdir, or absolute."""
    packages: tuple[str, ...] = ()
    wheelhouse: Path | None = None
    """A host directory: when set, only its wheels are used (no index)."""
    machine: str | None = None
    python_version: str | None = None
    glibc: str | None = None
    """Declared device facts: with all three, `--fetch-only` needs no device."""

    @property
    def declared(self) -> bool:
        return None not in (self.machine, self.python_version, self.glibc)


def device_dir_problem(value: str) -> str | None:
    """Why a device directory from a config cannot be used, or None: edgetool writes (and
    may remove) below it, and its path lands in argv, so it must name a real directory of
    its own -- never empty, `/` or the home directory itself, never `..`, and never
    beginning with `-` (a program would read it as an option)."""
    bare = value[2:] if value.startswith("~/") else value
    if any(c in value for c in "\x00\n\r"):
        return "a path without control characters"
    if bare.startswith("-"):
        return "a path that does not begin with '-'"
    if not bare.strip("/") or bare.strip("/") == "~" or not value.strip():
        return "a directory of its own (not empty, not '/', not the home directory itself)"
    if ".." in bare.split("/"):
        return "a path without '..'"
    return None


def device_path(workdir: str, *parts: str) -> str:
    """Device paths are POSIX and relative to the login home (or sandbox) unless absolute."""
    base = workdir[2:] if workdir.startswith("~/") else workdir
    return "/".join([base.rstrip("/"), *parts])


def venv_dir(workdir: str, venv: str) -> str:
    """Where a [provision] venv lives on the device: absolute as given, else in workdir."""
    if venv.startswith("/"):
        return venv.rstrip("/") or "/"
    if venv.startswith("~/"):
        return venv[2:].rstrip("/")
    return device_path(workdir, venv.rstrip("/"))


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    transport: TransportSettings
    source: Path
    description: str = ""
    python: str | None = None
    workdir: str = "edgetool"
    runtimes: tuple[str, ...] = ("onnxruntime", "litert")
    meter: Section | None = None
    emulator: Section | None = None
    emulator_state: Mapping[str, Any] | None = None
    mcu: McuSettings | None = None
    provision: ProvisionSettings | None = None
    android: AndroidSettings | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    input_shapes: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)
    """[input_shapes]: model name or glob -> input name ('' for the only one) -> shape."""
    ep: str = ""
    """[run] ep: the execution provider ONNX models run on here unless --ep says otherwise."""
    delegate: str = ""
    """[run] delegate: xnnpack or none for TFLite models here unless --delegate says so."""

    @property
    def venv_dir(self) -> str | None:
        """The device path of the [provision] venv (None without the section)."""
        return venv_dir(self.workdir, self.provision.venv) if self.provision else None

    @property
    def venv_python(self) -> str | None:
        venv = self.venv_dir
        return f"{venv}/bin/python" if venv else None

    @property
    def missing_python_hint(self) -> str | None:
        """What to do when the device lacks `python`: provision when it is our venv's."""
        if self.python is not None and self.python == self.venv_python:
            return f"The venv is not there yet: run `edgetool provision --target {self.name}`."
        return None

    @property
    def transport_type(self) -> str:
        return self.transport.type


def _env_overrides(name: str) -> dict[str, Any]:
    """`EDGETOOL_<NAME>_HOST` etc. point a shipped target at the user's own board."""
    prefix = "EDGETOOL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"
    overrides: dict[str, Any] = {}
    for key in ("host", "user", "identity_file", "known_hosts", "port", "url", "address"):
        value = os.environ.get(prefix + key.upper())
        if value:
            overrides[key] = int(value) if key == "port" and value.isdigit() else value
    return overrides


def _parse_android(source: Path, reader: TableReader) -> AndroidSettings:
    expected = "a path or a table of ABI = path"
    binary = reader.get("benchmark_model", (str, dict), expected, None)
    if binary is None and "benchmark_model" not in reader.raw:
        reader.problem(
            f"missing key '{reader.key('benchmark_model')}' (the path of LiteRT's "
            "benchmark_model for the device's ABI)"
        )
    table = {"*": binary} if isinstance(binary, str) else dict(binary or {})
    binaries: dict[str, Path] = {}
    for abi, path in table.items():
        if not isinstance(path, str) or not path:
            reader.reject("benchmark_model", expected, binary)
            break
        # Relative to the target file, so a lab can keep the binaries beside its targets.
        found = expand_path(path)
        binaries[abi] = found if found.is_absolute() else (source.parent / found).resolve()
    threads = reader.get("threads", int, "an integer", 1)
    if threads < 1:
        reader.reject("threads", "a positive integer", threads)
        threads = 1
    settings = AndroidSettings(
        benchmark_model=binaries,
        threads=threads,
        use_xnnpack=reader.get("use_xnnpack", bool, "true or false", None),
    )
    reader.finish()
    return settings


DUT_DTYPES = ("int8", "uint8", "int16", "int32", "float32")
"""Input dtypes an MLPerf Tiny DUT may read (its buffer is bytes; the firmware casts)."""


def _check_input_spec(reader: TableReader, settings: McuSettings) -> None:
    shape = settings.input_shape
    if shape is not None and (not shape or any(d <= 0 for d in shape)):
        reader.reject("input_shape", "a list of positive integers, e.g. [1, 32, 32, 3]", shape)
    if (settings.input_shape is None) != (settings.input_dtype is None):
        reader.problem(
            f"keys '{reader.key('input_shape')}' and '{reader.key('input_dtype')}' go together"
        )


def _input_shape(reader: TableReader) -> tuple[int, ...] | None:
    value = reader.get("input_shape", list, "a list of positive integers", None)
    if value is None:
        return None
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        reader.reject("input_shape", "a list of positive integers, e.g. [1, 32, 32, 3]", value)
        return None
    return tuple(value)


def _parse_mcu(reader: TableReader) -> McuSettings:
    sizes = {}
    for key in ("flash_bytes", "ram_bytes"):
        value = reader.get(key, int, "an integer number of bytes", None)
        if value is None and key in reader.raw:
            value = 1  # of the wrong type: already recorded
        elif value is None or value <= 0:
            reader.problem(f"key '{reader.key(key)}' must be a positive number of bytes")
            value = 1
        sizes[key] = value
    settings = McuSettings(
        board=reader.required_str("board"),
        flash=reader.choice("flash", FLASH_METHODS, None),
        flash_bytes=sizes["flash_bytes"],
        ram_bytes=sizes["ram_bytes"],
        pyocd_target=reader.text("pyocd_target"),
        arena_bytes=reader.get("arena_bytes", int, "an integer number of bytes", None),
        input_shape=_input_shape(reader),
        input_dtype=(
            reader.choice("input_dtype", DUT_DTYPES, None) if "input_dtype" in reader.raw else None
        ),
    )
    if settings.arena_bytes is not None and settings.arena_bytes <= 0:
        reader.reject("arena_bytes", "a positive number of bytes", settings.arena_bytes)
    _check_input_spec(reader, settings)
    reader.finish()
    return settings


def _parse_provision(source: Path, reader: TableReader, runtimes: list[str]) -> ProvisionSettings:
    venv = reader.text("venv", "venv")
    problem = device_dir_problem(venv)
    if problem is not None:
        reader.reject("venv", problem, venv)
        venv = "venv"
    default = [RUNTIME_PACKAGES[r] for r in runtimes if r in RUNTIME_PACKAGES] + ["numpy"]
    packages = reader.get("packages", list, "a list of requirement strings", default)
    for package in packages:
        # A leading '-' would be a pip option, not a requirement.
        if not isinstance(package, str) or not _PACKAGE_RE.match(package):
            reader.reject("packages", "a list of requirement strings", package)
            break
    if not packages:
        reader.reject("packages", "a non-empty list of requirement strings", packages)
    wheelhouse = reader.text("wheelhouse")
    facts: dict[str, str | None] = {}
    for key, (pattern, expected) in _FACT_RES.items():
        value = reader.text(key)
        if value is not None and not pattern.match(value):
            reader.reject(key, expected, value)
            value = None
        facts[key] = value
    reader.finish()
    house = None
    if wheelhouse:
        # Relative to the target file, so a lab can keep its wheels beside its targets.
        house = expand_path(wheelhouse)
        house = (house if house.is_absolute() else source.parent / house).resolve()
    return ProvisionSettings(
        venv=venv,
        packages=tuple(packages),
        wheelhouse=house,
        machine=facts["machine"],
        python_version=facts["python_version"],
        glibc=facts["glibc"],
    )


def emulator_state_file(name: str) -> Path:
    return paths.state_dir() / "emulators" / f"{name}.json"


def _read_emulator_state(name: str) -> dict[str, Any] | None:
    path = emulator_state_file(name)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable emulator state ({exc})") from exc
    return state if isinstance(state, dict) else None


def parse_target(source: Path, data: Mapping[str, Any]) -> Target:
    """Validate one parsed TOML document into a Target; every problem of the file is
    reported in one ConfigError."""
    top = TableReader(source, data)
    name = top.text("name", source.stem)
    if not _NAME_RE.match(name):
        top.problem("key 'name' must be letters, digits, '.', '_' or '-'")
    kind = top.choice("kind", kind_names(), "linux")
    runtimes = top.get("runtimes", list, "a list of runtime names", list(RUNTIMES[:2]))
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            top.problem(
                f"key 'runtimes' has unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})"
            )
    runtimes = [r for r in runtimes if r in RUNTIMES]
    emulator = top.section("emulator")
    # No default: a file without [transport] (or an empty one) would otherwise deploy to
    # this host while its author meant a board. This host must be said: type = "local".
    if "transport" not in data:
        top.problem(
            'no [transport] table: say where the device is ([transport] type = "ssh" with '
            'host = ..., or type = "local" for this host)'
        )
    raw_transport = dict(top.get("transport", dict, "a table", {}))
    # A running emulator publishes where it listens; that overlays the file's settings.
    state = _read_emulator_state(name) if emulator else None
    if state:
        raw_transport.update(state.get("transport", {}))
    raw_transport.update(_env_overrides(name))
    treader = top.child(raw_transport, "transport.")
    ttype = treader.choice("type", tuple(TRANSPORTS.names()), None) if "transport" in data else None
    transport_type = TRANSPORTS.get(ttype) if ttype is not None else None
    transport: Any = None  # a missing or unknown type is recorded: finish() raises it
    if transport_type is not None:
        # (With an unknown type, the table's other keys cannot be judged: left alone.)
        transport = transport_type.parse(treader)
    mcu_reader = top.table("mcu")
    mcu = _parse_mcu(mcu_reader) if mcu_reader is not None else None
    no_port = transport_type is not None and transport_type.open_port is None
    if kind == "mcu" and (mcu is None or no_port):
        top.problem(
            "a target of kind 'mcu' needs an [mcu] table and transport type 'serial' or 'ble-uart'"
        )
    android_reader = top.table("android")
    android = _parse_android(source, android_reader) if android_reader is not None else None
    if kind == "android" and (android is None or (ttype is not None and ttype != "adb")):
        top.problem("a target of kind 'android' needs an [android] table and transport type 'adb'")
    models = dict(top.get("models", dict, "a table of model name = model spec", {}))
    for alias, spec in models.items():
        if not isinstance(spec, str) or not spec:
            top.problem(f"key 'models.{alias}' must be a model spec string")
    input_shapes = _parse_input_shapes(top)
    run_reader = top.table("run")
    ep, delegate = ("", "") if run_reader is None else _parse_run(run_reader)
    provision_reader = top.table("provision")
    provision = (
        _parse_provision(source, provision_reader, runtimes)
        if provision_reader is not None
        else None
    )
    if provision is not None and kind != "linux":
        top.problem("[provision] applies to kind 'linux' targets only")
    configured = top.text("workdir", "edgetool")
    problem = device_dir_problem(configured)
    if problem is not None:
        top.reject("workdir", problem, configured)
    workdir = (state or {}).get("workdir", configured)
    # An explicit interpreter (the file's or a running emulator's) wins; otherwise a
    # provisioned target runs under the venv that `edgetool provision` fills.
    python = (state or {}).get("python", top.text("python"))
    if python is None and provision is not None:
        python = venv_dir(workdir, provision.venv) + "/bin/python"
    description = top.text("description", "")
    meter = top.section("meter")
    top.finish()
    return Target(
        name=name,
        kind=kind,
        transport=transport,
        source=source,
        description=description,
        python=python,
        workdir=workdir,
        runtimes=tuple(runtimes),
        meter=meter,
        emulator=emulator,
        emulator_state=state,
        mcu=mcu,
        provision=provision,
        android=android,
        models=models,
        input_shapes=input_shapes,
        ep=ep,
        delegate=delegate,
    )


def _parse_run(reader: TableReader) -> tuple[str, str]:
    """[run]: `ep` and `delegate`, a lab's board's defaults (a board with an NPU runs on its
    provider). A name is checked by the device's runner, which knows its build's list."""
    ep = reader.text("ep", "")
    if ep is not None and not ep.strip():
        ep = ""
    delegate = reader.choice("delegate", ("xnnpack", "none"), "")
    reader.finish()
    return str(ep or ""), str(delegate or "")


def _parse_input_shapes(top: TableReader) -> dict[str, dict[str, tuple[int, ...]]]:
    """`"ppocr-det*" = "1x3x640x640"` (a model with one input) or
    `"ppocr-det*" = { x = "1x3x640x640" }`: shapes for symbolic input dims, per model
    name or glob, so a lab's detector always runs at the size it is used at."""
    from edgetool.runner.device_runner import parse_dims

    raw = top.get("input_shapes", dict, "a table of model name or glob = shape(s)", {})
    parsed: dict[str, dict[str, tuple[int, ...]]] = {}
    for pattern, value in raw.items():
        per_input = {"": value} if isinstance(value, str) else value
        if not isinstance(per_input, dict):
            top.problem(
                f"key 'input_shapes.{pattern}' must be a shape like \"1x3x640x640\" or a "
                "table of input name = shape"
            )
            continue
        shapes: dict[str, tuple[int, ...]] = {}
        for name, dims in per_input.items():
            key = f"input_shapes.{pattern}" + (f".{name}" if name else "")
            try:
                if not isinstance(dims, str):
                    raise ValueError(f'{dims!r} is not a string like "1x3x640x640"')
                shapes[name] = tuple(parse_dims(dims))
            except ValueError as exc:
                top.problem(f"key '{key}': {exc}")
        parsed[pattern] = shapes
    return parsed


def load_target_file(path: Path) -> Target:
    return parse_target(path, read_toml(path, "target file"))


def search_dirs(extra: list[Path] | None = None) -> list[Path]:
    """Builtins, the user's config dir (XDG), EDGETOOL_TARGETS, --targets-dir: later win."""
    return [paths.builtin_targets_dir(), *paths.user_targets_dirs(), *(extra or [])]


def target_files(extra: list[Path] | None = None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in search_dirs(extra):
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found[path.stem] = path
    return found


def load_target(name: str, extra: list[Path] | None = None) -> Target:
    """Load by name, or by path when NAME is a `.toml` file."""
    if name.endswith(".toml"):
        return load_target_file(Path(name))
    files = target_files(extra)
    if name not in files:
        known = ", ".join(sorted(files)) or "none"
        raise ConfigError(
            f"unknown target '{name}' (known: {known}).",
            hint="Add targets/NAME.toml or pass --targets-dir.",
        )
    return load_target_file(files[name])


def load_all(extra: list[Path] | None = None) -> list[Target | ConfigError]:
    """Every target, with a broken file reported in place rather than hiding the rest."""
    loaded: list[Target | ConfigError] = []
    for path in target_files(extra).values():
        try:
            loaded.append(load_target_file(path))
        except ConfigError as exc:
            loaded.append(exc)
    return loaded


def open_transport(target: Target) -> FileTransport:
    """The target's file transport (commands and verified files), connected."""
    if target.emulator is not None and target.emulator_state is None:
        raise ConnectError(
            f"target {target.name} is an emulated device that is not running.",
            hint=f"Start it with `edgetool emulate start {target.name}`.",
        )
    opener = TRANSPORTS.get(target.transport.type).open_files
    if opener is None:
        raise ConfigError(
            f"target {target.name} speaks a line protocol over its {target.transport.type} "
            "transport: it has no file transport.",
            hint="Use `edgetool deploy`, `build` or `targets check`, which speak it.",
        )
    transport = opener(target.transport, target.name, target.python)
    if target.missing_python_hint:
        transport.python_hint = target.missing_python_hint
    return transport


def open_port(target: Target, url: str | None = None) -> BytePort:
    """The target's byte port (a UART or BLE console); URL overrides a serial target's."""
    ttype = TRANSPORTS.get(target.transport.type)
    if ttype.open_port is None:
        raise ConfigError(f"target {target.name}: the {ttype.name} transport is not a byte port")
    settings = target.transport
    if url is not None:
        settings = dataclasses.replace(settings, url=url)  # type: ignore[type-var]
    return ttype.open_port(settings)
