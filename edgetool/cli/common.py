"""Small helpers every command shares: output, JSON, target loading."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from edgetool.targets import Target, load_target

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


WIDE = 10_000
"""Columns a console pretends to have when stdout is not a terminal: a pipe or a file gets
every name and run id whole, one row a line, never cut to fit 80 columns."""


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = WIDE
    return out


def print_whole(out: Console, table: Any) -> None:
    """Print TABLE with every cell whole: on a terminal narrower than the table the lines
    wrap (as `ls -l`'s do) instead of rich shortening names and run ids with "…" or
    dropping columns."""
    needed = out.measure(table, options=out.options.update_width(WIDE)).maximum
    if needed > out.width:
        out.width = needed
    if out.is_terminal:
        out.print(table)
        return
    # Piped: no padding after a row's last cell (cut, awk and diff see what a user sees).
    with out.capture() as captured:
        out.print(table)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


class _JsonState:
    requested = False
    """A command's --json was given: a failure is reported as a JSON object too."""
    emitted = False
    """A JSON document is already on stdout (a verdict that then exits non-zero)."""


def json_requested() -> bool:
    return _JsonState.requested


def json_emitted() -> bool:
    return _JsonState.emitted


def reset_json_state() -> None:
    """Forget a previous invocation (tests run several in one process)."""
    _JsonState.requested = _JsonState.emitted = False


def plain_json(value: Any) -> Any:
    """VALUE with every non-finite float as null (JSON has no NaN or Infinity, and
    `json.loads` elsewhere, jq or a browser refuse them) and tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(item) for item in value]
    return value


def _fallback(value: Any) -> Any:
    """numpy scalars and arrays as numbers and lists; anything else as its text."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return plain_json(tolist())
    return str(value)


def json_text(data: Any) -> str:
    """The one encoder every --json output goes through: always valid JSON."""
    return json.dumps(
        plain_json(data), indent=2, sort_keys=True, default=_fallback, allow_nan=False
    )


def emit_json(data: Any) -> None:
    sys.stdout.write(json_text(data) + "\n")
    _JsonState.emitted = True


def _note_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        _JsonState.requested = True
    return value


def targets_dirs(ctx: click.Context) -> list[Path]:
    obj = ctx.find_root().obj or {}
    return list(obj.get("targets_dirs", []))


def get_target(ctx: click.Context, name: str) -> Target:
    return load_target(name, targets_dirs(ctx))


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    is_eager=True,  # noted before other options are checked: their errors come as JSON too
    callback=_note_json,
    help='Print JSON for machines; a failure prints {"error": {...}} and exits non-zero.',
)


def old_name(flag: str, dest: str, **attrs: Any) -> Callable[[F], F]:
    """A hidden option FLAG that fills DEST when DEST's own option was not given: an
    option renamed for one meaning of -o/-f keeps working in scripts that spell the old
    long name."""
    alias = f"_old_{dest}"

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            old = kwargs.pop(alias, None)
            if kwargs.get(dest) is None and old is not None:
                kwargs[dest] = old
            return command(*args, **kwargs)

        option = click.option(flag, alias, hidden=True, **attrs)
        return option(wrapper)  # type: ignore[return-value]

    return decorate


def refused_short(flag: str, message: str) -> Callable[[F], F]:
    """A hidden FLAG taking a value, refused with MESSAGE: an old short option whose
    meaning changed fails clearly instead of being read as something else."""

    def refuse(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            raise click.UsageError(message, ctx)

    return click.option(flag, hidden=True, expose_value=False, callback=refuse)


results_dir_help = "Where runs are looked up [./results or EDGETOOL_RESULTS]."


def results_dir_option(command: F) -> F:
    """--results-dir DIR: where runs are read from. `--out` (its old name in `results`)
    still works; `-o` is an output path in every command, never this (see `no_short_o`)."""
    command = old_name("--out", "root", type=click.Path(file_okay=False, path_type=Path))(command)
    option = click.option(
        "--results-dir",
        "root",
        type=click.Path(file_okay=False, path_type=Path),
        help=results_dir_help,
    )
    return option(command)


no_short_o = refused_short(
    "-o", "-o is an output path; the directory runs are read from is --results-dir DIR"
)
"""For commands that read runs and write nothing: `-o` once meant --results-dir there."""


def writable_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An output directory checked (made if missing) while the options are read: a path
    that cannot hold files fails as a usage error naming it, before any device is touched
    or anything is measured."""
    if value is None:
        return None
    try:
        value.mkdir(parents=True, exist_ok=True)
        probe = value / f".edgetool-write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write under {value}: {exc.strerror or exc}", ctx, param
        ) from None
    return value
