"""Power meters, sampled beside a run; see base.PowerMeter.

`METERS` maps a target's `[meter] type` to a factory: a callable taking the `[meter]`
options (without `type`) and returning a PowerMeter; a PowerMeter class whose
constructor takes the options is one. Built-in drivers are imported only when a target
asks for them; third parties add more through the `edgetool.meters` entry point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgetool.errors import ConfigError
from edgetool.power.base import PowerMeter
from edgetool.registry import Registry

MeterFactory = Callable[[Mapping[str, Any]], PowerMeter]

METERS: Registry[MeterFactory] = Registry(
    "meter type",
    "edgetool.meters",
    {
        "hwmon": "edgetool.power.hwmon:HwmonMeter",
        "ppk2": "edgetool.power.ppk2:Ppk2Meter",
        "um25c": "edgetool.power.um25c:Um25cMeter",
        "rapl": "edgetool.power.rapl:RaplMeter",
        "estimate": "edgetool.power.estimate:EstimateMeter",
    },
)


def meter_types() -> list[str]:
    return METERS.names()


def open_meter(kind: str, options: Mapping[str, Any]) -> PowerMeter:
    """The driver for a `[meter]` section; ConfigError names the known types otherwise."""
    if kind not in METERS:
        raise ConfigError(f"[meter] type {kind!r} is unknown; known: {', '.join(meter_types())}")
    return METERS.get(kind)(options)
