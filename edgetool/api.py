"""edgetool's Python API: what the CLI does, as typed functions for scripts and test suites.

    from edgetool.api import deploy, compare, ms

    run = deploy("tiny-mlp", target="local", iterations=200)
    assert run.latency_p50 < 5 * ms
    result = compare("results/baseline-run", run)
    print(result.verdict, result.ratio, result.ci)

The CLI commands (`deploy`, `ab`, `results compare`, `export`, `verify`) are thin layers
over these functions: the same defaults (RunSettings's own field defaults, `run_settings`),
the same checks, the same errors. Every failure is an `edgetool.errors.EdgetoolError`
subclass with the exit code the CLI would give (UsageError 2, ModelError 3, ConfigError 5,
ConnectError 6, DeviceError 7, ResultsError 9, ...); a run that fails after it started keeps
what it measured and names its directory in the error's `run_dir`.

Times are in seconds (`ms`, `us` are the units to write limits with), energies in joules
(`mJ`, `uJ`). Importing this module loads no ML framework: models are exported (torch,
onnx) and runs compared only when a function needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgetool import paths
from edgetool.errors import EdgetoolError, ResultsError, UsageError
from edgetool.flows.base import Observer, RunSettings
from edgetool.results.manifest import RunManifest, Summary
from edgetool.targets import Target, load_target

if TYPE_CHECKING:
    from edgetool.export.artifact import Artifact
    from edgetool.export.verify import VerifyReport
    from edgetool.results.compare import PairComparison, SetComparison
    from edgetool.results.store import Run as StoredRun
    from edgetool.split.run import SplitOutcome
    from edgetool.split.settings import SplitObserver, SplitSettings
    from edgetool.transport import PutResult

__all__ = [
    "RUN_DEFAULTS",
    "Comparison",
    "EdgetoolError",
    "J",
    "Run",
    "ab",
    "compare",
    "deploy",
    "export",
    "load_run",
    "mJ",
    "ms",
    "run_settings",
    "s",
    "split",
    "uJ",
    "us",
    "verify",
]

s = 1.0
ms = 1e-3
us = 1e-6
"""Time units: Run's latencies are seconds, so `run.latency_p50 < 5 * ms` reads as it says."""
J = 1.0
mJ = 1e-3
uJ = 1e-6

RUN_DEFAULTS = RunSettings()
"""The one source of the measuring defaults: the CLI's options and this module's keyword
arguments both read them from here (a test holds them equal)."""

Progress = Callable[[str], None]
"""Receives one line of progress text (an export's steps, a default taken)."""


# --- results --------------------------------------------------------------------------


def _seconds(value_ms: float | None) -> float | None:
    return None if value_ms is None else value_ms * 1e-3


@dataclass(frozen=True, repr=False)
class Run:
    """A run directory as the API returns it: the typed manifest and summary, and the
    headline figures in SI units. `latency_p50` is the run's estimate (the geometric mean
    of the repetition medians, as `edgetool deploy` shows it), `latency_ci` its interval."""

    run_id: str
    dir: Path
    manifest: RunManifest
    summary: Summary
    pushes: tuple[PutResult, ...] = ()
    generated_text: str | None = None
    """An LLM run: the first generation, decoded."""

    def __repr__(self) -> str:
        """Short: an assertion's message shows it (`where 0.012 = Run(...).latency_p50`)."""
        return f"Run({self.run_id!r}, {self.status}, p50 {self.latency_p50 * 1e3:.4g} ms)"

    @property
    def status(self) -> str:
        return self.manifest.status or "unknown"

    @property
    def target(self) -> str:
        return (self.manifest.target.name if self.manifest.target else None) or ""

    @property
    def emulated(self) -> bool:
        return bool(self.summary.emulated)

    @property
    def time_base(self) -> str:
        """What the times count: device wall time, or an emulator's instructions."""
        return self.summary.time_base or "device"

    @property
    def count(self) -> int:
        return self.summary.count or 0

    @property
    def latency_p50(self) -> float:
        """Seconds: the repetitions' estimate, else the per-inference median; nan if none."""
        reps = self.summary.repetitions
        if reps is not None and reps.estimate_ms is not None:
            return reps.estimate_ms * 1e-3
        value = _seconds(self.summary.latency_info.p50)
        return math.nan if value is None else value

    @property
    def latency_ci(self) -> tuple[float, float] | None:
        """Seconds: the confidence interval of `latency_p50` (None with one repetition)."""
        reps = self.summary.repetitions
        pair = reps.ci if reps is not None and reps.ci else self.summary.latency_info.median_ci
        if not pair or len(pair) != 2:
            return None
        return pair[0] * 1e-3, pair[1] * 1e-3

    @property
    def latency_p90(self) -> float | None:
        return _seconds(self.summary.latency_info.p90)

    @property
    def latency_p99(self) -> float | None:
        return _seconds(self.summary.latency_info.p99)

    @property
    def latency_mean(self) -> float | None:
        return _seconds(self.summary.latency_info.mean)

    @property
    def energy_total(self) -> float | None:
        """Joules per inference (None: no meter was read)."""
        energy = self.summary.energy
        figure = energy.total_mj if energy is not None else None
        return None if figure is None or figure.mean is None else figure.mean * 1e-3

    @property
    def energy_dynamic(self) -> float | None:
        """Joules per inference above the idle device's power."""
        energy = self.summary.energy
        figure = energy.dynamic_mj if energy is not None else None
        return None if figure is None or figure.mean is None else figure.mean * 1e-3

    @classmethod
    def from_stored(cls, stored: StoredRun) -> Run:
        return cls(stored.run_id, stored.dir, stored.manifest, stored.summary or Summary())


def load_run(ref: str | Path, results_dir: Path | None = None) -> Run:
    """A run by directory, id, unique id prefix or `latest` (under `results_dir`, default
    ./results or $EDGETOOL_RESULTS). ResultsError when there is none."""
    from edgetool.results.store import find_run

    return Run.from_stored(find_run(str(ref), results_dir or paths.results_dir()))


# --- measuring ------------------------------------------------------------------------


def run_settings(
    *,
    repeat: int = RUN_DEFAULTS.repeat,
    iterations: int | None = None,
    duration: float | None = None,
    warmup: int = RUN_DEFAULTS.warmup,
    warmup_seconds: float = RUN_DEFAULTS.warmup_seconds,
    threads: int = RUN_DEFAULTS.threads,
    runtime: str = RUN_DEFAULTS.runtime,
    input: Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[tuple[str, Sequence[int]]] = (),
    seed: int = RUN_DEFAULTS.seed,
    save_outputs: bool = RUN_DEFAULTS.save_outputs,
    energy: bool = RUN_DEFAULTS.energy,
    idle_seconds: float = RUN_DEFAULTS.idle_seconds,
    op_profile: bool = RUN_DEFAULTS.op_profile,
    reference: Path | None = None,
    new_tokens: int = 0,
    head_size: int = 0,
    ep: str = RUN_DEFAULTS.ep,
    delegate: str = RUN_DEFAULTS.delegate,
) -> RunSettings:
    """RunSettings as `edgetool deploy` makes them from its options: with neither
    `iterations` nor `duration`, 100 inferences and at least 1 s of measuring in all."""
    if iterations and duration:
        raise UsageError("give --iterations or --duration, not both")
    checks = (
        ("--repeat", repeat, 1),
        ("--iterations", iterations or 1, 1),
        ("--warmup", warmup, 0),
        ("--threads", threads, 0),
        ("--seed", seed, 0),
    )
    for name, number, least in checks:
        if number < least:
            raise UsageError(f"{name} must be at least {least}, got {number}")
    for name, seconds in (("--duration", duration or 1.0), ("--warmup-seconds", warmup_seconds)):
        if not math.isfinite(seconds) or seconds < 0 or (name == "--duration" and seconds == 0):
            raise UsageError(f"{name}: {seconds!r} is not a finite number of seconds")
    if runtime not in ("auto", "onnxruntime", "litert"):
        raise UsageError(f"--runtime must be auto, onnxruntime or litert, not {runtime!r}")
    pairs = list(input_shapes.items()) if isinstance(input_shapes, Mapping) else input_shapes
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dims in pairs:
        if name in shapes:
            raise UsageError(f"--input-shape: {name or 'the only input'} is given twice")
        shapes[name] = tuple(int(d) for d in dims)
    return RunSettings(
        iterations=iterations or 0,
        duration=duration or 0.0,
        min_duration=RunSettings.default_min_duration(iterations, duration, repeat),
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        threads=threads,
        input=input,
        seed=seed,
        input_shapes=shapes,
        save_outputs=save_outputs,
        reference=reference,
        runtime=runtime,
        new_tokens=new_tokens,
        head_size=head_size,
        energy=energy,
        idle_seconds=idle_seconds,
        op_profile=op_profile,
        repeat=repeat,
        ep=ep,
        delegate=delegate,
    )


def _target(target: str | Target, targets_dirs: Sequence[Path] | None) -> Target:
    return target if isinstance(target, Target) else load_target(target, list(targets_dirs or []))


def resolve_for_target(target: Target, model: str | Path, progress: Progress) -> Artifact:
    """A model spec (file, NAME[:FORMAT[:QUANT]], or a name the target's [models] maps)
    as the artifact to push, exported and cached when needed."""
    from edgetool.export.build import resolve_model
    from edgetool.flows import model_spec as spec_for

    spec = str(model)
    if ":" not in spec and not Path(spec).exists():
        if spec in target.models:
            progress(
                f"{spec} on {target.name} is {target.models[spec]} "
                f"(\\[models] in {target.source.name})"
            )
        spec = spec_for(target, spec)
    return resolve_model(spec, progress=progress)


def _quiet(_text: str) -> None:
    pass


def deploy(
    model: str | Path | None,
    target: str | Target = "local",
    *,
    repeat: int = RUN_DEFAULTS.repeat,
    iterations: int | None = None,
    duration: float | None = None,
    warmup: int = RUN_DEFAULTS.warmup,
    warmup_seconds: float = RUN_DEFAULTS.warmup_seconds,
    threads: int = RUN_DEFAULTS.threads,
    runtime: str = RUN_DEFAULTS.runtime,
    input: Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[tuple[str, Sequence[int]]] = (),
    seed: int = RUN_DEFAULTS.seed,
    save_outputs: bool = RUN_DEFAULTS.save_outputs,
    energy: bool = RUN_DEFAULTS.energy,
    idle_seconds: float = RUN_DEFAULTS.idle_seconds,
    op_profile: bool = RUN_DEFAULTS.op_profile,
    reference: Path | None = None,
    ep: str = RUN_DEFAULTS.ep,
    delegate: str = RUN_DEFAULTS.delegate,
    prompt: str | None = None,
    new_tokens: int | None = None,
    results_dir: Path | None = None,
    targets_dirs: Sequence[Path] | None = None,
    observer: Observer | None = None,
    progress: Progress | None = None,
    on_artifact: Callable[[Artifact], None] | None = None,
) -> Run:
    """Push MODEL (a file, or NAME[:FORMAT[:QUANT]] of the zoo; None = the model already in
    a microcontroller's firmware) to TARGET (a name, a TOML path or a loaded Target), run
    it and return the stored run. Options a target cannot honour are refused (UsageError)
    before anything is exported or connected, exactly as `edgetool deploy` refuses them.

    `observer` hears the deploy (connection, pushes, samples); `progress` gets one-line
    notes (export steps, the LLM prompt); `on_artifact` sees the resolved artifact first.
    """
    from edgetool.flows import deploy as run_flow
    from edgetool.flows import preflight

    say = progress or _quiet
    loaded = _target(target, targets_dirs)
    settings = run_settings(
        repeat=repeat,
        iterations=iterations,
        duration=duration,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        threads=threads,
        runtime=runtime,
        input=input,
        input_shapes=input_shapes,
        seed=seed,
        save_outputs=save_outputs,
        energy=energy,
        idle_seconds=idle_seconds,
        op_profile=op_profile,
        reference=reference,
        new_tokens=new_tokens or 0,
        ep=ep,
        delegate=delegate,
    )
    preflight(loaded, None if model is None else str(model), settings)
    artifact = None
    if model is None:
        if loaded.kind != "mcu":
            raise UsageError("--model is required (except on microcontroller targets)")
    else:
        artifact = resolve_for_target(loaded, model, say)
    is_llm = artifact is not None and artifact.manifest.get("family") == "llm"
    if (prompt is not None or new_tokens is not None) and not is_llm:
        raise UsageError("--prompt and --tokens apply to LLM models only")
    if is_llm and artifact is not None:
        from edgetool.zoo.llm import DEFAULT_PROMPT, prompt_file

        if input is not None:
            raise UsageError("an LLM takes --prompt, not --input")
        input, prompt_tokens, head_size = prompt_file(
            artifact.manifest, DEFAULT_PROMPT if prompt is None else prompt
        )
        new_tokens = new_tokens or 32
        say(f"prompt: {prompt_tokens} tokens; generating {new_tokens} per run (greedy)")
        settings = replace(settings, input=input, new_tokens=new_tokens, head_size=head_size)
    if artifact is not None and on_artifact is not None:
        on_artifact(artifact)
    outcome = run_flow(loaded, artifact, settings, results_dir or paths.results_dir(), observer)
    text = None
    if is_llm and artifact is not None and outcome.manifest.generations:
        from edgetool.zoo.llm import decode

        text = decode(artifact.manifest, outcome.manifest.generations[0]["tokens"])
    return Run(
        outcome.run_id,
        outcome.run_dir,
        outcome.manifest,
        outcome.summary,
        tuple(outcome.pushes),
        text,
    )


# --- comparing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """NEW against BASE, decided as `edgetool results compare` decides. `verdict` is one of
    "regression", "improvement", "no change", "inconclusive", "not comparable"; over sets
    of runs it is the worst pair's (a regression, else an undecided pair, else "no
    change" or "improvement"). `ratio` and `ci` are NEW/BASE of the first pair."""

    result: SetComparison
    threshold: float

    @property
    def pairs(self) -> list[PairComparison]:
        return list(self.result.pairs)

    @property
    def verdict(self) -> str:
        verdicts = [pair.verdict for pair in self.result.pairs]
        if self.result.regressions:
            return "regression"
        for undecided in ("not comparable", "inconclusive"):
            if undecided in verdicts:
                return undecided
        if not verdicts:
            return "inconclusive"
        return "improvement" if all(v == "improvement" for v in verdicts) else "no change"

    @property
    def reason(self) -> str | None:
        """Why the worst pair is undecided (or which metrics regressed)."""
        for pair in self.result.pairs:
            if pair.regressions:
                return ", ".join(pair.regressions)
            if pair.undecided:
                return pair.reason
        if not self.result.pairs:
            return "no run on one side has a counterpart on the other"
        return None

    @property
    def ratio(self) -> float | None:
        first = self.result.pairs[0] if self.result.pairs else None
        return first.effect.ratio if first is not None and first.effect else None

    @property
    def ci(self) -> tuple[float, float] | None:
        first = self.result.pairs[0] if self.result.pairs else None
        return first.effect.ci if first is not None and first.effect else None

    @property
    def p(self) -> float | None:
        first = self.result.pairs[0] if self.result.pairs else None
        return first.effect.p if first is not None and first.effect else None

    def raise_for_verdict(self) -> None:
        """Regression (exit 10) on a regression, Inconclusive (13) on an undecided pair."""
        from edgetool.errors import Inconclusive, Regression

        limit = f"{100 * self.threshold:g} %"
        if self.result.regressions:
            names = [
                f"{p.model}/{p.target} ({', '.join(p.regressions)})"
                for p in self.result.pairs
                if p.regressions
            ]
            more = f", +{len(names) - 3} more" if len(names) > 3 else ""
            plural = "s" if self.result.regressions > 1 else ""
            raise Regression(
                f"{self.result.regressions} regression{plural} beyond {limit}: "
                f"{'; '.join(names[:3])}{more}"
            )
        if self.result.undecided:
            pairs = [p for p in self.result.pairs if p.undecided]
            first = pairs[0]
            more = f" (+{len(pairs) - 1} more)" if len(pairs) > 1 else ""
            raise Inconclusive(
                f"{first.model}/{first.target} is {first.verdict}: {first.reason}{more}"
            )


def load_side(ref: str | Path | Run, root: Path) -> tuple[list[StoredRun], bool]:
    """(runs, is a set): a Run, a run directory, a directory of run directories (a night,
    as a path or under the results root), or any ref `load_run` understands."""
    from edgetool.results.store import MANIFEST, find_run, iter_run_dirs
    from edgetool.results.store import load_run as load_stored

    if isinstance(ref, Run):
        return [load_stored(ref.dir)], False
    for candidate in (Path(ref), root / ref):
        if (candidate / MANIFEST).is_file():
            return [load_stored(candidate)], False
        if candidate.is_dir():
            dirs = list(iter_run_dirs(candidate))
            if not dirs:
                raise ResultsError(f"no runs in {candidate}")
            return [load_stored(d) for d in dirs], True
    return [find_run(str(ref), root)], False


def compare(
    base: str | Path | Run,
    new: str | Path | Run,
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
    metric: str = "p50",
    results_dir: Path | None = None,
) -> Comparison:
    """Compare NEW against BASE: two runs, or two directories of runs (paired by model and
    target). Never raises for a verdict: see `Comparison.raise_for_verdict`."""
    from edgetool.results.compare import CompareSettings, SetComparison, compare_runs, compare_sets

    try:
        settings = CompareSettings(threshold=threshold, alpha=alpha, metric=metric)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    root = results_dir or paths.results_dir()
    base_runs, base_is_set = load_side(base, root)
    new_runs, new_is_set = load_side(new, root)
    for runs, is_set in ((base_runs, base_is_set), (new_runs, new_is_set)):
        split_runs = [run for run in runs if run.manifest.split is not None]
        if split_runs and not is_set:
            raise ResultsError(
                f"{split_runs[0].run_id} is a split run: split runs are compared with "
                "`edgetool report RUN RUN` (end to end per cut point and link), not "
                "`results compare`"
            )
        for run in split_runs:  # in a night: no latency of their own to pair with
            runs.remove(run)
    if base_is_set or new_is_set:
        result = compare_sets(base_runs, new_runs, settings)
    else:
        result = SetComparison(
            [compare_runs(base_runs[0], new_runs[0], settings)], [], [], settings
        )
    return Comparison(result, threshold)


@dataclass(frozen=True)
class ABResult:
    """Both runs of `ab` and B compared to A."""

    a: Run
    b: Run
    comparison: Comparison


def ab(
    model_a: str | Path,
    model_b: str | Path,
    target: str | Target = "local",
    *,
    repeat: int = RUN_DEFAULTS.repeat,
    iterations: int | None = None,
    duration: float | None = None,
    warmup: int = RUN_DEFAULTS.warmup,
    warmup_seconds: float = RUN_DEFAULTS.warmup_seconds,
    threads: int = RUN_DEFAULTS.threads,
    runtime: str = RUN_DEFAULTS.runtime,
    input: Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[tuple[str, Sequence[int]]] = (),
    seed: int = RUN_DEFAULTS.seed,
    save_outputs: bool = RUN_DEFAULTS.save_outputs,
    ep: str | tuple[str, str] = RUN_DEFAULTS.ep,
    delegate: str | tuple[str, str] = RUN_DEFAULTS.delegate,
    threshold: float = 0.05,
    alpha: float = 0.05,
    results_dir: Path | None = None,
    targets_dirs: Sequence[Path] | None = None,
    observer: Observer | None = None,
    progress: Progress | None = None,
    on_artifact: Callable[[Artifact, str], None] | None = None,
) -> ABResult:
    """Run A and B in alternating repetitions (AB, BA, AB, ...) on one Linux-class target,
    then compare B to A as `compare` does. Needs repeat >= 2. `ep`/`delegate`: one for
    both sides, or (A's, B's) to measure one model under two of them."""
    from edgetool.flows import preflight
    from edgetool.flows.linux import check_ab_target, deploy_ab
    from edgetool.results.compare import (
        ACCELERATOR_WARNINGS,
        CompareSettings,
        SetComparison,
        compare_runs,
    )
    from edgetool.results.store import load_run as load_stored

    if repeat < 2:
        raise UsageError("--repeat must be at least 2 to alternate A and B")
    ep_a, ep_b = (ep, ep) if isinstance(ep, str) else ep
    delegate_a, delegate_b = (delegate, delegate) if isinstance(delegate, str) else delegate
    loaded = _target(target, targets_dirs)
    check_ab_target(loaded)
    settings = run_settings(
        repeat=repeat,
        iterations=iterations,
        duration=duration,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        threads=threads,
        runtime=runtime,
        input=input,
        input_shapes=input_shapes,
        seed=seed,
        save_outputs=save_outputs,
        ep=ep_a,
        delegate=delegate_a,
    )
    settings_b = replace(settings, ep=ep_b, delegate=delegate_b)
    for spec, side in ((model_a, settings), (model_b, settings_b)):
        preflight(loaded, str(spec), side)  # before any export: refused, not ignored
    try:
        compare_settings = CompareSettings(threshold=threshold, alpha=alpha, correction="none")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    say = progress or _quiet
    artifacts = [resolve_for_target(loaded, spec, say) for spec in (model_a, model_b)]
    if on_artifact is not None:
        for role, artifact in zip("AB", artifacts, strict=True):
            on_artifact(artifact, role)
    a_out, b_out = deploy_ab(
        loaded,
        (artifacts[0], artifacts[1]),
        settings,
        results_dir or paths.results_dir(),
        observer or Observer(),
        settings_b,
    )
    run_a, run_b = load_stored(a_out.run_dir), load_stored(b_out.run_dir)
    pair = compare_runs(run_a, run_b, compare_settings)
    per_side = (ep_a, delegate_a) != (ep_b, delegate_b)
    expected = ("different models", *(ACCELERATOR_WARNINGS if per_side else ()))
    pair = replace(
        pair,
        model=f"{_side_label(run_a, per_side)} → {_side_label(run_b, per_side)}",
        warnings=[w for w in pair.warnings if not w.startswith(expected)],
    )
    runs = [
        Run(o.run_id, o.run_dir, o.manifest, o.summary, tuple(o.pushes)) for o in (a_out, b_out)
    ]
    comparison = Comparison(SetComparison([pair], [], [], compare_settings), threshold)
    return ABResult(runs[0], runs[1], comparison)


def _side_label(run: StoredRun, per_side: bool) -> str:
    """The run's model, and what ran it when that is what A and B differ in."""
    from edgetool.results.compare import model_label

    label = model_label(run)
    used = run.manifest.runtime_info.accelerator if per_side else None
    return f"{label} ({used})" if used else label


# --- models ---------------------------------------------------------------------------


def export(
    name: str,
    format: str | None = None,
    quant: str | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    force: bool = False,
    out: Path | None = None,
    hf_dir: Path | None = None,
    progress: Progress | None = None,
) -> Artifact:
    """Export zoo model NAME (or, with name "llm", the Hugging Face directory `hf_dir`) to
    an artifact: ONNX, TFLite or C, cached by content. `out` also copies it (and its
    manifest) there; the returned artifact is then the copy. Needs the `export` extra."""
    import shutil

    from edgetool.export.artifact import Artifact, manifest_path
    from edgetool.export.build import export as build

    if (name == "llm") != (hf_dir is not None):
        raise UsageError("use NAME 'llm' together with --hf-dir PATH")
    if format is not None and format not in ("onnx", "tflite", "c"):
        raise UsageError(f"format must be onnx, tflite or c, not {format!r}")
    if input_shape is not None and (not input_shape or any(int(d) <= 0 for d in input_shape)):
        raise UsageError(f"input shape {tuple(input_shape)}: expected positive integers")
    recipe = None
    if hf_dir is not None:
        from edgetool.zoo.llm import hf_recipe

        recipe = hf_recipe(hf_dir)
        name = recipe.name
    artifact = build(
        name,
        format,
        quant,
        force=force,
        progress=progress,
        recipe=recipe,
        input_shape=None if input_shape is None else tuple(int(d) for d in input_shape),
    )
    if out is None:
        return artifact
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact.path, out)
    shutil.copyfile(manifest_path(artifact.path), manifest_path(out))
    return Artifact.from_path(out)


def verify(
    artifact: str | Path | Artifact, samples: int = 64, *, progress: Progress | None = None
) -> VerifyReport:
    """Check an artifact (a file with its manifest, NAME[:FORMAT[:QUANT]], or an Artifact)
    against its reference on `samples` held-out inputs. A mismatch is a report with
    `passed` False, not an exception (`edgetool verify` turns it into exit 11)."""
    from edgetool.export.artifact import Artifact
    from edgetool.export.build import resolve_model
    from edgetool.export.verify import verify as run_verify

    if samples < 1:
        raise UsageError(f"samples must be at least 1, got {samples}")
    resolved = (
        artifact if isinstance(artifact, Artifact) else resolve_model(str(artifact), progress)
    )
    return run_verify(resolved, samples)


# --- split computing ---------------------------------------------------------------------


def split(
    model: str | Path,
    target: str | Target = "local",
    *,
    server: str | Target = "local",
    settings: SplitSettings | None = None,
    results_dir: Path | None = None,
    targets_dirs: Sequence[Path] | None = None,
    observer: SplitObserver | None = None,
) -> SplitOutcome:
    """Cut `model` between `target` (head) and `server` (tail) and measure every cut
    point and codec over each of `settings.links`; `.figures` holds the per-route
    figures, the best cut and the crossover bandwidth per link (times in ms)."""
    from edgetool.split.link import check_can_shape, load_link
    from edgetool.split.run import measure
    from edgetool.split.settings import SplitObserver, SplitSettings, settle_settings

    settings = settings or SplitSettings()
    settle_settings(settings)
    profiles = [load_link(name) for name in settings.links]
    for profile in profiles:
        if profile.shaped:
            check_can_shape(profile)  # before any export or connection
    head, tail = _target(target, targets_dirs), _target(server, targets_dirs)
    for role, loaded in (("target", head), ("server", tail)):
        if loaded.kind != "linux":
            raise UsageError(
                f"split needs a Linux-class {role} (local, SSH, emulated Pi); "
                f"{loaded.name} is a {loaded.kind} target"
            )
    obs = observer or SplitObserver()
    artifact = resolve_for_target(head, split_spec(model), obs.note)
    return measure(
        head, tail, artifact, profiles, settings, results_dir or paths.results_dir(), obs
    )


def split_spec(model: str | Path) -> str:
    """A zoo name means its ONNX export: split cuts ONNX graphs."""
    spec = str(model)
    return spec if ":" in spec or Path(spec).exists() else f"{spec}:onnx"
