"""The Linux-class flow (local, SSH, emulated Pi): connect, push (verified), start the
runner once per repetition, journal its samples.

Depends only on the FileTransport protocol and the event stream, never on a concrete
transport, so every Linux-class device goes through this code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgetool import events
from edgetool.errors import (
    ConfigError,
    DeviceError,
    EdgetoolError,
    Interrupted,
    ModelError,
    UsageError,
)
from edgetool.export.artifact import Artifact
from edgetool.files import file_sha256
from edgetool.flows.base import (
    ALL_RUN_OPTIONS,
    DeployFlow,
    DeployOutcome,
    DeviceFacts,
    Observer,
    RunSettings,
    connect,
    push,
)
from edgetool.flows.journal import artifact_info, finish_run, open_run, summarize
from edgetool.flows.model_inputs import prepare_inputs
from edgetool.power.base import PowerMeter
from edgetool.power.recorder import EnergyRecorder
from edgetool.results.manifest import (
    AbInfo,
    EnergySummary,
    GenerationSummary,
    InputInfo,
    RepetitionInfo,
    RunManifest,
    RuntimeInfo,
    Summary,
    TargetInfo,
    WarmupInfo,
)
from edgetool.results.op_profile import OpProfile, write_op_profile
from edgetool.results.stats import summarize_generations
from edgetool.results.store import POWER, RunWriter, read_power
from edgetool.runner import RUNNER_PATH
from edgetool.targets import Target, device_path
from edgetool.transport import TRANSPORTS, FileTransport, PutResult
from edgetool.units import human_bytes

RUN_DEADLINE_SLACK = 300.0
"""Seconds added to a time-bound run's expected length for its runner's own deadline."""


def runner_deadline(settings: RunSettings, command_timeout: float) -> float:
    """How long one runner process may live, generously: a run bounded by time gets twice
    its expected length plus 5 minutes; one bounded by a count has no expected length, so
    the transport's command_timeout (the host's own limit for a command) applies."""
    if settings.duration and not settings.iterations and not settings.new_tokens:
        expected = settings.duration + settings.warmup_seconds + settings.min_duration
        if settings.energy:
            expected += settings.idle_seconds
        return min(2 * expected + RUN_DEADLINE_SLACK, command_timeout)
    return command_timeout


def accelerator_args(settings: RunSettings) -> list[str]:
    """--ep / --delegate for the runner, only when asked: a runner from before them (one
    already on the device is replaced, but a hand-run one may not be) never sees them."""
    args: list[str] = []
    if settings.ep:
        args += ["--ep", settings.ep]
    if settings.delegate:
        args += ["--delegate", settings.delegate]
    return args


def runner_argv(
    python: str,
    runner: str,
    model: str,
    settings: RunSettings,
    input_path: str | None,
    outputs_path: str | None = None,
    deadline: float = 0.0,
) -> list[str]:
    """The runner's command line; with a deadline it also watches its stdin (the
    transport holds it open for the run) and exits when the host is gone."""
    lifeline = ["--deadline", repr(deadline), "--lifeline"] if deadline > 0 else []
    if settings.new_tokens:
        if not input_path:
            raise ModelError("generation needs the prompt's token ids")
        return [
            python, runner, "generate", "--model", model, "--prompt-ids", input_path,
            "--tokens", str(settings.new_tokens), "--head-size", str(settings.head_size),
            "--repeat", str(settings.effective_iterations()),
            "--warmup", str(max(min(settings.warmup, 3), 1)), "--threads", str(settings.threads),
            *accelerator_args(settings), *lifeline,
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
    argv += accelerator_args(settings)
    for name, dims in settings.input_shapes.items():
        shape = "x".join(str(d) for d in dims)
        argv += ["--input-shape", f"{name}={shape}" if name else shape]
    if input_path:
        argv += ["--input", input_path]
    if outputs_path:
        argv += ["--dump-outputs", outputs_path]
    return argv + lifeline


_ERROR_CLASSES: dict[str, type[EdgetoolError]] = {
    "bad_model": ModelError,
    "input_shape": ModelError,
    "bad_input": ModelError,
    "bad_accelerator": UsageError,
}


_ACCELERATOR_KEYS = frozenset({"ep", "providers", "delegate", "delegated_nodes"})
"""The `model` event's keys a runtime reports only when they apply (ONNX or TFLite)."""


def target_accelerator(
    target: Target, artifact: Artifact, settings: RunSettings, note: Callable[[str], None]
) -> RunSettings:
    """SETTINGS with the target's [run] ep / delegate where the command line gave none and
    the model runs on that runtime (a TFLite model on a board whose ONNX default is an NPU
    provider keeps its own runtime's default); said, so no run is made on a silent one."""
    runtime = _runtime_of(artifact, settings)
    if target.ep and not settings.ep and runtime == "onnxruntime":
        note(f"--ep {target.ep} from [run] in {target.source.name}")
        return replace(settings, ep=target.ep)
    if target.delegate and not settings.delegate and runtime == "litert":
        note(f"--delegate {target.delegate} from [run] in {target.source.name}")
        return replace(settings, delegate=target.delegate)
    return settings


def _runtime_of(artifact: Artifact, settings: RunSettings) -> str:
    if settings.runtime != "auto":
        return settings.runtime
    return {".onnx": "onnxruntime", ".tflite": "litert"}.get(artifact.path.suffix, "")


def check_accelerator(artifact: Artifact, settings: RunSettings) -> None:
    """Refuse, before connecting, a provider for a TFLite model or a delegate for an ONNX
    one: the runner would refuse it too, after a push."""
    runtime = _runtime_of(artifact, settings)
    if settings.ep and runtime != "onnxruntime":
        raise UsageError(
            f"--ep chooses an onnxruntime execution provider; {artifact.path.name} runs on "
            f"{runtime or 'no known runtime'}.",
            hint="For a TFLite model use --delegate xnnpack|none.",
        )
    if settings.delegate and runtime != "litert":
        raise UsageError(
            f"--delegate chooses LiteRT's delegate; {artifact.path.name} runs on "
            f"{runtime or 'no known runtime'}.",
            hint="For an ONNX model use --ep PROVIDER.",
        )


def runner_remote(target: Target) -> str:
    return device_path(target.workdir, "runner", RUNNER_PATH.name)


def open_target_meter(target: Target, settings: RunSettings) -> PowerMeter | None:
    """The target's meter when --energy asks for it; a clear error when it cannot be had."""
    if not settings.energy:
        return None
    if settings.new_tokens:
        raise ConfigError("--energy is not supported with --tokens (LLM generation) yet")
    return target_meter(target)


def target_meter(target: Target) -> PowerMeter:
    """The meter the target's [meter] table declares, opened (deploy and split --energy)."""
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
    from edgetool.power import open_meter

    return open_meter(target.meter.type, target.meter.options)


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
    for artifact, remote in zip(artifacts, model_remotes, strict=True):
        if (artifact.path, remote) not in files:  # ab of one model under two delegates
            files.append((artifact.path, remote))
    input_remote = None
    if settings.input is not None:
        input_sha = file_sha256(settings.input)
        input_remote = device_path(target.workdir, "inputs", input_sha[:16], settings.input.name)
        files.append((settings.input, input_remote))
    return model_remotes, input_remote, push(transport, files, obs)


def linux_target_info(target: Target) -> TargetInfo:
    state = target.emulator_state or {}
    return TargetInfo(
        # An emulator that runs on the host CPU (loopback sshd) measures real time.
        emulated=bool(state and state.get("emulated_cpu", True)),
        emulator=state.get("emulator"),
        time_base=state.get("time_base"),
    )


def _open_linux_run(
    transport: FileTransport,
    target: Target,
    artifact: Artifact,
    model_remote: str,
    settings: RunSettings,
    results_root: Path,
    obs: Observer,
    ab: AbInfo | None = None,
) -> _LinuxRun:
    writer = open_run(
        results_root,
        target,
        artifact.path.stem,
        settings,
        transport.description,
        artifact_info(artifact),
        linux_target_info(target),
        RunManifest(repetition_kind="process", ab=ab),
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
        run.journal.settings,  # this run's own (ab: each model's input shapes)
        input_remote,
        run.outputs_remote if repetition == 0 else None,
        runner_deadline(settings, getattr(target.transport, "command_timeout", 3600.0)),
    )
    if run.journal.recorder is not None:
        argv += run.journal.recorder.runner_args()
    profiled = settings.op_profile and repetition == settings.repetitions() - 1
    if profiled:
        argv += ["--op-profile", str(PROFILED_INFERENCES)]
    run.journal.run_process(transport, argv, repetition)
    if profiled and run.journal.op_profile is None:
        run.journal.store_profile({"error": "the runner ended without a profile"})


PROFILED_INFERENCES = 10
"""Inferences of the profiling pass (after the last repetition's timed loop): onnxruntime
sums each node over them and keeps every one's node slices for the trace."""


def refuse_op_profile(artifact: Artifact, settings: RunSettings) -> None:
    """--op-profile needs a runtime whose Python API has a profiler: onnxruntime does;
    ai-edge-litert's Interpreter (2.x) has none (its per-op profiler is C++ only, reached
    through benchmark_model), and generation runs have no single inference to profile."""
    if not settings.op_profile:
        return
    if artifact.format == "tflite" or settings.runtime == "litert":
        raise UsageError(
            "--op-profile is not available for TFLite models on Linux targets: LiteRT's "
            "Python Interpreter exposes no per-operator profiler. Run LiteRT's benchmark_model "
            "with --enable_op_profiling=true on the device, or profile the ONNX export."
        )
    if settings.new_tokens:
        raise UsageError("--op-profile does not apply to LLM generation (--tokens)")


def check_ab_target(target: Target) -> None:
    """Alternating two models needs a device that starts processes: a Linux-class one."""
    if target.kind != "linux" or TRANSPORTS.get(target.transport.type).open_files is None:
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
    settings_b: RunSettings | None = None,
) -> tuple[DeployOutcome, DeployOutcome]:
    """Run A and B in alternating repetitions on one device in one session, one run
    directory each. `settings_b`: B's own settings where they differ from A's (another
    execution provider or delegate; the measuring itself is `settings`')."""
    obs = observer or Observer()
    check_ab_target(target)
    if settings.energy or settings.new_tokens:
        raise ConfigError("edgetool ab does not take --energy or LLM generation")
    if settings.input is not None and not settings.input.is_file():
        raise ModelError(f"input file not found: {settings.input}")
    sides = (settings, settings_b or settings)
    for artifact, side in zip(artifacts, sides, strict=True):
        check_accelerator(artifact, side)
    said: list[str] = []

    def note_once(text: str) -> None:
        if text not in said:
            said.append(text)
            obs.note(text)

    sides = (
        target_accelerator(target, artifacts[0], sides[0], note_once),
        target_accelerator(target, artifacts[1], sides[1], note_once),
    )
    # Each model's own shapes: a target's [input_shapes] may match A and not B.
    each = [
        prepare_inputs(target, artifact, side, obs.note)
        for artifact, side in zip(artifacts, sides, strict=True)
    ]
    with connect(target) as transport:
        obs.connected(transport.description)
        remotes, input_remote, pushes = _push_models(
            transport, target, list(artifacts), settings, obs
        )
        runs = [
            _open_linux_run(
                transport, target, artifact, remote, own, results_root, obs,
                AbInfo(role=role, order="alternating blocks: AB, BA, AB, ..."),
            )
            for artifact, remote, own, role in zip(
                artifacts, remotes, each, ("A", "B"), strict=True
            )
        ]  # fmt: skip
        for run, other in ((runs[0], runs[1]), (runs[1], runs[0])):
            manifest = run.journal.writer.manifest
            assert manifest.ab is not None  # set when the run was opened
            manifest.ab.other_run = other.journal.writer.run_id
            run.journal.writer.save()
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
        self.generations: list[events.Generation] = []
        self.ends: list[events.Summary] = []
        self.warm: events.Warmup | None = None
        self.model: events.ModelInfo | None = None
        self.facts: list[RepetitionInfo] = []
        self.op_profile: OpProfile | None = None

    def store_profile(self, data: dict[str, Any]) -> None:
        """The profiling pass's summary into op_profile.json (also when it says why there
        is none: the run asked for a profile, and the file says what became of it)."""
        try:
            profile = OpProfile.from_dict(data, "the runner's op_profile line")
        except EdgetoolError as exc:
            profile = OpProfile(source="unknown", error=str(exc))
        self.op_profile = profile
        write_op_profile(self.writer.dir, profile)
        if profile.error:
            self.obs.note(f"no per-operator profile: {profile.error}")

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
        manifest = self.writer.manifest
        self.obs.repetition(self.writer.run_id, repetition, self.settings.repetitions())
        facts = RepetitionInfo(repetition=repetition)
        self.facts.append(facts)
        end: events.Summary | None = None
        failure: EdgetoolError | None = None
        offset = len(self.samples)
        process = transport.run(argv)
        try:
            for line in process.lines():
                event = events.parse_event(line)
                if first or not isinstance(event, (events.Hello, events.ModelInfo, events.Warmup)):
                    self.obs.event(event)
                if self.recorder is not None:
                    self.recorder.on_event(event)
                if isinstance(event, events.Samples):
                    self.writer.append_samples(
                        offset + event.first_index, event.ns, event.starts, repetition
                    )
                    self.samples.extend(event.ns)
                    self.reps.extend([repetition] * len(event.ns))
                    self.obs.progress(len(self.samples))
                elif isinstance(event, events.Hello):
                    if first:
                        manifest.device = event.device
                        manifest.runtimes = event.runtimes
                        manifest.accelerators = event.accelerators
                        manifest.runner = event.runner
                        self.writer.save()
                elif isinstance(event, events.ModelInfo):
                    facts.load_ms = event.load_ms
                    if self.model is None:
                        self.model = event
                        runtime = {
                            k: v
                            for k, v in asdict(event).items()
                            if k != "feeds" and (v is not None or k not in _ACCELERATOR_KEYS)
                        }
                        manifest.runtime = RuntimeInfo.from_dict(runtime)
                        if event.feeds is not None:
                            manifest.inputs = [InputInfo.from_dict(f) for f in event.feeds]
                        self.writer.save()
                elif isinstance(event, events.Env):
                    if event.when == "before":
                        facts.env_before = event.values
                        if first:
                            manifest.env_before = event.values
                            self.writer.save()
                    elif event.when == "after":
                        facts.env_after = event.values
                        manifest.env_after = event.values
                        self.writer.save()
                    else:  # a kind this flow does not know yet: kept as the runner said it
                        facts.extra[f"env_{event.when}"] = event.values
                elif isinstance(event, events.Warmup):
                    facts.warmup = WarmupInfo(count=event.count, seconds=event.seconds)
                    facts.first_ms = event.first_ns / 1e6 if event.first_ns else None
                    facts.keep_null("first_ms")
                    if self.warm is None:
                        self.warm = event
                        self._measuring()
                elif isinstance(event, events.Generation):
                    self.generations.append(event)
                    manifest.generations = [asdict(g) for g in self.generations]
                    self.writer.save()
                elif isinstance(event, events.Summary):
                    end = event
                    facts.count, facts.wall_ns = event.count, event.wall_ns
                    facts.peak_rss = event.peak_rss
                    facts.keep_null("peak_rss")
                elif isinstance(event, events.OpProfile):
                    self.store_profile(event.data)
                elif isinstance(event, events.ErrorEvent):
                    cls = _ERROR_CLASSES.get(event.kind, DeviceError)
                    hint = event.hint
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
            manifest.repetitions = self.facts
            self.writer.save()
        if failure is not None:
            raise failure
        assert end is not None
        self.ends.append(end)

    def finish(self, failure: EdgetoolError | None) -> Summary:
        """Summarise and close the run; on a failure the run keeps its samples (partial)
        and the failure is raised."""
        if self.recorder is not None and failure is None:
            self.recorder.after()
        if failure is not None:
            self.samples, self.reps = self.writer.journaled()
        summary = (
            summarize(
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
            summary.complete = len(self.ends) == self.settings.repetitions()
        if self.recorder is not None and failure is None and summary is not None:
            failure = _add_energy(self.recorder, self.writer, summary)
        if summary is not None and self.generations:
            summary.generation = GenerationSummary.from_dict(
                summarize_generations(
                    [
                        (g.prompt_tokens, g.new_tokens, g.ttft_ns, g.decode_ns)
                        for g in self.generations
                    ]
                )
            )
        finish_run(self.writer, summary, failure, "partial" if self.samples else "failed")
        assert summary is not None
        return summary


def _add_energy(
    recorder: EnergyRecorder, writer: RunWriter, summary: Summary
) -> EdgetoolError | None:
    """Energy figures into the summary; a failure keeps the latency results (run partial)."""
    power = recorder.manifest_entry()
    writer.manifest.power = power
    writer.save()
    try:
        result = recorder.energy(read_power(writer.dir / POWER))
    except EdgetoolError as exc:
        summary.energy = EnergySummary(meter=recorder.meter.label, error=str(exc))
        return exc
    energy = EnergySummary.from_dict(result.to_dict())
    # The summary travels alone: it says how its windows met the meter's clock (null: no
    # alignment was needed or none could be made).
    energy.alignment = power.alignment
    energy.keep_null("alignment")
    summary.energy = energy
    return None


def device_facts(target: Target) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Push the runner and ask it for the device's facts (for `targets check`)."""
    with connect(target) as transport:
        push(transport, [(RUNNER_PATH, runner_remote(target))], Observer())
        out = transport.run_checked([transport.python, runner_remote(target), "facts"])
    hello: dict[str, Any] = {}
    env: dict[str, Any] = {}
    for line in out.splitlines():
        event = events.parse_event(line)
        if isinstance(event, events.Hello):
            hello = {
                "device": event.device,
                "runtimes": event.runtimes,
                "runner": event.runner,
                "accelerators": event.accelerators,
            }
        elif isinstance(event, events.Env):
            env = event.values
        elif isinstance(event, events.ErrorEvent):
            raise DeviceError(f"{transport.description}: {event.message}")
    if not hello:
        raise DeviceError(f"{transport.description}: runner printed no device facts")
    return transport.description, hello, env


def deploy_linux(
    target: Target,
    artifact: Artifact | None,
    settings: RunSettings,
    results_root: Path,
    observer: Observer,
) -> DeployOutcome:
    if artifact is None:
        raise ModelError(f"target {target.name} needs a model: pass --model")
    if settings.input is not None and not settings.input.is_file():
        raise ModelError(f"input file not found: {settings.input}")
    refuse_op_profile(artifact, settings)
    check_accelerator(artifact, settings)
    settings = target_accelerator(target, artifact, settings, observer.note)
    settings = prepare_inputs(target, artifact, settings, observer.note)
    meter = open_target_meter(target, settings)
    try:
        return _deploy_linux(target, artifact, settings, results_root, observer, meter)
    finally:
        if meter is not None:
            meter.close()


def linux_facts(target: Target) -> DeviceFacts:
    where, hello, env = device_facts(target)
    device, runtimes = hello["device"], hello["runtimes"]
    rows = [
        ("host", device.get("hostname")),
        ("arch", device.get("arch")),
        ("cpu", f"{device.get('cores')}× {device.get('cpu_model')}"),
        ("board", device.get("board")),
        ("virtual", device.get("virtualization")),
        ("os", f"{device.get('os')} (kernel {device.get('kernel')})"),
        ("python", f"{device.get('python')} ({device.get('python_path')})"),
        (
            "memory",
            f"{human_bytes(device.get('mem_available'))} free of "
            f"{human_bytes(device.get('mem_total'))}",
        ),
        ("disk", f"{human_bytes(device.get('disk_free'))} free in the work directory"),
        ("governor", env.get("governor")),
        (
            "freq",
            ", ".join(f"{f / 1000:.0f} MHz" for f in env.get("freq_khz") or []) or None,
        ),
        ("temp", f"{env['temp_c']:.1f} °C" if env.get("temp_c") is not None else None),
        ("throttled", env.get("throttled")),
    ]
    shown = [(k, str(v)) for k, v in rows if v not in (None, "", "None")]
    for runtime, version in runtimes.items():
        mark = f"[green]{version}[/green]" if version else "[yellow]not installed[/yellow]"
        shown.append((runtime, mark))
    shown += accelerator_rows(hello.get("accelerators") or {})
    return DeviceFacts(where, {**hello, "env": env}, shown, problem=_no_runtime(target, runtimes))


def accelerator_rows(accelerators: dict[str, Any]) -> list[tuple[str, str]]:
    """What --ep and --delegate can choose on this device, as fact rows."""
    rows = []
    providers = accelerators.get("onnxruntime")
    if providers:
        rows.append(("providers", ", ".join(providers) + "  [dim](--ep)[/dim]"))
    delegates = accelerators.get("litert")
    if delegates:
        rows.append(("delegates", ", ".join(delegates) + "  [dim](--delegate)[/dim]"))
    elif delegates is not None:
        rows.append(("delegates", "[yellow]not selectable by this TFLite runtime[/yellow]"))
    return rows


RUNTIME_MODULES = {"onnxruntime": ("onnxruntime",), "litert": ("ai_edge_litert", "tflite_runtime")}
"""The modules the runner reports (`runtime_versions`) that provide each target runtime."""


def _no_runtime(target: Target, versions: dict[str, Any]) -> DeviceError | None:
    """A DeviceError when none of the target's runtimes imports on the device (every deploy
    would fail at its first model), else None."""
    wanted = [r for r in target.runtimes if r in RUNTIME_MODULES]
    if not wanted or any(versions.get(m) for r in wanted for m in RUNTIME_MODULES[r]):
        return None
    modules = ", ".join(m for r in wanted for m in RUNTIME_MODULES[r])
    hint = (
        f"Run `edgetool provision --target {target.name}`."
        if target.provision is not None
        else "Install one on the device (pip install onnxruntime), or set 'python' in the "
        "target file to an interpreter that has one."
    )
    return DeviceError(
        f"{target.name}: none of the target's runtimes ({', '.join(wanted)}) is importable "
        f"by {target.python or 'python3'} on the device (tried {modules}).",
        hint=hint,
    )


FLOW = DeployFlow(
    deploy_linux,
    linux_facts,
    supports=ALL_RUN_OPTIONS,
)
"""Linux-class devices: a runner process per repetition over a FileTransport."""
