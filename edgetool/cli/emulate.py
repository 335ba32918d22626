"""`edgetool emulate`: bring emulated devices up and down."""

from __future__ import annotations

import click

from edgetool.cli.common import emit_json, get_target, json_option
from edgetool.emulate.sshd import LoopbackSshd
from edgetool.errors import ConfigError
from edgetool.targets import Target


def _emulator(target: Target) -> LoopbackSshd:
    if target.emulator is None:
        raise ConfigError(f"target {target.name} is a real device (no [emulator] section)")
    if target.emulator.type == "sshd":
        return LoopbackSshd(target.name)
    raise ConfigError(
        f"{target.source}: emulator type '{target.emulator.type}' is not supported "
        "(supported: sshd)"
    )


@click.group()
def command() -> None:
    """Start and stop emulated devices (loopback sshd).

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
    transport = state["transport"]
    click.echo(
        f"{name}: sshd on {transport['host']}:{transport['port']} (pid {state['pid']}); "
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
        t = state["transport"]
        click.echo(f"{name}: running, sshd on {t['host']}:{t['port']} (pid {state['pid']})")
    else:
        click.echo(f"{name}: stopped")
