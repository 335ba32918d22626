"""`edgetool build`: firmware for a microcontroller target, with the fit check, no flashing."""

from __future__ import annotations

import click

from edgetool.cli.common import emit_json, get_target, json_option
from edgetool.units import human_bytes


@click.command()
@click.option("-t", "--target", "target_name", required=True, help="A microcontroller target.")
@click.option(
    "-m",
    "--model",
    "model_spec",
    help="Zoo model NAME (exported to C) or a .c export; omitted: the protocol-only firmware.",
)
@json_option
@click.pass_context
def command(ctx: click.Context, target_name: str, model_spec: str | None, as_json: bool) -> None:
    """Build firmware with a model in it and check it fits the target (flash, RAM).

    Runs `make -C firmware_stubs BOARD=<board> MODEL=<model.c>` with the stack sized from
    gcc's -fstack-usage, then compares the ELF's flash and RAM with the target's declared
    limits: a model too big fails here, naming how many bytes over, before any flashing.

    \b
    Examples:
      edgetool build --target mcu-m4-qemu --model cbnet-classifier
      edgetool build --target nucleo-l476rg --model cbnet      # too big: exit 3
    """
    from pathlib import Path

    from edgetool.errors import ConfigError
    from edgetool.export.build import resolve_model
    from edgetool.flows.mcu import build_for

    target = get_target(ctx, target_name)
    if target.mcu is None:
        raise ConfigError(f"target {target.name} is not a microcontroller (kind {target.kind})")
    artifact = None
    if model_spec is not None:
        if ":" not in model_spec and not Path(model_spec).exists():
            model_spec += ":c"
        say = None if as_json else (lambda msg: click.echo(msg, err=True))
        artifact = resolve_model(model_spec, progress=say)
    firmware = build_for(target, artifact)
    if as_json:
        emit_json({"target": target.name, **firmware.to_dict()})
        return
    mcu = target.mcu
    click.echo(str(firmware.elf))
    click.echo(
        f"  {mcu.board}  flash {human_bytes(firmware.flash_bytes)} of "
        f"{human_bytes(mcu.flash_bytes)}  RAM {human_bytes(firmware.ram_bytes)} of "
        f"{human_bytes(mcu.ram_bytes)} (stack {human_bytes(firmware.stack_bytes)}, model "
        f"{human_bytes(firmware.model_stack_bytes)})  fits"
    )
