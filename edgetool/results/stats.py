"""Latency statistics that can be published: percentiles and an exact median CI.

Pure Python on purpose: the tests check it against numpy, and the result store can
summarise a run on a machine without numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

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
        z = 1.959963984540054 if abs(confidence - 0.95) < 1e-12 else _z(confidence)
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


def _z(confidence: float) -> float:
    """Two-sided normal quantile by bisection on erf (only for unusual confidences)."""
    target = confidence
    low, high = 0.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2.0
        if math.erf(mid / math.sqrt(2.0)) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


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

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["unit"] = "ms"
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
        unstable=tuple(_instability(values, mean, std)),
    )


def _instability(values: Sequence[float], mean: float, std: float) -> list[str]:
    """pyperf's rules of thumb: flag a run whose numbers should not be trusted as is."""
    warnings = []
    if mean > 0 and std > 0.10 * mean:
        warnings.append(f"std is {100 * std / mean:.0f}% of the mean (> 10%)")
    if mean > 0 and (values[-1] > 1.5 * mean or values[0] < 0.5 * mean):
        warnings.append("min or max is more than 50% away from the mean")
    if len(values) < 20:
        warnings.append(f"only {len(values)} samples")
    return warnings


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
