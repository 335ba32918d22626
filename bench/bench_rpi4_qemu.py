#!/usr/bin/env python3
"""The emulated Raspberry Pi 4 (issue 8): what its image, boot and provisioning cost, and
how far its latencies are from this host's (the emulation factor, so nobody reads a QEMU
number as a Pi number).

Uses the cached image and wheels (`edgetool emulate build rpi4-qemu`, `edgetool provision
--target rpi4-qemu --fetch-only`; both need the registries, so run them first); state,
overlay and results live in a scratch dir. `--cold-build` builds a new image into the
scratch cache instead (needs Debian's registry, ~6 min).

    python bench/bench_rpi4_qemu.py            # ~6 min: boot, provision x2, deploys
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import Result, scratch

from edgetool import paths

REAL_CACHE = paths.cache_dir()
TARGET = "rpi4-qemu"


def edgetool(*args: str) -> tuple[float, Any]:
    """Run the CLI with --json; (wall seconds, parsed output)."""
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "edgetool", *args, "--json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"edgetool {' '.join(args)} failed: {proc.stderr.strip()[-400:]}")
    return seconds, json.loads(proc.stdout)


def p50(run: dict[str, Any]) -> float:
    return float(run["summary"]["latency"]["p50"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-build", action="store_true")
    parser.add_argument("-n", type=int, default=300, help="inferences per deploy")
    args = parser.parse_args()
    with scratch() as root:
        cache = Path(os.environ["EDGETOOL_CACHE_DIR"])
        cache.mkdir(parents=True, exist_ok=True)
        shared = ("wheels",) if args.cold_build else ("images", "wheels")
        for name in shared:
            (REAL_CACHE / name).mkdir(parents=True, exist_ok=True)
            (cache / name).symlink_to(REAL_CACHE / name)
        _, image = edgetool("emulate", "build", TARGET)
        boot_wall, state = edgetool("emulate", "start", TARGET)
        try:
            provision_cold, _ = edgetool("provision", "--target", TARGET)
            provision_warm, again = edgetool("provision", "--target", TARGET)
            assert again["nothing_to_do"], again
            runs: dict[str, list[float]] = {"emulated": [], "host": []}
            for model in ("tiny-mlp", "tiny-mlp:tflite"):
                for _ in range(2):  # ABAB: the host's load drifts
                    for where, target in (("emulated", TARGET), ("host", "local")):
                        _, run = edgetool("deploy", "-t", target, "-m", model, "-n", str(args.n))
                        runs[where].append(p50(run))
                        print(f"{model:16} {where:9} p50 {p50(run):8.3f} ms", flush=True)
        finally:
            subprocess.run([sys.executable, "-m", "edgetool", "emulate", "stop", TARGET],
                           capture_output=True, check=False)  # fmt: skip
        ratios = [e / h for e, h in zip(runs["emulated"], runs["host"], strict=True)]
        print()
        print(f"image build   {image['build_seconds']:7.0f} s "
              f"({'this run' if not image['cached'] else 'recorded when the cache was built'}; "
              f"qcow2 {image['qcow2_bytes'] / 2**20:.0f} MiB)")  # fmt: skip
        print(f"boot to SSH   {state['boot_seconds']:7.1f} s  (CLI wall {boot_wall:.1f} s)")
        print(f"provision     {provision_cold:7.1f} s  cold (wheels pushed and installed)")
        print(f"provision     {provision_warm:7.1f} s  again (nothing to do)")
        print(f"emulated / host p50: {', '.join(f'{r:.1f}' for r in ratios)}")
        Result(
            "rpi4_qemu",
            min(ratios),
            "reported (no goal): emulated p50 / host p50",
            True,
            {
                "build_seconds": image["build_seconds"],
                "boot_seconds": state["boot_seconds"],
                "provision_cold_s": round(provision_cold, 1),
                "provision_warm_s": round(provision_warm, 1),
                "emulated_over_host_p50": [round(r, 2) for r in ratios],
                "scratch": str(root),
            },
        ).emit()


if __name__ == "__main__":
    main()
