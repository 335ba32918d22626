#!/usr/bin/env python3
"""Deploys through a bit-flipping serial link (issue 19 D7/D16): the emulated Cortex-M4
(QEMU mps2-an386, protocol-only firmware) behind edgetool.testing.noisy_link flipping
bits both ways, `edgetool deploy` run N times against it. Counts complete runs, command
retries and damaged lines caught, and checks every sample of every complete run against
the clean link's tick range (-icount: each inference costs the same ticks, ±1 SysTick).

    python bench/bench_serial_noise.py [--deploys 10] [--samples 300] [--ber 1e-3]

Only 127.0.0.1 is contacted; state lives in a scratch dir (see _common.scratch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULT_PREFIX, scratch

TARGET = """kind = "mcu"
[transport]
type = "serial"
url = "{url}"
timeout = 5
[mcu]
board = "mps2-an386"
flash = "none"
flash_bytes = 4194304
ram_bytes = 4194304
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--ber", type=float, default=1e-3)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    with scratch():
        from edgetool.emulate.qemu_m import QemuCortexM
        from edgetool.firmware.build import build_firmware
        from edgetool.mcu.protocol import BenchClient
        from edgetool.testing.noisy_link import BitFlipProxy
        from edgetool.transport.serial import open_port

        qemu = QemuCortexM("bench-serial-noise")
        state = qemu.start(build_firmware("mps2-an386", None).elf)
        url = state["transport"]["url"]
        port = int(url.rsplit(":", 1)[1])
        rows = []
        try:
            client = BenchClient(open_port(url, 115200, 5), url, 5)
            client.sync()
            hz = int(client.info().extended["tick-hz"])
            truth = client.xinfer(50)
            client.close()
            print(json.dumps({"clean_ticks": sorted(set(truth)), "tick_hz": hz}), flush=True)
            allowed = {t * 1_000_000_000 // hz for t in range(min(truth), max(truth) + 1)}
            targets = Path(tempfile.mkdtemp(prefix="bench-targets-"))
            for seed in range(args.first_seed, args.first_seed + args.deploys):
                proxy = BitFlipProxy(("127.0.0.1", port), args.ber, seed=seed, both=True)
                (targets / "noisy.toml").write_text(TARGET.format(url=proxy.url))
                started = time.monotonic()
                argv = [sys.executable, "-m", "edgetool", "--targets-dir", str(targets)]
                argv += ["deploy", "-t", "noisy", "-n", str(args.samples), "-r", "1", "--json"]
                done = subprocess.run(
                    argv, capture_output=True, text=True, timeout=900, env=os.environ.copy()
                )
                proxy.close()
                row = {"seed": seed, "exit": done.returncode, "s": time.monotonic() - started}
                row["flipped_bits"] = proxy.flipped
                if done.returncode == 0:
                    out = json.loads(done.stdout)
                    wire = out["manifest"]["wire"]
                    samples = [
                        ns
                        for line in Path(out["run_dir"], "samples.jsonl").read_text().splitlines()
                        for ns in json.loads(line)["ns"]
                    ]
                    row |= {
                        "status": out["manifest"]["status"],
                        "samples": len(samples),
                        "outside_clean_range": sum(ns not in allowed for ns in samples),
                        "outside_values": sorted({ns for ns in samples if ns not in allowed}),
                        "wire_checksum": wire["wire_checksum"],
                        "bad_lines": wire["bad_lines"],
                        "retries": wire["retries"],
                    }
                else:
                    row["error"] = (done.stderr.strip().splitlines() or [""])[-1][:160]
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            qemu.stop()
        complete = [r for r in rows if r.get("status") == "complete"]
        summary = {
            "bench": "serial_noise",
            "ber": args.ber,
            "deploys": args.deploys,
            "samples_each": args.samples,
            "complete": len(complete),
            "retries": sum(r["retries"] for r in complete),
            "bad_lines": sum(r["bad_lines"] for r in complete),
            "samples_outside_clean_range": sum(r["outside_clean_range"] for r in complete),
            "all_checksum_verified": all(r["wire_checksum"] for r in complete),
            "median_s": sorted(r["s"] for r in rows)[len(rows) // 2],
            "max_s": max(r["s"] for r in rows),
        }
        print(RESULT_PREFIX + json.dumps(summary))


if __name__ == "__main__":
    main()
