"""Open the right Transport for a Target (heavy imports only for the one used)."""

from __future__ import annotations

from edgetool.errors import ConnectError
from edgetool.targets import AdbSettings, LocalSettings, SshSettings, Target
from edgetool.transport.base import FileTransport, Process, PutResult, Transport, quote_argv

__all__ = ["FileTransport", "Process", "PutResult", "Transport", "open_transport", "quote_argv"]


def open_transport(target: Target) -> FileTransport:
    if target.emulator is not None and target.emulator_state is None:
        raise ConnectError(
            f"target {target.name} is an emulated device that is not running.",
            hint=f"Start it with `edgetool emulate start {target.name}`.",
        )
    transport: FileTransport
    if isinstance(target.transport, SshSettings):
        from edgetool.transport.ssh import SshTransport

        transport = SshTransport(target.transport, target.name, target.python)
    elif isinstance(target.transport, LocalSettings):
        from edgetool.transport.local import LocalTransport

        transport = LocalTransport(target.transport, target.python)
    elif isinstance(target.transport, AdbSettings):
        from edgetool.transport.adb import AdbTransport

        transport = AdbTransport(target.transport, target.name)
    else:
        transport = _no_file_transport(target)
    if target.missing_python_hint:
        transport.python_hint = target.missing_python_hint
    return transport


def _no_file_transport(target: Target) -> FileTransport:
    if target.kind == "mcu":
        from edgetool.errors import ConfigError

        raise ConfigError(
            f"target {target.name} is a microcontroller: it has no file transport.",
            hint="Use `edgetool deploy`, `build` or `targets check`, which speak its UART.",
        )
    raise ConnectError(f"target {target.name}: no transport for {type(target.transport).__name__}")
