"""What every deploy flow shares: settings, outcome, observer, and the DeployFlow protocol.

A flow turns (target, artifact, settings) into a run directory for one class of device:
Linux-class (local, SSH, emulated Pi), microcontroller (bench protocol over a UART),
Bangle.js (Espruino over BLE UART), Wear OS (ADB). Flows are registered by target kind
in `edgetool.flows.FLOWS`; nothing else dispatches on the kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool import events
from edgetool.errors import EdgetoolError, UsageError
from edgetool.export.artifact import Artifact
from edgetool.results.manifest import RunManifest, Summary
from edgetool.targets import Target, open_transport
from edgetool.transport import FileTransport, PutResult
from edgetool.transport.base import Progress

DEFAULT_REPEAT = 5
"""Repetitions per run by default: as MLPerf Tiny's five windows, enough for a t interval
(4 degrees of freedom) while keeping a default deploy to a few seconds on a Pi."""


@dataclass(frozen=True)
class RunSettings:
    iterations: int = 0
    duration: float = 0.0
    min_duration: float = 0.0
    warmup: int = 10
    warmup_seconds: float = 0.5
    """Warm up at least this long as well as `warmup` inferences (the CLI's and the API's
    default: both read it from here)."""
    threads: int = 0
    input: Path | None = None
    seed: int = 0
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Concrete shapes for inputs with symbolic dims, by input name ('' for a model's only
    input): --input-shape over the target's [input_shapes]."""
    save_outputs: bool = False
    reference: Path | None = None
    """Expected outputs to check the device's against (MLPerf Tiny boards: their scores)."""
    runtime: str = "auto"
    ep: str = ""
    """onnxruntime execution provider ('' = the CPU provider, onnxruntime's default); the
    runner refuses one the device lacks or that falls back to CPU."""
    delegate: str = ""
    """LiteRT: 'xnnpack' or 'none' ('' = the runtime's default, XNNPACK where it applies)."""
    # LLM generation mode: `input` holds the prompt's token ids; iterations = generations
    new_tokens: int = 0
    head_size: int = 0
    # Energy: read the target's [meter] beside the run; the device idles this long first
    energy: bool = False
    idle_seconds: float = 2.0
    # Android: benchmark_model's per-operator profile
    op_profile: bool = False
    # Repetitions: fresh runner processes (or separate measurement windows on devices that
    # cannot start one); iterations, duration and warm-up apply to each repetition.
    repeat: int = DEFAULT_REPEAT

    def effective_iterations(self) -> int:
        if self.new_tokens:
            return self.iterations or 3
        return self.iterations if self.iterations or self.duration else 100

    @staticmethod
    def default_min_duration(iterations: int | None, duration: float | None, repeat: int) -> float:
        """Per repetition: with neither a count nor a duration, at least 1 s of measuring
        in all (as benchmark_model's default), shared between the repetitions."""
        return 0.0 if iterations or duration else 1.0 / max(repeat, 1)

    def repetitions(self) -> int:
        """How many repetitions this run makes: one where a process carries state across
        the whole run (energy alignment to one clock, an LLM's generations)."""
        if self.energy or self.new_tokens:
            return 1
        return max(self.repeat, 1)


@dataclass
class DeployOutcome:
    """A finished run: its directory and the records written there."""

    run_dir: Path
    run_id: str
    manifest: RunManifest
    summary: Summary
    pushes: list[PutResult] = field(default_factory=list)


class Observer:
    """What a front end (the CLI's progress bar, a farm log) hears of a deploy."""

    def connected(self, description: str) -> None: ...

    def pushing(self, name: str, size: int) -> Progress | None:
        return None

    def pushed(self, name: str, result: PutResult) -> None: ...

    def event(self, event: events.Event) -> None: ...

    def measuring(self, expected: int, duration: float) -> None: ...

    def progress(self, count: int) -> None: ...

    def metering(self, meter: str, idle_seconds: float) -> None: ...

    def note(self, text: str) -> None:
        """Something the user should know about how the run is made (a default taken)."""

    def repetition(self, run_id: str, index: int, total: int) -> None:
        """Repetition `index` (0-based) of `total` of run `run_id` starts."""


@contextlib.contextmanager
def connect(target: Target) -> Iterator[FileTransport]:
    transport = open_transport(target)
    try:
        yield transport
    finally:
        transport.close()


def push(
    transport: FileTransport, files: list[tuple[Path, str]], observer: Observer
) -> list[PutResult]:
    """Send files with the observer watching; one probe and one commit for all of them."""
    results = transport.put_many(
        files, lambda local: observer.pushing(local.name, local.stat().st_size)
    )
    for (local, _), result in zip(files, results, strict=True):
        observer.pushed(local.name, result)
    return results


@dataclass(frozen=True)
class DeviceFacts:
    """What `targets check` shows of a device: where it is reached, what answered, the
    facts as rows (label, value; rich markup allowed) and as JSON."""

    where: str
    data: dict[str, Any]
    rows: list[tuple[str, str]]
    status: str = "reachable"
    label: str = ""
    width: int = 10
    """Characters the row labels are padded to."""
    problem: EdgetoolError | None = None
    """Why the device answered but cannot run a model (no runtime of the target's is
    importable): `targets check` shows the facts, then fails with it, so the farm's health
    check does not pass a board every job of which would fail."""


def fact_rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """A device's own facts as rows (a table flattened to k=v), empty values left out."""
    rows = []
    for key, value in facts.items():
        if key != "synthetic" and value not in (None, "", {}, []):
            shown = (
                ", ".join(f"{k}={v}" for k, v in value.items())
                if isinstance(value, dict)
                else value
            )
            rows.append((key, str(shown)))
    return rows


def watch_facts(where: str, facts: dict[str, Any]) -> DeviceFacts:
    """A watch's facts; a synthetic test peer is labelled as one."""
    label = "(synthetic peer, not a watch)" if facts.get("synthetic") else ""
    return DeviceFacts(where, facts, fact_rows(facts), label=label, width=16)


Preflight = Callable[[Target, "str | None", RunSettings], None]
"""(target, the --model spec or None, settings) -> None, or an EdgetoolError saying what
this target cannot do with them (a fixed firmware given a model, a bad --input)."""

Deploy = Callable[[Target, "Artifact | None", RunSettings, Path, Observer], DeployOutcome]
"""(target, artifact or None for the model already in the firmware, settings, results
root, observer) -> the finished run."""


RUN_OPTIONS: dict[str, Callable[[RunSettings], bool]] = {
    "--threads": lambda s: s.threads != 0,
    "--runtime": lambda s: s.runtime != "auto",
    "--input": lambda s: s.input is not None,
    "--save-outputs": lambda s: s.save_outputs,
    "--duration": lambda s: s.duration > 0,
    "--energy": lambda s: s.energy,
    "--op-profile": lambda s: s.op_profile,
    "--tokens": lambda s: s.new_tokens > 0,
    "--input-shape": lambda s: bool(s.input_shapes),
    "--ep": lambda s: bool(s.ep),
    "--delegate": lambda s: bool(s.delegate),
}
"""The deploy options a flow may not honour, and whether a RunSettings asks for each
(a value other than the default). A flow declares the ones it supports."""

ALL_RUN_OPTIONS = frozenset(RUN_OPTIONS)


def refuse_unsupported(flow: DeployFlow, target: Target, settings: RunSettings) -> None:
    """Refuse, before connecting, an option TARGET's flow would silently ignore: a run
    that records `op_profile: true` and profiled nothing is worse than no run."""
    asked = [name for name, given in RUN_OPTIONS.items() if given(settings)]
    refused = [name for name in asked if name not in flow.supports]
    if not refused:
        return
    names = ", ".join(refused)
    verb = "is" if len(refused) == 1 else "are"
    why = f": {flow.refusal}" if flow.refusal else ""
    raise UsageError(
        f"{names} {verb} not supported on {target.name} (kind {target.kind}, "
        f"{target.transport_type} transport){why}"
    )


@dataclass(frozen=True)
class DeployFlow:
    """One class of device. A new one is one module with a `FLOW = DeployFlow(...)`,
    registered under its target kind (or `kind/transport` when a transport changes it)."""

    deploy: Deploy
    facts: Callable[[Target], DeviceFacts]
    """Connect and report what the device is (`targets check`, the farm's health)."""
    default_model_format: str = ""
    """The suffix a bare `--model NAME` gets here (":c" on a microcontroller)."""
    supports: frozenset[str] = ALL_RUN_OPTIONS
    """The RUN_OPTIONS this flow honours; the others are refused (exit 2) before
    connecting. A third-party flow that says nothing is trusted with all of them."""
    refusal: str = ""
    """Why the others are refused, and what to use instead (one phrase)."""
    preflight: Preflight | None = None
    """Refuse what this target cannot do before anything is exported or connected."""
