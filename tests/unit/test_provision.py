"""Provisioning without a device: platform tags, [provision] validation, host-side fetch
from a local wheelhouse (never an index), and the cache lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgetool.errors import ConfigError
from edgetool.provision import DeviceFacts, fetch, import_names, platform_tags
from edgetool.targets import load_target_file
from tests.conftest import assert_one_line_error
from tests.wheels import build_wheel


def test_platform_tags_cover_every_manylinux_up_to_the_device_glibc() -> None:
    tags = platform_tags("aarch64", "2.36")
    assert tags[0] == "manylinux_2_36_aarch64"
    assert tags[-3:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "linux_aarch64"]
    assert len(tags) == (36 - 17 + 1) + 2
    assert platform_tags("x86_64", "2.17") == [
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "linux_x86_64",
    ]
    with pytest.raises(ConfigError):
        platform_tags("aarch64", "musl")


def _target(tmp_path: Path, body: str, head: str = "") -> Path:
    path = tmp_path / "pi.toml"
    path.write_text(head + '[transport]\ntype = "ssh"\nhost = "pi"\n' + body)
    return path


def test_provision_section_defaults_and_venv_python(tmp_path: Path) -> None:
    target = load_target_file(_target(tmp_path, "[provision]\n", 'runtimes = ["litert"]\n'))
    assert target.provision is not None
    assert target.provision.packages == ("ai-edge-litert", "numpy")
    assert target.provision.venv == "venv"
    assert target.python == "edgetool/venv/bin/python"
    assert "edgetool provision --target pi" in (target.missing_python_hint or "")
    both = load_target_file(_target(tmp_path, "[provision]\n"))
    assert both.provision is not None
    assert both.provision.packages == ("onnxruntime", "ai-edge-litert", "numpy")


def test_explicit_python_wins_and_no_section_keeps_the_default(tmp_path: Path) -> None:
    explicit = load_target_file(_target(tmp_path, "[provision]\n", 'python = "/usr/bin/python3"\n'))
    assert explicit.python == "/usr/bin/python3"
    assert explicit.missing_python_hint is None
    assert load_target_file(_target(tmp_path, "")).python is None


def test_provision_keys_parse(tmp_path: Path) -> None:
    body = (
        '[provision]\nvenv = "/opt/rt"\npackages = ["numpy<2", "onnxruntime==1.20.1"]\n'
        'wheelhouse = "wheels"\nmachine = "aarch64"\npython_version = "3.11"\nglibc = "2.36"\n'
    )
    target = load_target_file(_target(tmp_path, body, 'workdir = "~/bench"\n'))
    p = target.provision
    assert p is not None
    assert p.packages == ("numpy<2", "onnxruntime==1.20.1")
    assert p.wheelhouse == (tmp_path / "wheels").resolve()
    assert (p.machine, p.python_version, p.glibc) == ("aarch64", "3.11", "2.36")
    assert p.declared
    assert target.python == "/opt/rt/bin/python"


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("[provision]\nvenvv = 'x'\n", ["unknown key 'provision.venvv'"]),
        ("[provision]\npackages = 'numpy'\n", ["provision.packages", "list"]),
        ("[provision]\npackages = [1]\n", ["provision.packages", "requirement"]),
        ("[provision]\npackages = ['--index-url=http://x']\n", ["provision.packages"]),
        ("[provision]\npackages = []\n", ["provision.packages", "non-empty"]),
        ("[provision]\nmachine = 64\n", ["provision.machine", "a string"]),
        ("[provision]\npython_version = '3'\n", ["provision.python_version", "3.11"]),
        ("[provision]\nglibc = 2.36\n", ["provision.glibc", "a string"]),
        ("[provision]\nvenv = '../up'\n", ["provision.venv"]),
        ("provision = 3\n", ["key 'provision'", "a table"]),
    ],
)
def test_invalid_provision_sections(tmp_path: Path, body: str, needles: list[str]) -> None:
    # top-level keys must come before [transport]
    path = (
        _target(tmp_path, "", body) if body.startswith("provision =") else _target(tmp_path, body)
    )
    with pytest.raises(ConfigError) as info:
        load_target_file(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_provision_section_refused_on_mcu_targets(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        'kind = "mcu"\n[transport]\ntype = "serial"\nurl = "socket://127.0.0.1:1"\n'
        '[mcu]\nboard = "b"\nflash = "none"\nflash_bytes = 1\nram_bytes = 1\n[provision]\n'
    )
    with pytest.raises(ConfigError, match="kind 'linux'"):
        load_target_file(path)


def test_import_names_come_from_the_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "my-dist", "1.0", extra_files={"extra_mod.py": "x = 1\n"})
    # build_wheel names the package dir after the dist; a dash is not importable but
    # the helper reports what the wheel really installs
    assert import_names(wheel) == ["extra_mod", "my-dist"]


def _no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach an index fails at once (127.0.0.1:9 refuses)."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")


def test_fetch_from_a_wheelhouse_locks_and_reuses(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_index(monkeypatch)
    house = tmp_path / "house"
    build_wheel(house, "thatpkg", "1.0", requires=["helperpkg"])
    build_wheel(house, "helperpkg", "0.1")
    facts = DeviceFacts("aarch64", "3.11", "2.36")
    first = fetch(facts, ["thatpkg"], house)
    assert not first.cache_hit
    assert sorted(w.filename for w in first.wheels) == [
        "helperpkg-0.1-py3-none-any.whl",
        "thatpkg-1.0-py3-none-any.whl",
    ]
    assert first.directory == home / "cache" / "wheels" / "cp311-aarch64-glibc2.36"
    lock = json.loads((first.directory / "lock.json").read_text())
    assert [e["requirements"] for e in lock.values()] == [["thatpkg"]]
    again = fetch(facts, ["thatpkg"], house)
    assert again.cache_hit and again.wheels == first.wheels
    # a damaged cached wheel is not trusted: fetched again
    (first.directory / "thatpkg-1.0-py3-none-any.whl").write_bytes(b"broken")
    assert not fetch(facts, ["thatpkg"], house).cache_hit
    # a new version in the wheelhouse is a new set
    build_wheel(house, "thatpkg", "1.1", requires=["helperpkg"])
    newer = fetch(facts, ["thatpkg"], house)
    assert not newer.cache_hit
    assert "thatpkg-1.1-py3-none-any.whl" in {w.filename for w in newer.wheels}


def _declared(tmp_path: Path, house: Path, packages: str = '["thatpkg"]') -> Path:
    tdir = tmp_path / "targets"
    tdir.mkdir(exist_ok=True)
    (tdir / "offline-pi.toml").write_text(
        # 192.0.2.1 (TEST-NET-1) is never contacted: the facts are declared
        'kind = "linux"\n[transport]\ntype = "ssh"\nhost = "192.0.2.1"\n'
        f'[provision]\npackages = {packages}\nwheelhouse = "{house}"\n'
        'machine = "aarch64"\npython_version = "3.11"\nglibc = "2.36"\n'
    )
    return tdir


def test_fetch_only_with_declared_facts_needs_no_device(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_index(monkeypatch)
    house = tmp_path / "house"
    build_wheel(house, "thatpkg", "2.0")
    tdir = _declared(tmp_path, house)
    result = cli("--targets-dir", str(tdir), "provision", "-t", "offline-pi", "--fetch-only")
    assert result.code == 0, result.stderr
    assert "aarch64 · python 3.11 · glibc 2.36" in result.stdout
    assert "fetched only" in result.stdout
    data = cli(
        "--targets-dir", str(tdir), "provision", "-t", "offline-pi", "--fetch-only", "--json"
    ).json()
    assert data["fetch_only"] and data["fetch"]["cache"] == "hit"
    assert data["fetch"]["wheels"][0]["filename"] == "thatpkg-2.0-py3-none-any.whl"
    assert data["transport"] is None and not data["installed"]


def test_missing_package_is_one_clear_line(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_index(monkeypatch)
    house = tmp_path / "house"
    build_wheel(house, "thatpkg", "2.0")
    tdir = _declared(tmp_path, house, '["thatpkg", "nosuchpkg"]')
    result = cli("--targets-dir", str(tdir), "provision", "-t", "offline-pi", "--fetch-only")
    assert_one_line_error(result, 5, "No matching distribution found for nosuchpkg")


def test_provision_refuses_mcu_and_sectionless_targets(cli: Any) -> None:
    assert_one_line_error(cli("provision", "-t", "mcu-m4-qemu"), 5, "kind 'mcu'")
    assert_one_line_error(cli("provision", "-t", "local"), 5, "no [provision] section")


def test_help_says_offline_and_fetch_only(cli: Any) -> None:
    result = cli("provision", "--help")
    assert result.code == 0
    assert "needs no internet" in result.stdout and "--fetch-only" in result.stdout
    assert "provision" in cli("--help").stdout
