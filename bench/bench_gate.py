#!/usr/bin/env python3
"""Can a nightly gate trust `edgetool results compare`? False alarms and detection power.

(a) A/A: `edgetool deploy -m MODEL` with default settings, --runs times back to back (fresh
    processes, as a user runs it), for a ~7 us model (tiny-mlp) and a ~1 ms one (mlp-1ms,
    a matmul chain). Every consecutive pair, and every pair, is compared: a verdict of
    regression or improvement is a false alarm. Rate with a Wilson 95 % interval.
    Also: how often a run's printed 95 % CI covers the run-to-run truth (the median of
    all the runs' estimates).
(b) A/A through `edgetool ab -m MODEL -m MODEL` (alternating repetitions), --ab times.
(c) Replays of the real per-repetition medians of (a): an injected +5 % / +10 % slowdown
    on the new run, with 5 and with 10 repetitions a side (two consecutive runs joined),
    and a 3 % linear drift over the session, back to back vs interleaved ABBA: how often
    the verdict is regression.
(d) 20 replayed nights of 10 A/A pairs drawn from (a), Holm-corrected as `farm run` does:
    how many nights fail.
(e) Each run of (a) against a baseline of the 5 runs before it (as `farm run` with
    baseline_nights = 5): false alarms, and +10 % detected.

Goals (issue 18): false alarms <= 5 %; +10 % detected >= 90 %; +5 % >= 80 % with 10
repetitions; nights falsely failed <= 1 in 20.

    python bench/bench_gate.py                 # ~15 min on a 2-core machine
    python bench/bench_gate.py --runs 11 --ab 5  # a quick look
    python bench/bench_gate.py --keep g.json     # save what was measured ...
    python bench/bench_gate.py --replay g.json   # ... and analyse it again
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import RESULT_PREFIX, mlp_1ms_onnx, scratch

from edgetool.results.compare import CompareSettings, compare_runs, compare_sets
from edgetool.results.store import Run, load_run

FALSE_ALARM = ("regression", "improvement")


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(hits: int, n: int) -> str:
    lo, hi = wilson(hits, n)
    return f"{hits}/{n} = {100 * hits / n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]" if n else "—"


def edgetool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgetool", *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def deploy_runs(model: str, count: int) -> list[Run]:
    runs = []
    for i in range(count):
        out = edgetool("deploy", "-m", model, "-q")
        if out.returncode != 0:
            raise SystemExit(f"deploy failed: {out.stderr.strip()}")
        runs.append(load_run(Path(out.stdout.strip().splitlines()[-1])))
        print(f"  {model}: run {i + 1}/{count}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return runs


def ab_verdicts(model: str, count: int) -> list[str]:
    verdicts = []
    for i in range(count):
        out = edgetool("ab", "-m", model, "-m", model, "--json")
        if out.returncode not in (0, 10, 13):
            raise SystemExit(f"ab failed: {out.stderr.strip()}")
        verdicts.append(json.loads(out.stdout)["pairs"][0]["verdict"])
        print(f"  {model}: ab {i + 1}/{count}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return verdicts


def medians(run: Run) -> list[float]:
    return [float(v) for v in (run.summary or {})["repetitions"]["medians_ms"]]


def replay(values: Sequence[float], name: str = "m") -> Run:
    """An in-memory run holding only repetition medians (what compare reads)."""
    manifest = {
        "run_id": name,
        "status": "complete",
        "target": {"name": "local"},
        "artifact": {"name": f"{name}.onnx", "format": "onnx"},
    }
    summary = {"repetitions": {"medians_ms": list(values)}}
    return Run(Path(name), manifest, [], summary)


def verdict(base: Sequence[float], new: Sequence[float]) -> str:
    return compare_runs(replay(base), replay(new)).verdict


def drifted(values: Sequence[float], times: Sequence[int], total: int, drift: float) -> list[float]:
    """Each repetition slowed by a drift growing linearly over the session's slots."""
    return [v * (1 + drift * t / max(total - 1, 1)) for v, t in zip(values, times, strict=True)]


def analyse(model: str, runs: list[Run], ab: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "runs": len(runs)}
    estimates = [float(r.summary["repetitions"]["estimate_ms"]) for r in runs if r.summary]
    truth = sorted(estimates)[len(estimates) // 2]
    covered = sum(
        1
        for r in runs
        if (ci := (r.summary or {})["repetitions"]["ci"]) and ci[0] <= truth <= ci[1]
    )
    out["estimate_ms_median"] = truth
    out["estimate_spread"] = (max(estimates) - min(estimates)) / truth
    out["ci_coverage"] = (covered, len(runs))
    consecutive = [compare_runs(a, b).verdict for a, b in itertools.pairwise(runs)]
    every = [compare_runs(a, b).verdict for a, b in itertools.combinations(runs, 2)]
    out["aa_consecutive"] = (sum(v in FALSE_ALARM for v in consecutive), len(consecutive))
    out["aa_all_pairs"] = (sum(v in FALSE_ALARM for v in every), len(every))
    out["aa_inconclusive"] = (consecutive.count("inconclusive"), len(consecutive))
    out["ab"] = (sum(v in FALSE_ALARM for v in ab), len(ab))
    out["ab_inconclusive"] = (ab.count("inconclusive"), len(ab))
    reps = [medians(r) for r in runs]
    pairs5 = list(itertools.pairwise(reps))
    joined = [a + b for a, b in zip(reps[::2], reps[1::2], strict=False)]
    pairs10 = list(itertools.pairwise(joined))
    for label, pairs in (("r5", pairs5), ("r10", pairs10)):
        for effect in (0.05, 0.10):
            hits = sum(verdict(b, [v * (1 + effect) for v in n]) == "regression" for b, n in pairs)
            out[f"detect_{int(100 * effect)}_{label}"] = (hits, len(pairs))
    # A baseline of the previous K runs (as the farm's baseline_nights = K): its spread
    # between runs enters the comparison; A/A false alarms and +10 % detection.
    k = 5
    for effect in (0.0, 0.10):
        hits, total = 0, 0
        for i in range(k, len(runs)):
            new = replay([v * (1 + effect) for v in reps[i]])
            got = compare_runs([replay(r) for r in reps[i - k : i]], new).verdict
            hits += got == "regression" if effect else got in FALSE_ALARM
            total += 1
        out[f"baseline{k}_{int(100 * effect)}"] = (hits, total)
    # A 3 % drift over the session: back to back (base first, then new) vs ABBA blocks.
    for effect in (0.0, 0.10):
        for order in ("back-to-back", "interleaved"):
            hits = 0
            for b, n in pairs5:
                r = len(b)
                if order == "back-to-back":
                    tb, tn = list(range(r)), list(range(r, 2 * r))
                else:  # blocks AB, BA, AB, ...: base first in even blocks
                    tb = [2 * i + (i % 2) for i in range(r)]
                    tn = [2 * i + 1 - (i % 2) for i in range(r)]
                base = drifted(b, tb, 2 * r, 0.03)
                new = drifted([v * (1 + effect) for v in n], tn, 2 * r, 0.03)
                wanted = "regression" if effect else None
                got = verdict(base, new)
                hits += got == wanted if wanted else got in FALSE_ALARM
            out[f"drift3_{int(100 * effect)}_{order}"] = (hits, len(pairs5))
    return out


def nights(all_runs: dict[str, list[Run]], count: int = 20, size: int = 10) -> tuple[int, int]:
    """Replayed A/A nights of `size` pairs drawn from real consecutive pairs."""
    pool = [(model, a, b) for model, runs in all_runs.items() for a, b in itertools.pairwise(runs)]
    rng = random.Random(18)
    failed = 0
    for _ in range(count):
        chosen = rng.sample(pool, min(size, len(pool)))
        base, new = [], []
        for i, (model, a, b) in enumerate(chosen):
            name = f"{model}-{i}"  # ten distinct pairs, as ten models of a plan
            base.append(replay(medians(a), name))
            new.append(replay(medians(b), name))
        result = compare_sets(base, new, CompareSettings())
        failed += result.regressions > 0
    return failed, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=31, help="A/A deploys per model")
    parser.add_argument("--ab", type=int, default=30, help="A/A `edgetool ab` per model")
    parser.add_argument("--models", default="tiny-mlp,mlp-1ms")
    parser.add_argument(
        "--keep", type=Path, help="Save the runs' repetition medians and ab verdicts here."
    )
    parser.add_argument(
        "--replay", type=Path, help="Analyse what --keep saved instead of measuring again."
    )
    args = parser.parse_args()
    started = time.time()
    report: dict[str, Any] = {"bench": "gate", "models": []}
    all_runs: dict[str, list[Run]] = {}
    measured: dict[str, Any] = {}
    if args.replay:
        measured = json.loads(args.replay.read_text())
    else:
        with scratch() as root:
            for name in args.models.split(","):
                model = str(mlp_1ms_onnx(root)) if name == "mlp-1ms" else name
                print(f"(a) {args.runs} deploys of {name}", file=sys.stderr)
                runs = deploy_runs(model, args.runs)
                print(f"(b) {args.ab} ab runs of {name}", file=sys.stderr)
                ab = ab_verdicts(model, args.ab) if args.ab else []
                measured[name] = {"runs": [r.summary for r in runs], "ab": ab}
    if args.keep:
        args.keep.write_text(json.dumps(measured))
    for name, data in measured.items():
        runs = [
            Run(Path(f"{name}-{i}"), {"run_id": f"{name}-{i}", "status": "complete"}, [], summary)
            for i, summary in enumerate(data["runs"])
        ]
        all_runs[name] = runs
        report["models"].append(analyse(name, runs, data["ab"]))
    report["nights"] = nights(all_runs)
    report["seconds"] = round(time.time() - started)
    for m in report["models"]:
        estimate = 1000 * m["estimate_ms_median"]
        spread = 100 * m["estimate_spread"]
        print(f"\n{m['model']}: {m['runs']} runs, estimate {estimate:.2f} us, range {spread:.1f} %")
        print(f"  (a) false alarms, consecutive pairs   {rate(*m['aa_consecutive'])}")
        print(f"      false alarms, all pairs           {rate(*m['aa_all_pairs'])}")
        print(f"      inconclusive, consecutive pairs   {rate(*m['aa_inconclusive'])}")
        print(f"      run CI covers run-to-run median   {rate(*m['ci_coverage'])}")
        print(f"  (b) false alarms through ab           {rate(*m['ab'])}")
        print(f"      inconclusive through ab           {rate(*m['ab_inconclusive'])}")
        for r in ("r5", "r10"):
            for e in (5, 10):
                label = f"+{e} % detected, {r[1:]} reps a side"
                print(f"  (c) {label:<34}{rate(*m[f'detect_{e}_{r}'])}")
        print(f"  (e) baseline of 5 runs, false alarms     {rate(*m['baseline5_0'])}")
        print(f"      baseline of 5 runs, +10 % detected   {rate(*m['baseline5_10'])}")
        for e, what in ((0, "false alarms"), (10, "+10 % detected")):
            for order in ("back-to-back", "interleaved"):
                label = f"3 % drift, {what}, {order}"
                print(f"      {label:<42}{rate(*m[f'drift3_{e}_{order}'])}")
    print(f"\n(d) replayed A/A nights of 10 pairs failed: {rate(*report['nights'])}")
    print(f"\n{report['seconds']} s")
    print(RESULT_PREFIX + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
