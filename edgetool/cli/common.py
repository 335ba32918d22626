"""Small helpers every command shares: output, JSON, target loading."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgetool.targets import Target, load_target

if TYPE_CHECKING:
    from rich.console import Console


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def targets_dirs(ctx: click.Context) -> list[Path]:
    obj = ctx.find_root().obj or {}
    return list(obj.get("targets_dirs", []))


def get_target(ctx: click.Context, name: str) -> Target:
    return load_target(name, targets_dirs(ctx))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
