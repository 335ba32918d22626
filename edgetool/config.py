"""TOML files users write (targets, plans, recipes, [meter], [emulator]): one reader,
every problem of a file reported at once, each naming the file and the key."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

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
    except UnicodeDecodeError as exc:
        # A binary file given where a target/plan belongs (a model, an image, junk).
        raise ConfigError(f"{path}: not a TOML text file (byte {exc.start} is not UTF-8)") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from exc


_MISSING: Any = object()


class SectionOptions(Mapping[str, Any]):
    """A section's options (`[meter]` without `type`) that remember their file, so the
    driver that validates them later can name it while still taking a plain Mapping
    (third-party meters and emulators keep their one-argument constructors)."""

    def __init__(self, data: Mapping[str, Any], source: Path | None, prefix: str) -> None:
        self._data = dict(data)
        self.source = source
        self.prefix = prefix

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)


@dataclass(frozen=True)
class Section:
    """An optional typed section (`[meter]`, `[emulator]`) whose details later parts validate."""

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


def config_error(source: Path | None, problems: Sequence[str]) -> ConfigError:
    """One error for all of a file's problems: a single one reads as one line, several as
    a count and one indented line each (fixing a file one rerun per typo wastes a night)."""
    where = f"{source}: " if source is not None else ""
    if len(problems) == 1:
        return ConfigError(where + problems[0])
    lines = [f"{where}{len(problems)} problems:", *(f"  {problem}" for problem in problems)]
    return ConfigError("\n".join(lines))


class TableReader:
    """Pulls typed keys out of one TOML table, naming file and key on every problem.

    A problem is recorded and reading goes on with the default, so one ConfigError at the
    end lists every mistake of the file. Readers of sub-tables (`table`, `child`) share
    their parent's list; the root's `finish()` raises it.
    """

    def __init__(
        self,
        source: Path | None,
        table: Mapping[str, Any],
        prefix: str = "",
        *,
        problems: list[str] | None = None,
    ) -> None:
        self.source = source
        self.raw = dict(table)
        self.prefix = prefix
        self.seen: set[str] = set()
        self.is_root = problems is None
        self.problems: list[str] = [] if problems is None else problems

    @classmethod
    def of_options(cls, options: Mapping[str, Any], prefix: str) -> TableReader:
        """A root reader over a section's options, naming their file when they know it."""
        if isinstance(options, SectionOptions):
            return cls(options.source, options, options.prefix)
        return cls(None, options, prefix)

    def child(self, table: Mapping[str, Any], prefix: str) -> TableReader:
        """A reader of a table found elsewhere (a list item, a merged overlay), sharing
        this reader's problems."""
        return TableReader(self.source, table, prefix, problems=self.problems)

    @overload
    def table(self, key: str) -> TableReader | None: ...

    @overload
    def table(self, key: str, default: Mapping[str, Any]) -> TableReader: ...

    def table(self, key: str, default: Mapping[str, Any] | None = None) -> TableReader | None:
        """A reader of the sub-table KEY sharing this one's problems; DEFAULT when KEY is
        absent or not a table (recorded), None when there is no DEFAULT."""
        raw = self.get(key, dict, "a table", _MISSING)
        if raw is _MISSING:
            if default is None:
                return None
            raw = default
        return self.child(raw, f"{self.prefix}{key}.")

    def key(self, key: str) -> str:
        """KEY as the user finds it in the file (dotted from the top)."""
        return f"{self.prefix}{key}"

    def problem(self, message: str) -> None:
        """Record a problem worded by the caller (without the file, which is added once)."""
        self.problems.append(message)

    def reject(self, key: str, expected: str, got: object) -> None:
        self.problem(f"key '{self.prefix}{key}' must be {expected}, got {got!r}")

    def get(self, key: str, kind: type | tuple[type, ...], expected: str, default: Any) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kind):
            self.reject(key, expected, value)
            return default
        return value

    def value(self, key: str, default: Any = None) -> Any:
        """The raw value of KEY (known, so not reported unknown) for a caller that checks
        it itself and words its own problem."""
        self.seen.add(key)
        return self.raw.get(key, default)

    def text(self, key: str, default: str | None = None) -> Any:
        return self.get(key, str, "a string", default)

    def required_str(self, key: str) -> str:
        value = self.get(key, str, "a string", _MISSING)
        if value is _MISSING:
            if key not in self.raw:
                self.problem(f"missing required key '{self.prefix}{key}'")
            return ""
        return str(value)

    def number(self, key: str, default: float) -> float:
        value = self.get(key, (int, float), "a number", default)
        if value <= 0:
            self.reject(key, "a positive number", value)
            return float(default)
        return float(value)

    def port(self, key: str, default: int | None) -> Any:
        value = self.get(key, int, "an integer", default)
        if value is not None and not 0 < value < 65536:
            self.reject(key, "an integer from 1 to 65535", value)
            return default
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> Any:
        """One of CHOICES; a missing key without DEFAULT, or a bad value, gives DEFAULT."""
        expected = "one of " + ", ".join(repr(c) for c in choices)
        value = self.get(key, str, expected, _MISSING)
        if value is _MISSING:
            if key not in self.raw and default is None:
                self.problem(f"missing key '{self.prefix}{key}' ({expected})")
            return default
        if value not in choices:
            self.reject(key, expected, value)
            return default
        return value

    def section(self, key: str) -> Section | None:
        sub = self.table(key)
        if sub is None:
            return None
        kind = sub.required_str("type")
        options = {k: v for k, v in sub.raw.items() if k != "type"}
        if not kind:
            return None
        return Section(type=kind, options=SectionOptions(options, self.source, sub.prefix))

    def finish(self) -> None:
        """Record this table's unknown keys; the root raises everything recorded."""
        unknown = sorted(set(self.raw) - self.seen)
        known = ", ".join(sorted(self.seen)) or "none"
        for key in unknown:
            self.problem(f"unknown key '{self.prefix}{key}' (known keys: {known})")
        if self.is_root:
            self.check()

    def check(self) -> None:
        """Raise what was recorded so far (for a caller that cannot go on without it)."""
        if self.problems:
            raise config_error(self.source, self.problems)


def expand_path(path: str) -> Path:
    """A path from a config file: `~` and `$VARS` expanded on this host."""
    return Path(os.path.expandvars(path)).expanduser()
