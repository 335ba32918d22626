"""`edgetool provision`: install the runtimes on a device that has no internet."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgetool.cli.common import console, emit_json, get_target, json_option
from edgetool.units import human_bytes

if TYPE_CHECKING:
    from edgetool.provision import Outcome


@click.command()
@click.option(
    "-t",
    "--target",
    "target_name",
    default=lambda: os.environ.get("EDGETOOL_TARGET"),
    required=True,
    help="Target name (or path to a target TOML) with a [provision] section [$EDGETOOL_TARGET].",
)
@click.option(
    "--fetch-only",
    is_flag=True,
    help="Only fetch the wheels into the host cache. Needs no device when [provision] "
    "declares machine, python_version and glibc.",
)
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Use only the wheels in this directory (no index); overrides [provision] wheelhouse.",
)
@click.option(
    "--refresh", is_flag=True, help="Ask pip again even when the cache's lock has the set."
)
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    target_name: str,
    fetch_only: bool,
    wheelhouse: Path | None,
    refresh: bool,
    as_json: bool,
) -> None:
    """Install the runtimes (onnxruntime, ai-edge-litert, numpy) on an offline device.

    The device needs no internet. This host reads the device's machine, Python and glibc
    over the target's transport, lets pip download the matching binary wheels (pip's own
    config and mirrors apply) into a cache (~/.cache/edgetool/wheels, locked, so the same
    set needs no network again), pushes them (sha256-verified on the device; unchanged
    files are not sent), and installs them with the device's pip (--no-index) into the
    venv of the target's [provision] section, which the runner then uses. A second run
    says "nothing to do".

    Run `--fetch-only` beforehand on a machine with internet (a laptop, CI): with
    machine, python_version and glibc declared in [provision] it needs no device; then
    provision from the same cache when offline.

    \b
    Examples:
      edgetool provision --target rpi4 --fetch-only    # online, before going to the lab
      edgetool provision --target rpi4                 # offline: push + install
      edgetool provision --target rpi4 --wheelhouse ./wheels
      edgetool targets check rpi4                      # the runtimes, from the venv
    """
    from edgetool.provision import provision

    target = get_target(ctx, target_name)
    view = _view(enabled=not as_json)
    try:
        outcome = provision(
            target, wheelhouse=wheelhouse, refresh=refresh, fetch_only=fetch_only, observer=view
        )
    finally:
        view.stop()
    if as_json:
        emit_json(outcome.to_dict())
        return
    _print(outcome)


def _view(enabled: bool) -> Any:
    """The deploy view (connection, pushes) plus a spinner for the long steps."""
    from edgetool.cli.deploy import DeployView
    from edgetool.provision import ProvisionObserver

    class ProvisionView(DeployView, ProvisionObserver):
        def __init__(self, enabled: bool) -> None:
            super().__init__(enabled)
            self._status: Any = None
            self._label = ""

        def step(self, text: str) -> None:
            self._stop_status()
            self._label = text
            if self.enabled:
                self._status = self.err.status(text)
                self._status.start()

        def detail(self, text: str) -> None:
            line = text.strip()
            if self._status is not None and line:
                self._status.update(f"{self._label}  [dim]{line[:80]}[/dim]")

        def step_done(self, text: str) -> None:
            self._stop_status()
            self.say(f"{text} ✓")

        def _stop_status(self) -> None:
            if self._status is not None:
                self._status.stop()
                self._status = None

        def stop(self) -> None:
            self._stop_status()
            super().stop()

    return ProvisionView(enabled)


def _print(outcome: Outcome) -> None:
    data = outcome.to_dict()
    out = console()
    device, fetched = data["device"], data["fetch"]
    where = outcome.transport or "(no device: declared facts)"
    out.print(f"[bold]{outcome.target}[/bold]  {where}")
    out.print(
        f"  device     {device['machine']} · python {device['python']} · glibc {device['glibc']}"
    )
    cache = "cache hit, no network" if outcome.fetched.cache_hit else "fetched by pip"
    out.print(
        f"  wheels     {fetched['count']} · {human_bytes(fetched['bytes'])} ({cache}) "
        f"from {fetched['source']}"
    )
    out.print(f"             in {fetched['dir']}")
    for warning in outcome.warnings:
        out.print(f"  [yellow]warning[/yellow]    {warning}")
    if outcome.fetch_only:
        out.print("  fetched only: run without --fetch-only to install on the device")
        return
    if outcome.nothing_to_do:
        out.print(f"  [green]nothing to do[/green]: {outcome.venv} is up to date")
    else:
        out.print(
            f"  pushed     {outcome.sent} sent ({human_bytes(outcome.bytes_sent)}), "
            f"{outcome.skipped} unchanged on the device"
            + (f", {len(outcome.removed)} stale removed" if outcome.removed else "")
        )
        made = " (venv created)" if outcome.created_venv else ""
        out.print(f"  installed  into {outcome.venv}{made}")
    out.print(f"  python     {outcome.python}")
    for dist, version in outcome.versions.items():
        mark = f"[green]{version}[/green]" if version else "[yellow]not importable[/yellow]"
        out.print(f"  {dist:<16} {mark}")
