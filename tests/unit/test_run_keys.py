"""The files a deploy writes keep their keys: manifest.json and summary.json are built as
typed records, and must come out with the keys the dict-building writers gave them (the
fixtures were taken from runs made before the records existed). Values differ run to run;
keys, including those written as null, must not. A new key is added to the fixtures on
purpose, with the change that writes it (`inputs` and `settings.input_shapes`: the inputs
a run was fed, and the shapes asked for; `settings.ep`/`delegate`, `runtime.ep`/`providers`
and `accelerators`: what ran the graph, asked and used, and what the device offered)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "run_keys"

FREE_FORM = {"device", "runtimes", "env_before", "env_after"}
"""Sections whose keys are the device's own report: they differ from host to host."""


def key_tree(value: Any, key: str = "") -> Any:
    """The keys of a JSON value, nested: an object's keys map to their own trees, a list of
    objects to the union of its elements' trees; anything else (numbers, null) is ''."""
    if key in FREE_FORM:
        return "*"
    if isinstance(value, dict):
        return {k: key_tree(v, k) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        merged: dict[str, Any] = {}
        for item in value:
            for k, tree in key_tree(item).items():
                merged.setdefault(k, tree)
        return [merged]
    return ""


def energy_target(tmp_path: Path) -> Path:
    """This host with the estimate meter: no clock to align, so the energy figures carry
    `alignment: null` and the power entry null windows, keys a typed writer could drop."""
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "est.toml").write_text(
        'kind = "linux"\n[transport]\ntype = "local"\n'
        '[meter]\ntype = "estimate"\nidle_w = 2.0\nactive_w = 6.5\n'
    )
    return targets


@pytest.mark.parametrize(
    ("fixture", "args"),
    [
        ("local.json", ["deploy", "-m", "tiny-mlp", "-n", "20", "-r", "2", "--warmup", "2"]),
        ("local-estimate-energy.json", ["deploy", "-t", "est", "-m", "tiny-mlp", "--energy"]),
    ],
)
def test_deploy_writes_the_keys_it_always_wrote(
    cli: Any, tmp_path: Path, fixture: str, args: list[str]
) -> None:
    out = cli("--targets-dir", str(energy_target(tmp_path)), *args, "--json")
    assert out.code == 0, out.stderr
    data = out.json()
    run_dir = Path(data["run_dir"])
    expected = json.loads((FIXTURES / fixture).read_text())
    for name in ("manifest.json", "summary.json"):
        written = json.loads((run_dir / name).read_text())
        assert key_tree(written) == expected[name], name
    # --json prints the same records the files hold
    assert data["manifest"] == json.loads((run_dir / "manifest.json").read_text())
    assert data["summary"] == json.loads((run_dir / "summary.json").read_text())


def test_key_tree_sees_a_key_written_as_null() -> None:
    with_null = {"energy": {"mean_power_w": 1.0, "alignment": None}}
    dropped = {"energy": {"mean_power_w": 1.0}}
    assert key_tree(with_null) != key_tree(dropped)
    assert key_tree({"reps": [{"a": 1}, {"b": None}]}) == {"reps": [{"a": "", "b": ""}]}
    assert key_tree({"device": {"cores": 4}}) == {"device": "*"}
