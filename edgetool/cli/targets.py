"""`edgetool targets`: what devices there are, what they are, and whom to trust."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from edgetool.cli.common import (
    console,
    emit_json,
    get_target,
    json_option,
    targets_dirs,
)
from edgetool.errors import ConfigError, HostKeyError
from edgetool.targets import Target, load_all


def target_dict(target: Target) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    data: dict[str, Any] = plain(target)
    data["transport"] = {"type": target.transport_type, **plain(target.transport)}
    data["emulator_running"] = target.emulator_state is not None if target.emulator else None
    data.pop("emulator_state", None)
    return data


@click.group()
def command() -> None:
    """List, check and trust devices.

    Targets are TOML files shipped with edgetool, in ~/.config/edgetool/targets/
    ($XDG_CONFIG_HOME), in EDGETOOL_TARGETS and in --targets-dir; a later one of the
    same name wins. `edgetool targets show NAME` prints one as edgetool sees it.
    """


@command.command("list")
@json_option
@click.pass_context
def list_targets(ctx: click.Context, as_json: bool) -> None:
    """List known targets (broken files are listed with their error)."""
    loaded = load_all(targets_dirs(ctx))
    if as_json:
        emit_json(
            [
                target_dict(t) if not isinstance(t, ConfigError) else {"error": str(t)}
                for t in loaded
            ]
        )
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("name", "kind", "transport", "description"):
        table.add_column(column)
    for item in loaded:
        if isinstance(item, ConfigError):
            table.add_row("[red]invalid[/red]", "", "", str(item))
            continue
        where = " ".join(filter(None, (item.transport_type, item.transport.where())))
        if item.emulator:
            where += " (emulator " + ("running" if item.emulator_state else "stopped") + ")"
        table.add_row(item.name, item.kind, where, item.description)
    console().print(table)


@command.command("show")
@click.argument("name")
@json_option
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one target after validation, env overrides and emulator state."""
    target = get_target(ctx, name)
    data = target_dict(target)
    if as_json:
        emit_json(data)
        return
    out = console()
    out.print(f"[bold]{target.name}[/bold]  {target.description}  ({target.source})")
    for key, value in data.items():
        if key in ("name", "description", "source") or value in (None, {}, ()):
            continue
        out.print(f"  {key:<10} {value}")


@command.command("check")
@click.argument("name")
@json_option
@click.pass_context
def check(ctx: click.Context, name: str, as_json: bool) -> None:
    """Connect and report device facts: CPU, OS, Python, runtimes, memory, clocks, heat.

    Exits 0 when the device can run models; 7 (device error) when it answers but none
    of the target's `runtimes` is importable there (the facts are still shown); 6 when it
    cannot be reached. The farm uses this as its health check.
    """
    from edgetool.flows import facts

    target = get_target(ctx, name)
    found = facts(target)
    if as_json:
        emit_json({"target": target.name, "transport": found.where, **found.data})
    else:
        out = console()
        status = "[red]no runtime[/red]" if found.problem else f"[green]{found.status}[/green]"
        label = f"  [yellow]{found.label}[/yellow]" if found.label else ""
        out.print(f"[bold]{target.name}[/bold]  {found.where}  {status}{label}")
        for key, value in found.rows:
            out.print(f"  {key:<{found.width}} {value}")
    if found.problem is not None:
        raise found.problem


@command.command("trust")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Record the key without asking (scripts, CI).")
@json_option
@click.pass_context
def trust(ctx: click.Context, name: str, yes: bool, as_json: bool) -> None:
    """Show an SSH target's host-key fingerprint and record it in known_hosts.

    Compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`
    run on the device itself before you accept it. With --json the question and the
    fingerprint go to stderr and stdout carries one JSON object.
    """
    from edgetool.transport import ssh

    target = get_target(ctx, name)
    if not isinstance(target.transport, ssh.SshSettings):
        raise ConfigError(f"target {name} uses the {target.transport_type} transport: no host key")
    endpoint, key = ssh.fetch_host_key(target.transport)
    shown = f"{key.get_name()} {ssh.fingerprint(key)}"
    known = ssh.known_key(endpoint)
    report: dict[str, Any] = {
        "target": name,
        "host": endpoint.known_hosts_name,
        "key_type": key.get_name(),
        "fingerprint": ssh.fingerprint(key),
        "already_trusted": False,
        "recorded_in": None,
    }
    if known is not None and known.asbytes() == key.asbytes():
        if as_json:
            emit_json({**report, "already_trusted": True})
            return
        click.echo(f"{endpoint.known_hosts_name} is already trusted: {shown}")
        return
    if known is not None:
        raise HostKeyError(
            f"{endpoint.known_hosts_name} presents {shown}, but a different key is recorded "
            f"({known.get_name()} {ssh.fingerprint(known)}).",
            hint="Remove the old line from known_hosts first if the device was reinstalled.",
        )
    click.echo(f"{endpoint.known_hosts_name} presents host key {shown}", err=as_json)
    if not yes and not click.confirm("Trust this key and record it?", default=False, err=as_json):
        raise HostKeyError("host key not recorded (declined).")
    path = ssh.record_host_key(endpoint, key)
    if as_json:
        emit_json({**report, "recorded_in": str(path)})
        return
    click.echo(f"recorded in {path}")
