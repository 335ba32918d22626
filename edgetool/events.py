"""The one event stream: whatever the target, the session sees these typed events.

The power samples meters yield live here too: power/ produces them and results/ stores and
plots them, so both import this leaf module instead of each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hello:
    device: dict[str, Any]
    runtimes: dict[str, str | None]
    runner: str = ""
    accelerators: dict[str, list[str] | None] | None = None
    """Per runtime, what it can run a model on here: onnxruntime's available execution
    providers, the LiteRT delegates --delegate can choose (None: runtime absent)."""


@dataclass(frozen=True)
class Env:
    when: str
    values: dict[str, Any]


@dataclass(frozen=True)
class ModelInfo:
    runtime: str
    runtime_version: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    load_ms: float
    threads: int
    rss_after_load: int | None = None
    feeds: list[dict[str, Any]] | None = None
    """The inputs as fed: name, concrete shape, dtype, source (file, random, zeros)."""
    ep: str | None = None
    """onnxruntime: the execution provider the session really runs on first."""
    providers: list[str] | None = None
    """onnxruntime: every provider of the session, in priority order."""
    delegate: str | None = None
    """LiteRT: 'xnnpack' when a delegate took part of the graph, else 'none'."""
    delegated_nodes: int | None = None
    """LiteRT: delegated partitions in the execution plan (None: not knowable)."""


@dataclass(frozen=True)
class Warmup:
    count: int
    seconds: float
    first_ns: int | None = None


@dataclass(frozen=True)
class Samples:
    first_index: int
    ns: list[int]
    starts: list[int] | None = None
    """Device-clock start of each inference (runner 1 with power support sends them)."""
    repetition: int = 0
    """Which repetition (measurement window) of the run these samples belong to."""
    outputs: list[list[float]] | None = None
    """Each inference's output vector, where the device reports one per inference (an
    MLPerf Tiny DUT's `m-results-[...]` scores)."""


@dataclass(frozen=True)
class Power:
    """Samples of a device-side meter (hwmon), on the device clock."""

    t: list[int]
    watts: list[float]
    volts: list[float | None]
    amps: list[float | None]


@dataclass(frozen=True)
class PowerSample:
    """One meter reading (host-side meters, or a device-side batch split up)."""

    t_ns: int
    """On the meter's clock (power.base.Capabilities.clock)."""
    watts: float
    volts: float | None = None
    amps: float | None = None


@dataclass(frozen=True)
class Phase:
    """A named device-clock window: `idle` before loading, `measure` around the timed loop."""

    name: str
    start: int
    end: int


@dataclass(frozen=True)
class Clock:
    t: int


@dataclass(frozen=True)
class Summary:
    count: int
    wall_ns: int
    peak_rss: int | None = None


@dataclass(frozen=True)
class Generation:
    """One timed greedy generation (LLMs): prefill + first token, then decode steps."""

    repeat: int
    prompt_tokens: int
    new_tokens: int
    ttft_ns: int
    decode_ns: int
    tokens: list[int]


@dataclass(frozen=True)
class OpProfile:
    """A per-operator profile summarised on the device (results.op_profile's format), or
    an `error` saying why the profiling pass gave none."""

    data: dict[str, Any]


@dataclass(frozen=True)
class ErrorEvent:
    kind: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Log:
    text: str
    extra: dict[str, Any] = field(default_factory=dict)


Event = (
    Hello
    | Env
    | ModelInfo
    | Warmup
    | Samples
    | Power
    | Phase
    | Clock
    | Generation
    | Summary
    | OpProfile
    | ErrorEvent
    | Log
)


def _accelerator(data: dict[str, Any]) -> dict[str, Any]:
    """The `model` event's provider/delegate fields, each only when well-formed."""
    out: dict[str, Any] = {}
    for key in ("ep", "delegate"):
        if isinstance(data.get(key), str):
            out[key] = data[key]
    providers = data.get("providers")
    if isinstance(providers, list) and all(isinstance(p, str) for p in providers):
        out["providers"] = providers
    nodes = data.get("delegated_nodes")
    if isinstance(nodes, int) and not isinstance(nodes, bool):
        out["delegated_nodes"] = nodes
    return out


def parse_event(line: str) -> Event:
    """Turn one runner line into an event; anything unexpected becomes a Log, never a crash."""
    try:
        data = json.loads(line)
    except ValueError:
        return Log(line)
    if not isinstance(data, dict):
        return Log(line)
    kind = data.pop("event", None)
    try:
        if kind == "hello":
            accelerators = data.get("accelerators")
            return Hello(
                data["device"],
                data["runtimes"],
                str(data.get("runner", "")),
                accelerators if isinstance(accelerators, dict) else None,
            )
        if kind == "env":
            return Env(str(data.pop("when", "now")), data)
        if kind == "model":
            return ModelInfo(
                data["runtime"],
                data["runtime_version"],
                data["inputs"],
                data["outputs"],
                float(data["load_ms"]),
                int(data["threads"]),
                data.get("rss_after_load"),
                data.get("feeds") if isinstance(data.get("feeds"), list) else None,
                **_accelerator(data),
            )
        if kind == "warmup":
            return Warmup(int(data["count"]), float(data["seconds"]), data.get("first_ns"))
        if kind == "sample":
            ns = [int(v) for v in data["ns"]]
            starts = [int(v) for v in data["t"]] if "t" in data else None
            return Samples(
                int(data["i"]), ns, starts if starts and len(starts) == len(ns) else None
            )
        if kind == "power":
            t = [int(v) for v in data["t"]]
            watts = [float(v) for v in data["w"]]
            volts = [None if v is None else float(v) for v in data["v"]]
            amps = [None if v is None else float(v) for v in data["a"]]
            if not len(t) == len(watts) == len(volts) == len(amps):
                raise ValueError("ragged power batch")
            return Power(t, watts, volts, amps)
        if kind == "phase":
            return Phase(str(data["name"]), int(data["start"]), int(data["end"]))
        if kind == "clock":
            return Clock(int(data["t"]))
        if kind == "generation":
            return Generation(
                int(data["repeat"]),
                int(data["prompt_tokens"]),
                int(data["new_tokens"]),
                int(data["ttft_ns"]),
                int(data["decode_ns"]),
                [int(t) for t in data["tokens"]],
            )
        if kind == "summary":
            return Summary(int(data["count"]), int(data["wall_ns"]), data.get("peak_rss"))
        if kind == "op_profile":
            return OpProfile(data)
        if kind == "error":
            hint = data.get("hint")
            return ErrorEvent(str(data["kind"]), str(data["message"]), str(hint) if hint else None)
    except (KeyError, TypeError, ValueError):
        pass
    return Log(line)
