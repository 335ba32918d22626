"""One run directory per deploy, in the same shape for every flow: open, summarise, finish."""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path

from edgetool import __version__, events
from edgetool.errors import EdgetoolError
from edgetool.export.artifact import Artifact
from edgetool.flows.base import RunSettings
from edgetool.results.manifest import (
    ArtifactInfo,
    LatencySummary,
    RepetitionInfo,
    RepetitionSummary,
    RunManifest,
    Summary,
    TargetInfo,
    VersionInfo,
    WarmupInfo,
)
from edgetool.results.stats import (
    repetition_medians,
    stability_warnings,
    summarize_ns,
    summarize_repetitions,
)
from edgetool.results.store import RunWriter, new_run_id
from edgetool.targets import Target


def artifact_info(artifact: Artifact) -> ArtifactInfo:
    """The manifest's record of the artifact a run pushed (the artifact's own manifest)."""
    return ArtifactInfo.from_dict(artifact.to_dict())


def open_run(
    results_root: Path,
    target: Target,
    model: str,
    settings: RunSettings,
    transport: str,
    artifact: ArtifactInfo,
    target_info: TargetInfo,
    manifest: RunManifest | None = None,
) -> RunWriter:
    """A new run directory whose manifest says where, what and how: one shape for every
    deploy flow (Linux, microcontroller, watch), so results, compare and the farm read all.
    `target_info` holds the flow's own facts (emulated, time base...); `manifest` any
    further sections the flow writes from the start."""
    target_info.name = target.name
    target_info.kind = target.kind
    target_info.description = target.description
    target_info.transport = transport
    target_info.source = str(target.source)
    manifest = manifest if manifest is not None else RunManifest()
    manifest.target = target_info
    manifest.artifact = artifact
    manifest.settings = {
        **asdict(settings),
        "input": str(settings.input) if settings.input else None,
        "reference": str(settings.reference) if settings.reference else None,
        "iterations": settings.effective_iterations(),
    }
    manifest.edgetool = VersionInfo(version=__version__, python=platform.python_version())
    return RunWriter(results_root, new_run_id(results_root, target.name, model), manifest)


def finish_run(
    writer: RunWriter,
    summary: Summary | None,
    failure: EdgetoolError | None,
    status_on_failure: str,
) -> None:
    """Close the run's journal. On a failure the samples measured so far are kept (the
    error names the run directory) and the failure is raised."""
    target = writer.manifest.target_info
    if summary is not None and target.synthetic:
        summary.synthetic = True  # a test peer answered: never a device's figures
    if summary is not None and target.emulated:
        # The summary travels alone (JSON, compare, farm): it says what its times are.
        summary.emulated = True
        if target.time_base:
            summary.time_base = target.time_base
    if failure is not None:
        writer.finish(status_on_failure, summary, error=str(failure))
        if summary is not None:
            failure.run_dir = writer.dir
        raise failure
    assert summary is not None
    writer.finish("complete", summary)


def summarize(
    samples: list[int],
    ends: list[events.Summary],
    warm: events.Warmup | None,
    model: events.ModelInfo | None,
    reps: list[int] | None = None,
    repetition_kind: str = "process",
    facts: list[RepetitionInfo] | None = None,
) -> Summary:
    """The run's summary: per-inference percentiles (tails, with how many samples stand
    behind them) and the run-level estimate from the spread of repetition medians."""
    tags = reps if reps and len(reps) == len(samples) else [0] * len(samples)
    repetitions = summarize_repetitions(repetition_medians(samples, tags), repetition_kind)
    envs = [
        (f.env_before or {}, f.env_after or {}) for f in facts or [] if f.env_before or f.env_after
    ]
    stats = summarize_ns(samples)
    latency = LatencySummary.from_dict(stats.to_dict())
    latency.unstable = [*stats.unstable, *stability_warnings(repetitions, envs)]
    wall_s = sum(e.wall_ns for e in ends) / 1e9 if ends else sum(samples) / 1e9
    peaks = [e.peak_rss for e in ends if e.peak_rss]
    return Summary(
        count=len(samples),
        latency=latency,
        repetitions=RepetitionSummary.from_dict(repetitions.to_dict()),
        wall_s=wall_s,
        throughput_per_s=len(samples) / wall_s if wall_s > 0 else None,
        peak_rss=max(peaks) if peaks else None,
        first_inference_ms=warm.first_ns / 1e6 if warm and warm.first_ns else None,
        warmup=WarmupInfo(count=warm.count, seconds=warm.seconds) if warm else None,
        load_ms=model.load_ms if model else None,
        complete=bool(ends),
    )
