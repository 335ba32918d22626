"""Third-party meters and emulators through entry points: a throwaway distribution on
sys.path (or PYTHONPATH) adds them, and no edgetool file is edited."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.emulate import EMULATORS, open_emulator
from edgetool.errors import ConfigError
from edgetool.power import METERS, meter_types, open_meter
from edgetool.targets import load_target
from edgetool.transport.ssh import SshSettings
from tests.conftest import run_cli
from tests.plugin_dist import make_dist

# A host-clock meter reading a constant power, and an emulator whose "device" is its
# published state file: both speak only the public protocols (power/base.py, emulate/base.py).
PLUGIN = """
from __future__ import annotations

import json
import os
from typing import Any

from edgetool.emulate.base import EmulatorStatus, no_stage, status_of
from edgetool.emulate.host import publish_state
from edgetool.events import PowerSample
from edgetool.power.base import Capabilities, host_ns
from edgetool.targets import emulator_state_file


class ConstantMeter:
    capabilities = Capabilities(rate_hz=1000.0, channels=("watts",), clock="host")

    def __init__(self, options: Any) -> None:
        self.watts = float(options.get("watts", 1.0))
        self.label = f"plugin constant {self.watts:g} W"
        self._next: int | None = None
        self._end: int | None = None

    def start(self) -> None:
        self._next, self._end = host_ns(), None

    def stop(self) -> None:
        self._end = host_ns()

    def samples(self) -> list[PowerSample]:
        if self._next is None:
            return []
        end = self._end if self._end is not None else host_ns()
        out = []
        while self._next <= end:
            out.append(PowerSample(self._next, self.watts))
            self._next += 1_000_000
        return out

    def close(self) -> None: ...


class FileEmulator:
    def __init__(self, target: Any) -> None:
        self.name = target.name
        self.port = int(target.emulator.options.get("port", 2200))
        self.state_file = emulator_state_file(target.name)

    def start(self, *, fresh: bool = False, stage: Any = no_stage) -> dict[str, Any]:
        stage("powering the file on")
        state = {"pid": os.getpid(), "transport": {"host": "127.0.0.1", "port": self.port}}
        publish_state(self.state_file, state)
        return state

    def stop(self) -> bool:
        running = self.state_file.exists()
        self.state_file.unlink(missing_ok=True)
        return running

    def state(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return None

    def status(self) -> EmulatorStatus:
        return status_of(self.state())
"""

ENTRY_POINTS = {
    "edgetool.meters": {"plug-constant": "plugpkg:ConstantMeter"},
    "edgetool.emulators": {"plug-emu": "plugpkg:FileEmulator"},
}


@pytest.fixture
def forget_plugins() -> Iterator[None]:
    """Registries keep what they loaded and Python keeps imported modules: drop both."""
    yield
    for name in [m for m in sys.modules if m == "plugpkg" or m.startswith("plugpkg.")]:
        del sys.modules[name]
    METERS.unregister("plug-constant")
    EMULATORS.unregister("plug-emu")


def plugin_dist(tmp_path: Path, entry_points: dict[str, dict[str, str]] | None = None) -> Path:
    return make_dist(
        tmp_path, "edgetool-plug", entry_points or ENTRY_POINTS, {"plugpkg/__init__.py": PLUGIN}
    )


def plugin_env(root: Path) -> dict[str, str]:
    """PYTHONPATH for a subprocess: the plugin first, then whatever the tests run with."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def write_target(tmp_path: Path, name: str, body: str) -> Path:
    targets = tmp_path / "targets"
    targets.mkdir(exist_ok=True)
    (targets / f"{name}.toml").write_text(body)
    return targets


EMU_TARGET = (
    'kind = "linux"\n[transport]\ntype = "ssh"\nhost = "192.0.2.1"\nuse_ssh_config = false\n'
    '[emulator]\ntype = "plug-emu"\nport = 2299\n'
)


def test_a_plugin_distribution_adds_a_meter_and_an_emulator(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_plugins: None
) -> None:
    targets = write_target(tmp_path, "plugged", EMU_TARGET)
    with pytest.raises(ConfigError, match=r"'plug-constant' is unknown; known: estimate, hwmon"):
        open_meter("plug-constant", {})
    with pytest.raises(ConfigError, match=r"'plug-emu' is not supported \(supported: qemu-"):
        open_emulator(load_target("plugged", [targets]))

    monkeypatch.syspath_prepend(str(plugin_dist(tmp_path)))

    assert "plug-constant" in meter_types() and "plug-emu" in EMULATORS.names()
    meter = open_meter("plug-constant", {"watts": 2.5})
    assert type(meter).__module__ == "plugpkg" and meter.label == "plugin constant 2.5 W"
    meter.start()
    time.sleep(0.01)
    meter.stop()
    samples = meter.samples()
    assert len(samples) >= 5 and {s.watts for s in samples} == {2.5}

    emulator = open_emulator(load_target("plugged", [targets]))
    assert emulator.status() == {"status": "stopped", "state": None}
    state = emulator.start()
    assert emulator.status() == {"status": "running", "state": state}
    # The published state overlays the target's transport, as for a built-in emulator.
    target = load_target("plugged", [targets])
    assert isinstance(target.transport, SshSettings)
    assert (target.transport.host, target.transport.port) == ("127.0.0.1", 2299)
    assert emulator.stop() and emulator.status()["status"] == "stopped"


def test_a_plugin_claiming_a_built_in_name_is_refused(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_plugins: None
) -> None:
    root = plugin_dist(
        tmp_path,
        {
            "edgetool.meters": {"estimate": "plugpkg:ConstantMeter"},
            "edgetool.emulators": {"sshd": "plugpkg:FileEmulator"},
        },
    )
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(ConfigError, match="meter type 'estimate' is built in") as meter_error:
        open_meter("estimate", {"idle_w": 1.0, "active_w": 2.0})
    assert "edgetool-plug registers it again (plugpkg:ConstantMeter)" in str(meter_error.value)
    assert "\n" not in str(meter_error.value)
    targets = write_target(tmp_path, "dup", EMU_TARGET.replace("plug-emu", "sshd"))
    with pytest.raises(ConfigError, match=r"emulator type 'sshd' is built in.*edgetool-plug"):
        open_emulator(load_target("dup", [targets]))
    assert "plugpkg" not in sys.modules  # refused before anything of the plugin ran


def test_emulate_commands_drive_a_plugin_emulator(home: Path, tmp_path: Path) -> None:
    targets = write_target(tmp_path, "plugged", EMU_TARGET)
    env = plugin_env(plugin_dist(tmp_path))
    base = ("--targets-dir", str(targets), "emulate")
    started = run_cli(*base, "start", "plugged", "--json", env=env)
    assert started.code == 0, started.stderr
    assert started.json()["transport"] == {"host": "127.0.0.1", "port": 2299}
    status = run_cli(*base, "status", "plugged", env=env)
    assert status.code == 0 and "plugged: running, sshd on 127.0.0.1:2299" in status.stdout
    assert run_cli(*base, "stop", "plugged", env=env).stdout.strip() == "plugged: stopped"
    assert run_cli(*base, "status", "plugged", env=env).stdout.strip() == "plugged: stopped"
    # Without the distribution the type is unknown again: one config error listing types.
    unplugged = run_cli(*base, "status", "plugged")
    assert unplugged.code == 5 and "emulator type 'plug-emu' is not supported" in unplugged.stderr


def test_deploy_energy_through_a_plugin_meter(home: Path, tmp_path: Path) -> None:
    targets = write_target(
        tmp_path,
        "metered",
        'kind = "linux"\n[transport]\ntype = "local"\n'
        '[meter]\ntype = "plug-constant"\nwatts = 2.5\n',
    )
    env = plugin_env(plugin_dist(tmp_path))
    out = run_cli("--targets-dir", str(targets), "deploy", "-t", "metered", "--model", "tiny-mlp",
                  "--energy", "-r", "1", "--idle-seconds", "0.2", "-n", "50", "--json",
                  env=env)  # fmt: skip
    assert out.code == 0, out.stderr
    data = out.json()
    manifest: dict[str, Any] = json.loads((Path(data["run_dir"]) / "manifest.json").read_text())
    power = manifest["power"]
    assert power["meter"] == "plugin constant 2.5 W" and power["type"] == "ConstantMeter"
    assert power["clock"] == "host" and power["samples"] > 0
    energy = data["summary"]["energy"]
    assert energy["estimate"] is False
    assert energy["mean_power_w"] == pytest.approx(2.5, rel=1e-3)
