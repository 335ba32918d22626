"""`edgetool results compare`: verdicts on repetitions, exit codes, comparability, Holm.

Runs are synthetic and seeded (no timing): each repetition's samples are lognormal around
a repetition level that itself varies from process to process, as real runs do.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from edgetool.cli import main
from edgetool.results.compare import (
    CompareSettings,
    compare_runs,
    compare_sets,
    holm,
    welch_effect,
)
from edgetool.results.manifest import RunManifest, Summary
from edgetool.results.store import RunWriter, load_run


def repetitions(
    seed: int, reps: int = 5, n: int = 200, scale: float = 1.0, between: float = 0.01
) -> list[list[int]]:
    """Per-repetition samples: a lognormal body with 1 % scheduler spikes around a level
    drawn per repetition (sd `between` on the log scale)."""
    rng = random.Random(seed)
    out = []
    for _ in range(reps):
        level = 1e6 * scale * math.exp(rng.gauss(0.0, between))
        rep = []
        for _ in range(n):
            value = level * rng.lognormvariate(0.0, 0.05)
            if rng.random() < 0.01:
                value *= rng.uniform(2.0, 4.0)
            rep.append(int(value))
        out.append(rep)
    return out


def make_run(
    root: Path,
    run_id: str,
    reps: list[list[int]],
    *,
    model: str = "cbnet",
    fmt: str = "onnx",
    quant: str | None = None,
    target: str = "rpi4",
    status: str = "complete",
    size: int = 100_000,
    energy: dict[str, Any] | None = None,
    emulated: bool = False,
    time_base: str | None = None,
    created: str | None = None,
    device: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    sha: str = "0" * 64,
) -> Path:
    """A run directory as deploy writes it; its summary is computed by load_run (as for a
    run whose summary was lost), so the test exercises the store's reading too."""
    artifact: dict[str, Any] = {"name": f"{model}.{fmt}", "format": fmt, "size": size}
    artifact["sha256"] = sha
    if quant:
        artifact["quant"] = quant
    manifest: dict[str, Any] = {
        "target": {"name": target, "emulated": emulated, "time_base": time_base},
        "artifact": artifact,
        "device": device or {"hostname": "pi", "arch": "aarch64", "cpu_model": "Cortex-A72"},
        "runtime": runtime
        or {"runtime": "onnxruntime", "runtime_version": "1.20", "threads": 0, "inputs": []},
    }
    if created:
        manifest["created"] = created
    writer = RunWriter(root, run_id, RunManifest.from_dict(manifest))
    index = 0
    for r, samples in enumerate(reps):
        writer.append_samples(index, samples, repetition=r)
        index += len(samples)
    writer.finish(status, None)
    loaded = load_run(writer.dir).summary
    assert loaded is not None
    summary = loaded.to_dict()
    summary["peak_rss"] = 50_000_000
    if energy is not None:
        summary["energy"] = energy
    (writer.dir / "summary.json").write_text(json.dumps(summary))
    return writer.dir


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in-process (as `edgetool ...`): exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        main(["results", "compare", *args])
    captured = capsys.readouterr()
    code = exc.value.code
    return int(code) if isinstance(code, int) else 1, captured.out, captured.err


# --- the statistics -------------------------------------------------------------------


def test_welch_effect_matches_scipy_on_logs() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    base = [1.00, 1.02, 0.99, 1.01, 1.03]
    new = [1.06, 1.09, 1.05, 1.10, 1.07, 1.08]
    effect = welch_effect(base, new, 0.95)
    ref = scipy_stats.ttest_ind(
        [math.log(v) for v in new], [math.log(v) for v in base], equal_var=False
    )
    assert effect.p == pytest.approx(ref.pvalue, rel=1e-6)
    ci = ref.confidence_interval(0.95)
    assert effect.ci is not None
    assert effect.ci[0] == pytest.approx(math.exp(ci.low), rel=1e-9)
    assert effect.ci[1] == pytest.approx(math.exp(ci.high), rel=1e-9)
    assert effect.ratio == pytest.approx(
        math.exp(sum(map(math.log, new)) / 6 - sum(map(math.log, base)) / 5)
    )
    assert effect.mdc is not None and 0 < effect.mdc < 0.1


def test_holm_adjustment() -> None:
    # Textbook example: p = 0.01, 0.04, 0.03, 0.005 -> 0.03, 0.06, 0.06, 0.02.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9]) == [0.9]
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


# --- verdicts -------------------------------------------------------------------------


def test_a_a_is_no_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", repetitions(1))
    b = make_run(tmp_path, "new", repetitions(2))
    code, out, err = run(capsys, str(a), str(b))
    assert code == 0, err
    assert "no change" in out and "5/5" in out
    assert "no change beyond 5 %" in out


def test_ten_percent_slowdown_is_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, "base", repetitions(1))
    b = make_run(tmp_path, "new", repetitions(2, scale=1.10))
    code, out, err = run(capsys, str(a), str(b))
    assert code == 10
    assert "regression" in out and "▲" in out
    assert err.startswith("error: 1 regression beyond 5 %: cbnet:onnx/rpi4 (latency_p50)")


def test_ten_percent_speedup_is_an_improvement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, "base", repetitions(1))
    b = make_run(tmp_path, "new", repetitions(2, scale=0.90))
    code, out, _ = run(capsys, str(a), str(b))
    assert code == 0 and "improvement" in out and "▼" in out


def test_a_small_significant_change_inside_the_threshold_is_no_change(tmp_path: Path) -> None:
    base = load_run(make_run(tmp_path, "base", repetitions(1, between=0.002)))
    new = load_run(make_run(tmp_path, "new", repetitions(2, scale=1.02, between=0.002)))
    pair = compare_runs(base, new)
    assert pair.effect is not None and pair.effect.p is not None and pair.effect.p < 0.05
    assert pair.verdict == "no change" and pair.regressions == []


def test_straddling_the_threshold_is_inconclusive_and_says_what_would_decide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, "base", repetitions(1, between=0.06))
    b = make_run(tmp_path, "new", repetitions(5, scale=1.03, between=0.06))
    code, out, err = run(capsys, str(a), str(b), "--json")
    assert code == 13, err
    pair = json.loads(out)["pairs"][0]
    assert pair["verdict"] == "inconclusive" and "straddles" in pair["reason"]
    needed = pair["effect"]["repetitions_needed"]
    assert needed is None or needed > 5
    assert err.startswith("error: cbnet:onnx/rpi4 is inconclusive")
    assert len(err.strip().splitlines()) == 1


def test_one_repetition_runs_are_inconclusive_but_still_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run from before repetitions: one samples stream, no "r" tags, no summary section.
    old = tmp_path / "old"
    writer = RunWriter(
        tmp_path, "old", RunManifest.from_dict({"target": {"name": "rpi4"}, "artifact": {}})
    )
    writer._samples.write(json.dumps({"i": 0, "ns": repetitions(1, reps=1)[0]}) + "\n")
    writer.finish("complete", None)
    assert load_run(old).reps is None
    b = make_run(tmp_path, "new", repetitions(2, scale=1.5))
    code, out, err = run(capsys, str(old), str(b), "--json")
    assert code == 13, err
    pair = json.loads(out)["pairs"][0]
    assert pair["verdict"] == "inconclusive" and "1 repetition on a side" in pair["reason"]
    assert pair["latency"]["change"] == pytest.approx(0.5, abs=0.05)


def test_partial_runs_never_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", repetitions(1))
    b = make_run(tmp_path, "new", repetitions(2, scale=1.5), status="partial", emulated=True)
    code, out, _ = run(capsys, str(a), str(b))
    assert code == 13
    assert "(partial)" in out and "real vs emulated device" in out and "never gates" in out


def test_different_devices_or_input_shapes_are_not_comparable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, "base", repetitions(1))
    pi5 = {"hostname": "pi5", "arch": "aarch64", "cpu_model": "Cortex-A76"}
    b = make_run(tmp_path, "other-cpu", repetitions(2, scale=1.5), device=pi5)
    code, out, err = run(capsys, str(a), str(b), "--json")
    assert code == 13 and "not comparable" in err  # refused, never a regression
    pair = json.loads(out)["pairs"][0]
    assert pair["verdict"] == "not comparable" and pair["regressions"] == []
    assert "different device cpu_model" in pair["reason"]
    shaped = {"runtime": "onnxruntime", "runtime_version": "1.20", "threads": 0}
    c = make_run(
        tmp_path,
        "shape-a",
        repetitions(3),
        runtime={**shaped, "inputs": [{"name": "x", "shape": [1, 3, 64, 64]}]},
    )
    d = make_run(
        tmp_path,
        "shape-b",
        repetitions(4),
        runtime={**shaped, "inputs": [{"name": "x", "shape": [1, 3, 640, 640]}]},
    )
    pair = compare_runs(load_run(c), load_run(d))
    assert pair.verdict == "not comparable" and "input shapes" in (pair.reason or "")


def test_loud_warnings_for_what_may_explain_a_difference(tmp_path: Path) -> None:
    a = make_run(tmp_path, "base", repetitions(1))
    other = {"runtime": "onnxruntime", "runtime_version": "1.22", "threads": 4, "inputs": []}
    b = make_run(
        tmp_path, "new", repetitions(2), runtime=other, sha="1" * 64,
        device={"hostname": "pi-07", "arch": "aarch64", "cpu_model": "Cortex-A72"},
    )  # fmt: skip
    pair = compare_runs(load_run(a), load_run(b))
    text = " | ".join(pair.warnings)
    assert "different runtime versions (1.20 vs 1.22)" in text
    assert "different requested threads (0 vs 4)" in text
    assert "different hosts (pi vs pi-07)" in text
    assert pair.verdict == "no change"  # same kind of device: compared, with warnings
    assert pair.notes and "artifacts differ" in pair.notes[0]


def test_instruction_counts_are_compared_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = "emulated instructions (QEMU -icount shift=0: 1 ns of virtual time = 1 instruction)"
    a = make_run(tmp_path, "base", [[4_000_000] * 50], emulated=True, time_base=base)
    same = make_run(tmp_path, "same", [[4_000_000] * 50], emulated=True, time_base=base)
    slower = make_run(tmp_path, "slower", [[4_400_000] * 50], emulated=True, time_base=base)
    code, out, _ = run(capsys, str(a), str(same))
    assert code == 0 and "no change (exact)" in out and "without statistics" in out
    code, out, _ = run(capsys, str(a), str(slower), "--json")
    assert code == 10
    pair = json.loads(out)["pairs"][0]
    assert pair["exact"] is True and pair["effect"]["ratio"] == pytest.approx(1.1)
    assert pair["effect"]["p"] is None


# --- sets of runs ---------------------------------------------------------------------


def _night(root: Path, scale: dict[str, float], seed: int) -> None:
    for i, (model, target) in enumerate(
        (("cbnet", "rpi4"), ("tinylut-s", "rpi4"), ("l2mu", "mcu-m4"))
    ):
        if model in scale:
            reps = repetitions(seed + i, 5, 100, scale[model])
            make_run(root, f"{model}-{target}", reps, model=model, target=target)


def test_nights_pair_by_model_and_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, new = tmp_path / "nightly" / "2026-11-20", tmp_path / "nightly" / "2026-11-21"
    _night(base, {"cbnet": 1.0, "tinylut-s": 1.0, "l2mu": 1.0}, 10)
    _night(new, {"cbnet": 1.0, "tinylut-s": 1.0}, 20)
    # Same model, different quant: a different model identity (only in new).
    make_run(new, "cbnet-int8", repetitions(3), model="cbnet", quant="int8")
    # A slow, failed-midway rerun of tinylut-s that is newer but partial must lose.
    make_run(
        new,
        "tinylut-s-retry",
        repetitions(4, scale=1.5),
        model="tinylut-s",
        status="partial",
        created="2099-01-01T00:00:00+0000",
    )
    code, out, err = run(
        capsys, "nightly/2026-11-20", "nightly/2026-11-21", "--results-dir", str(tmp_path), "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    pairs = {(p["model"], p["target"]): p for p in data["pairs"]}
    assert set(pairs) == {("cbnet:onnx", "rpi4"), ("tinylut-s:onnx", "rpi4")}
    assert pairs[("tinylut-s:onnx", "rpi4")]["new"]["run_id"] == "tinylut-s-rpi4"
    assert [u["model"] for u in data["only_base"]] == ["l2mu:onnx"]
    assert [u["model"] for u in data["only_new"]] == ["cbnet:onnx:int8"]
    assert all(p["effect"]["p_adjusted"] is not None for p in data["pairs"])
    code, out, err = run(capsys, str(base), str(new), "--fail-on-missing")
    assert code == 9 and "only in base: l2mu:onnx on mcu-m4" in out
    assert "2 run(s) without a counterpart" in err


def test_holm_keeps_a_marginal_pair_from_failing_a_night(tmp_path: Path) -> None:
    """Ten pairs; one is barely significant on its own. Corrected for ten tests it is not
    a regression any more: a night of many pairs is not a lottery."""
    settings = CompareSettings()
    base_runs, new_runs = [], []
    marginal = None
    for i in range(10):
        scale = 1.0
        between = 0.01
        if i == 0:
            scale, between = 1.08, 0.03
        b = make_run(tmp_path / "b", f"m{i}", repetitions(100 + i, between=between), model=f"m{i}")
        n = make_run(
            tmp_path / "n",
            f"m{i}",
            repetitions(200 + i, scale=scale, between=between),
            model=f"m{i}",
        )
        base_runs.append(load_run(b))
        new_runs.append(load_run(n))
        if i == 0:
            marginal = compare_runs(base_runs[-1], new_runs[-1], settings)
    assert marginal is not None and marginal.effect is not None and marginal.effect.p is not None
    night = compare_sets(base_runs, new_runs, settings)
    pair = next(p for p in night.pairs if p.model.startswith("m0"))
    assert pair.effect is not None and pair.effect.p_adjusted is not None
    assert marginal.verdict == "regression"  # alone: p = 0.006
    assert pair.effect.p_adjusted >= settings.alpha > pair.effect.p
    assert pair.verdict == "inconclusive" and not pair.regressions
    uncorrected = compare_sets(base_runs, new_runs, CompareSettings(correction="none"))
    assert sum(p.verdict == "regression" for p in night.pairs) <= sum(
        p.verdict == "regression" for p in uncorrected.pairs
    )


def test_a_baseline_of_several_nights_pools_their_repetitions(tmp_path: Path) -> None:
    nights = [
        load_run(make_run(tmp_path / f"n{i}", "cbnet", repetitions(300 + i, reps=3)))
        for i in range(3)
    ]
    new = load_run(make_run(tmp_path / "new", "cbnet", repetitions(400, reps=5)))
    result = compare_sets([nights[-1]], [new], baseline_groups=[[nights[0]], [nights[1]]])
    pair = result.pairs[0]
    assert pair.effect is not None and pair.effect.n_base == 9
    assert len(pair.base_runs) == 3
    assert pair.to_dict()["base"]["pooled_runs"] == [run.run_id for run in nights]


# --- energy, size, output -------------------------------------------------------------


def _energy(total: float, spread: float) -> dict[str, Any]:
    return {
        "total_mj": {"mean": total, "ci": [total - spread, total + spread]},
        "dynamic_mj": {"mean": total / 2, "ci": [total / 2 - spread, total / 2 + spread]},
        "estimate": False,
        "meter": "ina219",
    }


def test_energy_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", repetitions(1), energy=_energy(0.73, 0.01))
    b = make_run(tmp_path, "new", repetitions(2), energy=_energy(0.84, 0.01))
    code, out, err = run(capsys, str(a), str(b))
    assert code == 10 and "0.730 → 0.840 mJ ▲" in out
    assert "energy_total_mj" in err and "energy_dynamic_mj" in err
    # The same growth with wide, overlapping CIs is noise, not a regression.
    c = make_run(tmp_path, "noisy", repetitions(3), energy=_energy(0.84, 0.2))
    code, _, err = run(capsys, str(a), str(c))
    assert code == 0, err


def test_size_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", repetitions(1), size=100_000)
    b = make_run(tmp_path, "new", repetitions(2), size=112_000)
    code, out, err = run(capsys, str(a), str(b))
    assert code == 10 and "size 100.0 KB → 112.0 KB" in out
    assert "artifact_size" in err


def test_missing_run_exits_9(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", repetitions(1, reps=2))
    code, _, err = run(capsys, str(a), "nope", "--results-dir", str(tmp_path))
    assert code == 9
    assert err.startswith("error: no run 'nope'") and len(err.strip().splitlines()) == 1


def test_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "base", repetitions(1), energy=_energy(1.0, 0.01))
    b = make_run(tmp_path, "new", repetitions(2, scale=1.2), energy=_energy(1.0, 0.01))
    code, out, _ = run(capsys, str(a), str(b), "--json", "--alpha", "0.01")
    assert code == 10
    data = json.loads(out)
    assert data["regressions"] == 1 and data["undecided"] == 0
    assert data["verdicts"]["regression"] == 1
    assert data["settings"] == {
        "threshold": 0.05,
        "alpha": 0.01,
        "confidence": 0.99,
        "metric": "p50",
        "correction": "holm",
        "unit": "repetition",
    }
    pair = data["pairs"][0]
    assert set(pair) >= {
        "model", "target", "base", "new", "partial", "verdict", "reason", "exact", "effect",
        "latency", "energy", "size", "info", "regressions", "warnings", "notes",
    }  # fmt: skip
    assert pair["regressions"] == ["latency_p50"]
    effect = pair["effect"]
    assert effect["ratio"] == pytest.approx(1.2, rel=0.03) and effect["p"] < 0.01
    assert effect["ci"][0] > 1.05 and effect["confidence"] == 0.99
    assert effect["repetitions"] == {"base": 5, "new": 5}
    assert effect["minimum_detectable_change"] > 0
    lat = pair["latency"]
    assert lat["unit"] == "ms" and lat["before_ci"][0] <= lat["before"] <= lat["before_ci"][1]
    assert [m["name"] for m in pair["energy"]] == ["energy_total_mj", "energy_dynamic_mj"]
    assert [m["name"] for m in pair["info"]] == ["peak_rss"]


# --- aggregate-only runs (benchmark_model) -------------------------------------------


def make_aggregate_run(root: Path, run_id: str, means_ms: list[float]) -> Path:
    """A run as the Wear OS path writes it: no samples, one mean per benchmark_model
    process (its repetitions)."""
    from edgetool.results.stats import summarize_repetitions

    manifest: dict[str, Any] = {
        "target": {"name": "watch-wearos"},
        "artifact": {"name": "l2mu.tflite", "format": "tflite", "size": 1, "sha256": "0" * 64},
    }
    writer = RunWriter(root, run_id, RunManifest.from_dict(manifest))
    mean = sum(means_ms) / len(means_ms)
    latency = {
        "count": 100 * len(means_ms), "mean": mean, "std": 0.05, "min": mean - 0.1,
        "max": mean + 0.3, "p50": None, "p90": None, "p95": None, "p99": None,
        "p999": None, "median_ci": None, "aggregate_only": True, "source": "benchmark_model",
    }  # fmt: skip
    reps = summarize_repetitions(means_ms, "process").to_dict()
    summary = {"latency": latency, "count": 100, "aggregate_only": True, "repetitions": reps}
    writer.finish("complete", Summary.from_dict(summary))
    return writer.dir


def test_aggregate_only_runs_are_compared_by_their_repetition_means(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_aggregate_run(tmp_path, "2026-11-20-base", [2.00, 2.01, 1.99, 2.02, 2.00])
    same = make_aggregate_run(tmp_path, "2026-11-21-same", [2.01, 2.00, 2.00, 1.99, 2.01])
    code, out, err = run(capsys, "2026-11-20", str(same), "--results-dir", str(tmp_path))
    assert code == 0, err
    assert "no change" in out and "▲" not in out
    slower = make_aggregate_run(tmp_path, "2026-11-22-slow", [2.20, 2.21, 2.19, 2.22, 2.20])
    code, out, err = run(
        capsys, "2026-11-20", str(slower), "--results-dir", str(tmp_path), "--json"
    )
    assert code == 10, err
    pair = json.loads(out)["pairs"][0]
    assert pair["verdict"] == "regression" and pair["latency"]["name"] == "latency_p50"


def test_a_drifting_machine_is_judged_against_the_spread_of_several_base_runs(
    tmp_path: Path,
) -> None:
    """Five nights whose levels wander by a few percent while each run's repetitions are
    tight: one night against the next would call a 4 % wander a change; against the five
    the wander is what a night looks like."""
    levels = [1.00, 1.04, 0.98, 1.03, 0.99]
    nights = [
        load_run(
            make_run(tmp_path / f"n{i}", "cbnet", repetitions(500 + i, scale=lv, between=0.002))
        )
        for i, lv in enumerate(levels)
    ]
    new = load_run(
        make_run(tmp_path / "new", "cbnet", repetitions(600, scale=1.045, between=0.002))
    )
    alone = compare_runs(nights[-1], new)
    assert alone.verdict == "regression"  # 0.99 -> 1.045 looks like +5.6 %
    pooled = compare_runs(nights, new)
    assert pooled.effect is not None and pooled.effect.base_runs == 5
    assert "spread of 5 base runs" in pooled.effect.method
    assert pooled.verdict in ("no change", "inconclusive")
    assert pooled.effect.needed is None  # more repetitions cannot narrow a night-to-night spread
    slower = load_run(
        make_run(tmp_path / "slow", "cbnet", repetitions(601, scale=1.25, between=0.002))
    )
    assert compare_runs(nights, slower).verdict == "regression"
