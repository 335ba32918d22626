#!/usr/bin/env python3
"""Instruction counts on the emulated Pi (issue 23): how reproducible they are from boot to
boot and from process to process, against the wall-clock spread of the plain `rpi4-qemu`,
and the seeds' Arm ratios in this unit (TinyLUT-S x4 / FSRCNN x4, CBNet / LeNet).

BOOTS boots of `rpi4-qemu-icount` x REPS repetitions (fresh runner processes) of each model;
the spread is (max - min) / median of the BOOTS x REPS repetition medians, in instructions.
The plain `rpi4-qemu` (4 cores, wall clock of the emulator) runs the same models once
(one boot, REPS repetitions) on the boot that provisions it. FSRCNN and TinyLUT run at a
32x32 input (`edgetool export --input-shape 1,1,32,32`): at 128x128 one FSRCNN inference
costs minutes under emulation.

Uses the cached image and wheels (`edgetool emulate build rpi4-qemu`, `edgetool provision
--target rpi4-qemu --fetch-only`); state, overlays, exports and results live in a scratch dir.

    python bench/bench_icount.py                     # ~20 min: 3 boots x 5 repetitions
    python bench/bench_icount.py --boots 5 --reps 5  # the issue's full design (~35 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import Result, scratch
from icount_baseline import edgetool

from edgetool import paths

REAL_CACHE = paths.cache_dir()
PLAIN = "rpi4-qemu"
ICOUNT = "rpi4-qemu-icount"
SMALL = "1,1,32,32"
# model (a zoo name, or a zoo name exported at SMALL) -> inferences per repetition
MODELS = {"tiny-mlp": 50, "lenet": 20, "cbnet": 20, "fsrcnn-x4@32": 3, "tinylut-s-x4@32": 3}


def stop(target: str) -> None:
    subprocess.run([sys.executable, "-m", "edgetool", "emulate", "stop", target],
                   capture_output=True, check=False)  # fmt: skip


def model_args(root: Path) -> dict[str, str]:
    """What `deploy --model` takes for each entry of MODELS."""
    out = {}
    for name in MODELS:
        if "@" in name:
            zoo = name.split("@")[0]
            path = root / f"{zoo}-32.onnx"
            if not path.is_file():
                edgetool("export", zoo, "--format", "onnx", "--input-shape", SMALL, "-o", str(path))
            out[name] = str(path)
        else:
            out[name] = name
    return out


def medians(target: str, models: dict[str, str], reps: int) -> dict[str, list[float]]:
    """Repetition medians (ms of the target's clock) of every model, one deploy each."""
    out: dict[str, list[float]] = {}
    for name, model in models.items():
        run = edgetool(
            "deploy", "-t", target, "-m", model, "-n", str(MODELS[name]), "-r", str(reps)
        )
        out[name] = [float(m) for m in run["summary"]["repetitions"]["medians_ms"]]
        print(f"  {target:17} {name:16} {', '.join(f'{m:.6g}' for m in out[name])} ms",
              flush=True)  # fmt: skip
    return out


def spread(values: list[float]) -> float:
    """(max - min) / median, in percent."""
    return 100 * (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with scratch() as root:
        cache = Path(os.environ["EDGETOOL_CACHE_DIR"])
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("images", "wheels"):
            (REAL_CACHE / name).mkdir(parents=True, exist_ok=True)
            (cache / name).symlink_to(REAL_CACHE / name)
        models = model_args(root)
        edgetool("emulate", "start", PLAIN)
        try:
            edgetool("provision", "--target", PLAIN)
            wall = medians(PLAIN, models, args.reps)
        finally:
            stop(PLAIN)
        boots: list[dict[str, list[float]]] = []
        for boot in range(args.boots):
            state = edgetool("emulate", "start", ICOUNT, "--fresh")
            print(f"boot {boot + 1}: {state['boot_seconds']} s", flush=True)
            try:
                boots.append(medians(ICOUNT, models, args.reps))
            finally:
                stop(ICOUNT)
        print(f"\n{args.boots} boots x {args.reps} repetitions; spread = (max - min) / median "
              "of the repetition medians")  # fmt: skip
        print(f"{'model':16} {'median instr':>14} {'icount spread':>14} {'boot-to-boot':>13} "
              f"{'wall median':>12} {'wall spread':>12}")  # fmt: skip
        details: dict[str, Any] = {"boots": args.boots, "reps": args.reps, "models": {}}
        worst = 0.0
        for name in MODELS:
            counts = [m * 1e6 for boot in boots for m in boot[name]]  # ms of guest clock -> instr
            per_boot = [statistics.median(boot[name]) * 1e6 for boot in boots]
            row = {
                "median_instructions": statistics.median(counts),
                "icount_spread_pct": spread(counts),
                "boot_to_boot_pct": spread(per_boot),
                "wall_median_ms": statistics.median(wall[name]),
                "wall_spread_pct": spread(wall[name]),
            }
            details["models"][name] = row
            worst = max(worst, row["icount_spread_pct"])
            print(f"{name:16} {row['median_instructions']:14,.0f} "
                  f"{row['icount_spread_pct']:13.3f}% {row['boot_to_boot_pct']:12.3f}% "
                  f"{row['wall_median_ms']:10.3f} ms {row['wall_spread_pct']:11.1f}%")  # fmt: skip
        rows = details["models"]

        def ratio(a: str, b: str, key: str) -> float:
            return float(rows[a][key] / rows[b][key])

        details["ratios"] = {
            "tinylut_over_fsrcnn_instr": ratio("tinylut-s-x4@32", "fsrcnn-x4@32",
                                               "median_instructions"),
            "tinylut_over_fsrcnn_wall": ratio("tinylut-s-x4@32", "fsrcnn-x4@32", "wall_median_ms"),
            "cbnet_over_lenet_instr": ratio("cbnet", "lenet", "median_instructions"),
            "cbnet_over_lenet_wall": ratio("cbnet", "lenet", "wall_median_ms"),
        }  # fmt: skip
        print("\nratios (emulated Cortex-A72):")
        for key, value in details["ratios"].items():
            print(f"  {key:28} {value:.3f}")
        Result(
            "icount_determinism",
            worst,
            "worst spread of repetition medians <= 0.5 % (instructions)",
            worst <= 0.5,
            details,
        ).emit()


if __name__ == "__main__":
    main()
