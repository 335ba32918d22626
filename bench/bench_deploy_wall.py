#!/usr/bin/env python3
"""Deploy wall time on a warm target: `edgetool deploy` vs doing the same work by hand.

Candidate: `edgetool deploy --target loopback --model mlp-1ms.onnx -n 200 --warmup 10
--warmup-seconds 0 --repeat 1 -q` (one runner process, the same work as the baseline),
with the runner and model already on the device (one probe command
hashes both on the device and both pushes are skipped), timed end to end as a subprocess.
Baseline: `scp runner model user@127.0.0.1:DIR/` then `ssh user@127.0.0.1 PYTHON
DIR/device_runner.py run --model DIR/mlp-1ms.onnx --iterations 200 --warmup 10`, the
same work without edgetool (two OpenSSH connections; scp re-sends both files every time).

Repetitions alternate manual, deploy, ..., manual; each deploy time is divided by the
manual run just before and the one just after it; ratio = the median of those 2 x reps
ratios; goal <= 1.2.
Two reference arms are timed in the same loop to explain the numbers: `edgetool --version`
(CLI start-up) and `ssh ... true` (one OpenSSH connection + one remote command).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    Result,
    arm_ratios,
    fmt,
    interleave,
    loopback,
    median,
    mlp_1ms_onnx,
    scratch,
    ssh_dest,
    ssh_options,
    tool,
)

GOAL = 1.2


def timed(argv: list[str], what: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return seconds, proc.stdout


def count_samples(stdout: str) -> int:
    count = 0
    for line in stdout.splitlines():
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == "sample":
            count += len(event["ns"])
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="ABAB repetitions [7]")
    parser.add_argument("-n", "--iterations", type=int, default=200, help="timed runs [200]")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs [10]")
    args = parser.parse_args(argv)

    from edgetool.runner import RUNNER_PATH

    with scratch() as root, loopback() as state:
        model = mlp_1ms_onnx(root)
        edgetool = tool("edgetool")
        deploy = [
            edgetool,
            "deploy",
            "--target",
            "loopback",
            "--model",
            str(model),
            "-n",
            str(args.iterations),
            "--warmup",
            str(args.warmup),
            "--warmup-seconds",
            "0",
            "--repeat",
            "1",
            "-q",
        ]
        manual_dir = state["workdir"] + "/manual"
        remote_runner = f"{manual_dir}/{RUNNER_PATH.name}"
        remote_model = f"{manual_dir}/{model.name}"
        scp = [
            "scp",
            "-q",
            *ssh_options(state, "-P"),
            str(RUNNER_PATH),
            str(model),
            f"{ssh_dest(state)}:{manual_dir}/",
        ]
        run_cmd = shlex.join(
            [
                state["python"],
                remote_runner,
                "run",
                "--model",
                remote_model,
                "--iterations",
                str(args.iterations),
                "--warmup",
                str(args.warmup),
            ]
        )
        ssh = ["ssh", *ssh_options(state, "-p"), ssh_dest(state)]
        print(
            f"deploy wall: {model.name}, -n {args.iterations} --warmup {args.warmup}, "
            f"{args.reps} reps, {edgetool}",
            flush=True,
        )

        # Untimed: make the target warm (runner + model on the device) and warm both paths.
        timed([*ssh, shlex.join(["mkdir", "-p", manual_dir])], "ssh mkdir")
        timed(deploy, "edgetool deploy (warm-up)")
        timed(scp, "scp (warm-up)")
        timed([*ssh, run_cmd], "ssh runner (warm-up)")

        manual_parts: dict[str, list[float]] = {"scp": [], "ssh run": []}

        def manual(_: int) -> float:
            copy_s, _out = timed(scp, "scp runner + model")
            run_s, out = timed([*ssh, run_cmd], "ssh runner")
            manual_parts["scp"].append(copy_s)
            manual_parts["ssh run"].append(run_s)
            if count_samples(out) != args.iterations:
                raise SystemExit("manual run returned the wrong number of samples")
            return copy_s + run_s

        def edgetool_deploy(_: int) -> float:
            seconds, out = timed(deploy, "edgetool deploy")
            run_dir = Path(out.strip().splitlines()[-1])
            manifest = json.loads((run_dir / "manifest.json").read_text())
            if manifest.get("status") != "complete":
                raise SystemExit(f"deploy ended {manifest.get('status')}: {run_dir}")
            return seconds

        def cli_startup(_: int) -> float:
            return timed([edgetool, "--version"], "edgetool --version")[0]

        def ssh_true(_: int) -> float:
            return timed([*ssh, "true"], "ssh true")[0]

        series = interleave(
            args.reps,
            {
                "manual": manual,
                "edgetool": edgetool_deploy,
                "edgetool --version": cli_startup,
                "ssh true": ssh_true,
            },
            "seconds",
        )

    med = {name: median(values) for name, values in series.items()}
    ratios = arm_ratios(series, "manual")
    ratio = ratios["edgetool"]
    print(f"\n{'arm':<20}{'median s':>10}{'vs manual':>11}   reps (s)")
    for name, values in series.items():
        vs = f"{ratios[name]:>11.3f}" if name in ratios else f"{'1':>11}"
        print(f"{name:<20}{med[name]:>10.3f}{vs}   {fmt(values, 3)}")
    print(
        "(vs manual = median of arm s / manual s over each arm run and the manual runs around it)"
    )
    parts = {name: median(values) for name, values in manual_parts.items()}
    print("manual = " + " + ".join(f"{name} {seconds:.3f} s" for name, seconds in parts.items()))
    print(
        f"\nRATIO deploy/manual wall = {ratio:.3f}  (goal <= {GOAL})  "
        f"{'MET' if ratio <= GOAL else 'MISSED'}"
    )
    Result(
        name="deploy_wall",
        ratio=ratio,
        goal=f"<= {GOAL}",
        met=ratio <= GOAL,
        details={
            "reps": args.reps,
            "iterations": args.iterations,
            "median_s": med,
            "series_s": series,
            "ratios_vs_manual": ratios,
            "manual_parts_s": parts,
        },
    ).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
