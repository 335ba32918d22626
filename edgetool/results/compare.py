"""Compare two runs, or two nights of runs, and decide what counts as a regression.

Pure Python (stdlib only) like `stats.py`, so the nightly gate runs where numpy does not.

The unit is a repetition, not an inference. Inferences in one process are correlated and
the spread between processes is 10-100x the within-run standard error, so a test on
per-inference samples calls identical code different (p = 1e-30) and the threshold alone
decides. Latency is therefore compared on the runs' **repetition medians**:

- the effect is the ratio NEW/BASE of their geometric means, with a confidence interval
  from Welch's t on the log medians (unequal spreads, Welch-Satterthwaite df);
- with the threshold t (default 5 %), the verdict is
  * `no change`: the interval lies inside [1/(1+t), 1+t] (any real change is smaller than
    what matters, even when it is significant);
  * `regression`: the ratio is significantly above 1 (p < alpha) and the interval reaches
    past 1+t; `improvement` the mirror image;
  * `inconclusive`: anything else (the interval straddles the threshold), with how many
    repetitions a side would decide it; also every pair where a side has fewer than
    3 repetitions or is not a complete run (a partial, failed or too-short run never gates);
  * `not comparable`: the device (arch, CPU, board, cores) or the input shapes differ.
- the minimum detectable change is printed: the smallest ratio these spreads would call
  significant 80 % of the time at alpha.
- runs on a deterministic time base (emulated instructions) need no statistics: the change
  is exact, and it is a regression when it exceeds the threshold.
- with several base runs (a baseline of the last K >= 3 nights), the new run is also held
  against the spread of those runs' estimates (a t prediction interval): a machine that
  drifts over minutes or nights moves whole runs, which one run's repetitions cannot show.
  The wider of the two intervals decides.

Over a set of pairs (a night) the p-values are corrected with Holm's step-down method,
which bounds the chance that a night with no real change fails at alpha whatever the
dependence between pairs (pairs share a machine and its drift, where Benjamini-Hochberg's
guarantee needs positive dependence and bounds the false discovery rate instead).

Energy per inference (total and dynamic) regresses when it grew beyond the threshold
and the intervals do not overlap (the threshold alone when an interval is missing).
Artifact size regresses on any growth beyond the threshold. Peak RSS and LLM
generation figures are informational.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgetool.results.manifest import EnergySummary, GenerationSummary, RuntimeInfo, Summary
from edgetool.results.stats import (
    MIN_REPETITIONS,
    log_mean_sd,
    percentile,
    repetition_medians,
    student_t_ppf,
    student_t_sf,
    summarize_repetitions,
)
from edgetool.results.store import Run

METRICS = ("p50",)
"""The latency figure compared: the median, per repetition (kept as an option for scripts)."""

VERDICTS = ("regression", "improvement", "no change", "inconclusive", "not comparable")
POWER = 0.8
"""The power at which the minimum detectable change is quoted."""

_STATUS_RANK = {"complete": 2, "partial": 1}
DETERMINISTIC_PREFIX = "emulated instructions"


@dataclass(frozen=True)
class CompareSettings:
    """What the user asked for: the change that matters, and the significance level."""

    threshold: float = 0.05
    alpha: float = 0.05
    metric: str = "p50"
    correction: str = "holm"
    """Over several pairs: 'holm' or 'none'."""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be within (0, 1)")
        if self.threshold < 0.0:
            raise ValueError("threshold must not be negative")
        if self.correction not in ("holm", "none"):
            raise ValueError("correction must be 'holm' or 'none'")

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha


# --- the effect on repetitions --------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """NEW/BASE latency ratio from the runs' repetition medians."""

    ratio: float
    ci: tuple[float, float] | None
    p: float | None
    df: float | None
    n_base: int
    n_new: int
    confidence: float
    method: str
    mdc: float | None = None
    """Minimum detectable change (relative) at POWER and alpha, for these spreads."""
    needed: int | None = None
    """Repetitions a side that would likely decide an inconclusive comparison."""
    p_adjusted: float | None = None
    base_runs: int = 1
    """Runs on the base side; with MIN_BASELINE_RUNS or more the spread between them
    (a machine's slow drift, night to night) is part of the uncertainty."""

    @property
    def change(self) -> float:
        return self.ratio - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "change": self.change,
            "ci": list(self.ci) if self.ci else None,
            "confidence": self.confidence,
            "p": self.p,
            "p_adjusted": self.p_adjusted,
            "df": self.df,
            "repetitions": {"base": self.n_base, "new": self.n_new},
            "base_runs": self.base_runs,
            "method": self.method,
            "minimum_detectable_change": self.mdc,
            "repetitions_needed": self.needed,
        }


def repetition_values(run: Run) -> list[float]:
    """A run's per-repetition medians (ms): from its summary, else from its samples (an
    older run: one repetition), else the mean of an aggregate-only runner."""
    summary = run.summary or Summary()
    values = summary.repetitions.medians_ms if summary.repetitions else None
    if values and all(_positive(v) for v in values):
        return [float(v) for v in values]
    if run.samples_ns:
        return repetition_medians(run.samples_ns, run.repetition_tags)
    mean = summary.latency_info.mean
    return [float(mean)] if mean is not None and _positive(mean) else []


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def deterministic(run: Run) -> bool:
    """Times counted in emulated instructions: a rerun gives the same numbers."""
    return (run.manifest.target_info.time_base or "").startswith(DETERMINISTIC_PREFIX)


def welch_effect(base: Sequence[float], new: Sequence[float], confidence: float) -> Effect:
    """Ratio of geometric means with Welch's t interval on the logs (needs >= 2 a side)."""
    mb, sb = log_mean_sd(base)
    mn, sn = log_mean_sd(new)
    nb, nn = len(base), len(new)
    diff = mn - mb
    ratio = math.exp(diff)
    if sb is None or sn is None:
        return Effect(ratio, None, None, None, nb, nn, confidence, "ratio of medians")
    vb, vn = sb * sb / nb, sn * sn / nn
    se = math.sqrt(vb + vn)
    method = "Welch t on log repetition medians"
    if se == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        return Effect(ratio, (ratio, ratio), p, None, nb, nn, confidence, method, 0.0)
    df = (vb + vn) ** 2 / (vb * vb / (nb - 1) + vn * vn / (nn - 1))
    q = student_t_ppf(0.5 + confidence / 2.0, df)
    ci = (math.exp(diff - q * se), math.exp(diff + q * se))
    p = min(1.0, 2.0 * student_t_sf(abs(diff) / se, df))
    mdc = math.exp((q + student_t_ppf(POWER, df)) * se) - 1.0
    return Effect(ratio, ci, p, df, nb, nn, confidence, method, mdc)


MIN_BASELINE_RUNS = 3
"""From this many base runs on, their spread (run to run, night to night) is estimated."""


def between_run_effect(
    base_runs: Sequence[Sequence[float]], new: Sequence[float], confidence: float
) -> Effect | None:
    """The new run against the spread of several base runs' estimates: a prediction
    interval (t with K-1 df, variance s^2 (1 + 1/K)). Repetitions of one run share the
    machine's state of that moment; a drift over minutes or nights shows only between
    runs, and this is where it enters the comparison."""
    estimates = [log_mean_sd(values)[0] for values in base_runs if values]
    k = len(estimates)
    if k < MIN_BASELINE_RUNS or not new:
        return None
    centre = math.fsum(estimates) / k
    spread = math.sqrt(math.fsum((e - centre) ** 2 for e in estimates) / (k - 1))
    diff = log_mean_sd(new)[0] - centre
    se = spread * math.sqrt(1.0 + 1.0 / k)
    n_base = sum(len(values) for values in base_runs)
    method = f"new run vs the spread of {k} base runs' estimates (prediction interval, t)"
    if se == 0.0:
        return None
    df = float(k - 1)
    q = student_t_ppf(0.5 + confidence / 2.0, df)
    ci = (math.exp(diff - q * se), math.exp(diff + q * se))
    p = min(1.0, 2.0 * student_t_sf(abs(diff) / se, df))
    mdc = math.exp((q + student_t_ppf(POWER, df)) * se) - 1.0
    return Effect(math.exp(diff), ci, p, df, n_base, len(new), confidence, method, mdc, base_runs=k)


def repetitions_needed(effect: Effect, threshold: float, limit: int = 1000) -> int | None:
    """Repetitions a side at which, with the spreads seen, the interval would likely be
    decisive: inside the threshold band (estimate inside it) or clear of 1 (outside)."""
    if effect.ci is None or effect.df is None or effect.base_runs >= MIN_BASELINE_RUNS:
        return None  # between-run spread: more repetitions do not narrow it
    diff = math.log(effect.ratio)
    band = math.log1p(threshold)
    q_now = student_t_ppf(0.5 + effect.confidence / 2.0, effect.df)
    half_now = (math.log(effect.ci[1]) - math.log(effect.ci[0])) / 2.0
    unit = half_now / q_now * math.sqrt((effect.n_base + effect.n_new) / 2.0)  # se x sqrt(n)
    gap = band - abs(diff) if abs(diff) < band else abs(diff)
    if gap <= 0.0 or unit == 0.0:
        return None
    for n in range(max(effect.n_base, effect.n_new, MIN_REPETITIONS), limit + 1):
        if student_t_ppf(0.5 + effect.confidence / 2.0, 2 * n - 2) * unit / math.sqrt(n) < gap:
            return n
    return None


def _wider(a: Effect, b: Effect) -> bool:
    """Is a's interval wider than b's (the honest one, when both describe the pair)?"""
    if a.ci is None:
        return False
    if b.ci is None:
        return True
    return math.log(a.ci[1] / a.ci[0]) > math.log(b.ci[1] / b.ci[0])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def latency_verdict(
    effect: Effect, threshold: float, alpha: float, exact: bool = False
) -> tuple[str, str | None, int | None]:
    """(verdict, why, repetitions a side that would likely decide an interval straddling
    the threshold) by the rules in the module docstring."""
    high, low = 1.0 + threshold, 1.0 / (1.0 + threshold)
    if exact:
        if effect.ratio > high:
            return "regression", None, None
        if effect.ratio < low:
            return "improvement", None, None
        return "no change", None, None
    if min(effect.n_base, effect.n_new) < MIN_REPETITIONS:
        fewest = min(effect.n_base, effect.n_new)
        return (
            "inconclusive",
            (
                f"{fewest} repetition{'s' if fewest != 1 else ''} on a side: "
                f"needs at least {MIN_REPETITIONS} a side (deploy --repeat)"
            ),
            None,
        )
    if effect.ci is None:
        return "inconclusive", "no spread between repetitions to test with", None
    lo, hi = effect.ci
    if low <= lo and hi <= high:
        return "no change", None, None
    p = effect.p_adjusted if effect.p_adjusted is not None else effect.p
    if p is not None and p < alpha and effect.ratio > 1.0 and hi > high:
        return "regression", None, None
    if p is not None and p < alpha and effect.ratio < 1.0 and lo < low:
        return "improvement", None, None
    needed = repetitions_needed(effect, threshold)
    if effect.base_runs >= MIN_BASELINE_RUNS:
        more = f"set by the spread between the {effect.base_runs} base runs: more nights narrow it"
    elif needed:
        more = f"~{needed} repetitions a side would likely decide it"
    else:
        more = "the change is too close to the threshold for more repetitions to decide soon"
    return "inconclusive", f"the interval straddles ±{100 * threshold:g} %: {more}", needed


def decide(
    effect: Effect, settings: CompareSettings, exact: bool, complete: bool
) -> tuple[str, str | None, Effect]:
    """The latency verdict, its reason and the effect (with the repetitions that would
    decide it): what one pair and a Holm-adjusted pair in a set both go through."""
    if not complete:
        return "inconclusive", "a partial or failed run never gates", effect
    verdict, reason, needed = latency_verdict(effect, settings.threshold, settings.alpha, exact)
    return verdict, reason, replace(effect, needed=needed)


# --- metrics -------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricChange:
    """One figure before and after; `change` is relative ((after - before) / before)."""

    name: str
    unit: str
    before: float | None
    after: float | None
    before_ci: tuple[float, float] | None = None
    after_ci: tuple[float, float] | None = None
    change: float | None = None
    regression: bool = False
    improvement: bool = False
    gating: bool = True
    """False for informational figures, which never count as regressions."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "before": self.before,
            "after": self.after,
            "before_ci": list(self.before_ci) if self.before_ci else None,
            "after_ci": list(self.after_ci) if self.after_ci else None,
            "change": self.change,
            "regression": self.regression,
            "improvement": self.improvement,
            "gating": self.gating,
        }


def _relative(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return (after - before) / before


def _as_ci(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _ci_worse(before_ci: tuple[float, float] | None, after_ci: tuple[float, float] | None) -> bool:
    """Intervals separated with the new one higher; True when either is unknown (so the
    guard falls back to the other criteria rather than hiding a change)."""
    return before_ci is None or after_ci is None or after_ci[0] > before_ci[1]


def _ci_better(before_ci: tuple[float, float] | None, after_ci: tuple[float, float] | None) -> bool:
    return before_ci is None or after_ci is None or after_ci[1] < before_ci[0]


def _energy_changes(base: Run, new: Run, threshold: float) -> list[MetricChange]:
    """Total and dynamic energy per inference, when both runs measured it."""
    eb, en = _energy(base), _energy(new)
    out: list[MetricChange] = []
    for key, b, a in (
        ("total_mj", eb.total_mj, en.total_mj),
        ("dynamic_mj", eb.dynamic_mj, en.dynamic_mj),
    ):
        if b is None or a is None:
            continue
        before, after = _as_float(b.mean), _as_float(a.mean)
        if before is None or after is None:
            continue
        bci, aci = _as_ci(b.ci), _as_ci(a.ci)
        change = _relative(before, after)
        worse = change is not None and change > threshold and _ci_worse(bci, aci)
        better = change is not None and change < -threshold and _ci_better(bci, aci)
        out.append(
            MetricChange(f"energy_{key}", "mJ", before, after, bci, aci, change, worse, better)
        )
    return out


def _energy(run: Run) -> EnergySummary:
    """The run's energy section, empty when it measured none."""
    energy = run.summary.energy if run.summary else None
    return energy if energy is not None else EnergySummary()


def _size_change(base: Run, new: Run, threshold: float) -> MetricChange | None:
    before = _as_float(base.manifest.artifact_info.size)
    after = _as_float(new.manifest.artifact_info.size)
    if before is None or after is None:
        return None
    change = _relative(before, after)
    return MetricChange(
        "artifact_size",
        "B",
        before,
        after,
        change=change,
        regression=change is not None and change > threshold,
        improvement=change is not None and change < -threshold,
    )


def _info_changes(base: Run, new: Run) -> list[MetricChange]:
    """Peak RSS and LLM generation figures: reported, never gating."""
    sb, sn = base.summary or Summary(), new.summary or Summary()
    gb = sb.generation or GenerationSummary()
    gn = sn.generation or GenerationSummary()
    pairs: list[tuple[str, str, Any, Any]] = [
        ("peak_rss", "B", sb.peak_rss, sn.peak_rss),
        ("generation_ttft_ms", "ms", gb.ttft_ms, gn.ttft_ms),
        (
            "generation_decode_tokens_per_s",
            "tokens/s",
            gb.decode_tokens_per_s,
            gn.decode_tokens_per_s,
        ),
    ]
    out = []
    for name, unit, b, a in pairs:
        before, after = _as_float(b), _as_float(a)
        if before is not None and after is not None:
            out.append(
                MetricChange(
                    name, unit, before, after, change=_relative(before, after), gating=False
                )
            )
    return out


# --- identity and warnings -----------------------------------------------------------


def model_identity(run: Run) -> tuple[str, str, str]:
    """(name, format, quant) of the artifact: what "the same model" means across nights."""
    artifact = run.manifest.artifact_info
    raw = artifact.name or (Path(artifact.path).name if artifact.path else "")
    name = Path(raw).stem if raw else (artifact.model or "?")
    return name, artifact.format or "", artifact.quant or ""


def model_label(run: Run) -> str:
    name, fmt, quant = model_identity(run)
    return ":".join(part for part in (name, fmt, quant) if part)


def target_name(run: Run) -> str:
    return run.manifest.target_info.name or "?"


def pair_key(run: Run) -> tuple[str, str, str, str]:
    return (*model_identity(run), target_name(run))


# --- comparability ---------------------------------------------------------------------

_DEVICE_KEYS = ("arch", "cpu_model", "board", "cores")


def _input_shapes(run: Run) -> list[tuple[str, str]] | None:
    inputs = run.manifest.runtime_info.inputs
    if not inputs:
        return None
    return [(str(i.get("name")), str(i.get("shape"))) for i in inputs]


def refusals(base: Run, new: Run) -> list[str]:
    """Why these two runs cannot be compared at all (the device or the inputs differ)."""
    out: list[str] = []
    db, dn = base.manifest.device or {}, new.manifest.device or {}
    for key in _DEVICE_KEYS:
        if db.get(key) is not None and dn.get(key) is not None and db[key] != dn[key]:
            out.append(f"different device {key} ({db[key]} vs {dn[key]})")
    sb, sn = _input_shapes(base), _input_shapes(new)
    if sb is not None and sn is not None and sb != sn:
        out.append(f"different input shapes ({_shapes(sb)} vs {_shapes(sn)})")
    if deterministic(base) != deterministic(new):
        out.append("one run counts emulated instructions, the other measures time")
    return out


def _shapes(shapes: list[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in shapes)


def _first_env(run: Run) -> dict[str, Any]:
    return run.manifest.env_before or {}


def _effective_threads(run: Run) -> Any:
    return (run.manifest.env_after or {}).get("process_threads")


def _limits(env: dict[str, Any]) -> Any:
    cpus = env.get("cpus")
    if isinstance(cpus, list):
        return [(c.get("min_khz"), c.get("max_khz")) for c in cpus if isinstance(c, dict)]
    return None


ACCELERATOR_WARNINGS = ("different execution providers", "different delegates")
"""How a warning about what ran the graph starts (`ab` of one model under two drops it:
there the difference is the point)."""


def accelerator_warnings(base: RuntimeInfo, new: RuntimeInfo) -> list[str]:
    """Another execution provider or delegate is another kernel library: as loud as
    another runtime version. Only what both runs recorded is compared."""
    warnings = []
    if base.ep and new.ep and base.ep != new.ep:
        warnings.append(f"{ACCELERATOR_WARNINGS[0]} ({base.ep} vs {new.ep})")
    if base.delegate and new.delegate and base.delegate != new.delegate:
        warnings.append(f"{ACCELERATOR_WARNINGS[1]} ({base.delegate} vs {new.delegate})")
    return warnings


def _pair_warnings(base: Run, new: Run) -> list[str]:
    """What may make the two runs differ besides the model: said loudly, not fatal."""
    warnings: list[str] = []
    if target_name(base) != target_name(new):
        warnings.append(f"different targets ({target_name(base)} vs {target_name(new)})")
    if model_identity(base) != model_identity(new):
        warnings.append(f"different models ({model_label(base)} vs {model_label(new)})")
    tb, tn = base.manifest.target_info, new.manifest.target_info
    if bool(tb.emulated) != bool(tn.emulated):
        kinds = ["emulated" if t.emulated else "real" for t in (tb, tn)]
        warnings.append(f"{kinds[0]} vs {kinds[1]} device")
    db, dn = base.manifest.device or {}, new.manifest.device or {}
    if db.get("hostname") and dn.get("hostname") and db["hostname"] != dn["hostname"]:
        warnings.append(f"different hosts ({db['hostname']} vs {dn['hostname']})")
    rb, rn = base.manifest.runtime, new.manifest.runtime
    if rb is not None and rn is not None:
        for what, b, n in (
            ("runtimes", rb.runtime, rn.runtime),
            ("runtime versions", rb.runtime_version, rn.runtime_version),
        ):
            if b and n and b != n:
                warnings.append(f"different {what} ({b} vs {n})")
        if rb.threads != rn.threads:
            warnings.append(f"different requested threads ({rb.threads} vs {rn.threads})")
        warnings += accelerator_warnings(rb, rn)
    eb, en = _effective_threads(base), _effective_threads(new)
    if eb is not None and en is not None and eb != en:
        warnings.append(f"different effective threads ({eb} vs {en} OS threads in the runner)")
    vb = base.manifest.edgetool.version if base.manifest.edgetool else None
    vn = new.manifest.edgetool.version if new.manifest.edgetool else None
    if vb and vn and vb != vn:
        warnings.append(f"different edgetool versions ({vb} vs {vn})")
    gb, gn = _first_env(base).get("governor"), _first_env(new).get("governor")
    if gb and gn and gb != gn:
        warnings.append(f"different CPU governors ({gb} vs {gn})")
    lb, ln = _limits(_first_env(base)), _limits(_first_env(new))
    if lb and ln and lb != ln:
        warnings.append("different CPU frequency limits")
    energy_b = base.summary.energy if base.summary else None
    energy_n = new.summary.energy if new.summary else None
    if (
        energy_b is not None
        and energy_n is not None
        and (energy_b.meter != energy_n.meter or energy_b.estimate != energy_n.estimate)
    ):
        warnings.append("energy from different meters or estimate vs measured")
    for label, run in (("base", base), ("new", new)):
        if run.status != "complete":
            warnings.append(f"{label} run is {run.status}")
    return warnings


def _notes(base: Run, new: Run) -> list[str]:
    sb = base.manifest.artifact_info.sha256 or ""
    sn = new.manifest.artifact_info.sha256 or ""
    if sb and sn and sb != sn:
        return [f"artifacts differ (sha256 {sb[:12]}… vs {sn[:12]}…)"]
    return []


# --- one pair ------------------------------------------------------------------------


@dataclass(frozen=True)
class PairComparison:
    """Everything known about one (model, target) before and after."""

    model: str
    target: str
    base_run: str
    new_run: str
    base_dir: str
    new_dir: str
    base_status: str
    new_status: str
    latency: MetricChange | None
    effect: Effect | None
    verdict: str
    """One of VERDICTS."""
    reason: str | None = None
    """Why a pair is inconclusive or not comparable."""
    exact: bool = False
    """Compared on a deterministic time base (instruction counts): no statistics needed."""
    energy: list[MetricChange] = field(default_factory=list)
    size: MetricChange | None = None
    info: list[MetricChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    base_runs: tuple[str, ...] = ()
    """Every base run pooled into the comparison (a baseline of several nights)."""

    @property
    def partial(self) -> bool:
        return self.base_status != "complete" or self.new_status != "complete"

    @property
    def metrics(self) -> list[MetricChange]:
        head = [self.latency] if self.latency else []
        tail = [self.size] if self.size else []
        return head + self.energy + tail + self.info

    @property
    def regressions(self) -> list[str]:
        """Names of the gating metrics that regressed (none when not comparable)."""
        if self.verdict == "not comparable":
            return []
        return [m.name for m in self.metrics if m.gating and m.regression]

    @property
    def undecided(self) -> bool:
        """Inconclusive or not comparable: exit 13 unless something regressed."""
        return self.verdict in ("inconclusive", "not comparable")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "base": {
                "run_id": self.base_run,
                "dir": self.base_dir,
                "status": self.base_status,
                "pooled_runs": list(self.base_runs),
            },
            "new": {"run_id": self.new_run, "dir": self.new_dir, "status": self.new_status},
            "partial": self.partial,
            "verdict": self.verdict,
            "reason": self.reason,
            "exact": self.exact,
            "effect": self.effect.to_dict() if self.effect else None,
            "latency": self.latency.to_dict() if self.latency else None,
            "energy": [m.to_dict() for m in self.energy],
            "size": self.size.to_dict() if self.size else None,
            "info": [m.to_dict() for m in self.info],
            "regressions": self.regressions,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def _run_ci(values: Sequence[float], confidence: float) -> tuple[float, float] | None:
    return summarize_repetitions(values, "process", confidence).ci if values else None


def compare_runs(
    base: Run | Sequence[Run], new: Run, settings: CompareSettings | None = None
) -> PairComparison:
    """Compare one run against another (or against several base runs pooled: a baseline of
    the last K nights) by the rules in the module docstring."""
    s = settings or CompareSettings()
    bases = [base] if isinstance(base, Run) else list(base)
    if not bases:
        raise ValueError("no base run")
    head = bases[-1]
    base_values = [v for run in bases for v in repetition_values(run)]
    new_values = repetition_values(new)
    refused = refusals(head, new)
    exact = deterministic(head) and deterministic(new)
    effect: Effect | None = None
    latency: MetricChange | None = None
    reason: str | None = None
    if not base_values or not new_values:
        verdict, reason = "inconclusive", "no latency figures on a side"
    else:
        if exact:
            before = percentile(sorted(base_values), 50.0)
            after = percentile(sorted(new_values), 50.0)
            effect = Effect(
                after / before, None, None, None, len(base_values), len(new_values),
                s.confidence, "exact: instruction counts (deterministic, no statistics)",
            )  # fmt: skip
        else:
            effect = welch_effect(base_values, new_values, s.confidence)
            per_run = [repetition_values(run) for run in bases]
            between = between_run_effect(per_run, new_values, s.confidence)
            if between is not None and _wider(between, effect):
                effect = between
            before = math.exp(log_mean_sd(base_values)[0])
            after = math.exp(log_mean_sd(new_values)[0])
        complete = all(run.status == "complete" for run in (*bases, new))
        verdict, reason, effect = decide(effect, s, exact, complete)
        latency = MetricChange(
            "latency_p50",
            "ms",
            before,
            after,
            None if exact else _run_ci(base_values, s.confidence),
            None if exact else _run_ci(new_values, s.confidence),
            effect.change,
            verdict == "regression",
            verdict == "improvement",
        )
    if refused:
        verdict, reason = "not comparable", "; ".join(refused)
    return PairComparison(
        model=model_label(new),
        target=target_name(new),
        base_run=head.run_id,
        new_run=new.run_id,
        base_dir=str(head.dir),
        new_dir=str(new.dir),
        base_status=head.status,
        new_status=new.status,
        latency=latency,
        effect=effect,
        verdict=verdict,
        reason=reason,
        exact=exact,
        energy=_energy_changes(head, new, s.threshold),
        size=_size_change(head, new, s.threshold),
        info=_info_changes(head, new),
        warnings=_pair_warnings(head, new),
        notes=_notes(head, new),
        base_runs=tuple(run.run_id for run in bases) if len(bases) > 1 else (),
    )


def adjust_pairs(pairs: list[PairComparison], settings: CompareSettings) -> list[PairComparison]:
    """Holm-correct the latency p-values of a set of pairs and re-decide each verdict."""
    if settings.correction == "none":
        return pairs
    tested = [
        i
        for i, pair in enumerate(pairs)
        if pair.effect is not None and pair.effect.p is not None and not pair.exact
        and pair.verdict in ("regression", "improvement", "no change", "inconclusive")
    ]  # fmt: skip
    if len(tested) < 2:
        return pairs
    adjusted = holm([pairs[i].effect.p for i in tested])  # type: ignore[union-attr,misc]
    out = list(pairs)
    for i, p_adj in zip(tested, adjusted, strict=True):
        pair = pairs[i]
        assert pair.effect is not None and pair.latency is not None
        # compare_sets pools only complete older runs: the pair's own statuses say it all.
        verdict, reason, effect = decide(
            replace(pair.effect, p_adjusted=p_adj), settings, False, not pair.partial
        )
        latency = replace(
            pair.latency, regression=verdict == "regression", improvement=verdict == "improvement"
        )
        out[i] = replace(pair, effect=effect, verdict=verdict, reason=reason, latency=latency)
    return out


# --- sets of runs (nights) -----------------------------------------------------------


@dataclass(frozen=True)
class Unpaired:
    """A run with no counterpart on the other side."""

    model: str
    target: str
    run_id: str
    dir: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "run_id": self.run_id,
            "dir": self.dir,
            "status": self.status,
        }


@dataclass(frozen=True)
class SetComparison:
    """Two nights compared pair by pair, with what only one of them has."""

    pairs: list[PairComparison]
    only_base: list[Unpaired]
    only_new: list[Unpaired]
    settings: CompareSettings

    @property
    def regressions(self) -> int:
        """Pairs with at least one gating regression."""
        return sum(1 for pair in self.pairs if pair.regressions)

    @property
    def undecided(self) -> int:
        """Pairs that are inconclusive or not comparable (and did not regress)."""
        return sum(1 for pair in self.pairs if pair.undecided and not pair.regressions)

    @property
    def missing(self) -> int:
        return len(self.only_base) + len(self.only_new)

    def verdicts(self) -> dict[str, int]:
        counts = {verdict: 0 for verdict in VERDICTS}
        for pair in self.pairs:
            counts[pair.verdict] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": {
                "threshold": self.settings.threshold,
                "alpha": self.settings.alpha,
                "confidence": self.settings.confidence,
                "metric": self.settings.metric,
                "correction": self.settings.correction,
                "unit": "repetition",
            },
            "regressions": self.regressions,
            "undecided": self.undecided,
            "verdicts": self.verdicts(),
            "pairs": [pair.to_dict() for pair in self.pairs],
            "only_base": [u.to_dict() for u in self.only_base],
            "only_new": [u.to_dict() for u in self.only_new],
        }


def _preference(run: Run) -> tuple[int, int, str, str]:
    """Complete beats partial beats anything else; then runs with samples; then latest."""
    return (
        _STATUS_RANK.get(run.status, 0),
        1 if run.samples_ns or (run.summary and run.summary.latency) else 0,
        run.manifest.created or "",
        run.run_id,
    )


def pick_runs(runs: Iterable[Run]) -> dict[tuple[str, str, str, str], Run]:
    """One run per (model identity, target): the latest complete one when there are
    several (a rerun after a flaky attempt must win over the attempt)."""
    chosen: dict[tuple[str, str, str, str], Run] = {}
    for run in runs:
        key = pair_key(run)
        if key not in chosen or _preference(run) > _preference(chosen[key]):
            chosen[key] = run
    return chosen


def _unpaired(run: Run) -> Unpaired:
    return Unpaired(model_label(run), target_name(run), run.run_id, str(run.dir), run.status)


def compare_sets(
    base: Iterable[Run],
    new: Iterable[Run],
    settings: CompareSettings | None = None,
    baseline_groups: Sequence[Iterable[Run]] = (),
) -> SetComparison:
    """Pair runs by (artifact name, format, quant, target), compare each pair, and correct
    the pairs' p-values for their number. `baseline_groups` are older baselines (earlier
    nights): each pair's complete runs there are pooled with its base run."""
    s = settings or CompareSettings()
    chosen_b, chosen_n = pick_runs(base), pick_runs(new)
    older = [pick_runs(group) for group in baseline_groups]
    pairs = []
    for key in sorted(chosen_b):
        if key not in chosen_n:
            continue
        pooled = [g[key] for g in older if key in g and g[key].status == "complete"]
        pairs.append(compare_runs([*pooled, chosen_b[key]], chosen_n[key], s))
    only_base = [_unpaired(chosen_b[k]) for k in sorted(chosen_b) if k not in chosen_n]
    only_new = [_unpaired(chosen_n[k]) for k in sorted(chosen_n) if k not in chosen_b]
    return SetComparison(adjust_pairs(pairs, s), only_base, only_new, s)
