"""One run directory per deploy, in the same shape for every flow: open, summarise, finish."""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgetool import __version__
from edgetool.errors import EdgetoolError
from edgetool.flows.base import RunSettings
from edgetool.results import schema
from edgetool.results.stats import (
    repetition_medians,
    stability_warnings,
    summarize_ns,
    summarize_repetitions,
)
from edgetool.results.store import RunWriter, new_run_id
from edgetool.targets import Target


def open_run(
    results_root: Path,
    target: Target,
    model: str,
    settings: RunSettings,
    transport: str,
    artifact: dict[str, Any],
    target_fields: dict[str, Any],
    **sections: Any,
) -> RunWriter:
    """A new run directory whose manifest says where, what and how: one shape for every
    deploy flow (Linux, microcontroller, watch), so results, compare and the farm read all."""
    return RunWriter(
        results_root,
        new_run_id(results_root, target.name, model),
        {
            "target": {
                "name": target.name,
                "kind": target.kind,
                "description": target.description,
                "transport": transport,
                "source": str(target.source),
                **target_fields,
            },
            "artifact": artifact,
            **sections,
            "settings": {
                **asdict(settings),
                "input": str(settings.input) if settings.input else None,
                "iterations": settings.effective_iterations(),
            },
            "edgetool": {"version": __version__, "python": platform.python_version()},
        },
    )


def finish_run(
    writer: RunWriter,
    summary: dict[str, Any] | None,
    failure: EdgetoolError | None,
    status_on_failure: str,
) -> None:
    """Close the run's journal. On a failure the samples measured so far are kept (the
    error names the run directory) and the failure is raised."""
    target = writer.manifest["target"]
    if summary is not None and target.get("synthetic"):
        summary["synthetic"] = True  # a test peer answered: never a device's figures
    if summary is not None and target.get("emulated"):
        # The summary travels alone (JSON, compare, farm): it says what its times are.
        summary["emulated"] = True
        if target.get("time_base"):
            summary["time_base"] = target["time_base"]
    if failure is not None:
        writer.finish(status_on_failure, summary, error=str(failure))
        if summary is not None:
            failure.run_dir = writer.dir
        raise failure
    assert summary is not None
    writer.finish("complete", summary)


def summarize(
    samples: list[int],
    ends: list[schema.Summary],
    warm: schema.Warmup | None,
    model: schema.ModelInfo | None,
    reps: list[int] | None = None,
    repetition_kind: str = "process",
    facts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The run's summary: per-inference percentiles (tails, with how many samples stand
    behind them) and the run-level estimate from the spread of repetition medians."""
    tags = reps if reps and len(reps) == len(samples) else [0] * len(samples)
    repetitions = summarize_repetitions(repetition_medians(samples, tags), repetition_kind)
    envs = [
        (f.get("env_before") or {}, f.get("env_after") or {})
        for f in facts or []
        if f.get("env_before") or f.get("env_after")
    ]
    stats = summarize_ns(samples)
    latency = stats.to_dict()
    latency["unstable"] = [*stats.unstable, *stability_warnings(repetitions, envs)]
    wall_s = sum(e.wall_ns for e in ends) / 1e9 if ends else sum(samples) / 1e9
    peaks = [e.peak_rss for e in ends if e.peak_rss]
    return {
        "count": len(samples),
        "latency": latency,
        "repetitions": repetitions.to_dict(),
        "wall_s": wall_s,
        "throughput_per_s": len(samples) / wall_s if wall_s > 0 else None,
        "peak_rss": max(peaks) if peaks else None,
        "first_inference_ms": warm.first_ns / 1e6 if warm and warm.first_ns else None,
        "warmup": {"count": warm.count, "seconds": warm.seconds} if warm else None,
        "load_ms": model.load_ms if model else None,
        "complete": bool(ends),
    }
