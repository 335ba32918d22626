from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetool.results.stats import (
    median_ci_ranks,
    percentile,
    repetition_medians,
    stability_warnings,
    student_t_ppf,
    student_t_sf,
    summarize_ns,
    summarize_repetitions,
)


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


def test_per_inference_scatter_alone_is_not_instability() -> None:
    # One preemption among 200 inferences is normal life on a CPU, not an unstable run:
    # the judgement belongs to repetitions (stability_warnings).
    spiky = summarize_ns([1_000_000] * 199 + [50_000_000])
    assert spiky.unstable == ()


def test_tail_support_counts_samples_beyond_each_percentile() -> None:
    stats = summarize_ns([1_000_000 + i for i in range(300)])
    support = stats.tail_support()
    assert support["p99"] == pytest.approx(3.0)
    assert support["p999"] == pytest.approx(0.3)
    assert stats.to_dict()["tail_support"] == support


@pytest.mark.parametrize("df", [1, 2, 4, 9, 17.3, 200])
def test_student_t_matches_scipy(df: float) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for p in (0.6, 0.9, 0.975, 0.995, 0.9995):
        assert student_t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
        assert student_t_ppf(1 - p, df) == pytest.approx(scipy_stats.t.ppf(1 - p, df), rel=1e-9)
    for t in (-4.0, -0.5, 0.0, 0.3, 2.0, 9.0):
        assert student_t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), abs=1e-12)


def test_repetition_estimate_is_geometric_mean_with_t_interval_on_logs() -> None:
    medians = [1.00, 1.03, 0.98, 1.01, 1.02]
    reps = summarize_repetitions(medians, "process")
    logs = np.log(medians)
    half = 2.7764451051977987 * logs.std(ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert reps.estimate == pytest.approx(float(np.exp(logs.mean())))
    assert reps.ci is not None
    assert reps.ci[0] == pytest.approx(float(np.exp(logs.mean() - half)))
    assert reps.ci[1] == pytest.approx(float(np.exp(logs.mean() + half)))
    assert reps.to_dict()["kind"] == "process"


def test_one_repetition_has_unknown_uncertainty() -> None:
    reps = summarize_repetitions([1.5], "window")
    assert reps.ci is None and reps.log_sd is None and not reps.uncertainty_known


def test_interval_covers_the_truth_at_its_level() -> None:
    # Repetition medians drawn around a known value: the 95 % interval covers it ~95 %.
    rng = np.random.default_rng(7)
    covered = 0
    trials = 2000
    for _ in range(trials):
        medians = np.exp(rng.normal(0.0, 0.04, size=5))
        ci = summarize_repetitions(medians.tolist(), "process").ci
        assert ci is not None
        covered += ci[0] <= 1.0 <= ci[1]
    assert 0.93 <= covered / trials <= 0.97


def test_repetition_medians_group_by_tag() -> None:
    samples = [1_000_000, 3_000_000, 2_000_000, 10_000_000, 30_000_000, 20_000_000]
    assert repetition_medians(samples, [0, 0, 0, 1, 1, 1]) == [2.0, 20.0]


def test_stability_warnings_judge_repetitions_and_device_state() -> None:
    calm = summarize_repetitions([1.0, 1.01, 0.99, 1.0, 1.0], "process")
    env = {"loadavg": [0.1, 0.1, 0.1], "cpu_times": {"total": 1000, "steal": 0, "idle": 900}}
    assert stability_warnings(calm, [(env, env)]) == []
    spread = summarize_repetitions([1.0, 1.3, 0.8, 1.0, 1.1], "process")
    assert any("spread" in w for w in stability_warnings(spread, []))
    hot = {
        "loadavg": [2.5, 1.0, 1.0],
        "throttle": {"raw": "0x50005", "now": ["under-voltage", "throttled"]},
        "cpus": [{"cpu": 0, "cur_khz": 600000, "min_khz": 600000, "max_khz": 1500000}],
        "cpu_times": {"total": 2000, "steal": 50, "idle": 1000},
    }
    cool = {**env, "cpus": [{"cpu": 0, "cur_khz": 1500000, "min_khz": 600000, "max_khz": 1500000}]}
    warnings = " | ".join(stability_warnings(calm, [(cool, hot)]))
    assert "throttled" in warnings and "under-voltage" in warnings
    assert "frequency" in warnings
    assert "load average" in warnings
    assert "steal" in warnings


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
