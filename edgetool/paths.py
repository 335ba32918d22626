"""Where edgetool keeps things on the host; every location is overridable by env.

This module is also the one place that knows where the files shipped with edgetool are
(targets/, models/, firmware_stubs/, links/): the checkout's top-level folders when running from
source or an editable install, the package's copy under edgetool/_data/ when installed
from a wheel (pyproject.toml maps the folders there).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

CHECKOUT = Path(__file__).resolve().parent.parent
"""The source tree this module was imported from (site-packages when installed)."""

Shipped = Literal["targets", "models", "firmware_stubs", "links"]


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


def shipped_dir(name: Shipped) -> Path:
    """A folder shipped with edgetool: the installed package's copy when there is one, else
    the checkout's own folder (so an editable install reads, and `make models` writes, the
    repo's files). A wheel installed as a zip has no real folder; it is not supported."""
    packaged = resources.files("edgetool") / "_data" / name
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return CHECKOUT / name


def models_dir() -> Path:
    """The zoo: models/NAME/recipe.toml (EDGETOOL_MODELS points at another zoo)."""
    return _env_path("EDGETOOL_MODELS", shipped_dir("models"))


def builtin_targets_dir() -> Path:
    """Targets shipped with edgetool (the repo's targets/ or the installed package's copy)."""
    return shipped_dir("targets")


def links_dir() -> Path:
    """Link profiles shipped with edgetool (`--link wifi` reads links/wifi.toml)."""
    return shipped_dir("links")


def firmware_stubs_dir() -> Path:
    """The bench firmware sources; builds write to OUT under cache_dir(), never in here
    (an installed package may be read-only). EDGETOOL_FIRMWARE_DIR points at another tree."""
    return _env_path("EDGETOOL_FIRMWARE_DIR", shipped_dir("firmware_stubs"))


def user_targets_dirs() -> list[Path]:
    """Target dirs a user adds, lowest precedence first: config_dir()/targets (XDG, so
    ~/.config/edgetool/targets by default), then `EDGETOOL_TARGETS`, a path list
    (os.pathsep) whose later entries win. All of them win over the builtins."""
    value = os.environ.get("EDGETOOL_TARGETS", "")
    return [config_dir() / "targets", *(Path(p).expanduser() for p in value.split(os.pathsep) if p)]
