"""Where edgetool keeps things on the host; every location is overridable by env."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


def cache_dir() -> Path:
    """Exports, emulator images: safe to delete, rebuilt on demand."""
    xdg = _env_path("XDG_CACHE_HOME", Path.home() / ".cache")
    return _env_path("EDGETOOL_CACHE_DIR", xdg / "edgetool")


def state_dir() -> Path:
    """Running emulators, generated keys: small, must survive between commands."""
    xdg = _env_path("XDG_STATE_HOME", Path.home() / ".local" / "state")
    return _env_path("EDGETOOL_STATE_DIR", xdg / "edgetool")


def config_dir() -> Path:
    """User secrets edgetool generates once and reuses (the ADB key a watch has allowed)."""
    xdg = _env_path("XDG_CONFIG_HOME", Path.home() / ".config")
    return _env_path("EDGETOOL_CONFIG_DIR", xdg / "edgetool")


def results_dir() -> Path:
    return _env_path("EDGETOOL_RESULTS", Path("results"))


def models_dir() -> Path:
    """The zoo: models/NAME/recipe.toml (EDGETOOL_MODELS points at another zoo)."""
    return _env_path("EDGETOOL_MODELS", REPO_ROOT / "models")


def builtin_targets_dir() -> Path:
    """Targets shipped with the repo (or the installed package's copy of them)."""
    return REPO_ROOT / "targets"


def user_targets_dirs() -> list[Path]:
    """`EDGETOOL_TARGETS` is a path list (os.pathsep); later entries win over the builtins."""
    value = os.environ.get("EDGETOOL_TARGETS", "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]
