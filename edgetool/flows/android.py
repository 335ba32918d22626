"""The deploy flow for Android watches: push benchmark_model and the .tflite (verified),
run it with exact counts, parse what it prints, and journal it like any other run.

benchmark_model prints aggregates only (count, min, max, avg, std), so the run has no
per-inference samples and its summary says `aggregate_only`: no percentile is invented.
With `--energy` and a `[meter] type = "fuel-gauge"`, the watch logs its own battery
current and voltage during an idle window and the benchmark windows, and the estimate is
labelled as a fuel-gauge estimate.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from edgetool.android.benchmark_model import (
    BenchmarkOutput,
    benchmark_argv,
    latency_summary,
    parse_output,
)
from edgetool.errors import ConfigError, DeviceError, EdgetoolError, Interrupted, ModelError
from edgetool.export.artifact import Artifact
from edgetool.files import file_sha256
from edgetool.flows.base import (
    DeployFlow,
    DeployOutcome,
    Observer,
    RunSettings,
    push,
    watch_facts,
)
from edgetool.flows.journal import artifact_info, finish_run, open_run
from edgetool.results.manifest import RunManifest, Summary, TargetInfo
from edgetool.results.op_profile import OpProfile, from_benchmark_model, write_op_profile
from edgetool.results.stats import summarize_repetitions
from edgetool.results.store import RunWriter
from edgetool.targets import AndroidSettings, Target, device_path
from edgetool.transport.adb import AdbTransport

FUEL_GAUGE = "fuel-gauge"
SYNTHETIC_PROP = "ro.edgetool.synthetic"
"""Set only by edgetool's ADB test peer, so its numbers are never mistaken for a watch's."""
_PROPS = (
    "ro.product.cpu.abi",
    "ro.product.manufacturer",
    "ro.product.model",
    "ro.build.version.release",
    "ro.build.version.sdk",
    "ro.build.characteristics",
    SYNTHETIC_PROP,
)
TIME_BASE = "benchmark_model's steady clock on the watch (aggregates only)"


def _android(target: Target) -> AndroidSettings:
    if target.android is None:
        raise ConfigError(f"{target.source}: target {target.name} has no [android] table")
    if not target.workdir.startswith("/"):
        raise ConfigError(
            f"{target.source}: an Android target needs an absolute workdir "
            "(e.g. '/data/local/tmp/edgetool')"
        )
    return target.android


def _connect(target: Target) -> AdbTransport:
    from edgetool.targets import open_transport

    transport = open_transport(target)
    assert isinstance(transport, AdbTransport)
    return transport


def device_props(transport: AdbTransport) -> dict[str, str]:
    """The properties edgetool labels runs with, in one shell round trip."""
    script = 'for k do printf "%s=%s\\n" "$k" "$(getprop "$k")"; done'
    out = transport.run_checked(["sh", "-c", script, "sh", *_PROPS])
    props = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in _PROPS:
            props[key] = value.strip()
    if not props.get("ro.product.cpu.abi"):
        raise DeviceError(f"{transport.description}: getprop gave no ro.product.cpu.abi")
    return props


def _device(props: dict[str, str]) -> dict[str, Any]:
    return {
        "name": props.get("ro.product.model"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "abi": props.get("ro.product.cpu.abi"),
        "android": props.get("ro.build.version.release"),
        "sdk": props.get("ro.build.version.sdk"),
        "watch": "watch" in props.get("ro.build.characteristics", ""),
    }


def _binary(target: Target, abi: str) -> Path:
    android = _android(target)
    binary = android.binary_for(abi)
    if binary is None:
        known = ", ".join(sorted(android.benchmark_model)) or "none"
        raise ConfigError(
            f"{target.source}: no benchmark_model for the watch's ABI {abi} (configured: {known})",
            hint="Add it under [android.benchmark_model] (README: Wear OS).",
        )
    if not binary.is_file():
        raise ConfigError(
            f"{target.source}: benchmark_model {binary} does not exist on this host",
            hint="Download LiteRT's benchmark_model for Android "
            f"{abi} (README: Wear OS) and point [android] benchmark_model at it.",
        )
    return binary


def android_facts(target: Target) -> tuple[str, dict[str, Any]]:
    """For `targets check`: who the watch is, its battery, and what edgetool would run."""
    _android(target)
    transport = _connect(target)
    try:
        props = device_props(transport)
        battery = transport.run_checked(
            [
                "sh",
                "-c",
                'for f in status capacity; do printf "%s=%s\\n" "$f" "$(cat '
                '"/sys/class/power_supply/battery/$f" 2>/dev/null)"; done; '
                'printf "cores=%s\\n" "$(nproc 2>/dev/null)"',
            ]
        )
    finally:
        transport.close()
    values = dict(line.partition("=")[::2] for line in battery.splitlines() if "=" in line)
    abi = props["ro.product.cpu.abi"]
    binary = _android(target).binary_for(abi)
    facts: dict[str, Any] = {
        **_device(props),
        "cores": values.get("cores") or None,
        "battery": f"{values.get('capacity') or '?'} % ({values.get('status') or 'unknown'})",
        "client": transport.description,
        "benchmark_model": (
            f"{binary} ({'found' if binary.is_file() else 'MISSING on this host'})"
            if binary
            else f"none configured for {abi}"
        ),
        "synthetic": props.get(SYNTHETIC_PROP) == "1",
    }
    return transport.description, facts


def _check_settings(target: Target, artifact: Artifact | None, settings: RunSettings) -> None:
    if artifact is None:
        raise ModelError(f"target {target.name} needs a model: pass --model")
    if artifact.format != "tflite":
        raise ModelError(
            f"{artifact.path.name} is {artifact.format}; an Android watch runs TFLite under "
            "benchmark_model.",
            hint="Pass --model NAME:tflite (or NAME:tflite:int8).",
        )
    if settings.energy and (target.meter is None or target.meter.type != FUEL_GAUGE):
        raise ConfigError(
            f"--energy on {target.name} needs [meter] type = '{FUEL_GAUGE}' (the watch's "
            "battery fuel gauge; no external meter is read on Android targets yet)"
        )


def deploy_android(
    target: Target,
    artifact: Artifact | None,
    settings: RunSettings,
    results_root: Path,
    obs: Observer,
) -> DeployOutcome:
    _check_settings(target, artifact, settings)
    assert artifact is not None
    transport = _connect(target)
    try:
        obs.connected(transport.description)
        props = device_props(transport)
        device = _device(props)
        synthetic = props.get(SYNTHETIC_PROP) == "1"
        binary = _binary(target, props["ro.product.cpu.abi"])
        bin_remote = device_path(target.workdir, "bin", file_sha256(binary)[:16], "benchmark_model")
        model_remote = device_path(
            target.workdir, "artifacts", artifact.sha256[:16], artifact.path.name
        )
        pushes = push(transport, [(binary, bin_remote), (artifact.path, model_remote)], obs)
        transport.run_checked(["chmod", "755", bin_remote])
        writer = open_run(
            results_root,
            target,
            artifact.path.stem,
            settings,
            transport.description,
            artifact_info(artifact),
            TargetInfo(emulated=False, synthetic=synthetic, time_base=TIME_BASE),
            RunManifest(device=device, runner="benchmark_model", repetition_kind="process"),
        )
        summary = _measure(target, transport, writer, settings, bin_remote, model_remote, obs)
        return DeployOutcome(writer.dir, writer.run_id, writer.manifest, summary, pushes)
    finally:
        transport.close()


def _measure(
    target: Target,
    transport: AdbTransport,
    writer: RunWriter,
    settings: RunSettings,
    bin_remote: str,
    model_remote: str,
    obs: Observer,
) -> Summary:
    android = _android(target)
    bench = benchmark_argv(
        bin_remote,
        model_remote,
        num_runs=settings.effective_iterations(),
        warmup_runs=settings.warmup,
        threads=settings.threads or android.threads,
        op_profiling=settings.op_profile,
        use_xnnpack=android.use_xnnpack,
    )
    summary: Summary | None = None
    failure: EdgetoolError | None = None
    outputs: list[BenchmarkOutput] = []
    obs.measuring(0, 0.0)
    try:
        if settings.energy:
            from edgetool.flows.android_energy import measure_with_fuel_gauge

            assert target.meter is not None
            outputs, energy = measure_with_fuel_gauge(
                transport, target, settings, bench, writer, obs
            )
        else:
            # Each repetition is a fresh benchmark_model process; its mean is all it gives.
            energy = None
            for repetition in range(settings.repetitions()):
                text = _run_text(transport, bench)
                name = (
                    "benchmark_model.txt"
                    if repetition == 0
                    else f"benchmark_model-{repetition}.txt"
                )
                (writer.dir / name).write_text(text)
                outputs.append(parse_output(text))
        figures = aggregate_summary(outputs)
        figures["repetitions"] = repetition_summary(outputs)
        if energy is not None:
            figures["energy"] = energy
        if android.use_xnnpack is not None:
            figures["use_xnnpack"] = android.use_xnnpack
        summary = Summary.from_dict(figures)  # benchmark_model's figures, as parsed
        profile = op_profile(outputs[0]) if settings.op_profile else None
        if profile is not None:
            write_op_profile(writer.dir, profile)
        obs.progress(summary.count or 0)
    except KeyboardInterrupt as exc:
        failure = Interrupted("interrupted; benchmark_model gives no partial samples")
        failure.__cause__ = exc
    except EdgetoolError as exc:
        failure = exc
    finish_run(writer, summary, failure, "failed")
    assert summary is not None
    return summary


def _run_text(transport: AdbTransport, argv: list[str]) -> str:
    """All of a command's merged output; benchmark_model's own exit status is reported
    by the parser (its last lines say why), so a non-zero exit is not raised here."""
    process = transport.run(argv)
    text = "\n".join(process.lines())
    status = process.wait()
    if status != 0:
        parse_output(text)  # raises with the tool's own reason when it printed one
        raise DeviceError(
            f"{transport.description}: {posixpath.basename(argv[0])} exited with status {status}"
        )
    return text


def repetition_summary(outputs: list[BenchmarkOutput]) -> dict[str, Any]:
    """The run-level estimate from each benchmark_model process's mean (it keeps no
    samples, so there are no per-repetition medians to use)."""
    means = [float(latency_summary(out)["mean"]) for out in outputs]
    stats = summarize_repetitions(means, "process")
    method = "geometric mean of repetition means (benchmark_model gives no medians); " + (
        "Student t interval on their logs"
    )
    return replace(stats, method=method).to_dict()


def aggregate_summary(outputs: list[BenchmarkOutput]) -> dict[str, Any]:
    """One run's summary from one or more benchmark_model runs (energy repeats): counts
    add up, means are weighted, the spread is the pooled standard deviation."""
    parts = [latency_summary(out) for out in outputs]
    if len(parts) == 1:
        latency = parts[0]
    else:
        count = sum(int(p["count"]) for p in parts)
        mean = math.fsum(p["count"] * p["mean"] for p in parts) / count
        square = math.fsum(
            (p["count"] - 1) * p["std"] ** 2 + p["count"] * (p["mean"] - mean) ** 2 for p in parts
        )
        latency = {
            **parts[0],
            "count": count,
            "mean": mean,
            "std": math.sqrt(square / (count - 1)) if count > 1 else 0.0,
            "min": min(p["min"] for p in parts),
            "max": max(p["max"] for p in parts),
        }
    first = outputs[0]
    wall_s = latency["count"] * latency["mean"] / 1e3
    summary: dict[str, Any] = {
        "count": latency["count"],
        "latency": latency,
        "aggregate_only": True,
        "wall_s": wall_s,
        "throughput_per_s": latency["count"] / wall_s if wall_s > 0 else None,
        "peak_rss": (
            int(first.memory_overall_mb * 1024 * 1024) if first.memory_overall_mb else None
        ),
        "first_inference_ms": first.first_us / 1e3 if first.first_us is not None else None,
        "warmup": {
            "count": first.warmup.count if first.warmup else 0,
            "seconds": (
                first.warmup.count * first.warmup.avg_us / 1e6
                if first.warmup and first.warmup.avg_us is not None
                else 0.0
            ),
        },
        "load_ms": first.init_us / 1e3 if first.init_us is not None else None,
        "complete": True,
        "runs": len(outputs),
    }
    return summary


def op_profile(output: BenchmarkOutput) -> OpProfile | None:
    """benchmark_model's per-op tables of its regular runs (the first process's) in the
    profile format every runtime shares; None when it printed none."""
    if not output.op_types and not output.ops:
        return None
    return from_benchmark_model(
        [asdict(op) for op in output.op_types],
        [asdict(op) for op in output.ops],
        output.steady.count or None,
    )


FLOW = DeployFlow(
    deploy_android,
    lambda target: watch_facts(*android_facts(target)),
    ":tflite",
    supports=frozenset({"--threads", "--op-profile", "--energy"}),
    refusal="benchmark_model runs exact counts on its own random inputs; use "
    "-n/--iterations and --warmup",
)
"""Wear OS watches (and phones) over ADB: TFLite's benchmark_model on the device."""
