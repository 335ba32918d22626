#!/usr/bin/env python3
"""Farm scheduling efficiency: 16 loopback devices × 8 jobs each, one `edgetool farm run`.

Every device is its own OpenSSH sshd on 127.0.0.1 (`LoopbackSshd`, keys in the scratch
dir). The ratio is the night's makespan over the ideal, the sum of every job's deploy
wall time divided by the number of devices: 1.0 would mean the workers never waited and
the per-device work (health check, places, scheduling) cost nothing. Job times are
measured in the same run, so a loaded machine slows both sides alike.

    python bench/bench_farm.py                 # 16 × 8, a few minutes on 2 busy cores
    python bench/bench_farm.py --devices 4 --jobs 4    # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import Result, scratch

from edgetool.emulate.sshd import LoopbackSshd

GOAL = 1.15
REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny-mlp"

TARGET = """description = "farm bench device {name} (loopback sshd)"
kind = "linux"
workdir = "edgetool-{name}"
runtimes = ["onnxruntime", "litert"]

[transport]
type = "ssh"
host = "127.0.0.1"
use_ssh_config = false

[emulator]
type = "sshd"
"""


def make_models(root: Path, jobs: int) -> list[Path]:
    """`jobs` distinct model files (copies of tiny-mlp, ONNX and TFLite alternating)."""
    out = root / "bench-models"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(jobs):
        suffix = ".onnx" if i % 2 == 0 else ".tflite"
        dest = out / f"m{i // 2}{suffix}"
        shutil.copyfile(TINY / f"tiny-mlp{suffix}", dest)
        files.append(dest)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=8, help="jobs per device")
    parser.add_argument("-n", "--iterations", type=int, default=100)
    parser.add_argument(
        "-d",
        "--duration",
        type=float,
        default=None,
        help="measure each job this many seconds instead of -n (measurement-dominated jobs)",
    )
    args = parser.parse_args(argv)
    names = [f"fb{i:02d}" for i in range(1, args.devices + 1)]
    with scratch() as root:
        targets = root / "targets"
        targets.mkdir(exist_ok=True)
        for name in names:
            (targets / f"{name}.toml").write_text(TARGET.format(name=name))
        models = make_models(root, args.jobs)
        plan = root / "bench-farm.toml"
        count = (
            f"duration = {args.duration}" if args.duration else f"iterations = {args.iterations}"
        )
        plan.write_text(
            'name = "bench-farm"\n'
            f"targets = {json.dumps(names)}\n"
            f"[run]\n{count}\nwarmup = 2\ntimeout = 600\n"
            + "".join(f'[[models]]\nname = "{m}"\n' for m in models)
        )
        sshds = [LoopbackSshd(name) for name in names]
        env = {**os.environ, "EDGETOOL_TARGETS": str(targets), "OMP_NUM_THREADS": "1"}
        try:
            for sshd in sshds:
                if sshd.start()["transport"]["host"] != "127.0.0.1":
                    raise SystemExit("loopback sshd not on 127.0.0.1")
            night = root / "night"
            print(f"farm: {args.devices} devices × {args.jobs} jobs …", flush=True)
            t0 = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "edgetool", "farm", "run", str(plan), "--out", str(night)],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.monotonic() - t0
        finally:
            for sshd in sshds:
                sshd.stop()
        summary = json.loads((night / "summary.json").read_text())
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
        jobs = summary["jobs"]
        job_s = [sum(a["seconds"] for a in job["attempt_log"]) for job in jobs]
        checks = [job["health_check_s"] or 0.0 for job in jobs]
        ideal = sum(job_s) / args.devices
        ideal_with_checks = (sum(job_s) + sum(checks)) / args.devices
        makespan = float(summary["execute_s"])  # first job start to last job end
        ratio = makespan / ideal
        per_slot: dict[str, float] = {}
        for job, seconds in zip(jobs, job_s, strict=True):
            slot = job["place"] or job["target"]
            per_slot[slot] = per_slot.get(slot, 0.0) + seconds
        print(
            f"  {summary['counts']}\n"
            f"  makespan {makespan:.1f} s (with outputs {summary['duration_s']:.1f} s, "
            f"process wall {wall:.1f} s), ideal {ideal:.1f} s "
            f"(sum of {len(job_s)} deploy times {sum(job_s):.1f} s / {args.devices})\n"
            f"  slowest device's own work {max(per_slot.values()):.1f} s; "
            f"mean job {sum(job_s) / len(job_s):.2f} s; mean health check "
            f"{sum(checks) / args.devices:.2f} s\n"
            f"  ratio {ratio:.3f} (goal ≤ {GOAL}); counting health checks as device work: "
            f"{makespan / ideal_with_checks:.3f}",
            flush=True,
        )
        Result(
            name="farm_makespan",
            ratio=ratio,
            goal=f"makespan / (sum of job times / devices) <= {GOAL}",
            met=ratio <= GOAL and summary["counts"]["passed"] == len(jobs),
            details={
                "devices": args.devices,
                "jobs_per_device": args.jobs,
                "iterations": None if args.duration else args.iterations,
                "duration": args.duration,
                "mean_health_check_s": sum(checks) / args.devices,
                "ratio_with_checks": makespan / ideal_with_checks,
                "makespan_s": makespan,
                "with_outputs_s": summary["duration_s"],
                "process_wall_s": wall,
                "ideal_s": ideal,
                "sum_job_s": sum(job_s),
                "slowest_device_work_s": max(per_slot.values()),
                "counts": summary["counts"],
                "cpus": os.cpu_count(),
            },
        ).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
