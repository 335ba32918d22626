"""`edgetool provision` over a real OpenSSH sshd on 127.0.0.1: the device's own python3
makes the venv and its pip installs wheels built here (no index anywhere)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliResult, assert_one_line_error, run_cli
from tests.wheels import build_wheel

pytestmark = pytest.mark.integration


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach a package index fails at once (127.0.0.1:9 refuses)."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")


def provisioned_target(
    tmp_path: Path, state: dict[str, Any], house: Path, packages: str = '["thatpkg"]'
) -> tuple[Path, Path]:
    """The loopback device as a target of its own with a [provision] section; returns the
    targets dir and the device workdir (fresh per test)."""
    workdir = Path(state["workdir"]) / tmp_path.name
    t = state["transport"]
    lines = [
        'kind = "linux"',
        f'workdir = "{workdir}"',
        "[transport]",
        'type = "ssh"',
        'host = "127.0.0.1"',
        "use_ssh_config = false",
        f"port = {t['port']}",
        f'user = "{t["user"]}"',
        f'identity_file = "{t["identity_file"]}"',
        f'known_hosts = "{t["known_hosts"]}"',
        "[provision]",
        f"packages = {packages}",
        f'wheelhouse = "{house}"',
    ]
    targets = tmp_path / "targets"
    targets.mkdir(exist_ok=True)
    (targets / "offline-pi.toml").write_text("\n".join(lines) + "\n")
    return targets, workdir


def provision(targets: Path, *args: str) -> CliResult:
    return run_cli("--targets-dir", str(targets), "provision", "-t", "offline-pi", *args)


def test_provision_installs_then_nothing_to_do_then_upgrades(
    loopback: dict[str, Any], tmp_path: Path, offline: None
) -> None:
    house = tmp_path / "house"
    build_wheel(house, "thatpkg", "1.0", requires=["helperpkg"])
    build_wheel(house, "helperpkg", "0.1")
    targets, workdir = provisioned_target(tmp_path, loopback, house)
    venv = workdir / "venv"

    # before: the runner's interpreter is the venv's, which is not there yet
    before = run_cli("--targets-dir", str(targets), "targets", "check", "offline-pi")
    assert_one_line_error(before, 7, "venv/bin/python", "edgetool provision --target offline-pi")

    first = provision(targets, "--json")
    assert first.code == 0, first.stderr
    data = first.json()
    assert data["installed"] and data["created_venv"] and not data["nothing_to_do"]
    assert data["push"]["sent"] == 2 and data["push"]["skipped"] == 0
    assert data["versions"] == {"thatpkg": "1.0"}
    assert data["python"] == f"{venv}/bin/python"
    assert data["device"]["python"] and data["device"]["glibc"].startswith("2.")
    marker = venv / "edgetool-provision.json"
    record = json.loads(marker.read_text())
    assert record["requirements"] == ["thatpkg"] and record["venv"] == str(venv)
    assert sorted(name for name, _ in record["wheels"]) == [
        "helperpkg-0.1-py3-none-any.whl",
        "thatpkg-1.0-py3-none-any.whl",
    ]
    assert (venv / "bin" / "python").exists()
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import thatpkg, helperpkg; print(thatpkg.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "1.0"

    # second run: no push, no install, marker untouched
    stamp = marker.stat().st_mtime_ns
    wheel_stamp = (workdir / "wheels" / "thatpkg-1.0-py3-none-any.whl").stat().st_mtime_ns
    second = provision(targets)
    assert second.code == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert "cache hit, no network" in second.stdout
    assert "push " not in second.stderr and "install " not in second.stderr
    again = provision(targets, "--json").json()
    assert again["nothing_to_do"] and not again["installed"]
    assert again["push"] == {"sent": 0, "skipped": 0, "bytes_sent": 0, "removed": []}
    assert marker.stat().st_mtime_ns == stamp
    assert (workdir / "wheels" / "thatpkg-1.0-py3-none-any.whl").stat().st_mtime_ns == wheel_stamp

    # a new version in the wheelhouse: installed; the unchanged wheel is not re-sent
    build_wheel(house, "thatpkg", "1.1", requires=["helperpkg"])
    third = provision(targets, "--json")
    assert third.code == 0, third.stderr
    upgraded = third.json()
    assert upgraded["installed"] and not upgraded["created_venv"]
    assert upgraded["versions"] == {"thatpkg": "1.1"}
    assert upgraded["push"]["sent"] == 1 and upgraded["push"]["skipped"] == 1
    assert upgraded["push"]["removed"] == ["thatpkg-1.0-py3-none-any.whl"]
    assert marker.stat().st_mtime_ns != stamp

    # the runner now runs under the venv's python
    # (this wheelhouse holds no runtime: check shows the facts, then fails as a health check)
    check = run_cli("--targets-dir", str(targets), "targets", "check", "offline-pi", "--json")
    assert check.code == 7, check.stderr
    assert "none of the target's runtimes" in check.stderr
    assert check.json()["device"]["python_path"].startswith(str(venv))


def test_a_wheel_pip_cannot_install_leaves_no_marker(
    loopback: dict[str, Any], tmp_path: Path, offline: None
) -> None:
    house = tmp_path / "house"
    # an archive entry outside site-packages: pip on the device refuses to install it
    build_wheel(house, "badpkg", "1.0", extra_files={"../escape.py": "x = 1\n"})
    targets, workdir = provisioned_target(tmp_path, loopback, house, '["badpkg"]')
    result = provision(targets)
    assert_one_line_error(result, 7, "pip install on the device failed", "outside")
    assert not (workdir / "venv" / "edgetool-provision.json").exists()
    # and it is not taken as done the next time either
    assert_one_line_error(provision(targets), 7, "pip install on the device failed")


def test_missing_package_fails_before_touching_the_device(
    loopback: dict[str, Any], tmp_path: Path, offline: None
) -> None:
    house = tmp_path / "house"
    build_wheel(house, "thatpkg", "1.0")
    targets, workdir = provisioned_target(tmp_path, loopback, house, '["thatpkg", "nosuchpkg"]')
    result = provision(targets)
    assert_one_line_error(result, 5, "No matching distribution found for nosuchpkg")
    assert not (workdir / "venv").exists()
    assert not (workdir / "wheels").exists()


def test_declared_facts_that_contradict_the_device(
    loopback: dict[str, Any], tmp_path: Path, offline: None
) -> None:
    house = tmp_path / "house"
    build_wheel(house, "thatpkg", "1.0")
    targets, _ = provisioned_target(tmp_path, loopback, house)
    path = targets / "offline-pi.toml"
    path.write_text(path.read_text() + 'machine = "riscv64"\n')
    assert_one_line_error(provision(targets), 5, "provision.machine", "riscv64")


def test_a_venv_path_holding_other_files_is_never_touched(
    loopback: dict[str, Any], tmp_path: Path, offline: None
) -> None:
    """`venv` pointing at a directory of the user's: provision used to run `python -m venv`
    into it and, when that failed, delete the whole directory."""
    house = tmp_path / "house"
    build_wheel(house, "thatpkg", "1.0")
    targets, _ = provisioned_target(tmp_path, loopback, house)
    theirs = tmp_path / "their-dir"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    toml = targets / "offline-pi.toml"
    toml.write_text(toml.read_text().replace("[provision]\n", f'[provision]\nvenv = "{theirs}"\n'))
    result = provision(targets)
    assert_one_line_error(result, 5, "is not a venv", str(theirs))
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert (theirs / "notes.txt").read_text() == "mine"
