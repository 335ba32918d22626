#!/usr/bin/env python3
"""TinyLUT-S x4 vs FSRCNN x4 on the emulated Cortex-M4: emulated instructions, goal <= 0.2.

Both models go through `edgetool export NAME --format c --input-shape 1,1,S,S`, the same
firmware, board (QEMU mps2-an386, -icount shift=0) and compiler flags. FSRCNN (fp32):
emx-onnx-cgen's C from its ONNX graph. TinyLUT-S (`--quant int8`): the family's own C,
the integer LUT kernel over the stored int8 tables (edgetool/zoo/tinylut_c.py), checked
against onnxruntime on the LUT ONNX graph at the same shape. Same input for both: one
held-out image tile (camera), bicubic-downscaled; a small S (default 8 -> 32x32) keeps
FSRCNN's emulated run short. Per model: emulated instructions per inference (median of
--iterations after a warm-up), flash, RAM, parity (bench_mcu_models.model_bench).

    python bench/bench_tinylut_m4.py [--size 8] [--iterations 5]

Only 127.0.0.1 is contacted; state lives in a scratch dir (see _common.scratch).
"""

from __future__ import annotations

import argparse
import json

from _common import RESULT_PREFIX, scratch
from bench_mcu_models import model_bench
from bench_tinylut import GOAL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8, help="input side S (S x S low-res)")
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    with scratch():
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
