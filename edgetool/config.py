"""TOML files users write (targets, plans, recipes): one reader, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edgetool.errors import ConfigError

# The one place that picks the TOML parser (others import it from here): tomllib is 3.11+,
# tomli is the same parser from PyPI, a dependency on 3.10 only.
if sys.version_info >= (3, 11):
    import tomllib as tomllib
else:
    import tomli as tomllib


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed file; an unreadable or malformed one is a ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from exc
