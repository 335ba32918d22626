"""The deploy flow: connect, push (verified), run the runner, journal its samples.

Depends only on the Transport protocol and the event stream, never on a concrete
transport, so every Linux-class device (local, SSH, emulated) goes through this code.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgetool import __version__
from edgetool.errors import ConfigError, DeviceError, EdgetoolError, Interrupted, ModelError
from edgetool.export.artifact import Artifact
from edgetool.power.base import PowerMeter
from edgetool.power.recorder import EnergyRecorder
from edgetool.results import schema
from edgetool.results.stats import (
    repetition_medians,
    stability_warnings,
    summarize_generations,
    summarize_ns,
    summarize_repetitions,
)
from edgetool.results.store import POWER, RunWriter, new_run_id, read_power
from edgetool.runner import RUNNER_PATH
from edgetool.targets import BleUartSettings, Target, device_path
from edgetool.transport import FileTransport, PutResult, open_transport
from edgetool.transport.base import Progress, file_sha256

DEFAULT_REPEAT = 5
"""Repetitions per run by default: as MLPerf Tiny's five windows, enough for a t interval
(4 degrees of freedom) while keeping a default deploy to a few seconds on a Pi."""


@dataclass(frozen=True)
class RunSettings:
    iterations: int = 0
    duration: float = 0.0
    min_duration: float = 0.0
    warmup: int = 10
    warmup_seconds: float = 0.0
    threads: int = 0
    input: Path | None = None
    seed: int = 0
    save_outputs: bool = False
    runtime: str = "auto"
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
    run_dir: Path
    run_id: str
    manifest: dict[str, Any]
    summary: dict[str, Any]
    pushes: list[PutResult] = field(default_factory=list)


class Observer:
    """What a front end (the CLI's progress bar, a farm log) hears of a deploy."""

    def connected(self, description: str) -> None: ...

    def pushing(self, name: str, size: int) -> Progress | None:
        return None

    def pushed(self, name: str, result: PutResult) -> None: ...

    def event(self, event: schema.Event) -> None: ...

    def measuring(self, expected: int, duration: float) -> None: ...

    def progress(self, count: int) -> None: ...

    def metering(self, meter: str, idle_seconds: float) -> None: ...

    def repetition(self, run_id: str, index: int, total: int) -> None:
        """Repetition `index` (0-based) of `total` of run `run_id` starts."""


def runner_argv(
    python: str,
    runner: str,
    model: str,
    settings: RunSettings,
    input_path: str | None,
    outputs_path: str | None = None,
) -> list[str]:
    if settings.new_tokens:
        if not input_path:
            raise ModelError("generation needs the prompt's token ids")
        return [
            python, runner, "generate", "--model", model, "--prompt-ids", input_path,
            "--tokens", str(settings.new_tokens), "--head-size", str(settings.head_size),
            "--repeat", str(settings.effective_iterations()),
            "--warmup", str(max(min(settings.warmup, 3), 1)), "--threads", str(settings.threads),
        ]  # fmt: skip
    argv = [python, runner, "run", "--model", model, "--runtime", settings.runtime]
    iterations = settings.effective_iterations()
    if iterations:
        argv += ["--iterations", str(iterations)]
    if settings.duration:
        argv += ["--duration", repr(settings.duration)]
    if settings.min_duration:
        argv += ["--min-duration", repr(settings.min_duration)]
    argv += ["--warmup", str(settings.warmup), "--warmup-seconds", repr(settings.warmup_seconds)]
    argv += ["--threads", str(settings.threads), "--seed", str(settings.seed)]
    if input_path:
        argv += ["--input", input_path]
    if outputs_path:
        argv += ["--dump-outputs", outputs_path]
    return argv


_ERROR_CLASSES: dict[str, type[EdgetoolError]] = {
    "bad_model": ModelError,
    "input_shape": ModelError,
    "bad_input": ModelError,
}


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


def runner_remote(target: Target) -> str:
    return device_path(target.workdir, "runner", RUNNER_PATH.name)


def open_target_meter(target: Target, settings: RunSettings) -> PowerMeter | None:
    """The target's meter when --energy asks for it; a clear error when it cannot be had."""
    if not settings.energy:
        return None
    if target.meter is None:
        from edgetool.power import meter_types

        raise ConfigError(
            f"target {target.name} has no [meter] section, so --energy has nothing to read",
            hint=f"Add one to {target.source} (type = one of {', '.join(meter_types())}).",
        )
    if target.kind == "mcu":
        raise ConfigError(
            f"--energy is not supported on microcontroller targets yet ({target.name})"
        )
    if settings.new_tokens:
        raise ConfigError("--energy is not supported with --tokens (LLM generation) yet")
    from edgetool.power import open_meter

    return open_meter(target.meter.type, target.meter.options)


def deploy(
    target: Target,
    artifact: Artifact | None,
    settings: RunSettings,
    results_root: Path,
    observer: Observer | None = None,
) -> DeployOutcome:
    """Run `artifact` on `target`; None = the model already in a microcontroller's firmware."""
    obs = observer or Observer()
    if isinstance(target.transport, BleUartSettings):
        from edgetool.watch.bangle import deploy_bangle

        return deploy_bangle(target, artifact, settings, results_root, obs)
    if target.kind == "android":
        from edgetool.android.session import deploy_android

        return deploy_android(target, artifact, settings, results_root, obs)
    if target.kind == "mcu":
        from edgetool.mcu.session import deploy_mcu

        return deploy_mcu(target, artifact, settings, results_root, obs)
    if artifact is None:
        raise ModelError(f"target {target.name} needs a model: pass --model")
    if settings.input is not None and not settings.input.is_file():
        raise ModelError(f"input file not found: {settings.input}")
    meter = open_target_meter(target, settings)
    try:
        return _deploy_linux(target, artifact, settings, results_root, obs, meter)
    finally:
        if meter is not None:
            meter.close()


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


@dataclass
class _LinuxRun:
    """One run on a Linux-class device: where its model is, and its journal."""

    model_remote: str
    journal: RunJournal
    outputs_remote: str | None = None


def _push_models(
    transport: FileTransport,
    target: Target,
    artifacts: list[Artifact],
    settings: RunSettings,
    obs: Observer,
) -> tuple[list[str], str | None, list[PutResult]]:
    """Runner, models and input onto the device: (model paths, input path, push results)."""
    model_remotes = [
        device_path(target.workdir, "artifacts", a.sha256[:16], a.path.name) for a in artifacts
    ]
    files = [(RUNNER_PATH, runner_remote(target))]
    files += [(a.path, remote) for a, remote in zip(artifacts, model_remotes, strict=True)]
    input_remote = None
    if settings.input is not None:
        input_sha = file_sha256(settings.input)
        input_remote = device_path(target.workdir, "inputs", input_sha[:16], settings.input.name)
        files.append((settings.input, input_remote))
    return model_remotes, input_remote, push(transport, files, obs)


def _linux_target_fields(target: Target) -> dict[str, Any]:
    return {
        # An emulator that runs on the host CPU (loopback sshd) measures real time.
        "emulated": bool(target.emulator_state and target.emulator_state.get("emulated_cpu", True)),
        **{
            key: target.emulator_state[key]
            for key in ("emulator", "time_base")
            if target.emulator_state and key in target.emulator_state
        },
    }


def _open_linux_run(
    transport: FileTransport,
    target: Target,
    artifact: Artifact,
    model_remote: str,
    settings: RunSettings,
    results_root: Path,
    obs: Observer,
    **sections: Any,
) -> _LinuxRun:
    writer = open_run(
        results_root,
        target,
        artifact.path.stem,
        settings,
        transport.description,
        artifact.to_dict(),
        _linux_target_fields(target),
        repetition_kind="process",
        **sections,
    )
    outputs_remote = None
    if settings.save_outputs:
        outputs_remote = device_path(target.workdir, "outputs", f"{writer.run_id}.npz")
        transport.makedirs(device_path(target.workdir, "outputs"))
    return _LinuxRun(model_remote, RunJournal(writer, settings, obs), outputs_remote)


def _deploy_linux(
    target: Target,
    artifact: Artifact,
    settings: RunSettings,
    results_root: Path,
    obs: Observer,
    meter: PowerMeter | None,
) -> DeployOutcome:
    with connect(target) as transport:
        obs.connected(transport.description)
        (model_remote,), input_remote, pushes = _push_models(
            transport, target, [artifact], settings, obs
        )
        run = _open_linux_run(
            transport, target, artifact, model_remote, settings, results_root, obs
        )
        writer = run.journal.writer
        recorder = None
        if meter is not None:
            clock_argv = [transport.python, runner_remote(target), "clock"]
            recorder = EnergyRecorder(
                meter,
                settings.idle_seconds,
                writer.append_power,
                lambda: transport.run(clock_argv),
            )
            run.journal.recorder = recorder
            obs.metering(meter.label, settings.idle_seconds)
            recorder.before()
        failure = _measure_runs(transport, target, [run], settings, input_remote)
        (outcome,) = _finish_runs(transport, [run], failure)
        outcome.pushes = pushes
        return outcome


def _measure_runs(
    transport: FileTransport,
    target: Target,
    runs: list[_LinuxRun],
    settings: RunSettings,
    input_remote: str | None,
) -> EdgetoolError | None:
    """Every repetition of every run, in blocks that alternate the runs' order (AB, BA,
    AB, ...: each pair of blocks cancels a linear drift); what stopped them, if anything."""
    try:
        for block in range(settings.repetitions()):
            for run in runs if block % 2 == 0 else runs[::-1]:
                _run_repetition(transport, target, run, settings, input_remote, block)
    except KeyboardInterrupt as exc:
        measured = sum(len(run.journal.samples) for run in runs)
        failure = Interrupted(f"interrupted after {measured} samples")
        failure.__cause__ = exc
        return failure
    except EdgetoolError as exc:
        return exc
    return None


def _finish_runs(
    transport: FileTransport, runs: list[_LinuxRun], failure: EdgetoolError | None
) -> list[DeployOutcome]:
    """Close every run (each keeps what it measured), fetch the outputs of those that
    finished, then raise the first failure."""
    outcomes: list[DeployOutcome] = []
    errors: list[EdgetoolError] = []
    for run in runs:
        writer = run.journal.writer
        try:
            summary = run.journal.finish(failure)
        except EdgetoolError as exc:
            errors.append(exc)
            continue
        if run.outputs_remote:
            # The first inference's outputs, for parity checks against a reference.
            transport.get(run.outputs_remote, writer.dir / "outputs.npz")
        outcomes.append(DeployOutcome(writer.dir, writer.run_id, writer.manifest, summary))
    if errors:
        raise errors[0]
    return outcomes


def _run_repetition(
    transport: FileTransport,
    target: Target,
    run: _LinuxRun,
    settings: RunSettings,
    input_remote: str | None,
    repetition: int,
) -> None:
    """One fresh runner process: load, warm up, measure; its events into the journal."""
    argv = runner_argv(
        transport.python,
        runner_remote(target),
        run.model_remote,
        settings,
        input_remote,
        run.outputs_remote if repetition == 0 else None,
    )
    if run.journal.recorder is not None:
        argv += run.journal.recorder.runner_args()
    run.journal.run_process(transport, argv, repetition)


def check_ab_target(target: Target) -> None:
    """Alternating two models needs a device that starts processes: a Linux-class one."""
    if target.kind != "linux" or isinstance(target.transport, BleUartSettings):
        raise ConfigError(
            f"edgetool ab needs a Linux-class target (local, SSH, emulated Pi); "
            f"{target.name} is kind {target.kind}",
            hint="On other devices, deploy A and B one after the other and compare the runs.",
        )


def deploy_ab(
    target: Target,
    artifacts: tuple[Artifact, Artifact],
    settings: RunSettings,
    results_root: Path,
    observer: Observer | None = None,
) -> tuple[DeployOutcome, DeployOutcome]:
    """Run A and B in alternating repetitions on one device in one session, one run
    directory each."""
    obs = observer or Observer()
    check_ab_target(target)
    if settings.energy or settings.new_tokens:
        raise ConfigError("edgetool ab does not take --energy or LLM generation")
    if settings.input is not None and not settings.input.is_file():
        raise ModelError(f"input file not found: {settings.input}")
    with connect(target) as transport:
        obs.connected(transport.description)
        remotes, input_remote, pushes = _push_models(
            transport, target, list(artifacts), settings, obs
        )
        runs = [
            _open_linux_run(
                transport, target, artifact, remote, settings, results_root, obs,
                ab={"role": role, "order": "alternating blocks: AB, BA, AB, ..."},
            )
            for artifact, remote, role in zip(artifacts, remotes, ("A", "B"), strict=True)
        ]  # fmt: skip
        for run, other in ((runs[0], runs[1]), (runs[1], runs[0])):
            run.journal.writer.update(
                ab={**run.journal.writer.manifest["ab"], "other_run": other.journal.writer.run_id}
            )
        failure = _measure_runs(transport, target, runs, settings, input_remote)
        a, b = _finish_runs(transport, runs, failure)
        a.pushes = pushes
        return a, b


class RunJournal:
    """One run's journal across its repetitions: samples (tagged with their repetition)
    are written as they arrive, per-repetition facts go into the manifest, and `finish`
    summarises whatever was measured, whatever failed."""

    def __init__(self, writer: RunWriter, settings: RunSettings, obs: Observer) -> None:
        self.writer = writer
        self.settings = settings
        self.obs = obs
        self.recorder: EnergyRecorder | None = None
        self.samples: list[int] = []
        self.reps: list[int] = []
        self.generations: list[schema.Generation] = []
        self.ends: list[schema.Summary] = []
        self.warm: schema.Warmup | None = None
        self.model: schema.ModelInfo | None = None
        self.facts: list[dict[str, Any]] = []

    def _measuring(self) -> None:
        expected = self.settings.effective_iterations() * self.settings.repetitions()
        if self.settings.new_tokens:  # samples are decode steps: new tokens - 1 each
            expected *= max(self.settings.new_tokens - 1, 0)
        counted = not (self.settings.min_duration or self.settings.duration)
        self.obs.measuring(
            expected if counted or self.settings.new_tokens else 0,
            self.settings.duration * self.settings.repetitions(),
        )

    def run_process(self, transport: FileTransport, argv: list[str], repetition: int) -> None:
        """Run one runner process to its end; raise what went wrong (samples kept)."""
        first = not self.facts
        self.obs.repetition(self.writer.run_id, repetition, self.settings.repetitions())
        facts: dict[str, Any] = {"repetition": repetition}
        self.facts.append(facts)
        end: schema.Summary | None = None
        failure: EdgetoolError | None = None
        offset = len(self.samples)
        process = transport.run(argv)
        try:
            for line in process.lines():
                event = schema.parse_event(line)
                if first or not isinstance(event, (schema.Hello, schema.ModelInfo, schema.Warmup)):
                    self.obs.event(event)
                if self.recorder is not None:
                    self.recorder.on_event(event)
                if isinstance(event, schema.Samples):
                    self.writer.append_samples(
                        offset + event.first_index, event.ns, event.starts, repetition
                    )
                    self.samples.extend(event.ns)
                    self.reps.extend([repetition] * len(event.ns))
                    self.obs.progress(len(self.samples))
                elif isinstance(event, schema.Hello):
                    if first:
                        self.writer.update(
                            device=event.device, runtimes=event.runtimes, runner=event.runner
                        )
                elif isinstance(event, schema.ModelInfo):
                    facts["load_ms"] = event.load_ms
                    if self.model is None:
                        self.model = event
                        self.writer.update(runtime=asdict(event))
                elif isinstance(event, schema.Env):
                    facts[f"env_{event.when}"] = event.values
                    if event.when == "before" and first:
                        self.writer.update(env_before=event.values)
                    elif event.when == "after":
                        self.writer.update(env_after=event.values)
                elif isinstance(event, schema.Warmup):
                    facts["warmup"] = {"count": event.count, "seconds": event.seconds}
                    facts["first_ms"] = event.first_ns / 1e6 if event.first_ns else None
                    if self.warm is None:
                        self.warm = event
                        self._measuring()
                elif isinstance(event, schema.Generation):
                    self.generations.append(event)
                    self.writer.update(generations=[asdict(g) for g in self.generations])
                elif isinstance(event, schema.Summary):
                    end = event
                    facts.update(count=event.count, wall_ns=event.wall_ns, peak_rss=event.peak_rss)
                elif isinstance(event, schema.ErrorEvent):
                    cls = _ERROR_CLASSES.get(event.kind, DeviceError)
                    hint = None
                    if event.kind == "runtime_missing":
                        hint = "Install it on the device (pip install onnxruntime ai-edge-litert)."
                    failure = cls(f"{transport.description}: {event.message}", hint=hint)
            status = process.wait()
            if failure is None and end is None:
                tail = process.stderr_text().strip().splitlines()[-3:]
                failure = DeviceError(
                    f"{transport.description}: runner exited with status {status} before "
                    "finishing" + (f": {' | '.join(tail)}" if tail else "")
                )
        except BaseException:
            process.kill()
            raise
        finally:
            self.writer.update(repetitions=self.facts)
        if failure is not None:
            raise failure
        assert end is not None
        self.ends.append(end)

    def finish(self, failure: EdgetoolError | None) -> dict[str, Any]:
        """Summarise and close the run; on a failure the run keeps its samples (partial)
        and the failure is raised."""
        if self.recorder is not None and failure is None:
            self.recorder.after()
        if failure is not None:
            self.samples, self.reps = self.writer.journaled()
        summary = (
            _summary(
                self.samples,
                self.ends,
                self.warm,
                self.model,
                self.reps,
                "process",
                self.facts,
            )
            if self.samples
            else None
        )
        if summary is not None:  # every repetition's runner reached its summary
            summary["complete"] = len(self.ends) == self.settings.repetitions()
        if self.recorder is not None and failure is None and summary is not None:
            failure = _add_energy(self.recorder, self.writer, summary)
        if summary is not None and self.generations:
            summary["generation"] = summarize_generations(
                [(g.prompt_tokens, g.new_tokens, g.ttft_ns, g.decode_ns) for g in self.generations]
            )
        finish_run(self.writer, summary, failure, "partial" if self.samples else "failed")
        assert summary is not None
        return summary


def _add_energy(
    recorder: EnergyRecorder, writer: RunWriter, summary: dict[str, Any]
) -> EdgetoolError | None:
    """Energy figures into the summary; a failure keeps the latency results (run partial)."""
    writer.update(power=recorder.manifest_entry())
    try:
        energy = recorder.energy(read_power(writer.dir / POWER))
    except EdgetoolError as exc:
        summary["energy"] = {"meter": recorder.meter.label, "error": str(exc)}
        return exc
    summary["energy"] = energy.to_dict()
    summary["energy"]["alignment"] = writer.manifest["power"]["alignment"]
    return None


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


def _summary(
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


def device_facts(target: Target) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Push the runner and ask it for the device's facts (for `targets check`)."""
    with connect(target) as transport:
        push(transport, [(RUNNER_PATH, runner_remote(target))], Observer())
        out = transport.run_checked([transport.python, runner_remote(target), "facts"])
    hello: dict[str, Any] = {}
    env: dict[str, Any] = {}
    for line in out.splitlines():
        event = schema.parse_event(line)
        if isinstance(event, schema.Hello):
            hello = {"device": event.device, "runtimes": event.runtimes, "runner": event.runner}
        elif isinstance(event, schema.Env):
            env = event.values
        elif isinstance(event, schema.ErrorEvent):
            raise DeviceError(f"{transport.description}: {event.message}")
    if not hello:
        raise DeviceError(f"{transport.description}: runner printed no device facts")
    return transport.description, hello, env
