"""Transports by `[transport] type`: built-ins here, third parties via `edgetool.transports`.

Each transport module owns its settings class, its TOML parsing and its opener, and is
imported only when a target names it (so a local run never imports paramiko).
"""

from __future__ import annotations

from edgetool.registry import Registry
from edgetool.transport.base import (
    BytePort,
    FileTransport,
    Process,
    PutResult,
    TransportSettings,
    TransportType,
    quote_argv,
)

__all__ = [
    "TRANSPORTS",
    "BytePort",
    "FileTransport",
    "Process",
    "PutResult",
    "TransportSettings",
    "TransportType",
    "quote_argv",
]

TRANSPORTS: Registry[TransportType] = Registry(
    "transport type",
    "edgetool.transports",
    {
        "local": "edgetool.transport.local:TRANSPORT",
        "ssh": "edgetool.transport.ssh:TRANSPORT",
        "adb": "edgetool.transport.adb:TRANSPORT",
        "serial": "edgetool.transport.serial:TRANSPORT",
        "ble-uart": "edgetool.transport.ble_uart:TRANSPORT",
    },
)
