"""Where shipped files and user targets are found (edgetool.paths and the target search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgetool import paths
from edgetool.firmware import build
from edgetool.targets import load_target
from edgetool.zoo import tinymlp

REPO = Path(__file__).resolve().parents[2]


def write_target(directory: Path, name: str, description: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(
        f'description = "{description}"\nkind = "linux"\n\n[transport]\ntype = "local"\n'
    )
    return path


def test_from_a_checkout_shipped_files_are_the_repo_folders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("EDGETOOL_MODELS", "EDGETOOL_FIRMWARE_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert paths.builtin_targets_dir() == REPO / "targets"
    assert paths.models_dir() == REPO / "models"
    assert paths.firmware_stubs_dir() == REPO / "firmware_stubs"
    assert build.firmware_dir() == REPO / "firmware_stubs"
    assert tinymlp.repo_models_dir() == REPO / "models"
    assert (paths.builtin_targets_dir() / "local.toml").is_file()


def test_env_overrides_win_over_shipped_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETOOL_MODELS", str(tmp_path / "zoo"))
    monkeypatch.setenv("EDGETOOL_FIRMWARE_DIR", str(tmp_path / "fw"))
    assert paths.models_dir() == tmp_path / "zoo"
    assert build.firmware_dir() == tmp_path / "fw"


def test_user_targets_dir_follows_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGETOOL_CONFIG_DIR", raising=False)
    monkeypatch.delenv("EDGETOOL_TARGETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert paths.user_targets_dirs() == [tmp_path / "xdg" / "edgetool" / "targets"]
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert paths.user_targets_dirs() == [tmp_path / "me" / ".config" / "edgetool" / "targets"]


def test_a_target_in_the_xdg_dir_is_found_by_the_cli(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = tmp_path / "xdg"
    write_target(xdg / "edgetool" / "targets", "bench-box", "from the user's config dir")
    env = {"XDG_CONFIG_HOME": str(xdg)}
    monkeypatch.delenv("EDGETOOL_CONFIG_DIR")
    shown = cli("targets", "show", "bench-box", "--json", env=env)
    assert shown.code == 0, shown.stderr
    assert shown.json()["description"] == "from the user's config dir"
    listed = cli("targets", "list", "--json", env=env)
    assert listed.code == 0, listed.stderr
    names = {t["name"] for t in listed.json()}
    assert {"bench-box", "local"} <= names


def test_target_precedence_builtin_xdg_env_then_targets_dir(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, env_dir, cli_dir = tmp_path / "cfg", tmp_path / "env", tmp_path / "cli"
    monkeypatch.setenv("EDGETOOL_CONFIG_DIR", str(config))
    assert load_target("local").description == "This host (subprocess sandbox)"
    write_target(config / "targets", "local", "xdg")
    assert load_target("local").description == "xdg"
    write_target(env_dir, "local", "env")
    monkeypatch.setenv("EDGETOOL_TARGETS", str(env_dir))
    assert load_target("local").description == "env"
    write_target(cli_dir, "local", "targets-dir")
    assert load_target("local", [cli_dir]).description == "targets-dir"
