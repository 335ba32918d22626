"""Deploy flows by target kind: the one dispatch `deploy`, `ab`, `targets check` and the
farm (through `targets check` and `deploy`) go through.

Built-ins are registered here and imported only when a target needs them; third parties
add a kind through the `edgetool.flows` entry point group (an object with the DeployFlow
protocol of flows.base). A transport can change the flow within a kind: the flow named
`KIND/TRANSPORT` (e.g. `mcu/ble-uart`, Bangle.js over BLE) wins over the kind's own.
"""

from __future__ import annotations

from pathlib import Path

from edgetool.errors import UsageError
from edgetool.export.artifact import Artifact
from edgetool.flows.base import (
    DeployFlow,
    DeployOutcome,
    DeviceFacts,
    Observer,
    RunSettings,
    refuse_unsupported,
)
from edgetool.targets import KINDS, Target

__all__ = ["FLOWS", "DeployFlow", "deploy", "facts", "flow_for", "model_spec", "preflight"]

FLOWS = KINDS
"""Target kind (or `kind/transport`) -> DeployFlow; see targets.KINDS."""


def flow_for(target: Target) -> DeployFlow:
    """The flow for this target: `kind/transport` if registered, else the kind's."""
    specific = f"{target.kind}/{target.transport.type}"
    flow: DeployFlow = FLOWS.get(specific if specific in FLOWS else target.kind)
    return flow


def deploy(
    target: Target,
    artifact: Artifact | None,
    settings: RunSettings,
    results_root: Path,
    observer: Observer | None = None,
) -> DeployOutcome:
    """Run `artifact` on `target`; None = the model already in a microcontroller's firmware."""
    flow = flow_for(target)
    refuse_unsupported(flow, target, settings)
    return flow.deploy(target, artifact, settings, results_root, observer or Observer())


def preflight(target: Target, model: str | None, settings: RunSettings) -> None:
    """Refuse, before any export or connection, what this target's flow cannot do (exit
    2): options it would ignore, or a 27 s export that ends in "no firmware port".
    `deploy` checks the options again for callers that skip this."""
    flow = flow_for(target)
    refuse_unsupported(flow, target, settings)
    if flow.preflight is not None:
        flow.preflight(target, model, settings)
    elif settings.reference is not None:
        raise UsageError(
            f'--reference applies to MLPerf Tiny boards (flash = "none"), not to '
            f"{target.name} ({target.kind}).",
            hint="Check an artifact against its reference with `edgetool verify`.",
        )


def facts(target: Target) -> DeviceFacts:
    """Connect and report what the device is (`targets check`)."""
    return flow_for(target).facts(target)


def model_spec(target: Target, name: str) -> str:
    """A bare `--model NAME` on this target: the TOML's [models] entry for it (a variant
    made for this device, e.g. a stepped L2MU on Bangle.js), else NAME in the format the
    target's flow runs (C on a microcontroller, TFLite on a watch, the zoo's default)."""
    return target.models.get(name) or name + flow_for(target).default_model_format
