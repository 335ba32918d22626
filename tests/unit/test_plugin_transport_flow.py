"""A third party adds a transport and a target kind: one module, one entry point each,
no edgetool file edited; `edgetool deploy` then runs through both."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

from tests.conftest import TINY_ONNX, assert_one_line_error, run_cli
from tests.plugin_dist import make_dist

PLUGIN = '''
"""A plugin distribution: the `jail` transport (a local sandbox under a root it names,
recording every command it runs) and the `jailed` kind (the Linux flow, marked)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgetool.flows.base import DeployFlow
from edgetool.flows.linux import FLOW as LINUX
from edgetool.transport.base import TransportType
from edgetool.transport.local import LocalSettings, LocalTransport


@dataclass(frozen=True)
class JailSettings:
    type: ClassVar[str] = "jail"
    root: str

    def where(self) -> str:
        return self.root


def parse(reader):
    settings = JailSettings(root=reader.required_str("root"))
    reader.finish()
    return settings


class JailTransport(LocalTransport):
    def run(self, argv):
        with open(Path(self.root) / "commands.jsonl", "a") as log:
            log.write(json.dumps(list(argv)) + "\\n")
        return super().run(argv)


def open_files(settings, target_name, python):
    transport = JailTransport(LocalSettings(root=Path(settings.root)), python)
    transport.description = f"jail ({settings.root})"
    return transport


TRANSPORT = TransportType("jail", JailSettings, parse, open_files=open_files)


def deploy(target, artifact, settings, results_root, observer):
    (Path(target.transport.root) / "flow").write_text(target.kind)
    return LINUX.deploy(target, artifact, settings, results_root, observer)


FLOW = DeployFlow(deploy, LINUX.facts)
'''


def test_a_plugin_transport_and_kind_deploy_end_to_end(home: Path, tmp_path: Path) -> None:
    site = make_dist(
        tmp_path,
        "edgejail",
        {
            "edgetool.transports": {"jail": "edgejail:TRANSPORT"},
            "edgetool.flows": {"jailed": "edgejail:FLOW"},
        },
        {"edgejail.py": PLUGIN},
    )
    device = tmp_path / "device"
    device.mkdir()
    target = tmp_path / "jailbox.toml"
    target.write_text(
        textwrap.dedent(
            f"""
            kind = "jailed"
            python = {json.dumps(sys.executable)}
            [transport]
            type = "jail"
            root = {json.dumps(str(device))}
            """
        )
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = run_cli(
        "deploy", "-t", str(target), "-m", str(TINY_ONNX), "-r", "2", "-n", "20", "--json", env=env
    )
    assert result.code == 0, result.stderr
    out = result.json()
    manifest = json.loads((Path(out["run_dir"]) / "manifest.json").read_text())
    assert manifest["target"]["kind"] == "jailed"
    assert manifest["target"]["transport"].startswith("jail (")
    assert (device / "flow").read_text() == "jailed"
    commands = [json.loads(line) for line in (device / "commands.jsonl").read_text().splitlines()]
    assert sum("run" in argv for argv in commands) == 2  # one runner process a repetition
    assert out["summary"]["count"] == 40

    listed = run_cli("targets", "list", "--json", env={**env, "EDGETOOL_TARGETS": str(tmp_path)})
    assert listed.code == 0, listed.stderr
    (entry,) = [t for t in listed.json() if t.get("name") == "jailbox"]
    assert entry["transport"] == {"type": "jail", "root": str(device)}


def test_without_the_plugin_the_names_are_unknown(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "jailbox.toml"
    target.write_text('kind = "jailed"\n[transport]\ntype = "jail"\nroot = "/tmp"\n')
    result = run_cli("deploy", "-t", str(target), "-m", str(TINY_ONNX))
    assert_one_line_error(result, 5, "2 problems")  # both reported at once
    assert "key 'kind' must be one of 'android', 'linux', 'mcu', got 'jailed'" in result.stderr
    assert "key 'transport.type' must be one of" in result.stderr
    assert "got 'jail'" in result.stderr


def test_a_plugin_claiming_a_builtin_name_is_refused(home: Path, tmp_path: Path) -> None:
    site = make_dist(
        tmp_path,
        "edgeclash",
        {"edgetool.transports": {"ssh": "edgeclash:TRANSPORT"}},
        {"edgeclash.py": "TRANSPORT = None\n"},
    )
    env = {"PYTHONPATH": str(site)}
    result = run_cli("deploy", "-m", str(TINY_ONNX), "-r", "1", env=env)
    assert_one_line_error(result, 5, "'ssh'", "edgeclash")
