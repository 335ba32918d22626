#!/usr/bin/env python3
"""Runner overhead: p50 latency the on-device runner reports vs a bare onnxruntime loop.

Candidate: `python device_runner.py run --model mlp-1ms.onnx --threads 1 ...` as a local
subprocess; its "sample" events carry per-inference ns.
Baseline: in this process, an onnxruntime session with intra_op_num_threads=1 on the same
input (seed 0, as the runner draws it), timed as
`t0 = perf_counter_ns(); sess.run(None, feeds); t1 = perf_counter_ns()`.

Repetitions alternate bare, runner, bare, runner, ..., bare. Each runner p50 is divided by
the bare p50 just before it and the one just after it; ratio = the median of those
2 x reps ratios (a slow drift of the machine cancels out); goal <= 1.02.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import Result, bracketed, fmt, interleave, median, mlp_1ms_onnx, percentile, scratch

GOAL = 1.02


def runner_samples(model: Path, iterations: int, warmup: int) -> list[int]:
    from edgetool.runner import RUNNER_PATH

    argv = [
        sys.executable,
        str(RUNNER_PATH),
        "run",
        "--model",
        str(model),
        "--iterations",
        str(iterations),
        "--warmup",
        str(warmup),
        "--warmup-seconds",
        "0",
        "--threads",
        "1",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    samples: list[int] = []
    for line in proc.stdout.splitlines():
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == "sample":
            samples.extend(int(ns) for ns in event["ns"])
        elif event.get("event") == "error":
            raise SystemExit(f"runner failed: {event.get('message')}")
    if proc.returncode != 0 or len(samples) != iterations:
        raise SystemExit(
            f"runner exited {proc.returncode} with {len(samples)} samples: {proc.stderr[-500:]}"
        )
    return samples


def bare_samples(model: Path, iterations: int, warmup: int) -> list[int]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    spec = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
    # The runner's default input: np.random.default_rng(seed=0).uniform(-1, 1) as float32.
    feeds = {spec.name: np.random.default_rng(0).uniform(-1.0, 1.0, size=shape).astype(np.float32)}
    for _ in range(warmup + 1):  # +1: the runner's untimed "first inference"
        sess.run(None, feeds)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    for _ in range(iterations):
        t0 = clock()
        sess.run(None, feeds)
        append(clock() - t0)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10, help="ABAB repetitions [10]")
    parser.add_argument("--iterations", type=int, default=1000, help="timed per rep [1000]")
    parser.add_argument("--warmup", type=int, default=50, help="untimed per rep [50]")
    args = parser.parse_args(argv)

    with scratch() as root:
        model = mlp_1ms_onnx(root)
        print(
            f"runner overhead: {model.name}, {args.reps} x {args.iterations} inferences, threads=1",
            flush=True,
        )
        detail: dict[str, list[float]] = {
            "bare_p50_us": [],
            "runner_p50_us": [],
            "bare_p90_us": [],
            "runner_p90_us": [],
        }

        def bare(_: int) -> float:
            ns = bare_samples(model, args.iterations, args.warmup)
            detail["bare_p90_us"].append(percentile(ns, 90) / 1e3)
            p50 = percentile(ns, 50) / 1e3
            detail["bare_p50_us"].append(p50)
            return p50

        def runner(_: int) -> float:
            ns = runner_samples(model, args.iterations, args.warmup)
            detail["runner_p90_us"].append(percentile(ns, 90) / 1e3)
            p50 = percentile(ns, 50) / 1e3
            detail["runner_p50_us"].append(p50)
            return p50

        series = interleave(args.reps, {"bare": bare, "runner": runner}, "p50 us")
        base, cand = series["bare"], series["runner"]

    per_rep = bracketed(base, cand)
    ratio = median(per_rep)
    of_medians = median(cand) / median(base)
    print(f"bare   p50 median {median(base):8.1f} us  (reps: {fmt(base)})")
    print(f"runner p50 median {median(cand):8.1f} us  (reps: {fmt(cand)})")
    print(f"adjacent-pair ratios (runner / bare before, / bare after): {fmt(per_rep, 3)}")
    print(f"ratio of the medians: {of_medians:.4f}")
    print(
        f"RATIO runner/bare p50 = {ratio:.4f} (median of adjacent pairs)  (goal <= {GOAL})  "
        f"{'MET' if ratio <= GOAL else 'MISSED'}"
    )
    Result(
        name="runner_overhead",
        ratio=ratio,
        goal=f"<= {GOAL}",
        met=ratio <= GOAL,
        details={
            "bare_p50_us": median(base),
            "runner_p50_us": median(cand),
            "pair_ratios": per_rep,
            "ratio_of_medians": of_medians,
            "bare_p90_us": median(detail["bare_p90_us"]),
            "runner_p90_us": median(detail["runner_p90_us"]),
            "reps": args.reps,
            "iterations": args.iterations,
        },
    ).emit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
