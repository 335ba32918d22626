"""`edgetool emulate`: bring emulated devices up and down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgetool.cli.common import emit_json, get_target, json_option
from edgetool.emulate.qemu_m import QemuCortexM
from edgetool.emulate.sshd import LoopbackSshd
from edgetool.errors import ConfigError
from edgetool.targets import Target


def _emulator(target: Target) -> LoopbackSshd | QemuCortexM:
    if target.emulator is None:
        raise ConfigError(f"target {target.name} is a real device (no [emulator] section)")
    if target.emulator.type == "sshd":
        return LoopbackSshd(target.name)
    if target.emulator.type == "qemu-m":
        return QemuCortexM(target.name)
    raise ConfigError(
        f"{target.source}: emulator type '{target.emulator.type}' is not supported "
        "(supported: sshd, qemu-m)"
    )


def _where(state: dict[str, Any]) -> str:
    t = state["transport"]
    if "url" in t:
        return f"QEMU UART on {t['url']} ({Path(state['elf']).name})"
    return f"sshd on {t['host']}:{t['port']}"


@click.group()
def command() -> None:
    """Start and stop emulated devices (loopback sshd, QEMU Cortex-M4).

    A started emulator is used like hardware: `edgetool deploy --target loopback ...`.
    """


@command.command()
@click.argument("name")
@json_option
@click.pass_context
def start(ctx: click.Context, name: str, as_json: bool) -> None:
    """Start NAME's emulator and wait until it answers."""
    emulator = _emulator(get_target(ctx, name))
    state = emulator.start()
    if as_json:
        emit_json(state)
        return
    click.echo(
        f"{name}: {_where(state)} (pid {state['pid']}); "
        f"deploy with `edgetool deploy --target {name} --model ...`"
    )


@command.command()
@click.argument("name")
@click.pass_context
def stop(ctx: click.Context, name: str) -> None:
    """Stop NAME's emulator."""
    emulator = _emulator(get_target(ctx, name))
    click.echo(f"{name}: stopped" if emulator.stop() else f"{name}: was not running")


@command.command()
@click.argument("name")
@json_option
@click.pass_context
def status(ctx: click.Context, name: str, as_json: bool) -> None:
    """Say whether NAME's emulator is running, and where."""
    emulator = _emulator(get_target(ctx, name))
    state = emulator.state()
    if as_json:
        emit_json({"name": name, "running": state is not None, "state": state})
        return
    if state:
        click.echo(f"{name}: running, {_where(state)} (pid {state['pid']})")
    else:
        click.echo(f"{name}: stopped")
