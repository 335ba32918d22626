#!/usr/bin/env python3
"""Microcontroller benchmarks on the emulated Cortex-M4 (QEMU mps2-an386, -icount shift=0).

1. Upload efficiency: payload bytes / wire bytes (host -> device) of our CRC-framed binary
   upload vs MLPerf Tiny's hex `db` loading, same QEMU UART, same payload (one model
   input); clean and through a bit-flipping proxy at BER 1e-3 (20 uploads each), with
   the number of corrupted uploads (checked by reading the buffer back with `db print`).
2. Per model: emulated instructions per inference (SysTick ticks × 40: 1 ns virtual =
   1 instruction), flash and RAM of the firmware, parity vs onnxruntime.

    python bench/bench_mcu_models.py [--models cbnet-classifier,lenet,cbnet] [--quick]

Only 127.0.0.1 is contacted; state lives in a scratch dir (see _common.scratch).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from typing import Any

import numpy as np
from _common import RESULT_PREFIX, scratch


def _db_print(client: Any) -> bytes | None:
    for _ in range(5):
        lines = client.command("db print")
        if lines and lines[0].startswith("m-buffer-"):
            body = lines[0][len("m-buffer-") :]
            try:
                return bytes(int(h, 16) for h in body.split("-")) if body else b""
            except ValueError:
                return None
    return None


def upload_bench(elf: Any, payload_len: int, uploads: int) -> list[dict[str, Any]]:
    from edgetool.emulate.qemu_m import QemuCortexM
    from edgetool.errors import EdgetoolError
    from edgetool.mcu.protocol import BenchClient
    from edgetool.testing.noisy_link import BitFlipProxy
    from edgetool.transport.serial import open_port

    qemu = QemuCortexM("bench-upload")
    state = qemu.start(elf)
    port = int(state["transport"]["url"].rsplit(":", 1)[1])
    rows = []
    try:
        for ber in (0.0, 1e-3):
            for method in ("xbin", "hex"):
                proxy = BitFlipProxy(("127.0.0.1", port), ber, seed=5)
                client = BenchClient(open_port(proxy.url, 115200, 5), proxy.url, 5)
                client.sync(attempts=10)
                rng = random.Random(1)
                sent = corrupted = failed = delivered = 0
                started = time.monotonic()
                for _ in range(uploads):
                    data = bytes(rng.randrange(256) for _ in range(payload_len))
                    before = client.stats.sent
                    try:
                        if method == "xbin":
                            client.load_binary(data)
                        else:
                            client.load_hex(data)
                    except EdgetoolError:
                        failed += 1  # the protocol noticed: an error, not silent corruption
                        client.sync(attempts=10)
                        continue
                    finally:
                        sent += client.stats.sent - before
                    bad = _db_print(client) != data
                    corrupted += bad
                    delivered += 0 if bad else len(data)
                rows.append(
                    {
                        "method": method,
                        "ber": ber,
                        "uploads": uploads,
                        "payload_bytes": payload_len,
                        # intact payload delivered / bytes the host put on the wire
                        "efficiency": delivered / sent if sent else 0.0,
                        "corrupted": corrupted,
                        "failed": failed,
                        "retransmits": client.stats.retransmits,
                        "seconds": time.monotonic() - started,
                    }
                )
                client.close()
                proxy.close()
    finally:
        qemu.stop()
    return rows


def run_firmware(elf: Any, x: np.ndarray, iterations: int) -> tuple[list[int], np.ndarray]:
    """Boot elf in QEMU, upload x, one warm-up, then `iterations` timed inferences:
    emulated instructions of each (SysTick ticks × 40) and the float32 outputs."""
    from edgetool.emulate.qemu_m import QemuCortexM
    from edgetool.mcu.protocol import BenchClient
    from edgetool.transport.serial import open_port

    qemu = QemuCortexM("bench-model")
    state = qemu.start(elf)
    url = state["transport"]["url"]
    client = BenchClient(open_port(url, 115200, 60), url, 60)
    try:
        client.sync()
        info = client.info()
        client.load_binary(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        client.infer(1, 1)
        ticks = client.xinfer(iterations)
        hz = info.tick_hz or 25_000_000
        got = np.frombuffer(client.xresults(info.output_count), dtype="<f4")
    finally:
        client.close()
        qemu.stop()
    return [t * 1_000_000_000 // hz for t in ticks], got


def model_bench(
    name: str,
    iterations: int,
    *,
    quant: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    x: np.ndarray | None = None,
) -> dict[str, Any]:
    """`quant`/`input_shape` as for `edgetool export`; `x` replaces the seeded uniform
    [0, 1) input (e.g. a real image for a super-resolution model)."""
    from edgetool.export.build import export
    from edgetool.flows.mcu import build_for, reference_outputs
    from edgetool.targets import load_target

    artifact = export(name, "c", quant, input_shape=input_shape)
    firmware = build_for(load_target("mcu-m4-qemu"), artifact)
    spec = artifact.manifest["inputs"][0]
    if x is None:
        x = np.random.default_rng(0).random(spec["shape"], dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(spec["shape"])
    instr, got = run_firmware(firmware.elf, x, iterations)
    want = reference_outputs(artifact, {spec["name"]: x})
    return {
        "model": name,
        "quant": artifact.manifest.get("quant"),
        "input_shape": spec["shape"],
        "params": artifact.manifest.get("params"),
        "macs": artifact.manifest.get("macs"),
        "c_bytes": artifact.size,
        "instructions_median": statistics.median(instr),
        "instructions_spread": max(instr) - min(instr),
        "flash_bytes": firmware.flash_bytes,
        "ram_bytes": firmware.ram_bytes,
        "stack_bytes": firmware.stack_bytes,
        "model_stack_bytes": firmware.model_stack_bytes,
        "parity_max_abs": float(np.max(np.abs(got - want))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cbnet-classifier,lenet,cbnet")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with scratch():
        from edgetool.export.build import export
        from edgetool.flows.mcu import build_for
        from edgetool.targets import load_target

        first = args.models.split(",")[0]
        artifact = export(first, "c")
        elf = build_for(load_target("mcu-m4-qemu"), artifact).elf
        payload = sum(math.prod(t["shape"]) * 4 for t in artifact.manifest["inputs"])
        uploads = upload_bench(elf, payload, 3 if args.quick else 20)
        for row in uploads:
            print(
                f"upload {row['method']:4} BER {row['ber']:g}: efficiency "
                f"{row['efficiency']:.3f}, corrupted {row['corrupted']}/{row['uploads']}, "
                f"failed {row['failed']}, retransmits {row['retransmits']}, "
                f"{row['seconds']:.1f} s"
            )
        models = []
        for name in args.models.split(","):
            row = model_bench(name, 5 if args.quick else 20)
            models.append(row)
            print(
                f"{name}: {row['instructions_median']:,} emulated instructions/inference "
                f"(spread {row['instructions_spread']}), flash {row['flash_bytes']:,} B, RAM "
                f"{row['ram_bytes']:,} B (stack {row['stack_bytes']:,}), parity max abs "
                f"{row['parity_max_abs']:.2e}"
            )
        print(RESULT_PREFIX + json.dumps({"bench": "mcu", "uploads": uploads, "models": models}))


if __name__ == "__main__":
    main()
