"""Latency statistics that can be published: percentiles and an exact median CI.

Pure Python on purpose: the tests check it against numpy, and the result store can
summarise a run on a machine without numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within [0, 100]")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def _binomial_half_cdf(n: int) -> list[float]:
    """P(X <= k) for X ~ Binomial(n, 1/2), k = 0..n, computed in log space (no overflow)."""
    log_pmf = [0.0] * (n + 1)
    log_pmf[0] = -n * math.log(2.0)
    for k in range(n):
        log_pmf[k + 1] = log_pmf[k] + math.log((n - k) / (k + 1))
    cdf: list[float] = []
    total = 0.0
    for value in log_pmf:
        total += math.exp(value)
        cdf.append(total)
    return cdf


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the order statistics bracketing the median with at least
    `confidence` coverage for iid samples (distribution-free), or None when n is too small."""
    alpha = 1.0 - confidence
    if n < 6:
        return None  # even (min, max) covers < 95 % below n = 6
    if n > 10_000:
        # Normal approximation to the binomial: exact to well under one rank at this n.
        z = (
            1.959963984540054
            if abs(confidence - 0.95) < 1e-12
            else student_t_ppf(0.5 + confidence / 2.0, math.inf)  # the normal quantile
        )
        half = z * math.sqrt(n) / 2.0
        lo = max(0, math.floor(n / 2.0 - half))
        hi = min(n - 1, math.ceil(n / 2.0 + half))
        return lo, hi
    cdf = _binomial_half_cdf(n)
    # Largest j with P(X <= j - 1) <= alpha/2: interval [x_(j), x_(n-j+1)] in 1-based ranks.
    j = 0
    while j + 1 <= n and cdf[j] <= alpha / 2.0:
        j += 1
    if j == 0:
        return None
    return j - 1, n - j


@dataclass(frozen=True)
class LatencyStats:
    """All figures in milliseconds; `unstable` lists pyperf-style warnings."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    max: float
    median_ci: tuple[float, float] | None
    confidence: float
    unstable: tuple[str, ...]

    def tail_support(self) -> dict[str, float]:
        """Expected samples beyond each upper percentile: below ~5 a p99 or p99.9 is the
        run's few largest values, not an estimate of the tail, and views say so."""
        return {
            key: round(self.count * (100.0 - q) / 100.0, 2)
            for key, q in (("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))
        }

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["unit"] = "ms"
        data["tail_support"] = self.tail_support()
        data["median_ci"] = list(self.median_ci) if self.median_ci else None
        data["unstable"] = list(self.unstable)
        return data


def summarize_ns(samples_ns: Sequence[int], confidence: float = 0.95) -> LatencyStats:
    """Summarise per-inference times given in nanoseconds."""
    if not samples_ns:
        raise ValueError("no samples to summarise")
    values = sorted(v / 1e6 for v in samples_ns)
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    ranks = median_ci_ranks(n, confidence)
    p = {q: percentile(values, q) for q in PERCENTILES}
    return LatencyStats(
        count=n,
        mean=mean,
        std=std,
        min=values[0],
        p50=p[50.0],
        p90=p[90.0],
        p95=p[95.0],
        p99=p[99.0],
        p999=p[99.9],
        max=values[-1],
        median_ci=(values[ranks[0]], values[ranks[1]]) if ranks else None,
        confidence=confidence,
        unstable=tuple(_instability(n)),
    )


def _instability(count: int) -> list[str]:
    """Per-inference rules only where they mean something: too few samples to summarise.

    pyperf's value-level rules (std > 10 % of the mean, an outlier beyond 50 %) fire on
    nearly every run of a fast model (consecutive inferences are correlated and a single
    preemption is an outlier) and say nothing about whether the *run* can be trusted;
    that judgement is made on repetitions (`stability_warnings`)."""
    return [f"only {count} samples"] if count < 20 else []


def summarize_generations(
    generations: Sequence[tuple[int, int, int, int]],
) -> dict[str, float | int]:
    """(prompt_tokens, new_tokens, ttft_ns, decode_ns) per timed generation -> the LLM
    figures: time to first token, prefill and decode tokens/s (medians over generations).

    Prefill speed counts the prompt over the time to the first token (prefill plus the
    first sampled token, as llama.cpp and onnxruntime-genai report it); decode speed counts
    the tokens after the first over the decode time.
    """
    if not generations:
        return {}
    ttft = sorted(g[2] / 1e6 for g in generations)
    prefill = sorted(g[0] / (g[2] / 1e9) for g in generations if g[2] > 0)
    decode = sorted((g[1] - 1) / (g[3] / 1e9) for g in generations if g[3] > 0 and g[1] > 1)
    out: dict[str, float | int] = {
        "generations": len(generations),
        "prompt_tokens": generations[0][0],
        "new_tokens": generations[0][1],
        "ttft_ms": percentile(ttft, 50),
    }
    if prefill:
        out["prefill_tokens_per_s"] = percentile(prefill, 50)
    if decode:
        out["decode_tokens_per_s"] = percentile(decode, 50)
    return out


# --- repetitions ---------------------------------------------------------------------
#
# A measurement's unit is a repetition (a fresh runner process, or a separate window after
# its own warm-up where no process can be started), not an inference: inferences in one
# process are correlated, and the spread between processes (start-up, thread placement,
# background load) is 10-100x the within-run standard error. So a run's latency is
# estimated from its repetitions' medians: their geometric mean, with a Student t interval
# on their logarithms (latency is a positive, right-skewed ratio scale: differences of logs
# are ratios, which is what a reader compares).

MIN_REPETITIONS = 3
"""Fewer repetitions than this give no usable spread: such a run never gates."""

REPETITION_METHOD = "geometric mean of repetition medians; Student t interval on their logs"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (df may be fractional)."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def student_t_ppf(p: float, df: float) -> float:
    """The t quantile: the x with P(T <= x) = p (bisection on the CDF: exact to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be within (0, 1)")
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_sf(high, df) > 1.0 - p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if student_t_sf(mid, df) > 1.0 - p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class RepetitionStats:
    """A run's latency as its repetitions tell it (milliseconds, or the run's time base)."""

    count: int
    kind: str
    """'process' (a fresh runner each) or 'window' (a separate measurement window after its
    own warm-up, where the device cannot start a process: microcontrollers, watches)."""
    medians: tuple[float, ...]
    estimate: float
    ci: tuple[float, float] | None
    confidence: float
    log_sd: float | None
    """Standard deviation of the log medians: the relative spread between repetitions."""
    method: str = REPETITION_METHOD

    @property
    def uncertainty_known(self) -> bool:
        return self.ci is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "kind": self.kind,
            "medians_ms": list(self.medians),
            "estimate_ms": self.estimate,
            "ci": list(self.ci) if self.ci else None,
            "confidence": self.confidence,
            "log_sd": self.log_sd,
            "method": self.method,
        }


def log_mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation of the logs (None for one value)."""
    logs = [math.log(v) for v in values]
    mean = math.fsum(logs) / len(logs)
    if len(logs) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / (len(logs) - 1))


def summarize_repetitions(
    medians_ms: Sequence[float], kind: str, confidence: float = 0.95
) -> RepetitionStats:
    """The run-level estimate and its interval from per-repetition medians (all > 0)."""
    if not medians_ms:
        raise ValueError("no repetitions to summarise")
    if any(m <= 0 for m in medians_ms):
        raise ValueError("repetition medians must be positive")
    mean, sd = log_mean_sd(medians_ms)
    n = len(medians_ms)
    ci = None
    if sd is not None:
        half = student_t_ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
        ci = (math.exp(mean - half), math.exp(mean + half))
    return RepetitionStats(n, kind, tuple(medians_ms), math.exp(mean), ci, confidence, sd)


def repetition_medians(samples_ns: Sequence[int], reps: Sequence[int]) -> list[float]:
    """Median (ms) of each repetition's samples, in repetition order; `reps` tags each
    sample with its repetition (an empty repetition is skipped)."""
    groups: dict[int, list[float]] = {}
    for value, rep in zip(samples_ns, reps, strict=True):
        groups.setdefault(rep, []).append(value / 1e6)
    return [percentile(sorted(groups[r]), 50.0) for r in sorted(groups) if groups[r]]


SPREAD_WARN = 0.05
"""Repetition medians spread by more than this (log sd) make a run worth a second look."""


def stability_warnings(
    reps: RepetitionStats | None, envs: Sequence[tuple[dict[str, Any], dict[str, Any]]]
) -> list[str]:
    """What makes this run's figures less trustworthy, judged on what it means: the spread
    of repetition medians, and the device's state around each repetition (throttling,
    frequency changes, load, steal) -- never per-inference scatter."""
    warnings: list[str] = []
    if reps is not None and reps.log_sd is not None and reps.log_sd > SPREAD_WARN:
        warnings.append(
            f"repetition medians spread by {100 * reps.log_sd:.0f}% (> {100 * SPREAD_WARN:.0f}%)"
            f": {', '.join(f'{m:.4g}' for m in reps.medians)}"
        )
    throttled: set[str] = set()
    freq_changed = False
    load_jump = False
    steal = 0.0
    for before, after in envs:
        for env in (before, after):
            throttle = env.get("throttle")
            if isinstance(throttle, dict):
                throttled.update(str(flag) for flag in throttle.get("now") or [])
            elif env.get("throttled") not in (None, "0x0", "0x00000", "0"):
                throttled.add(f"throttled={env.get('throttled')}")
        if _frequencies(before) and _frequencies(before) != _frequencies(after):
            freq_changed = True
        lb, la = _load1(before), _load1(after)
        if lb is not None and la is not None and abs(la - lb) >= 1.0:
            load_jump = True
        steal = max(steal, _steal_fraction(before, after))
    if throttled:
        warnings.append(f"device throttled during the run ({', '.join(sorted(throttled))})")
    if freq_changed:
        warnings.append("CPU frequency or its limits changed during a repetition")
    if load_jump:
        warnings.append("load average changed by >= 1 during a repetition (background work)")
    if steal > 0.01:
        warnings.append(f"CPU steal time {100 * steal:.1f}% (a hypervisor took the CPU)")
    return warnings


def _frequencies(env: dict[str, Any]) -> list[Any] | None:
    cpus = env.get("cpus")
    if isinstance(cpus, list) and cpus:
        return [
            (c.get("cur_khz"), c.get("min_khz"), c.get("max_khz"))
            for c in cpus
            if isinstance(c, dict)
        ]
    freq = env.get("freq_khz")
    return list(freq) if isinstance(freq, list) and freq else None


def _load1(env: dict[str, Any]) -> float | None:
    load = env.get("loadavg")
    if isinstance(load, list) and load and isinstance(load[0], (int, float)):
        return float(load[0])
    return None


def _steal_fraction(before: dict[str, Any], after: dict[str, Any]) -> float:
    b, a = before.get("cpu_times"), after.get("cpu_times")
    if not isinstance(b, dict) or not isinstance(a, dict):
        return 0.0
    try:
        total = int(a["total"]) - int(b["total"])
        steal = int(a["steal"]) - int(b["steal"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return steal / total if total > 0 else 0.0
