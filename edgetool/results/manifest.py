"""A run's manifest.json and summary.json as types: the one module that spells their keys.

The files stay what `store` describes (JSON objects, written atomically, keys sorted);
these classes are how code reads and writes them. Three promises make old and foreign
run directories safe to load and to write back:

- a missing key reads as None (a run from an older edgetool, an interrupted run);
- a value of an unexpected shape is not coerced and not dropped: it is kept in `extra`
  under its key, and the field reads as None;
- an unknown key is kept in `extra`.

So `X.from_dict(d).to_dict() == d` for every JSON object d. A key that was absent stays
absent and a key that held null stays null (`present` remembers which keys were read);
an object built in code writes its always-written keys as null when unset and leaves the
optional ones out, which is the shape the flows have always written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

_R = TypeVar("_R", bound="Record")

Reader = Callable[[Any], Any]
"""Checks one JSON value and returns it as the field holds it; TypeError when it is not."""


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _num(value: Any) -> float:
    """A JSON number as written (an int stays an int, so it is written back unchanged)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return value


def _nums(value: Any) -> list[float]:
    if not isinstance(value, list):
        raise TypeError(value)
    return [_num(v) for v in value]


def _ints(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise TypeError(value)
    return [_int(v) for v in value]


def _pair(value: Any) -> list[float]:
    """An interval or a window: two numbers."""
    numbers = _nums(value)
    if len(numbers) != 2:
        raise TypeError(value)
    return numbers


def _strs(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(value)
    return [_str(v) for v in value]


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(value)
    return dict(value)


def _tables(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise TypeError(value)
    return [_table(v) for v in value]


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(value)
    return list(value)


def _spec(read: Reader, *, null: bool = False, key: str | None = None) -> dict[str, Any]:
    """A field's metadata: it is a JSON key (the field's name unless `key` says otherwise),
    read by `read`. `null`: a record built in code writes it even when unset (as null),
    because the writer always has; otherwise an unset field is left out."""
    return {"read": read, "null": null, "key": key}


def _section(cls: type[Record]) -> Reader:
    def read(value: Any) -> Record:
        if not isinstance(value, dict):
            raise TypeError(value)
        return cls.from_dict(value)

    return read


def _sections(cls: type[Record]) -> Reader:
    """A list of objects of one shape; any other element keeps the whole list in extra."""
    one = _section(cls)

    def read(value: Any) -> list[Record]:
        if not isinstance(value, list):
            raise TypeError(value)
        return [one(v) for v in value]

    return read


@dataclass(kw_only=True)
class Record:
    """A JSON object with known keys (the dataclass fields) and everything else in `extra`."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Unknown keys, and known keys whose value had an unexpected shape, as read."""
    present: frozenset[str] | None = field(default=None, repr=False, compare=False)
    """The known keys the source object had (None: built in code)."""
    nulls: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    """Fields written as null while unset, beyond those the class always writes."""

    def keep_null(self, *names: str) -> None:
        """Write these fields as null while unset: a writer whose file has always had the
        key, even empty, in a place where the class leaves it out by default (the
        manifest's `error` once the run ended, a Linux run's energy `alignment`)."""
        unknown = set(names) - {f.name for f in fields(self) if "read" in f.metadata}
        if unknown:
            raise ValueError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        self.nulls = self.nulls | frozenset(names)

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        known = {_json_key(f): f for f in fields(cls) if "read" in f.metadata}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        present: set[str] = set()
        for key, raw in data.items():
            spec = known.get(key)
            if spec is None:
                extra[key] = raw
                continue
            present.add(key)
            if raw is None:
                continue
            try:
                values[spec.name] = spec.metadata["read"](raw)
            except (TypeError, ValueError):
                extra[key] = raw
        return cls(**values, extra=extra, present=frozenset(present))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in fields(self):
            if "read" not in spec.metadata:
                continue
            key = _json_key(spec)
            value = getattr(self, spec.name)
            if value is not None:
                out[key] = _write(value)
            elif key not in self.extra and (
                spec.name in self.nulls
                or (key in self.present if self.present is not None else spec.metadata["null"])
            ):
                out[key] = None
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def _json_key(spec: Field[Any]) -> str:
    return str(spec.metadata["key"] or spec.name)


def _write(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_write(v) for v in value]
    if isinstance(value, dict):
        return {k: _write(v) for k, v in value.items()}
    return value


# --- manifest.json ---------------------------------------------------------------------


@dataclass(kw_only=True)
class TargetInfo(Record):
    """Where the run ran, and the facts a reader needs to trust its times."""

    name: str | None = field(default=None, metadata=_spec(_str, null=True))
    kind: str | None = field(default=None, metadata=_spec(_str, null=True))
    description: str | None = field(default=None, metadata=_spec(_str, null=True))
    transport: str | None = field(default=None, metadata=_spec(_str, null=True))
    source: str | None = field(default=None, metadata=_spec(_str, null=True))
    emulated: bool | None = field(default=None, metadata=_spec(_bool))
    synthetic: bool | None = field(default=None, metadata=_spec(_bool))
    """A test peer answered, not a device."""
    time_base: str | None = field(default=None, metadata=_spec(_str))
    """What the times count when they are not a device's wall clock (emulators, watches)."""
    emulator: str | None = field(default=None, metadata=_spec(_str))
    """The emulator that stood in for the device, as `emulate start` described it."""
    board: str | None = field(default=None, metadata=_spec(_str))
    """A microcontroller's board, and how its firmware is flashed."""
    flash: str | None = field(default=None, metadata=_spec(_str))


@dataclass(kw_only=True)
class ArtifactInfo(Record):
    """The model file that ran (the artifact's own manifest; other keys stay in extra)."""

    name: str | None = field(default=None, metadata=_spec(_str))
    model: str | None = field(default=None, metadata=_spec(_str))
    path: str | None = field(default=None, metadata=_spec(_str))
    format: str | None = field(default=None, metadata=_spec(_str))
    quant: str | None = field(default=None, metadata=_spec(_str))
    sha256: str | None = field(default=None, metadata=_spec(_str))
    size: float | None = field(default=None, metadata=_spec(_num))


@dataclass(kw_only=True)
class HostInfo(Record):
    """Which process writes the run: a `running` run whose process is gone is partial."""

    hostname: str | None = field(default=None, metadata=_spec(_str, null=True))
    pid: int | None = field(default=None, metadata=_spec(_int, null=True))


@dataclass(kw_only=True)
class VersionInfo(Record):
    version: str | None = field(default=None, metadata=_spec(_str, null=True))
    python: str | None = field(default=None, metadata=_spec(_str, null=True))


@dataclass(kw_only=True)
class RuntimeInfo(Record):
    """The runtime as the runner loaded the model (the `model` event)."""

    runtime: str | None = field(default=None, metadata=_spec(_str, null=True))
    runtime_version: str | None = field(default=None, metadata=_spec(_str, null=True))
    inputs: list[dict[str, Any]] | None = field(default=None, metadata=_spec(_tables, null=True))
    outputs: list[dict[str, Any]] | None = field(default=None, metadata=_spec(_tables, null=True))
    load_ms: float | None = field(default=None, metadata=_spec(_num, null=True))
    threads: int | None = field(default=None, metadata=_spec(_int, null=True))
    rss_after_load: int | None = field(default=None, metadata=_spec(_int, null=True))
    ep: str | None = field(default=None, metadata=_spec(_str))
    """onnxruntime: the execution provider the session really ran on first (the asked one
    is in the settings: `ep`, '' for the runtime's default)."""
    providers: list[str] | None = field(default=None, metadata=_spec(_strs))
    """onnxruntime: all of the session's providers, in priority order."""
    delegate: str | None = field(default=None, metadata=_spec(_str))
    """LiteRT: 'xnnpack' when the delegate took part of the graph, else 'none' (asked:
    the settings' `delegate`)."""
    delegated_nodes: int | None = field(default=None, metadata=_spec(_int))

    @property
    def accelerator(self) -> str | None:
        """What ran the graph, as one label: the provider or the delegate (None: unknown,
        a run from before edgetool recorded it)."""
        if self.ep:
            return self.ep
        if self.delegate:
            return f"delegate {self.delegate}"
        return None


@dataclass(kw_only=True)
class InputInfo(Record):
    """One model input as the runner fed it: the concrete shape (symbolic dims filled in),
    the dtype, where the values came from (file, random, zeros), and the symbolic dims
    that took the documented default of 1 (a leading batch dim) when nothing gave them."""

    name: str | None = field(default=None, metadata=_spec(_str, null=True))
    shape: list[int] | None = field(default=None, metadata=_spec(_ints, null=True))
    dtype: str | None = field(default=None, metadata=_spec(_str, null=True))
    source: str | None = field(default=None, metadata=_spec(_str, null=True))
    defaulted: list[str] | None = field(default=None, metadata=_spec(_strs))


@dataclass(kw_only=True)
class WarmupInfo(Record):
    """Inferences run before measuring, and how long they took."""

    count: int | None = field(default=None, metadata=_spec(_int, null=True))
    seconds: float | None = field(default=None, metadata=_spec(_num, null=True))


@dataclass(kw_only=True)
class RepetitionInfo(Record):
    """One repetition's facts, written as its events arrive (a key is absent until then)."""

    repetition: int | None = field(default=None, metadata=_spec(_int, null=True))
    load_ms: float | None = field(default=None, metadata=_spec(_num))
    env_before: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    env_after: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    warmup: WarmupInfo | None = field(default=None, metadata=_spec(_section(WarmupInfo)))
    first_ms: float | None = field(default=None, metadata=_spec(_num))
    count: int | None = field(default=None, metadata=_spec(_int))
    wall_ns: int | None = field(default=None, metadata=_spec(_int))
    peak_rss: int | None = field(default=None, metadata=_spec(_int))


@dataclass(kw_only=True)
class AbInfo(Record):
    """A run made by `edgetool ab`: its role, and the run it alternated with."""

    role: str | None = field(default=None, metadata=_spec(_str, null=True))
    order: str | None = field(default=None, metadata=_spec(_str, null=True))
    other_run: str | None = field(default=None, metadata=_spec(_str))


@dataclass(kw_only=True)
class AlignmentInfo(Record):
    """Meter time = device time + offset_ns, within uncertainty_ns."""

    offset_ns: float | None = field(default=None, metadata=_spec(_num, null=True))
    uncertainty_ns: float | None = field(default=None, metadata=_spec(_num, null=True))
    drift_ns: float | None = field(default=None, metadata=_spec(_num, null=True))
    method: str | None = field(default=None, metadata=_spec(_str, null=True))


@dataclass(kw_only=True)
class PowerInfo(Record):
    """Which meter read power beside the run, on which clock, and its windows (meter time)."""

    meter: str | None = field(default=None, metadata=_spec(_str, null=True))
    meter_type: str | None = field(default=None, metadata=_spec(_str, key="type"))
    clock: str | None = field(default=None, metadata=_spec(_str, null=True))
    estimate: bool | None = field(default=None, metadata=_spec(_bool, null=True))
    rate_hz: float | None = field(default=None, metadata=_spec(_num))
    alignment: AlignmentInfo | None = field(
        default=None, metadata=_spec(_section(AlignmentInfo), null=True)
    )
    idle_window: list[float] | None = field(default=None, metadata=_spec(_pair))
    measure_window: list[float] | None = field(default=None, metadata=_spec(_pair))
    samples: int | None = field(default=None, metadata=_spec(_int))


@dataclass(kw_only=True)
class Parity(Record):
    """Device outputs checked against a host reference on the same input."""

    reference: str | None = field(default=None, metadata=_spec(_str, null=True))
    max_abs: float | None = field(default=None, metadata=_spec(_num, null=True))
    atol: float | None = field(default=None, metadata=_spec(_num))
    rtol: float | None = field(default=None, metadata=_spec(_num))
    ok: bool | None = field(default=None, metadata=_spec(_bool, null=True))
    top1_agreement: float | None = field(default=None, metadata=_spec(_num))
    """Fraction of inferences whose top-1 class is the reference's (score references)."""


@dataclass(kw_only=True)
class RunManifest(Record):
    """manifest.json: what ran where and how, rewritten as the run goes (status last)."""

    schema: int | None = field(default=None, metadata=_spec(_int))
    run_id: str | None = field(default=None, metadata=_spec(_str))
    status: str | None = field(default=None, metadata=_spec(_str))
    """running, complete, partial (interrupted or died), failed."""
    created: str | None = field(default=None, metadata=_spec(_str))
    finished: str | None = field(default=None, metadata=_spec(_str))
    error: str | None = field(default=None, metadata=_spec(_str))
    host: HostInfo | None = field(default=None, metadata=_spec(_section(HostInfo)))
    target: TargetInfo | None = field(default=None, metadata=_spec(_section(TargetInfo)))
    artifact: ArtifactInfo | None = field(default=None, metadata=_spec(_section(ArtifactInfo)))
    settings: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    edgetool: VersionInfo | None = field(default=None, metadata=_spec(_section(VersionInfo)))
    device: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    """The device's own report (hello): free-form, keys differ by device class."""
    runtimes: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    accelerators: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    """Per runtime, what the device offered (onnxruntime's available providers, LiteRT's
    delegate choices): the run's own is `runtime.ep` / `runtime.delegate`."""
    runner: str | None = field(default=None, metadata=_spec(_str))
    runtime: RuntimeInfo | None = field(default=None, metadata=_spec(_section(RuntimeInfo)))
    inputs: list[InputInfo] | None = field(default=None, metadata=_spec(_sections(InputInfo)))
    """The inputs the measured model was fed (absent before edgetool recorded them, and
    where the device reports none: firmware, benchmark_model)."""
    env_before: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    """The device's state before the first repetition (free-form probe output)."""
    env_after: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    repetition_kind: str | None = field(default=None, metadata=_spec(_str))
    repetitions: list[RepetitionInfo] | None = field(
        default=None, metadata=_spec(_sections(RepetitionInfo))
    )
    """Per-repetition facts (count, wall time, environment around it)."""
    power: PowerInfo | None = field(default=None, metadata=_spec(_section(PowerInfo)))
    logs: list[Any] | None = field(default=None, metadata=_spec(_list))
    parity: Parity | None = field(default=None, metadata=_spec(_section(Parity)))
    generations: list[dict[str, Any]] | None = field(default=None, metadata=_spec(_tables))
    ab: AbInfo | None = field(default=None, metadata=_spec(_section(AbInfo)))
    split: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    """A split run's plan: server, links, cut points, codecs and their accuracy cost."""

    @property
    def target_info(self) -> TargetInfo:
        """The target section, empty for a manifest without one."""
        return self.target if self.target is not None else TargetInfo()

    @property
    def artifact_info(self) -> ArtifactInfo:
        return self.artifact if self.artifact is not None else ArtifactInfo()

    @property
    def runtime_info(self) -> RuntimeInfo:
        return self.runtime if self.runtime is not None else RuntimeInfo()

    @property
    def power_info(self) -> PowerInfo:
        return self.power if self.power is not None else PowerInfo()


# --- summary.json ----------------------------------------------------------------------


@dataclass(kw_only=True)
class LatencySummary(Record):
    """Per-inference figures in ms (`stats.LatencyStats.to_dict`); an aggregate-only
    runner (benchmark_model) has count, mean, std, min and max, the rest null."""

    count: int | None = field(default=None, metadata=_spec(_int, null=True))
    mean: float | None = field(default=None, metadata=_spec(_num, null=True))
    std: float | None = field(default=None, metadata=_spec(_num, null=True))
    min: float | None = field(default=None, metadata=_spec(_num, null=True))
    p50: float | None = field(default=None, metadata=_spec(_num, null=True))
    p90: float | None = field(default=None, metadata=_spec(_num, null=True))
    p95: float | None = field(default=None, metadata=_spec(_num, null=True))
    p99: float | None = field(default=None, metadata=_spec(_num, null=True))
    p999: float | None = field(default=None, metadata=_spec(_num, null=True))
    max: float | None = field(default=None, metadata=_spec(_num, null=True))
    median_ci: list[float] | None = field(default=None, metadata=_spec(_pair, null=True))
    confidence: float | None = field(default=None, metadata=_spec(_num, null=True))
    unstable: list[str] | None = field(default=None, metadata=_spec(_strs, null=True))
    unit: str | None = field(default=None, metadata=_spec(_str, null=True))
    tail_support: dict[str, Any] | None = field(default=None, metadata=_spec(_table, null=True))
    """Expected samples beyond each upper percentile."""
    aggregate_only: bool | None = field(default=None, metadata=_spec(_bool))
    source: str | None = field(default=None, metadata=_spec(_str))
    """The tool that reported aggregates only."""


@dataclass(kw_only=True)
class RepetitionSummary(Record):
    """The run-level estimate from repetition medians (`stats.RepetitionStats.to_dict`)."""

    count: int | None = field(default=None, metadata=_spec(_int, null=True))
    kind: str | None = field(default=None, metadata=_spec(_str, null=True))
    medians_ms: list[float] | None = field(default=None, metadata=_spec(_nums, null=True))
    estimate_ms: float | None = field(default=None, metadata=_spec(_num, null=True))
    ci: list[float] | None = field(default=None, metadata=_spec(_pair, null=True))
    confidence: float | None = field(default=None, metadata=_spec(_num, null=True))
    log_sd: float | None = field(default=None, metadata=_spec(_num, null=True))
    method: str | None = field(default=None, metadata=_spec(_str, null=True))


@dataclass(kw_only=True)
class EnergyFigure(Record):
    """A mean with its interval (mJ per inference)."""

    mean: float | None = field(default=None, metadata=_spec(_num, null=True))
    ci: list[float] | None = field(default=None, metadata=_spec(_pair, null=True))


@dataclass(kw_only=True)
class EnergySummary(Record):
    """Energy per inference (`power.energy.EnergyResult.to_dict`), or why it is missing."""

    meter: str | None = field(default=None, metadata=_spec(_str, null=True))
    estimate: bool | None = field(default=None, metadata=_spec(_bool))
    error: str | None = field(default=None, metadata=_spec(_str))
    """Set when the meter ran but no energy could be computed."""
    method: str | None = field(default=None, metadata=_spec(_str))
    note: str | None = field(default=None, metadata=_spec(_str))
    idle_w: float | None = field(default=None, metadata=_spec(_num))
    idle_w_ci: list[float] | None = field(default=None, metadata=_spec(_pair))
    mean_power_w: float | None = field(default=None, metadata=_spec(_num))
    total_mj: EnergyFigure | None = field(default=None, metadata=_spec(_section(EnergyFigure)))
    dynamic_mj: EnergyFigure | None = field(default=None, metadata=_spec(_section(EnergyFigure)))
    alignment: AlignmentInfo | None = field(default=None, metadata=_spec(_section(AlignmentInfo)))


@dataclass(kw_only=True)
class GenerationSummary(Record):
    """LLM figures (`stats.summarize_generations`): medians over timed generations."""

    generations: int | None = field(default=None, metadata=_spec(_int))
    prompt_tokens: int | None = field(default=None, metadata=_spec(_int))
    new_tokens: int | None = field(default=None, metadata=_spec(_int))
    ttft_ms: float | None = field(default=None, metadata=_spec(_num))
    prefill_tokens_per_s: float | None = field(default=None, metadata=_spec(_num))
    decode_tokens_per_s: float | None = field(default=None, metadata=_spec(_num))


@dataclass(kw_only=True)
class Top1Summary(Record):
    """The device's own scores (an MLPerf Tiny DUT's `m-results`): the class it chose most
    often over the run, and how consistently."""

    label: int | None = field(default=None, metadata=_spec(_int, null=True, key="class"))
    score: float | None = field(default=None, metadata=_spec(_num, null=True))
    """Median score of that class over the inferences that chose it."""
    agreement: float | None = field(default=None, metadata=_spec(_num, null=True))
    """Fraction of the inferences whose top-1 class it was (1.0: every one)."""
    count: int | None = field(default=None, metadata=_spec(_int, null=True))
    """Inferences that reported scores."""
    classes: int | None = field(default=None, metadata=_spec(_int, null=True))
    """Length of the score vector."""


@dataclass(kw_only=True)
class Summary(Record):
    """summary.json: the run's figures, written once when the run ends. It travels alone
    (JSON output, compare, the farm), so it carries the facts that qualify its times."""

    count: int | None = field(default=None, metadata=_spec(_int, null=True))
    latency: LatencySummary | None = field(
        default=None, metadata=_spec(_section(LatencySummary), null=True)
    )
    repetitions: RepetitionSummary | None = field(
        default=None, metadata=_spec(_section(RepetitionSummary))
    )
    wall_s: float | None = field(default=None, metadata=_spec(_num))
    throughput_per_s: float | None = field(default=None, metadata=_spec(_num, null=True))
    peak_rss: int | None = field(default=None, metadata=_spec(_int, null=True))
    first_inference_ms: float | None = field(default=None, metadata=_spec(_num, null=True))
    warmup: WarmupInfo | None = field(default=None, metadata=_spec(_section(WarmupInfo), null=True))
    load_ms: float | None = field(default=None, metadata=_spec(_num, null=True))
    complete: bool | None = field(default=None, metadata=_spec(_bool))
    """Every repetition ended with its own summary line."""
    energy: EnergySummary | None = field(default=None, metadata=_spec(_section(EnergySummary)))
    generation: GenerationSummary | None = field(
        default=None, metadata=_spec(_section(GenerationSummary))
    )
    ops: list[dict[str, Any]] | None = field(default=None, metadata=_spec(_tables))
    parity: Parity | None = field(default=None, metadata=_spec(_section(Parity)))
    top1: Top1Summary | None = field(default=None, metadata=_spec(_section(Top1Summary)))
    aggregate_only: bool | None = field(default=None, metadata=_spec(_bool))
    synthetic: bool | None = field(default=None, metadata=_spec(_bool))
    emulated: bool | None = field(default=None, metadata=_spec(_bool))
    time_base: str | None = field(default=None, metadata=_spec(_str))
    split: dict[str, Any] | None = field(default=None, metadata=_spec(_table))
    """A split run's figures per link, cut and codec (`results.split.summarize`)."""

    @property
    def latency_info(self) -> LatencySummary:
        """The latency section, empty for a summary without one."""
        return self.latency if self.latency is not None else LatencySummary()
