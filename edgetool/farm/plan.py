"""Nightly plans: a TOML matrix of models × targets, validated strictly, expanded into jobs.

A lab edits these files by hand and runs them unattended at night, so a typo must fail
at load with the file and the key (like target files: `config.TableReader`), not at 3 a.m.
as a confusing deploy error on one device.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetool.config import TableReader, read_toml
from edgetool.errors import ConfigError
from edgetool.flows.base import RunSettings

if TYPE_CHECKING:
    from edgetool.farm.places import PlaceProvider

FORMATS = ("onnx", "tflite", "c")
QUANTS = ("fp32", "fp16", "int8", "int4", "w4a8")
FAILURE_CLASSES = ("timeout", "connect", "device", "transfer", "model", "config", "place", "error")
"""How a job attempt can fail (from the deploy's exit code); `retry.on` picks among them."""
METRICS = ("p50",)
"""Repetitions are compared by their medians (results.compare)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class JobRun:
    """How a job's deploy is invoked: the `[run]` options a plan passes on the command
    line (`-n` or `-d`, energy, repetitions) and the farm's own per-attempt timeout. What
    is unset is left to deploy's defaults (edgetool.flows.base.RunSettings), not copied."""

    iterations: int | None = None
    duration: float | None = None
    energy: bool = False
    timeout: float = 300.0
    warmup: int | None = None
    repeat: int | None = None
    """Repetitions per run (None: deploy's default)."""

    def deploy_args(self) -> list[str]:
        count = ["-n", str(self.iterations or RunSettings().effective_iterations())]
        args = ["-d", f"{self.duration:g}"] if self.duration else count
        if self.warmup is not None:
            args += ["--warmup", str(self.warmup)]
        if self.repeat is not None:
            args += ["--repeat", str(self.repeat)]
        return [*args, "--energy"] if self.energy else args

    def describe(self) -> str:
        default_n = RunSettings().effective_iterations()
        what = f"{self.duration:g} s" if self.duration else f"n={self.iterations or default_n}"
        reps = f" x {self.repeat} repetitions" if self.repeat else ""
        return f"{what}{reps}{' + energy' if self.energy else ''}, timeout {self.timeout:g} s"


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, and after which the device is power-cycled first."""

    retries: int = 1
    on: tuple[str, ...] = ("timeout", "connect", "device", "transfer")
    recover: tuple[str, ...] = ("timeout",)
    backoff: float = 2.0


@dataclass(frozen=True)
class RegressionSettings:
    """Gate settings handed to `results.compare` (which owns the statistics)."""

    threshold: float = 0.05
    alpha: float = 0.05
    metric: str = "p50"
    baseline: str | None = None
    """A night directory, or `latest` (the newest earlier night of this plan)."""
    baseline_nights: int = 1
    """With `latest`: pool each pair's runs from this many of the newest earlier nights."""
    correction: str = "holm"
    """Multiplicity correction over a night's pairs: 'holm' or 'none'."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    formats: tuple[str, ...] = ()
    quants: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    run: JobRun | None = None

    def specs(self) -> list[str]:
        """NAME, NAME:FORMAT or NAME:FORMAT:QUANT for every combination not excluded."""
        if not self.formats:
            return [self.name]
        combos = [(f, q) for f in self.formats for q in (self.quants or ("",))]
        return [
            ":".join(p for p in (self.name, f, q) if p)
            for f, q in combos
            if f not in self.exclude and f"{f}:{q}" not in self.exclude
        ]


@dataclass(frozen=True)
class TargetEntry:
    """A target by name, or every labgrid place matching `tags` (deployed as `target` when
    given, else as the target name the provider reports for the place)."""

    target: str
    """Empty for a tag entry without `target`."""
    tags: Mapping[str, str] | None = None
    models: tuple[str, ...] = ()
    """Only these model names on this target (empty: all)."""
    key: str = ""


@dataclass(frozen=True)
class Plan:
    name: str
    source: Path
    models: tuple[ModelEntry, ...]
    targets: tuple[TargetEntry, ...]
    run: JobRun = field(default_factory=JobRun)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    regression: RegressionSettings = field(default_factory=RegressionSettings)
    description: str = ""
    priority: int = 0
    place_timeout: float = 600.0


@dataclass(frozen=True)
class Job:
    """One deploy: a model spec on a target, run on one place (a worker)."""

    index: int
    target: str
    model: str
    run: JobRun
    place: str | None = None

    @property
    def slot(self) -> str:
        """The worker this job runs on: a labgrid place, else the target itself."""
        return self.place or self.target

    @property
    def id(self) -> str:
        return f"{self.slot}/{self.model}"

    def argv(self) -> list[str]:
        return [
            "deploy",
            "--target",
            self.target,
            "--model",
            self.model,
            *self.run.deploy_args(),
            "--json",
        ]


def _strings(
    reader: TableReader, key: str, choices: Sequence[str] | None = None
) -> tuple[str, ...]:
    values = reader.get(key, list, "a list of strings", [])
    for value in values:
        if not isinstance(value, str) or (choices is not None and value not in choices):
            expected = "a list of strings"
            if choices is not None:
                expected = "a list of " + ", ".join(repr(c) for c in choices)
            reader.reject(key, expected, value)
            return ()
    if len(set(values)) != len(values):
        reader.reject(key, "a list without duplicates", values)
        return tuple(dict.fromkeys(values))
    return tuple(values)


def _positive_int(reader: TableReader, key: str, default: int | None) -> Any:
    value = reader.get(key, int, "a positive integer", default)
    if value is not None and value < 1:
        reader.reject(key, "a positive integer", value)
        return default
    return value


def _run_settings(reader: TableReader, base: JobRun) -> JobRun:
    iterations = _positive_int(reader, "iterations", None)
    duration = reader.get("duration", (int, float), "a number of seconds", None)
    if duration is not None and duration <= 0:
        reader.reject("duration", "a positive number of seconds", duration)
        duration = None
    if iterations is not None and duration is not None:
        reader.problem(
            f"keys '{reader.key('iterations')}' and '{reader.key('duration')}' "
            "exclude each other: give one"
        )
    warmup = reader.get("warmup", int, "a non-negative integer", base.warmup)
    if warmup is not None and warmup < 0:
        reader.reject("warmup", "a non-negative integer", warmup)
        warmup = base.warmup
    repeat = _positive_int(reader, "repeat", base.repeat)
    if iterations is None and duration is None:
        iterations, duration = base.iterations, base.duration
    return JobRun(
        iterations=iterations,
        duration=float(duration) if duration is not None else None,
        energy=bool(reader.get("energy", bool, "true or false", base.energy)),
        timeout=reader.number("timeout", base.timeout),
        warmup=warmup,
        repeat=repeat,
    )


def _model(top: TableReader, raw: Any, index: int, base: JobRun) -> ModelEntry | None:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        top.problem(f"key 'models[{index}]' must be a model name or a table, got {raw!r}")
        return None
    reader = top.child(raw, f"models[{index}].")
    name = reader.required_str("name")
    if ":" in name:
        reader.reject("name", "a model name without ':' (use formats/quants)", name)
    formats = _strings(reader, "formats", FORMATS)
    quants = _strings(reader, "quants", QUANTS)
    if quants and not formats:
        reader.problem(f"key 'models[{index}].quants' needs 'formats' as well")
    exclude = _strings(reader, "exclude")
    overrides = {
        k for k in ("iterations", "duration", "energy", "timeout", "warmup", "repeat") if k in raw
    }
    run = _run_settings(reader, base) if overrides else None
    reader.finish()
    entry = ModelEntry(name, formats, quants, exclude, run)
    if not entry.specs():
        reader.problem(f"key 'models[{index}].exclude' excludes every combination")
    return entry


def _target(top: TableReader, raw: Any, index: int) -> TargetEntry | None:
    key = f"targets[{index}]"
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        top.problem(f"key '{key}' must be a target name or a table, got {raw!r}")
        return None
    reader = top.child(raw, f"{key}.")
    name = reader.text("name")
    tags = reader.get("tags", dict, "a table of tag = value strings", None)
    target = reader.text("target")
    models = _strings(reader, "models")
    reader.finish()
    if (name is None) == (tags is None):
        if {"name", "tags"} <= raw.keys() or not {"name", "tags"} & raw.keys():
            reader.problem(f"key '{key}' needs exactly one of 'name' or 'tags'")
        return None
    if tags is not None:
        if not tags or not all(isinstance(v, str) for v in tags.values()):
            reader.reject("tags", "a non-empty table of tag = value strings", tags)
        # Without `target`, each match is deployed as the target the provider names (labgrid:
        # the place's `edgetool` tag, else its name); with it, each matching place is held
        # by name and deployed as `target` (one target file for a rack of equal boards).
        return TargetEntry(target=target or "", tags=dict(tags), models=models, key=key)
    if target is not None:
        reader.problem(f"key '{key}.target' applies only with 'tags'")
    return TargetEntry(target=str(name), models=models, key=key)


def parse_plan(source: Path, data: Mapping[str, Any]) -> Plan:
    """Validate one parsed TOML document into a Plan; every problem of the file is
    reported in one ConfigError."""
    top = TableReader(source, data)
    name = top.text("name", source.stem)
    if not _NAME_RE.match(name):
        top.problem("key 'name' must be letters, digits, '.', '_' or '-'")
    description = top.text("description", "")
    run_reader = top.table("run", {})
    priority = run_reader.get("priority", int, "an integer", 0)
    place_timeout = run_reader.number("place_timeout", 600.0)
    run = _run_settings(run_reader, JobRun())
    run_reader.finish()

    retry_reader = top.table("retry", {})
    retries = retry_reader.get("retries", int, "a non-negative integer", 1)
    if retries < 0:
        retry_reader.reject("retries", "a non-negative integer", retries)
        retries = 1
    defaults = RetryPolicy()
    on = _strings(retry_reader, "on", FAILURE_CLASSES) if "on" in retry_reader.raw else None
    recover = (
        _strings(retry_reader, "recover", FAILURE_CLASSES)
        if "recover" in retry_reader.raw
        else None
    )
    backoff = retry_reader.get("backoff", (int, float), "a number of seconds", defaults.backoff)
    if backoff < 0:
        retry_reader.reject("backoff", "a non-negative number of seconds", backoff)
        backoff = defaults.backoff
    retry_reader.finish()
    retry = RetryPolicy(
        retries=retries,
        on=defaults.on if on is None else on,
        recover=defaults.recover if recover is None else recover,
        backoff=float(backoff),
    )

    reg_reader = top.table("regression", {})
    threshold = reg_reader.get("threshold", (int, float), "a fraction such as 0.05", 0.05)
    if not 0 <= threshold < 1:
        reg_reader.reject("threshold", "a fraction from 0 to 1 such as 0.05", threshold)
    alpha = reg_reader.get("alpha", (int, float), "a probability such as 0.05", 0.05)
    if not 0 < alpha < 0.5:
        reg_reader.reject("alpha", "a probability between 0 and 0.5", alpha)
    metric = reg_reader.choice("metric", METRICS, "p50")
    baseline = reg_reader.text("baseline")
    nights = _positive_int(reg_reader, "baseline_nights", 1)
    correction = reg_reader.choice("correction", ("holm", "none"), "holm")
    reg_reader.finish()
    if baseline is not None and baseline != "latest":
        path = Path(baseline).expanduser()
        baseline = str(path if path.is_absolute() else (source.parent / path))
    regression = RegressionSettings(
        float(threshold), float(alpha), metric, baseline, nights, correction
    )

    raw_models = top.get("models", list, "a list of models", None)
    raw_targets = top.get("targets", list, "a list of targets", None)
    # (A `models` of the wrong type is recorded already.)
    if raw_models == [] or (raw_models is None and "models" not in top.raw):
        top.problem("key 'models' must list at least one model")
    if raw_targets == [] or (raw_targets is None and "targets" not in top.raw):
        top.problem("key 'targets' must list at least one target")
    parsed = [_model(top, m, i, run) for i, m in enumerate(raw_models or [])]
    models = tuple(m for m in parsed if m is not None)
    named = [_target(top, t, i) for i, t in enumerate(raw_targets or [])]
    targets = tuple(t for t in named if t is not None)
    known_models = {m.name for m in models}
    for entry in targets:
        for model in entry.models:
            if model not in known_models:
                top.problem(
                    f"key '{entry.key}.models' names {model!r}, which is not in "
                    f"'models' (known: {', '.join(sorted(known_models))})"
                )
    top.finish()
    return Plan(
        name=name,
        source=source,
        models=models,
        targets=targets,
        run=run,
        retry=retry,
        regression=regression,
        description=description,
        priority=priority,
        place_timeout=place_timeout,
    )


def load_plan(path: Path) -> Plan:
    return parse_plan(path, read_toml(path, "plan file"))


def check_targets(plan: Plan, extra_dirs: list[Path] | None = None) -> None:
    """Every target the plan names must have a target file: fail before the night starts."""
    from edgetool.targets import target_files

    files = target_files(extra_dirs)
    for entry in plan.targets:
        if not entry.target:
            continue  # named by the places provider at run time
        if entry.target not in files and not entry.target.endswith(".toml"):
            known = ", ".join(sorted(files)) or "none"
            key = f"{entry.key}.{'target' if entry.tags else 'name'}"
            raise ConfigError(
                f"{plan.source}: key '{key}' names unknown target {entry.target!r} (known: {known})"
            )


def expand(plan: Plan, provider: PlaceProvider | None = None) -> list[Job]:
    """The matrix as jobs, in plan order: for each target (or place), each model spec.

    Named targets run on the place the provider picks for them; tag entries become one
    worker per matching place (the provider answers which), each deploying `target`.
    A place or target listed twice runs its jobs once.
    """
    jobs: list[Job] = []
    seen: set[tuple[str | None, str, str]] = set()
    for entry in plan.targets:
        places: list[str | None] = [None]
        if entry.tags is not None:
            if provider is None:
                raise ConfigError(
                    f"{plan.source}: key '{entry.key}.tags' needs a place provider "
                    "(--coordinator HOST:PORT or EDGETOOL_COORDINATOR)"
                )
            places = list(provider.places_with_tags(dict(entry.tags)))
        for place in places:
            target = entry.target
            if not target:  # the provider's name is the target; it picks the place itself
                target, place = str(place), None
            for model in plan.models:
                if entry.models and model.name not in entry.models:
                    continue
                for spec in model.specs():
                    key = (place, target if place is None else "", spec)
                    if key in seen:
                        continue
                    seen.add(key)
                    jobs.append(Job(len(jobs), target, spec, model.run or plan.run, place=place))
    return jobs


def slots(jobs: Sequence[Job]) -> dict[str, list[Job]]:
    """Jobs grouped by worker (place or target), each group in plan order."""
    grouped: dict[str, list[Job]] = {}
    for job in jobs:
        grouped.setdefault(job.slot, []).append(job)
    return grouped


def unmatched_tags(plan: Plan, provider: PlaceProvider | None) -> list[str]:
    """Tag entries that match no place (shown by `farm show`, warned by `farm run`)."""
    out = []
    for entry in plan.targets:
        if (
            entry.tags is not None
            and provider is not None
            and not provider.places_with_tags(dict(entry.tags))
        ):
            tags = ", ".join(f"{k}={v}" for k, v in entry.tags.items())
            out.append(f"{entry.key}: no place has tags {tags}")
    return out
