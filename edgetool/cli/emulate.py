"""`edgetool emulate`: build, bring up and take down emulated devices."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from edgetool.cli.common import console, emit_json, get_target, json_option
from edgetool.emulate import image_builder, open_emulator
from edgetool.emulate.base import Stage
from edgetool.units import human_bytes


def _where(state: dict[str, Any]) -> str:
    t = state["transport"]
    if "url" in t:
        return f"QEMU UART on {t['url']} ({Path(state['elf']).name})"
    if state.get("emulator"):
        return f"{state['emulator']}, SSH on {t['host']}:{t['port']}"
    return f"sshd on {t['host']}:{t['port']}"


@contextlib.contextmanager
def _stages(quiet: bool) -> Iterator[Stage]:
    """A spinner showing the current step and the time spent (builds and boots are long)."""
    if quiet:
        yield lambda _text: None
        return
    out = console(stderr=True)
    began = time.monotonic()
    if not out.is_terminal:
        # A CI log: one line per new step, the boot's countdown at most every 30 s.
        last_text, last_at = [""], [-1e9]

        def log_stage(text: str) -> None:
            now = time.monotonic()
            steady = text.startswith("booting (")
            if text != last_text[0] and (not steady or now - last_at[0] >= 30):
                out.print(f"[{now - began:4.0f} s] {text}")
                last_text[0], last_at[0] = text, now

        yield log_stage
        return
    with out.status("starting") as status:

        def stage(text: str) -> None:
            status.update(f"[{time.monotonic() - began:4.0f} s] {text}")

        yield stage


@click.group()
def command() -> None:
    """Build, start and stop emulated devices: a loopback sshd, QEMU Cortex-M4, and an
    emulated Raspberry Pi 4 (QEMU arm64, Debian over SSH).

    A started emulator is used like hardware: `edgetool deploy --target rpi4-qemu ...`.
    Times measured on an emulated CPU are labelled emulated everywhere.
    """


@command.command()
@click.argument("name")
@json_option
@click.pass_context
def build(ctx: click.Context, name: str, as_json: bool) -> None:
    """Build NAME's disk image (or find it cached).

    For rpi4-qemu: an arm64 Debian root filesystem from Debian's package registry
    (mmdebstrap + qemu-user-static), Debian's arm64 kernel, a small initrd, and SSH keys
    of its own. Cached under the cache dir, keyed by the recipe's hash: a second build
    is a cache hit. A cold build takes several minutes.
    """
    builder = image_builder(get_target(ctx, name))
    began = time.monotonic()
    with _stages(as_json) as stage:
        image = builder.build_image(stage)
    size = image.disk.stat().st_size
    if as_json:
        emit_json(
            {
                **image.facts,
                "dir": str(image.dir),
                "cached": image.cached,
                f"{image.disk_format}_bytes": size,
            }
        )
        return
    how = "cached" if image.cached else f"built in {time.monotonic() - began:.0f} s"
    click.echo(
        f"{name}: image {how}: {image.description}, {human_bytes(size)} "
        f"{image.disk_format} in {image.dir}"
    )


@command.command()
@click.argument("name")
@click.option("--fresh", is_flag=True, help="Discard the emulator's disk overlay first.")
@json_option
@click.pass_context
def start(ctx: click.Context, name: str, fresh: bool, as_json: bool) -> None:
    """Start NAME's emulator and wait until it answers (building its image if needed)."""
    emulator = open_emulator(get_target(ctx, name))
    with _stages(as_json) as stage:
        state = emulator.start(fresh=fresh, stage=stage)
    if as_json:
        emit_json(state)
        return
    booted = f", booted in {state['boot_seconds']:g} s" if "boot_seconds" in state else ""
    click.echo(
        f"{name}: {_where(state)} (pid {state['pid']}{booted}); "
        f"deploy with `edgetool deploy --target {name} --model ...`"
    )


@command.command()
@click.argument("name")
@json_option
@click.pass_context
def stop(ctx: click.Context, name: str, as_json: bool) -> None:
    """Stop NAME's emulator (and a stale one left by a killed run)."""
    emulator = open_emulator(get_target(ctx, name))
    stopped = emulator.stop()
    if as_json:
        emit_json({"name": name, "stopped": stopped, "was_running": stopped})
        return
    click.echo(f"{name}: stopped" if stopped else f"{name}: was not running")


@command.command()
@click.argument("name")
@json_option
@click.pass_context
def status(ctx: click.Context, name: str, as_json: bool) -> None:
    """Say whether NAME's emulator is running, and where; find stale ones."""
    report = open_emulator(get_target(ctx, name)).status()
    if as_json:
        emit_json({"name": name, "running": report["status"] == "running", **report})
        return
    state = report.get("state")
    if report["status"] == "running" and state:
        click.echo(f"{name}: running, {_where(state)} (pid {state['pid']})")
    elif report["status"] == "booting" and state:
        click.echo(f"{name}: booting (pid {state['pid']}), started by pid {state['starter_pid']}")
    elif report["status"] == "stale":
        click.echo(
            f"{name}: stale: {report['reason']}; `edgetool emulate stop {name}` cleans it up"
        )
    else:
        why = f" ({report['reason']}; its state was cleaned up)" if report.get("reason") else ""
        click.echo(f"{name}: stopped{why}")
