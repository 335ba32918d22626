"""The one event stream: whatever the target, the session sees these typed events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hello:
    device: dict[str, Any]
    runtimes: dict[str, str | None]
    runner: str = ""


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


@dataclass(frozen=True)
class Warmup:
    count: int
    seconds: float
    first_ns: int | None = None


@dataclass(frozen=True)
class Samples:
    first_index: int
    ns: list[int]


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
class ErrorEvent:
    kind: str
    message: str


@dataclass(frozen=True)
class Log:
    text: str
    extra: dict[str, Any] = field(default_factory=dict)


Event = Hello | Env | ModelInfo | Warmup | Samples | Generation | Summary | ErrorEvent | Log


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
            return Hello(data["device"], data["runtimes"], str(data.get("runner", "")))
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
            )
        if kind == "warmup":
            return Warmup(int(data["count"]), float(data["seconds"]), data.get("first_ns"))
        if kind == "sample":
            return Samples(int(data["i"]), [int(v) for v in data["ns"]])
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
        if kind == "error":
            return ErrorEvent(str(data["kind"]), str(data["message"]))
    except (KeyError, TypeError, ValueError):
        pass
    return Log(line)
