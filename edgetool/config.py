"""TOML files users write (targets, plans, recipes): one reader, one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Section:
    """An optional typed section (`[meter]`, `[emulator]`) whose details later parts validate."""

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


class TableReader:
    """Pulls typed keys out of one TOML table, naming file and key on every error."""

    def __init__(self, source: Path, table: Mapping[str, Any], prefix: str = "") -> None:
        self.source = source
        self.table = dict(table)
        self.prefix = prefix
        self.seen: set[str] = set()

    def fail(self, key: str, expected: str, got: object) -> ConfigError:
        return ConfigError(
            f"{self.source}: key '{self.prefix}{key}' must be {expected}, got {got!r}"
        )

    def get(self, key: str, kind: type | tuple[type, ...], expected: str, default: Any) -> Any:
        self.seen.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if (
            isinstance(value, bool)
            and kind is not bool
            and bool not in (kind if isinstance(kind, tuple) else (kind,))
        ):
            raise self.fail(key, expected, value)
        if not isinstance(value, kind):
            raise self.fail(key, expected, value)
        return value

    def text(self, key: str, default: str | None = None) -> Any:
        return self.get(key, str, "a string", default)

    def required_str(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise ConfigError(f"{self.source}: missing required key '{self.prefix}{key}'")
        return str(value)

    def number(self, key: str, default: float) -> float:
        value = self.get(key, (int, float), "a number", default)
        if value <= 0:
            raise self.fail(key, "a positive number", value)
        return float(value)

    def port(self, key: str, default: int | None) -> Any:
        value = self.get(key, int, "an integer", default)
        if value is not None and not 0 < value < 65536:
            raise self.fail(key, "an integer from 1 to 65535", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> Any:
        value = self.text(key, default)
        if value is None or value not in choices:
            expected = "one of " + ", ".join(repr(c) for c in choices)
            if value is None:
                raise ConfigError(f"{self.source}: missing key '{self.prefix}{key}' ({expected})")
            raise self.fail(key, expected, value)
        return value

    def section(self, key: str) -> Section | None:
        raw = self.get(key, dict, "a table", None)
        if raw is None:
            return None
        sub = TableReader(self.source, raw, f"{self.prefix}{key}.")
        kind = sub.required_str("type")
        return Section(type=kind, options={k: v for k, v in raw.items() if k != "type"})

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            raise ConfigError(
                f"{self.source}: unknown key '{self.prefix}{unknown[0]}' (known keys: {known})"
            )


def expand_path(path: str) -> Path:
    """A path from a config file: `~` and `$VARS` expanded on this host."""
    return Path(os.path.expandvars(path)).expanduser()
