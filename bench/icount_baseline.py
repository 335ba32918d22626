#!/usr/bin/env python3
"""The CI performance gate on emulated Arm: the shipped models' instruction counts on the
emulated Pi (`rpi4-qemu-icount`) and the emulated Cortex-M4 (`mcu-m4-qemu`), both QEMU
`-icount shift=0`, against the baseline kept in bench/icount_baseline.json.

Instruction counts are reproducible (bench/RESULTS.md, "Instruction counts on the emulated
Pi"), so no statistics are needed: a model whose count moves up by more than the baseline's
tolerance (derived from the measured boot-to-boot spread) fails the check.

    python bench/icount_baseline.py            # check (exit 1 on a regression)
    python bench/icount_baseline.py --update   # measure and rewrite the baseline
    python bench/icount_baseline.py --model tiny-mlp=my.onnx   # a candidate in its place

Emulators already running are used and left running; others are started and stopped.
`rpi4-qemu-icount` boots `rpi4-qemu`'s provisioned disk: provision `rpi4-qemu` first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BASELINE = Path(__file__).with_name("icount_baseline.json")
# target -> model -> inferences per repetition (three repetitions each). Kept small: .ci/run
# runs this on every pull request.
PLAN: dict[str, dict[str, int]] = {
    "rpi4-qemu-icount": {"tiny-mlp": 30, "lenet": 10},
    "mcu-m4-qemu": {"cbnet-classifier": 20},
}
REPS = 3
STARTED_HERE = {"rpi4-qemu-icount"}
"""Booted by this script when not running; the M4's deploy boots its own firmware."""
TOLERANCE_PCT = 1.0
TOLERANCE_WHY = (
    "about 3x the worst spread of repetition medians (0.32 %) measured over 3 boots x 5 "
    "repetitions on rpi4-qemu-icount (bench/RESULTS.md); the M4 moves by one SysTick tick"
)


def edgetool(*args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "edgetool", *args, "--json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"edgetool {' '.join(args)} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def instructions(target: str, model: str, n: int) -> int:
    """The run estimate (geometric mean of repetition medians) in instructions."""
    run = edgetool("deploy", "-t", target, "-m", model, "-n", str(n), "-r", str(REPS))
    time_base = run["manifest"]["target"].get("time_base") or ""
    if not time_base.startswith("emulated instructions"):
        raise SystemExit(f"{target} does not count instructions (time base: {time_base!r})")
    return round(float(run["summary"]["repetitions"]["estimate_ms"]) * 1e6)


def measure(
    plan: Mapping[str, Mapping[str, int]], models: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    """Instruction counts of PLAN; MODELS maps a model name to what deploy runs instead."""
    out: dict[str, dict[str, int]] = {}
    for target, entries in plan.items():
        running = edgetool("emulate", "status", target)["status"] == "running"
        if not running and target in STARTED_HERE:
            edgetool("emulate", "start", target)
        try:
            for model, n in entries.items():
                count = instructions(target, models.get(model, model), n)
                out.setdefault(target, {})[model] = count
                print(f"{target:18} {model:18} {count:>14,} instructions", flush=True)
        finally:
            if not running:
                edgetool("emulate", "stop", target)
    return out


def check(baseline: Mapping[str, Any], measured: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One line per count that rose beyond the baseline's tolerance (an empty list passes)."""
    tolerance = float(baseline["tolerance_pct"])
    failures = []
    for target, models in measured.items():
        for model, count in models.items():
            before = baseline["counts"].get(target, {}).get(model)
            if before is None:
                failures.append(f"{model} on {target}: not in the baseline (run --update)")
                continue
            change = 100 * (count - before) / before
            if change > tolerance:
                failures.append(
                    f"{model} on {target}: {before:,} -> {count:,} instructions "
                    f"({change:+.2f} %, tolerance {tolerance:g} %)"
                )
            elif change < -tolerance:
                print(f"note: {model} on {target} got faster ({change:+.2f} %): "
                      "run --update to keep the gain")  # fmt: skip
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the baseline")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--only", action="append", default=[], metavar="TARGET:MODEL")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="deploy PATH where the plan names NAME (a candidate)")  # fmt: skip
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.model)
    plan = {t: dict(m) for t, m in PLAN.items()}
    if args.only:
        wanted = {tuple(item.split(":", 1)) for item in args.only}
        plan = {t: {m: n for m, n in e.items() if (t, m) in wanted} for t, e in plan.items()}
        plan = {t: e for t, e in plan.items() if e}
    measured = measure(plan, models)
    if args.update:
        record = {
            "tolerance_pct": TOLERANCE_PCT,
            "tolerance_why": TOLERANCE_WHY,
            "update": "python bench/icount_baseline.py --update",
            "counts": measured,
        }
        args.baseline.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.baseline}")
        return
    failures = check(json.loads(args.baseline.read_text()), measured)
    for line in failures:
        print(f"REGRESSION {line}")
    if failures:
        raise SystemExit(1)
    print("instruction counts within the baseline's tolerance")


if __name__ == "__main__":
    main()
