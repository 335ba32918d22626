#!/usr/bin/env python3
"""TinyLUT-S x4 vs FSRCNN x4 on the emulated Cortex-M4: emulated instructions, goal <= 0.2.

Both models go through the same path: `edgetool export NAME --format c --input-shape
1,1,S,S` (TinyLUT-S: `--quant int8`, its LUT graph; FSRCNN: fp32), emx-onnx-cgen,
the same firmware, board (QEMU mps2-an386, -icount shift=0) and compiler flags; a small
input S (default 8 -> 32x32 output) because the generated C keeps every temporary on the
stack (TinyLUT at 16x16 needs 7.5 MB of stack; the board has 4 MiB of RAM). Same input
for both: one held-out image tile (camera), bicubic-downscaled. Per model: emulated
instructions per inference (median of --iterations after a warm-up), flash, RAM, parity
vs onnxruntime on the source ONNX (bench_mcu_models.model_bench).

A third arm, not an export: bench_tinylut.py's C loop over the stored int8 tables as the
firmware's model, to show what a LUT-aware code generator would give on the same board.

    python bench/bench_tinylut_m4.py [--size 8] [--iterations 5]

Only 127.0.0.1 is contacted; state lives in a scratch dir (see _common.scratch).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULT_PREFIX, scratch
from bench_mcu_models import model_bench, run_firmware
from bench_tinylut import C_KERNEL, GOAL

KERNEL_MAIN = r"""
/* edgetool_model for the firmware glue: float 0..255 image -> uint8, then tinylut_x. */
#include <math.h>
static uint8_t tl_pixels[TL_H * TL_W];
void edgetool_model(const float *lr, float *sr) {
    for (int i = 0; i < TL_H * TL_W; i++) {
        float v = nearbyintf(lr[i]); /* half to even, like numpy and ONNX Round */
        tl_pixels[i] = (uint8_t)(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
    }
    tinylut_x(tl_pixels, TL_H, TL_W, tl_dw_msb, tl_dw_lsb, tl_pw, tl_up, tl_amap, tl_bmap,
              tl_taps, tl_perm, sr);
}
"""


def _c_array(ctype: str, name: str, values: np.ndarray) -> str:
    body = ",".join(str(int(v)) for v in np.asarray(values).ravel())
    return f"static const {ctype} {name}[{values.size}] = {{{body}}};\n"


def kernel_source(luts: dict[str, np.ndarray], size: int) -> str:
    """A firmware model file: the C kernel, the 37 KB int8 tables as const arrays, glue."""
    from edgetool.export.c_export import glue
    from edgetool.zoo import tinylut

    r, q, c = int(luts["scale"]), int(luts["q"]), int(luts["pw"].shape[1])
    perm = np.zeros((4, r * r), np.int32)
    for rot in range(4):
        for orig, sub in enumerate(tinylut.subpixel_of_rotation(rot, r)):
            perm[rot, sub] = orig
    tables = [
        ("int8_t", "tl_dw_msb", luts["dw_msb"]),
        ("int8_t", "tl_dw_lsb", luts["dw_lsb"]),
        ("int8_t", "tl_pw", luts["pw"]),
        ("int8_t", "tl_up", luts["up"]),
        ("uint8_t", "tl_amap", tinylut._clip_map(luts["alpha"], q)),
        ("uint8_t", "tl_bmap", tinylut._clip_map(luts["beta"], q)),
        ("int32_t", "tl_taps", np.array([tinylut.tap_of_offset(k) for k in range(4)])),
        ("int32_t", "tl_perm", perm),
    ]
    defines = (
        f"#define TL_C {c}\n#define TL_L {2 * q + 1}\n#define TL_R {r}\n"
        f"#define TL_H {size}\n#define TL_W {size}\n"
    )
    spec_in = {"name": "lr", "shape": [1, 1, size, size], "dtype": "float32"}
    spec_out = {"name": "sr", "shape": [1, 1, size * r, size * r], "dtype": "float32"}
    return (
        defines
        + C_KERNEL
        + "".join(_c_array(*t) for t in tables)
        + KERNEL_MAIN
        + glue("tinylut-s-x4-kernel", [spec_in], [spec_out])
    )


def kernel_bench(x: np.ndarray, size: int, iterations: int, workdir: Path) -> dict[str, Any]:
    from edgetool.mcu.build import build_firmware, check_fit
    from edgetool.targets import load_target
    from edgetool.zoo import tinylut
    from edgetool.zoo.recipe import load_recipe

    luts = tinylut.load_luts(load_recipe("tinylut-s-x4").dir)
    source = workdir / "tinylut_kernel_model.c"
    source.write_text(kernel_source(luts, size))
    target = load_target("mcu-m4-qemu")
    assert target.mcu is not None
    label = "tinylut-s-x4 C kernel"
    firmware = build_firmware(target.mcu.board, source, label)
    check_fit(firmware, target.mcu.flash_bytes, target.mcu.ram_bytes, label, target.name)
    instr, got = run_firmware(firmware.elf, x, iterations)
    want = tinylut.lut_reference(x, luts).ravel()
    return {
        "model": "tinylut-s-x4 int8 C kernel (not an export)",
        "input_shape": list(x.shape),
        "instructions_median": statistics.median(instr),
        "instructions_spread": max(instr) - min(instr),
        "flash_bytes": firmware.flash_bytes,
        "ram_bytes": firmware.ram_bytes,
        "stack_bytes": firmware.stack_bytes,
        "parity_max_abs": float(np.max(np.abs(got - want))),  # vs the numpy LUT reference
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8, help="input side S (S x S low-res)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--no-kernel", action="store_true", help="skip the C-kernel arm")
    args = parser.parse_args()
    with scratch() as root:
        from edgetool.export.build import with_input_shape
        from edgetool.zoo.family import get_family
        from edgetool.zoo.recipe import load_recipe

        shape = (1, 1, args.size, args.size)
        recipe = with_input_shape(load_recipe("tinylut-s-x4"), shape)
        x = get_family("tinylut").samples(recipe, "test", 1).inputs["lr"][:1]
        rows = [
            model_bench("fsrcnn-x4", args.iterations, quant="fp32", input_shape=shape, x=x),
            model_bench("tinylut-s-x4", args.iterations, quant="int8", input_shape=shape, x=x),
        ]
        if not args.no_kernel:
            rows.append(kernel_bench(x, args.size, args.iterations, root))
        for row in rows:
            print(
                f"{row['model']} {row['input_shape']}: {row['instructions_median']:,} emulated "
                f"instructions/inference (spread {row['instructions_spread']}), flash "
                f"{row['flash_bytes']:,} B, RAM {row['ram_bytes']:,} B (stack "
                f"{row['stack_bytes']:,}), parity max abs {row['parity_max_abs']:.2e}"
            )
        base = rows[0]["instructions_median"]
        ratios = {row["model"]: row["instructions_median"] / base for row in rows[1:]}
        for model, ratio in ratios.items():
            verdict = "met" if ratio <= GOAL else "missed"
            print(f"ratio {model} / fsrcnn-x4: {ratio:.3f} (goal <= {GOAL}: {verdict})")
        print(
            RESULT_PREFIX
            + json.dumps(
                {"bench": "tinylut_m4", "size": args.size, "models": rows, "ratios": ratios}
            )
        )


if __name__ == "__main__":
    main()
