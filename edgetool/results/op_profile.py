"""A run's per-operator profile: `results/<run-id>/op_profile.json`, one format for every
runtime that gives one.

    {"format": 1, "source": "onnxruntime profiler" | "benchmark_model --enable_op_profiling",
     "note": "a separate profiling pass ...", "inferences": N profiled, "warmup": untimed ones,
     "percent_of": "inference" | "operators", "inference_ms": mean profiled inference or null,
     "op_types": [{"op_type", "nodes", "calls", "total_ms", "mean_ms", "percent"}],
     "nodes": [{"name", "op_type", "provider", "calls", "total_ms", "mean_ms", "percent"}],
     "slices": [{"index", "start_ns", "dur_ns", "model_us", "nodes": [[node, offset_us, us]]}],
     "error": why there is no profile (absent when there is one)}

`mean_ms` is the time per inference (total over the profiled inferences / their count),
`calls` counts over all profiled inferences, `percent` is of the whole inference
(onnxruntime: the summed `model_run` windows) or of the summed operator times
(benchmark_model's own "%", `percent_of` says which). Rows are in execution order.
`slices` (onnxruntime only) keep the first profiled inferences' node timings relative to
the start of each inference, which starts at `start_ns` on the device clock.

The profile comes from a profiling pass run after the timed repetitions (Linux) or from
benchmark_model's own runs (Android): its times are never the run's latency figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool.errors import ResultsError
from edgetool.files import write_json_atomic

OP_PROFILE = "op_profile.json"
FORMAT = 1
NOTE = "a separate profiling pass after the timed repetitions; not latency figures"


@dataclass(frozen=True)
class OpRow:
    """One operator type or one node: where the profiled inference time went."""

    op_type: str
    mean_ms: float | None
    percent: float | None = None
    calls: int | None = None
    total_ms: float | None = None
    name: str | None = None
    """The node's name; None on an op-type row."""
    nodes: int | None = None
    """Nodes of this type (op-type rows)."""
    provider: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.name is not None else self.op_type

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        out["op_type"] = self.op_type
        if self.nodes is not None:
            out["nodes"] = self.nodes
        if self.provider is not None:
            out["provider"] = self.provider
        out.update(
            calls=self.calls, total_ms=self.total_ms, mean_ms=self.mean_ms, percent=self.percent
        )
        return out


@dataclass(frozen=True)
class InferenceSlices:
    """One profiled inference: where it started on the device clock, and its nodes."""

    index: int
    start_ns: int | None
    dur_ns: int | None
    model_us: float | None
    nodes: list[tuple[int, float, float]]
    """(index into the profile's nodes, offset from the inference's start in µs, µs)."""


@dataclass(frozen=True)
class OpProfile:
    source: str
    op_types: list[OpRow] = field(default_factory=list)
    nodes: list[OpRow] = field(default_factory=list)
    slices: list[InferenceSlices] = field(default_factory=list)
    inferences: int | None = None
    warmup: int | None = None
    percent_of: str = "inference"
    inference_ms: float | None = None
    note: str = NOTE
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "source": self.source,
            "note": self.note,
            "inferences": self.inferences,
            "warmup": self.warmup,
            "percent_of": self.percent_of,
            "inference_ms": self.inference_ms,
            "op_types": [row.to_dict() for row in self.op_types],
            "nodes": [row.to_dict() for row in self.nodes],
            "slices": [
                {
                    "index": s.index,
                    "start_ns": s.start_ns,
                    "dur_ns": s.dur_ns,
                    "model_us": s.model_us,
                    "nodes": [list(n) for n in s.nodes],
                }
                for s in self.slices
            ],
        }
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "op profile") -> OpProfile:
        """The profile as written by a runner or a flow; ResultsError naming `where` when
        it is not one."""
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            return cls(
                source=str(data.get("source") or "unknown"),
                op_types=[_row(r) for r in data.get("op_types") or []],
                nodes=[_row(r) for r in data.get("nodes") or []],
                slices=[_slices(s) for s in data.get("slices") or []],
                inferences=_opt_int(data.get("inferences")),
                warmup=_opt_int(data.get("warmup")),
                percent_of=str(data.get("percent_of") or "inference"),
                inference_ms=_opt_num(data.get("inference_ms")),
                note=str(data.get("note") or NOTE),
                error=str(data["error"]) if data.get("error") is not None else None,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ResultsError(f"{where}: not a per-operator profile ({exc})") from exc


def _opt_num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value) if math.isfinite(value) else None


def _opt_int(value: Any) -> int | None:
    number = _opt_num(value)
    return None if number is None else int(number)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _row(data: Any) -> OpRow:
    if not isinstance(data, dict):
        raise TypeError(f"row {data!r} is not an object")
    return OpRow(
        op_type=str(data["op_type"]),
        mean_ms=_opt_num(data.get("mean_ms")),
        percent=_opt_num(data.get("percent")),
        calls=_opt_int(data.get("calls")),
        total_ms=_opt_num(data.get("total_ms")),
        name=_opt_str(data.get("name")),
        nodes=_opt_int(data.get("nodes")),
        provider=_opt_str(data.get("provider")),
    )


def _slices(data: Any) -> InferenceSlices:
    if not isinstance(data, dict):
        raise TypeError(f"slice {data!r} is not an object")
    return InferenceSlices(
        index=int(data["index"]),
        start_ns=_opt_int(data.get("start_ns")),
        dur_ns=_opt_int(data.get("dur_ns")),
        model_us=_opt_num(data.get("model_us")),
        nodes=[(int(n[0]), float(n[1]), float(n[2])) for n in data.get("nodes") or []],
    )


def from_benchmark_model(
    op_types: Sequence[dict[str, Any]], nodes: Sequence[dict[str, Any]], runs: int | None
) -> OpProfile:
    """benchmark_model's two tables (rows as `android.benchmark_model.OpProfile` fields:
    node_type, avg_ms, percent, times_called per run, name, count) in the shared format."""

    def row(data: dict[str, Any], by_type: bool) -> OpRow:
        mean = _opt_num(data.get("avg_ms"))
        per_run = _opt_int(data.get("times_called"))
        return OpRow(
            op_type=str(data.get("node_type") or "?"),
            mean_ms=mean,
            percent=_opt_num(data.get("percent")),
            calls=per_run * runs if per_run is not None and runs else None,
            total_ms=mean * runs if mean is not None and runs else None,
            name=None if by_type else _opt_str(data.get("name")),
            nodes=_opt_int(data.get("count")) if by_type else None,
        )

    return OpProfile(
        source="benchmark_model --enable_op_profiling",
        op_types=[row(r, True) for r in op_types],
        nodes=[row(r, False) for r in nodes],
        inferences=runs,
        percent_of="operators",
        note="benchmark_model's regular runs with its op profiler on",
    )


def write_op_profile(run_dir: Path, profile: OpProfile) -> Path:
    path = run_dir / OP_PROFILE
    write_json_atomic(path, profile.to_dict())
    return path


def read_op_profile(
    run_dir: Path, legacy_ops: list[dict[str, Any]] | None = None
) -> OpProfile | None:
    """The run's profile; runs from before op_profile.json kept benchmark_model's rows in
    summary.json's `ops` (pass them as `legacy_ops`). None when the run has none."""
    path = run_dir / OP_PROFILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ResultsError(f"{path}: cannot read the profile ({exc})") from exc
        return OpProfile.from_dict(data, str(path))
    if legacy_ops:
        by_type = [r for r in legacy_ops if r.get("count") is not None or r.get("name") is None]
        if len(by_type) == len(legacy_ops):
            return from_benchmark_model(legacy_ops, [], None)
        return from_benchmark_model([], legacy_ops, None)
    return None


def top(rows: Sequence[OpRow], count: int) -> list[OpRow]:
    """The `count` rows that took the most time per inference (all with count <= 0)."""
    ranked = sorted(rows, key=lambda r: -(r.mean_ms or 0.0))
    return ranked if count <= 0 else ranked[:count]
