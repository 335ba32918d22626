#!/usr/bin/env python3
"""Run the three edgetool benchmarks and print a summary table.

    python bench/run_all.py            # ~80 s on 2 idle cores
    python bench/run_all.py --quick    # fewer repetitions, for a smoke test
    python bench/run_all.py --explore  # also the SSH transport knob sweep (+~70 s)

Each benchmark runs as its own process against a loopback sshd on 127.0.0.1, with
EDGETOOL_STATE_DIR / EDGETOOL_CACHE_DIR / EDGETOOL_RESULTS in one scratch directory that
is deleted at the end (nothing of the user's edgetool state is touched).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULT_PREFIX, WORKDIR_ENV

HERE = Path(__file__).resolve().parent

BENCHES: list[tuple[str, list[str], list[str]]] = [
    # (script, normal args, --quick args)
    ("bench_runner_overhead.py", [], ["--reps", "4", "--iterations", "500"]),
    ("bench_ssh_push.py", [], ["--reps", "3"]),
    ("bench_deploy_wall.py", [], ["--reps", "3"]),
]


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds` (from /proc/stat), 0..1; -1 if unknown."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return -1.0
    total = total1 - total0
    return 1.0 - (idle1 - idle0) / total if total else -1.0


def wait_for_idle(limit: float, threshold: float = 0.15) -> float:
    """Wait (up to `limit` s) until other processes leave the CPUs mostly idle."""
    deadline = time.monotonic() + limit
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        print(f"  machine busy ({busy:.0%} CPU used by others); waiting...", flush=True)
        busy = cpu_busy(5.0)
    return busy


def version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "missing"
    return str(getattr(mod, "__version__", "?"))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "paramiko": version("paramiko"),
        "cryptography": version("cryptography"),
        "numpy": version("numpy"),
        "openssh": (ssh.stderr or ssh.stdout).strip(),
    }


def run_one(
    script: str, extra: list[str], env: dict[str, str]
) -> tuple[bool, dict[str, Any] | None]:
    """Run one bench script, echoing its output; (exited 0, its BENCH_RESULT if any)."""
    argv = [sys.executable, str(HERE / script), *extra]
    print(f"\n=== {' '.join([Path(argv[1]).name, *extra])}", flush=True)
    result: dict[str, Any] | None = None
    start = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
            else:
                print(line, end="", flush=True)
    if proc.returncode != 0:
        print(f"!!! {script} exited with status {proc.returncode}", flush=True)
        return False, None
    if result is not None:
        result["seconds"] = time.perf_counter() - start
    return True, result


def summary_rows(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for r in results:
        d = r["details"]
        if r["name"] == "runner_overhead":
            absolute = f"p50 runner {d['runner_p50_us']:.0f} us vs bare {d['bare_p50_us']:.0f} us"
            meaning = "runner p50 / bare onnxruntime p50"
        elif r["name"] == "ssh_push":
            mbps = d["mb_per_s"]
            absolute = (
                f"put {mbps['put']:.0f} MB/s, scp {mbps['scp']:.0f} MB/s, "
                f"upload-only {mbps['upload']:.0f} MB/s"
            )
            meaning = "put throughput / scp throughput"
        else:
            med = d["median_s"]
            absolute = f"deploy {med['edgetool']:.2f} s vs manual {med['manual']:.2f} s"
            meaning = "deploy wall / manual scp+ssh wall"
        verdict = "MET" if r["met"] else "MISSED"
        rows.append((r["name"], meaning, f"{r['ratio']:.3f}", f"{r['goal']} {verdict}", absolute))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--explore", action="store_true", help="also the SSH option sweep")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=120.0,
        metavar="S",
        help="wait up to S seconds for the machine to be idle before each bench [120]",
    )
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    args = parser.parse_args(argv)

    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="edgetool-bench-"))
    env = {
        **os.environ,
        WORKDIR_ENV: str(workdir),
        "EDGETOOL_STATE_DIR": str(workdir / "state"),
        "EDGETOOL_CACHE_DIR": str(workdir / "cache"),
        "EDGETOOL_RESULTS": str(workdir / "results"),
    }
    results: list[dict[str, Any]] = []
    failures = 0
    started = time.perf_counter()
    try:
        plan = [(s, quick if args.quick else normal) for s, normal, quick in BENCHES]
        if args.explore:
            plan.append(("bench_ssh_push.py", ["--explore", "--reps", "3" if args.quick else "5"]))
        for script, extra in plan:
            busy = wait_for_idle(args.wait_idle)
            ok, result = run_one(script, extra, env)
            failures += 0 if ok else 1
            if result is not None:
                result["background_cpu_busy"] = busy
                # Others' load right after: a hint that they were busy *during* the bench.
                result["background_cpu_busy_after"] = cpu_busy()
                results.append(result)
    finally:
        # Belt and braces: the scripts stop the sshd they start; make sure it is gone.
        os.environ["EDGETOOL_STATE_DIR"] = env["EDGETOOL_STATE_DIR"]
        from edgetool.emulate.sshd import LoopbackSshd

        LoopbackSshd("loopback").stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = summary_rows(results)
    header = ("bench", "ratio means", "ratio", "goal", "absolute (medians)")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n=== summary ({time.perf_counter() - started:.0f} s)")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
    for r in results:
        d = r["details"]
        if r["name"] == "ssh_push":
            steps = ", ".join(f"{k} {v:.0f}" for k, v in d["put_steps_ms"].items())
            print(f"ssh_push put steps (ms): {steps}")
            print(
                f"ssh_push bare SFTP upload vs scp (scp incl. handshake): "
                f"{d['ratios_vs_scp']['upload']:.3f}; connect+put vs scp: "
                f"{d['ratios_vs_scp']['connect+put']:.3f}"
            )
        if r["name"] == "deploy_wall":
            med = d["median_s"]
            print(
                f"deploy_wall references: edgetool --version {med['edgetool --version']:.3f} s, "
                f"ssh true {med['ssh true']:.3f} s"
            )
    for r in results:
        busy = r.get("background_cpu_busy", -1)
        if busy > 0.15:
            print(f"note: {r['name']} started while the machine was {busy:.0%} busy")
        after = r.get("background_cpu_busy_after", -1)
        if after > 0.15:
            print(f"note: right after {r['name']} the machine was {after:.0%} busy")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 1 if failures or len(results) < len(BENCHES) else 0


if __name__ == "__main__":
    sys.exit(main())
