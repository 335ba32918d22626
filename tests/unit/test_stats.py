from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetool.results.stats import median_ci_ranks, percentile, summarize_ns


@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=300),
    st.floats(min_value=0, max_value=100),
)
@settings(max_examples=300)
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    ours = percentile(sorted(values), q)
    theirs = float(np.percentile(np.array(values), q, method="linear"))
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)


def test_summary_fields_match_numpy() -> None:
    rng = np.random.default_rng(7)
    ns = rng.lognormal(mean=13.0, sigma=0.3, size=5001).astype(np.int64)
    stats = summarize_ns(ns.tolist())
    ms = ns / 1e6
    assert stats.count == 5001
    assert stats.mean == pytest.approx(ms.mean(), rel=1e-12)
    assert stats.std == pytest.approx(ms.std(ddof=1), rel=1e-9)
    assert stats.min == pytest.approx(ms.min())
    assert stats.max == pytest.approx(ms.max())
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
        assert getattr(stats, name) == pytest.approx(np.percentile(ms, q), rel=1e-12), name
    assert stats.median_ci is not None
    low, high = stats.median_ci
    assert low <= stats.p50 <= high


def _coverage(n: int, lo: int, hi: int) -> float:
    """P(x_(lo) <= median <= x_(hi)) for 0-based ranks, from exact binomial sums."""
    inside = sum(math.comb(n, k) for k in range(lo + 1, hi + 1))
    return inside / 2**n


@pytest.mark.parametrize("n", [6, 7, 10, 11, 20, 31, 50, 99, 100, 250, 1000])
def test_median_ci_is_the_tightest_with_95_percent_coverage(n: int) -> None:
    ranks = median_ci_ranks(n)
    assert ranks is not None
    lo, hi = ranks
    assert lo + hi == n - 1  # symmetric
    assert _coverage(n, lo, hi) >= 0.95
    if lo + 1 <= hi - 1:
        assert _coverage(n, lo + 1, hi - 1) < 0.95  # one step tighter under-covers


def test_median_ci_known_table_values() -> None:
    # Classic tables (1-based ranks): n=10 -> (2, 9); n=100 -> (40, 61).
    assert median_ci_ranks(10) == (1, 8)
    assert median_ci_ranks(100) == (39, 60)


def test_median_ci_none_when_too_few_samples() -> None:
    assert median_ci_ranks(5) is None
    stats = summarize_ns([1_000_000] * 5)
    assert stats.median_ci is None
    assert any("only 5 samples" in w for w in stats.unstable)


def test_large_n_approximation_agrees_with_exact_within_one_rank() -> None:
    exact = median_ci_ranks(10_000)
    approx = median_ci_ranks(10_001)
    assert exact is not None and approx is not None
    assert abs(approx[0] - exact[0]) <= 1


def test_unstable_run_is_flagged_and_stable_run_is_not() -> None:
    stable = summarize_ns([1_000_000 + (i % 7) * 1000 for i in range(200)])
    assert stable.unstable == ()
    spiky = summarize_ns([1_000_000] * 199 + [50_000_000])
    assert any("away from the mean" in w for w in spiky.unstable)


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError):
        summarize_ns([])


def test_generation_summary_medians() -> None:
    from edgetool.results.stats import summarize_generations

    gens = [(32, 65, 10_000_000, 640_000_000), (32, 65, 30_000_000, 320_000_000),
            (32, 65, 20_000_000, 1_280_000_000)]  # fmt: skip
    out = summarize_generations(gens)
    assert out["ttft_ms"] == 20.0
    assert out["prefill_tokens_per_s"] == 32 / 0.02
    assert out["decode_tokens_per_s"] == 64 / 0.64  # the middle of 200, 100, 50 tok/s
    assert out["generations"] == 3 and out["new_tokens"] == 65
    assert summarize_generations([]) == {}
