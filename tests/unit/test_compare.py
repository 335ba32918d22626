"""`edgetool results compare`: the U test against scipy, and the regression gate end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from edgetool.cli import main
from edgetool.results import compare
from edgetool.results.compare import (
    CompareSettings,
    compare_runs,
    mann_whitney_u,
)
from edgetool.results.stats import summarize_ns
from edgetool.results.store import RunWriter, load_run


def latencies(seed: int, n: int = 2000, scale: float = 1.0, base_ns: float = 1e6) -> list[int]:
    """A realistic latency distribution: lognormal body plus 1 % scheduler spikes."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        value = base_ns * rng.lognormvariate(0.0, 0.05)
        if rng.random() < 0.01:
            value *= rng.uniform(2.0, 4.0)
        out.append(int(value * scale))
    return out


def make_run(
    root: Path,
    run_id: str,
    samples: list[int],
    *,
    model: str = "cbnet",
    fmt: str = "onnx",
    quant: str | None = None,
    target: str = "rpi4",
    status: str = "complete",
    size: int = 100_000,
    energy: dict[str, Any] | None = None,
    emulated: bool = False,
    created: str | None = None,
) -> Path:
    artifact: dict[str, Any] = {
        "name": f"{model}.{fmt}",
        "format": fmt,
        "size": size,
        "sha256": "0" * 64,
    }
    if quant:
        artifact["quant"] = quant
    manifest: dict[str, Any] = {
        "target": {"name": target, "emulated": emulated},
        "artifact": artifact,
    }
    if created:
        manifest["created"] = created
    writer = RunWriter(root, run_id, manifest)
    writer.append_samples(0, samples)
    summary: dict[str, Any] = {
        "latency": summarize_ns(samples).to_dict(),
        "count": len(samples),
        "peak_rss": 50_000_000,
    }
    if energy is not None:
        summary["energy"] = energy
    writer.finish(status, summary)
    return writer.dir


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in-process (as `edgetool ...`): exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        main(["results", "compare", *args])
    captured = capsys.readouterr()
    code = exc.value.code
    return int(code) if isinstance(code, int) else 1, captured.out, captured.err


# --- Mann–Whitney U ------------------------------------------------------------------


def _cases() -> list[tuple[list[float], list[float]]]:
    rng = random.Random(7)
    return [
        ([rng.gauss(0, 1) for _ in range(25)], [rng.gauss(0.5, 1) for _ in range(31)]),
        (
            [rng.lognormvariate(0, 0.3) for _ in range(300)],
            [rng.lognormvariate(0, 0.3) for _ in range(200)],
        ),
        (
            [float(rng.randint(0, 4)) for _ in range(60)],
            [float(rng.randint(1, 5)) for _ in range(45)],
        ),
        ([1.0] * 20 + [2.0] * 5, [1.0] * 10 + [2.0] * 15),
        ([3.0] * 30, [1.0, 2.0, 3.0, 4.0] * 10),
        ([float(v) for v in latencies(1, 3000)], [float(v) for v in latencies(2, 2500, 1.01)]),
    ]


@pytest.mark.parametrize("case", range(6))
def test_mann_whitney_matches_scipy(case: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    a, b = _cases()[case]
    u, p = mann_whitney_u(a, b)
    expected = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    assert u == pytest.approx(float(expected.statistic))
    assert p == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-300)


def test_mann_whitney_all_equal_and_empty() -> None:
    assert mann_whitney_u([5, 5, 5], [5, 5]) == (3.0, 1.0)
    with pytest.raises(ValueError):
        mann_whitney_u([], [1])


def test_big_runs_are_subsampled_deterministically(tmp_path: Path) -> None:
    base = load_run(make_run(tmp_path, "a", latencies(1, 30_000)))
    new = load_run(make_run(tmp_path, "b", latencies(2, 30_000, 1.10)))
    settings = CompareSettings(max_samples=3000)
    first, second = compare_runs(base, new, settings), compare_runs(base, new, settings)
    assert first.test is not None and first.test.subsampled
    assert (first.test.n_base, first.test.n_new) == (3000, 3000)
    assert first.test == second.test
    assert first.verdict == "regression"
    assert first.latency is not None and first.latency.before is not None
    # The median uses every sample, not the subsample.
    assert first.latency.before == pytest.approx(summarize_ns(base.samples_ns).p50)


def test_tiny_runs_are_not_tested(tmp_path: Path) -> None:
    base = load_run(make_run(tmp_path, "a", [1_000_000] * 10))
    new = load_run(make_run(tmp_path, "b", [1_500_000] * 10))
    pair = compare_runs(base, new)
    assert pair.verdict == "n too small" and pair.test is None and not pair.regressions


@pytest.mark.parametrize("metric", ["p50", "p90", "mean"])
def test_every_metric_sees_a_slowdown(tmp_path: Path, metric: str) -> None:
    base = load_run(make_run(tmp_path, "a", latencies(1)))
    new = load_run(make_run(tmp_path, "b", latencies(2, scale=1.2)))
    pair = compare_runs(base, new, CompareSettings(metric=metric))
    assert pair.latency is not None and pair.latency.name == f"latency_{metric}"
    assert pair.verdict == "regression", pair.to_dict()


# --- the CLI gate --------------------------------------------------------------------


def test_a_a_is_no_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", latencies(1))
    b = make_run(tmp_path, "new", latencies(2))
    code, out, err = run(capsys, str(a), str(b), "-o", str(tmp_path))
    assert code == 0, err
    assert "cbnet" in out and "no regression beyond 5 %" in out
    assert "▲" not in out


def test_ten_percent_slowdown_is_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(tmp_path, "2026-11-20-base", latencies(1))
    make_run(tmp_path, "2026-11-21-new", latencies(2, scale=1.10))
    code, out, err = run(capsys, "2026-11-20", "latest", "-o", str(tmp_path))
    assert code == 10
    assert "▲" in out and "p<0.001" in out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 regression beyond 5 %" in errors[0]


def test_ten_percent_speedup_is_an_improvement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, "base", latencies(1))
    b = make_run(tmp_path, "new", latencies(2, scale=0.90))
    code, out, _ = run(capsys, str(a), str(b), "--json")
    assert code == 0
    data = __import__("json").loads(out)
    assert data["regressions"] == 0
    assert data["pairs"][0]["verdict"] == "improvement"
    assert data["pairs"][0]["latency"]["change"] == pytest.approx(-0.10, abs=0.01)


def test_threshold_above_the_change_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, "base", latencies(1))
    b = make_run(tmp_path, "new", latencies(2, scale=1.10))
    code, out, _ = run(capsys, str(a), str(b), "--threshold", "0.15")
    assert code == 0 and "no regression beyond 15 %" in out
    code, _, err = run(capsys, str(a), str(b), "--threshold", "5")
    assert code == 2 and "5% or 0.05" in err


def _night(root: Path, scale: dict[str, float], seed: int) -> None:
    for i, (model, target) in enumerate(
        (("cbnet", "rpi4"), ("tinylut-s", "rpi4"), ("l2mu", "mcu-m4"))
    ):
        if model in scale:
            samples = latencies(seed + i, 500, scale[model])
            make_run(root, f"{model}-{target}", samples, model=model, target=target)


def test_nights_pair_by_model_and_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, new = tmp_path / "nightly" / "2026-11-20", tmp_path / "nightly" / "2026-11-21"
    _night(base, {"cbnet": 1.0, "tinylut-s": 1.0, "l2mu": 1.0}, 10)
    _night(new, {"cbnet": 1.0, "tinylut-s": 1.0}, 20)
    # Same model, different quant: a different model identity (only in new).
    make_run(new, "cbnet-int8", latencies(3, 500), model="cbnet", quant="int8")
    # A slow, failed-midway rerun of tinylut-s that is newer but partial must lose.
    make_run(
        new,
        "tinylut-s-retry",
        latencies(4, 500, 1.5),
        model="tinylut-s",
        status="partial",
        created="2099-01-01T00:00:00+0000",
    )
    code, out, err = run(
        capsys, "nightly/2026-11-20", "nightly/2026-11-21", "-o", str(tmp_path), "--json"
    )
    assert code == 0, err
    data = __import__("json").loads(out)
    pairs = {(p["model"], p["target"]): p for p in data["pairs"]}
    assert set(pairs) == {("cbnet:onnx", "rpi4"), ("tinylut-s:onnx", "rpi4")}
    assert pairs[("tinylut-s:onnx", "rpi4")]["new"]["run_id"] == "tinylut-s-rpi4"
    assert [u["model"] for u in data["only_base"]] == ["l2mu:onnx"]
    assert [u["model"] for u in data["only_new"]] == ["cbnet:onnx:int8"]
    code, out, err = run(capsys, str(base), str(new), "--fail-on-missing")
    assert code == 9 and "only in base: l2mu:onnx on mcu-m4" in out
    assert "2 run(s) without a counterpart" in err


def test_partial_and_emulated_runs_are_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, "base", latencies(1))
    b = make_run(tmp_path, "new", latencies(2), status="partial", emulated=True)
    code, out, _ = run(capsys, str(a), str(b))
    assert code == 0
    assert "(partial)" in out and "real vs emulated device" in out


def _energy(total: float, spread: float) -> dict[str, Any]:
    return {
        "total_mj": {"mean": total, "ci": [total - spread, total + spread]},
        "dynamic_mj": {"mean": total / 2, "ci": [total / 2 - spread, total / 2 + spread]},
        "estimate": False,
        "meter": "ina219",
    }


def test_energy_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", latencies(1), energy=_energy(0.73, 0.01))
    b = make_run(tmp_path, "new", latencies(2), energy=_energy(0.84, 0.01))
    code, out, err = run(capsys, str(a), str(b))
    assert code == 10 and "0.730 → 0.840 mJ ▲" in out
    assert "energy_total_mj" in err and "energy_dynamic_mj" in err
    # The same growth with wide, overlapping CIs is noise, not a regression.
    c = make_run(tmp_path, "noisy", latencies(3), energy=_energy(0.84, 0.2))
    code, _, err = run(capsys, str(a), str(c))
    assert code == 0, err


def test_size_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", latencies(1), size=100_000)
    b = make_run(tmp_path, "new", latencies(2), size=112_000)
    code, out, err = run(capsys, str(a), str(b))
    assert code == 10 and "size 100.0 KB → 112.0 KB" in out
    assert "artifact_size" in err


def test_missing_run_exits_9(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", latencies(1, 50))
    code, _, err = run(capsys, str(a), "nope", "-o", str(tmp_path))
    assert code == 9
    assert err.startswith("error: no run 'nope'") and len(err.strip().splitlines()) == 1


def test_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", latencies(1), energy=_energy(1.0, 0.01))
    b = make_run(tmp_path, "new", latencies(2, scale=1.2), energy=_energy(1.0, 0.01))
    code, out, _ = run(capsys, str(a), str(b), "--json", "--alpha", "0.001", "--metric", "p90")
    assert code == 10
    data = __import__("json").loads(out)
    assert data["regressions"] == 1
    assert data["settings"] == {
        "threshold": 0.05,
        "alpha": 0.001,
        "metric": "p90",
        "confidence": 0.95,
        "max_samples": 20_000,
    }
    assert set(data) == {"base", "new", "settings", "regressions", "pairs", "only_base", "only_new"}
    pair = data["pairs"][0]
    assert set(pair) >= {
        "model",
        "target",
        "base",
        "new",
        "partial",
        "verdict",
        "test",
        "latency",
        "energy",
        "size",
        "info",
        "regressions",
        "warnings",
    }
    assert pair["regressions"] == ["latency_p90"]
    assert pair["test"]["name"] == "mann-whitney-u" and pair["test"]["p"] < 0.001
    lat = pair["latency"]
    assert lat["unit"] == "ms" and lat["before_ci"][0] <= lat["before"] <= lat["before_ci"][1]
    assert [m["name"] for m in pair["energy"]] == ["energy_total_mj", "energy_dynamic_mj"]
    assert [m["name"] for m in pair["info"]] == ["peak_rss"]


# --- aggregate-only runs (benchmark_model) -------------------------------------------


def make_aggregate_run(root: Path, run_id: str, count: int, mean_ms: float, std_ms: float) -> Path:
    """A run as the Wear OS path writes it: no samples, only count/mean/std."""
    manifest: dict[str, Any] = {
        "target": {"name": "watch-wearos"},
        "artifact": {"name": "l2mu.tflite", "format": "tflite", "size": 1, "sha256": "0" * 64},
    }
    writer = RunWriter(root, run_id, manifest)
    latency = {
        "count": count, "mean": mean_ms, "std": std_ms, "min": mean_ms - std_ms,
        "max": mean_ms + 3 * std_ms, "p50": None, "p90": None, "p95": None, "p99": None,
        "p999": None, "median_ci": None, "aggregate_only": True, "source": "benchmark_model",
    }  # fmt: skip
    writer.finish("complete", {"latency": latency, "count": count, "aggregate_only": True})
    return writer.dir


def test_welch_matches_scipy() -> None:
    from scipy import stats as scipy_stats

    a, b = (200, 2.0, 0.3), (150, 2.08, 0.45)
    t, p = compare.welch(a, b)
    ref = scipy_stats.ttest_ind_from_stats(2.08, 0.45, 150, 2.0, 0.3, 200, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=0.05)  # normal vs t tail at ~300 dof


def test_aggregate_only_runs_are_compared_by_their_means(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_aggregate_run(tmp_path, "2026-11-20-base", 500, 2.00, 0.05)
    same = make_aggregate_run(tmp_path, "2026-11-21-same", 500, 2.001, 0.05)
    code, out, err = run(capsys, "2026-11-20", str(same), "-o", str(tmp_path))
    assert code == 0, err
    assert "Welch" in out and "▲" not in out
    slower = make_aggregate_run(tmp_path, "2026-11-22-slow", 500, 2.20, 0.05)
    code, out, err = run(capsys, "2026-11-20", str(slower), "-o", str(tmp_path), "--json")
    assert code == 10, err
    pair = json.loads(out)["pairs"][0]
    assert pair["verdict"] == "regression" and pair["test"]["name"] == "welch-t"
    assert pair["latency"]["name"] == "latency_mean"
