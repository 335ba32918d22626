"""Compare two runs, or two nights of runs, and decide what counts as a regression.

Pure Python (stdlib only) like `stats.py`, so the nightly gate runs where numpy does not.

The latency rule. With 10^5 samples per run every difference is "statistically
significant", and with 10 samples nothing is, so no single number decides. A latency
metric (p50 by default) is a **regression** only when all three hold:

1. Mann–Whitney U on the raw per-inference samples (two-sided, normal approximation
   with tie correction) gives p < alpha (default 0.01): the distributions differ;
2. the metric grew by more than the threshold (default 5 %): the difference matters;
3. the metric's confidence intervals do not overlap in the bad direction (the new
   interval's low end is above the base interval's high end): it is not noise in the
   tails of the metric itself.

An **improvement** is the mirror image. A run with fewer than `MIN_TEST_N` samples on
either side is not tested ("n too small") and never gates. Above `max_samples` per side
the test runs on a deterministic (seeded) random subsample, which is reported; the
metric and its interval always use every sample.

Energy per inference (total and dynamic) regresses when it grew beyond the threshold
and the intervals do not overlap (the threshold alone when an interval is missing).
Artifact size regresses on any growth beyond the threshold. Peak RSS and LLM
generation figures are informational.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool.results.stats import median_ci_ranks, percentile
from edgetool.results.store import Run

MIN_TEST_N = 20
"""Below this many samples on a side the normal approximation is not trusted."""

METRICS = ("p50", "p90", "mean")
_STATUS_RANK = {"complete": 2, "partial": 1}


@dataclass(frozen=True)
class CompareSettings:
    """What the user asked for: gate threshold, test level, which latency figure."""

    threshold: float = 0.05
    alpha: float = 0.01
    metric: str = "p50"
    confidence: float = 0.95
    max_samples: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be within (0, 1)")
        if self.threshold < 0.0:
            raise ValueError("threshold must not be negative")


# --- Mann–Whitney U ------------------------------------------------------------------


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(U of `a`, two-sided p) by the normal approximation with tie and continuity
    correction (scipy's `method="asymptotic"`). Ranks come from sorting each side and
    merging, O(n log n), so 10^5 samples a side take well under a second."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs samples on both sides")
    sa, sb = sorted(a), sorted(b)
    i = j = 0
    consumed = 0
    rank_sum_a = 0.0
    tie_term = 0.0
    while i < n1 or j < n2:
        value = sa[i] if j >= n2 or (i < n1 and sa[i] <= sb[j]) else sb[j]
        ci = 0
        while i < n1 and sa[i] == value:
            i += 1
            ci += 1
        cj = 0
        while j < n2 and sb[j] == value:
            j += 1
            cj += 1
        t = ci + cj
        rank_sum_a += ci * (consumed + (t + 1) / 2.0)  # average of ranks consumed+1..+t
        tie_term += t * t * t - t
        consumed += t
    u1 = rank_sum_a - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    mu = n1 * n2 / 2.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0.0:
        return u1, 1.0  # every value equal: no evidence of any difference
    z = (max(u1, n1 * n2 - u1) - mu - 0.5) / math.sqrt(variance)
    p = min(1.0, math.erfc(z / math.sqrt(2.0)))  # 2 * sf(z) = erfc(z / sqrt 2)
    return u1, p


def _subsample(values: Sequence[int], limit: int, seed: int) -> Sequence[int]:
    """Seeded random subsample: deterministic, and unlike a stride it cannot alias with a
    periodic pattern in the run (a timer tick, a GC every k inferences)."""
    if len(values) <= limit:
        return values
    return random.Random(seed).sample(list(values), limit)


@dataclass(frozen=True)
class UTest:
    """The test result as reported (n are the counts actually tested): Mann–Whitney U on
    samples, or Welch's test on the aggregates of a runner that gives no samples."""

    u: float
    p: float
    n_base: int
    n_new: int
    subsampled: bool
    name: str = "mann-whitney-u"


def welch(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[float, float]:
    """Welch's two-sided test from (count, mean, std) alone, normal approximation (both
    sides have at least MIN_TEST_N, where t and z differ by < 3 % in the tails we use)."""
    (na, ma, sa), (nb, mb, sb) = a, b
    se = math.sqrt(sa * sa / na + sb * sb / nb)
    if se == 0:
        return 0.0, 1.0 if ma == mb else 0.0
    t = (mb - ma) / se
    return t, math.erfc(abs(t) / math.sqrt(2.0))


def _aggregates(run: Run) -> tuple[int, float, float] | None:
    """(count, mean ms, std ms) of a run whose runner reports aggregates only."""
    lat = (run.summary or {}).get("latency") or {}
    if not lat.get("aggregate_only"):
        return None
    try:
        return int(lat["count"]), float(lat["mean"]), float(lat["std"])
    except (KeyError, TypeError, ValueError):
        return None


# --- metrics -------------------------------------------------------------------------


def _z(confidence: float) -> float:
    """Two-sided normal quantile by bisection on erf (stdlib has no inverse)."""
    low, high = 0.0, 10.0
    for _ in range(80):
        mid = (low + high) / 2.0
        low, high = (mid, high) if math.erf(mid / math.sqrt(2.0)) < confidence else (low, mid)
    return (low + high) / 2.0


def latency_metric(
    sorted_ms: Sequence[float], metric: str, confidence: float = 0.95
) -> tuple[float, tuple[float, float] | None]:
    """The chosen latency figure and its CI: p50 uses the exact order-statistic median CI
    from stats.py; p90 the distribution-free binomial (normal-approximated) quantile CI;
    mean the normal CI of the mean."""
    n = len(sorted_ms)
    if metric == "p50":
        ranks = median_ci_ranks(n, confidence)
        ci = (sorted_ms[ranks[0]], sorted_ms[ranks[1]]) if ranks else None
        return percentile(sorted_ms, 50.0), ci
    if metric == "p90":
        q = 0.9
        half = _z(confidence) * math.sqrt(n * q * (1.0 - q))
        lo, hi = max(0, math.floor(n * q - half)), min(n - 1, math.ceil(n * q + half))
        ci90 = (sorted_ms[lo], sorted_ms[hi]) if n >= MIN_TEST_N else None
        return percentile(sorted_ms, 90.0), ci90
    mean = math.fsum(sorted_ms) / n
    if n < 2:
        return mean, None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in sorted_ms) / (n - 1))
    half_mean = _z(confidence) * std / math.sqrt(n)
    return mean, (mean - half_mean, mean + half_mean)


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
    eb = (base.summary or {}).get("energy") or {}
    en = (new.summary or {}).get("energy") or {}
    out: list[MetricChange] = []
    for key in ("total_mj", "dynamic_mj"):
        b, a = eb.get(key), en.get(key)
        if not isinstance(b, dict) or not isinstance(a, dict):
            continue
        before, after = _as_float(b.get("mean")), _as_float(a.get("mean"))
        if before is None or after is None:
            continue
        bci, aci = _as_ci(b.get("ci")), _as_ci(a.get("ci"))
        change = _relative(before, after)
        worse = change is not None and change > threshold and _ci_worse(bci, aci)
        better = change is not None and change < -threshold and _ci_better(bci, aci)
        out.append(
            MetricChange(f"energy_{key}", "mJ", before, after, bci, aci, change, worse, better)
        )
    return out


def _size_change(base: Run, new: Run, threshold: float) -> MetricChange | None:
    before = _as_float((base.manifest.get("artifact") or {}).get("size"))
    after = _as_float((new.manifest.get("artifact") or {}).get("size"))
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
    sb, sn = base.summary or {}, new.summary or {}
    pairs: list[tuple[str, str, Any, Any]] = [
        ("peak_rss", "B", sb.get("peak_rss"), sn.get("peak_rss"))
    ]
    gb, gn = sb.get("generation") or {}, sn.get("generation") or {}
    for key, unit in (("ttft_ms", "ms"), ("decode_tokens_per_s", "tokens/s")):
        pairs.append((f"generation_{key}", unit, gb.get(key), gn.get(key)))
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
    artifact = run.manifest.get("artifact") or {}
    raw = artifact.get("name") or (Path(str(artifact["path"])).name if artifact.get("path") else "")
    name = Path(str(raw)).stem if raw else str(artifact.get("model") or "?")
    return name, str(artifact.get("format") or ""), str(artifact.get("quant") or "")


def model_label(run: Run) -> str:
    name, fmt, quant = model_identity(run)
    return ":".join(part for part in (name, fmt, quant) if part)


def target_name(run: Run) -> str:
    return str((run.manifest.get("target") or {}).get("name") or "?")


def pair_key(run: Run) -> tuple[str, str, str, str]:
    return (*model_identity(run), target_name(run))


def _pair_warnings(base: Run, new: Run) -> list[str]:
    """Why a comparison may be apples to oranges: shown in the row, not fatal."""
    warnings: list[str] = []
    if target_name(base) != target_name(new):
        warnings.append(f"different targets ({target_name(base)} vs {target_name(new)})")
    if model_identity(base) != model_identity(new):
        warnings.append(f"different models ({model_label(base)} vs {model_label(new)})")
    tb, tn = base.manifest.get("target") or {}, new.manifest.get("target") or {}
    if bool(tb.get("emulated")) != bool(tn.get("emulated")):
        kinds = ["emulated" if t.get("emulated") else "real" for t in (tb, tn)]
        warnings.append(f"{kinds[0]} vs {kinds[1]} device")
    db, dn = base.manifest.get("device") or {}, new.manifest.get("device") or {}
    for key in ("hostname", "arch", "cpu_model"):
        if db.get(key) and dn.get(key) and db[key] != dn[key]:
            warnings.append(f"different device {key} ({db[key]} vs {dn[key]})")
    eb = (base.summary or {}).get("energy") or {}
    en = (new.summary or {}).get("energy") or {}
    if (
        eb
        and en
        and (eb.get("meter") != en.get("meter") or eb.get("estimate") != en.get("estimate"))
    ):
        warnings.append("energy from different meters or estimate vs measured")
    for label, run in (("base", base), ("new", new)):
        if run.status != "complete":
            warnings.append(f"{label} run is {run.status}")
    return warnings


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
    test: UTest | None
    verdict: str
    """regression | improvement | n.s. | within threshold | n too small | no samples"""
    energy: list[MetricChange] = field(default_factory=list)
    size: MetricChange | None = None
    info: list[MetricChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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
        """Names of the gating metrics that regressed."""
        return [m.name for m in self.metrics if m.gating and m.regression]

    def to_dict(self) -> dict[str, Any]:
        test = None
        if self.test:
            test = {
                "name": self.test.name,
                "u": self.test.u,
                "p": self.test.p,
                "n_base": self.test.n_base,
                "n_new": self.test.n_new,
                "subsampled": self.test.subsampled,
            }
        return {
            "model": self.model,
            "target": self.target,
            "base": {"run_id": self.base_run, "dir": self.base_dir, "status": self.base_status},
            "new": {"run_id": self.new_run, "dir": self.new_dir, "status": self.new_status},
            "partial": self.partial,
            "verdict": self.verdict,
            "test": test,
            "latency": self.latency.to_dict() if self.latency else None,
            "energy": [m.to_dict() for m in self.energy],
            "size": self.size.to_dict() if self.size else None,
            "info": [m.to_dict() for m in self.info],
            "regressions": self.regressions,
            "warnings": list(self.warnings),
        }


def compare_runs(base: Run, new: Run, settings: CompareSettings | None = None) -> PairComparison:
    """Compare one run against another by the rules in the module docstring."""
    s = settings or CompareSettings()
    latency: MetricChange | None = None
    test: UTest | None = None
    agg_base, agg_new = _aggregates(base), _aggregates(new)
    if agg_base and agg_new:
        latency, test, verdict = _compare_aggregates(agg_base, agg_new, s)
    elif not base.samples_ns or not new.samples_ns:
        verdict = "no samples"
    else:
        sorted_b = sorted(v / 1e6 for v in base.samples_ns)
        sorted_n = sorted(v / 1e6 for v in new.samples_ns)
        before, bci = latency_metric(sorted_b, s.metric, s.confidence)
        after, aci = latency_metric(sorted_n, s.metric, s.confidence)
        change = _relative(before, after)
        worse = better = False
        if min(len(sorted_b), len(sorted_n)) < MIN_TEST_N:
            verdict = "n too small"
        else:
            xb = _subsample(base.samples_ns, s.max_samples, s.seed)
            xn = _subsample(new.samples_ns, s.max_samples, s.seed + 1)
            u, p = mann_whitney_u(xb, xn)
            subsampled = len(xb) < len(base.samples_ns) or len(xn) < len(new.samples_ns)
            test = UTest(u, p, len(xb), len(xn), subsampled)
            significant = p < s.alpha
            worse = (
                significant and change is not None and change > s.threshold and _ci_worse(bci, aci)
            )
            better = (
                significant
                and change is not None
                and change < -s.threshold
                and _ci_better(bci, aci)
            )
            if worse:
                verdict = "regression"
            elif better:
                verdict = "improvement"
            elif significant:
                verdict = "within threshold"
            else:
                verdict = "n.s."
        latency = MetricChange(
            f"latency_{s.metric}", "ms", before, after, bci, aci, change, worse, better
        )
    return PairComparison(
        model=model_label(new),
        target=target_name(new),
        base_run=base.run_id,
        new_run=new.run_id,
        base_dir=str(base.dir),
        new_dir=str(new.dir),
        base_status=base.status,
        new_status=new.status,
        latency=latency,
        test=test,
        verdict=verdict,
        energy=_energy_changes(base, new, s.threshold),
        size=_size_change(base, new, s.threshold),
        info=_info_changes(base, new),
        warnings=_pair_warnings(base, new),
    )


def _compare_aggregates(
    base: tuple[int, float, float], new: tuple[int, float, float], s: CompareSettings
) -> tuple[MetricChange, UTest | None, str]:
    """Aggregate-only runs (benchmark_model): the mean is the only latency figure there
    is, so it is compared (whatever metric was asked for) by the same three rules."""
    z = _z(s.confidence)

    def ci(agg: tuple[int, float, float]) -> tuple[float, float]:
        half = z * agg[2] / math.sqrt(agg[0])
        return agg[1] - half, agg[1] + half

    before, after = base[1], new[1]
    change = _relative(before, after)
    worse = better = False
    test = None
    if min(base[0], new[0]) < MIN_TEST_N:
        verdict = "n too small"
    else:
        t, p = welch(base, new)
        test = UTest(t, p, base[0], new[0], False, "welch-t")
        significant = p < s.alpha
        worse = bool(
            significant and change is not None and change > s.threshold
            and _ci_worse(ci(base), ci(new))
        )  # fmt: skip
        better = bool(
            significant and change is not None and change < -s.threshold
            and _ci_better(ci(base), ci(new))
        )  # fmt: skip
        verdict = (
            "regression"
            if worse
            else "improvement"
            if better
            else "within threshold"
            if significant
            else "n.s."
        )
    metric = MetricChange(
        "latency_mean", "ms", before, after, ci(base), ci(new), change, worse, better
    )
    return metric, test, verdict


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
    def missing(self) -> int:
        return len(self.only_base) + len(self.only_new)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": {
                "threshold": self.settings.threshold,
                "alpha": self.settings.alpha,
                "metric": self.settings.metric,
                "confidence": self.settings.confidence,
                "max_samples": self.settings.max_samples,
            },
            "regressions": self.regressions,
            "pairs": [pair.to_dict() for pair in self.pairs],
            "only_base": [u.to_dict() for u in self.only_base],
            "only_new": [u.to_dict() for u in self.only_new],
        }


def _preference(run: Run) -> tuple[int, int, str, str]:
    """Complete beats partial beats anything else; then runs with samples; then latest."""
    return (
        _STATUS_RANK.get(run.status, 0),
        1 if run.samples_ns else 0,
        str(run.manifest.get("created") or ""),
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
    base: Iterable[Run], new: Iterable[Run], settings: CompareSettings | None = None
) -> SetComparison:
    """Pair runs by (artifact name, format, quant, target) and compare each pair."""
    s = settings or CompareSettings()
    chosen_b, chosen_n = pick_runs(base), pick_runs(new)
    pairs = [compare_runs(chosen_b[k], chosen_n[k], s) for k in sorted(chosen_b) if k in chosen_n]
    only_base = [_unpaired(chosen_b[k]) for k in sorted(chosen_b) if k not in chosen_n]
    only_new = [_unpaired(chosen_n[k]) for k in sorted(chosen_n) if k not in chosen_b]
    return SetComparison(pairs, only_base, only_new, s)
