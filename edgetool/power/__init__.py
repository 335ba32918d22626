"""Power meters, sampled beside a run; see base.PowerMeter.

Built-in drivers are imported only when a target asks for them; third parties register
more through the `edgetool.meters` entry point group (name -> a class taking the
target's `[meter]` options).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from edgetool.errors import ConfigError
from edgetool.power.base import PowerMeter

BUILTIN_METERS: dict[str, str] = {
    "hwmon": "edgetool.power.hwmon:HwmonMeter",
    "ppk2": "edgetool.power.ppk2:Ppk2Meter",
    "um25c": "edgetool.power.um25c:Um25cMeter",
    "rapl": "edgetool.power.rapl:RaplMeter",
    "estimate": "edgetool.power.estimate:EstimateMeter",
}


def meter_types() -> list[str]:
    return sorted({*BUILTIN_METERS, *(ep.name for ep in entry_points(group="edgetool.meters"))})


def open_meter(kind: str, options: Mapping[str, Any]) -> PowerMeter:
    """The driver for a `[meter]` section; ConfigError names the known types otherwise."""
    if kind in BUILTIN_METERS:
        module_name, _, attr = BUILTIN_METERS[kind].partition(":")
        cls: Any = getattr(importlib.import_module(module_name), attr)
    else:
        found = [ep for ep in entry_points(group="edgetool.meters") if ep.name == kind]
        if not found:
            raise ConfigError(
                f"[meter] type {kind!r} is unknown; known: {', '.join(meter_types())}"
            )
        cls = found[0].load()
    meter: PowerMeter = cls(options)
    return meter
