#!/usr/bin/env python3
"""TinyLUT-S x4 (its LUT ONNX graph) vs FSRCNN x4 latency in onnxruntime; goal <= 0.2.

Both models read the same 128x128 held-out input (camera, bicubic-downscaled) and write
512x512. Baseline: FSRCNN exported by torch.onnx (opset 17) with all graph optimizations.
Candidate: the LUT graph edgetool ships for tinylut-s-x4 (int8 export). Both sessions:
intra_op_num_threads=1, inter_op_num_threads=1, sequential execution, ORT_ENABLE_ALL.

Repetitions alternate FSRCNN, LUT, FSRCNN, ..., FSRCNN (each run = median of `--inner`
inferences); ratio = the median of each LUT run over the FSRCNN run before and after it.
Also printed: Y-PSNR of both and of bicubic on the held-out images, whether the LUT
graph is bit-exact to the numpy reference, and the latency of the banded variant
(`--bands`, graph repeated per row band). Per-op profiles come from edgetool itself:
`edgetool deploy -m tinylut-s-x4 --op-profile` then `edgetool results show latest --ops`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import Result, bracketed, interleave, median

from edgetool.zoo.tinylut_c import C_KERNEL

GOAL = 0.2


def c_kernel(luts: dict[str, np.ndarray], tmp: Path) -> Any:
    """The same integer LUT inference as one C loop over pixels on the stored 37 KB
    tables (what an onnxruntime custom op would run); None without a C compiler."""
    import ctypes
    import shutil
    import subprocess

    from edgetool.zoo.tinylut_c import kernel_defines, kernel_tables

    if shutil.which("gcc") is None:
        return None
    r = int(luts["scale"])
    src, lib = tmp / "tinylut_kernel.c", tmp / "tinylut_kernel.so"
    src.write_text(C_KERNEL)
    flags = [f"-D{key}={value}" for key, value in kernel_defines(luts).items()]
    flags += ["-shared", "-fPIC"]
    subprocess.run(["gcc", "-O3", "-march=native", *flags, str(src), "-o", str(lib)], check=True)
    so = ctypes.CDLL(str(lib))
    arrays = [np.ascontiguousarray(table) for _, _, table in kernel_tables(luts)]

    def run(x: np.ndarray) -> np.ndarray:
        xi = np.ascontiguousarray(np.clip(np.round(x), 0, 255).astype(np.uint8)[0, 0])
        h, w = xi.shape
        out = np.empty((1, 1, h * r, w * r), np.float32)
        ptrs = [a.ctypes.data_as(ctypes.c_void_p) for a in (xi, *arrays, out)]
        so.tinylut_x(ptrs[0], h, w, *ptrs[1:])
        return out

    return run


def session(data: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def fsrcnn_onnx(recipe: Any) -> bytes:
    import torch

    from edgetool.zoo.family import get_family

    module = get_family("fsrcnn").reference(recipe, recipe.dir)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        path = Path(tmp) / "fsrcnn.onnx"
        torch.onnx.export(
            module,
            (torch.zeros(recipe.inputs[0].shape),),
            str(path),
            input_names=["lr"],
            output_names=["sr"],
            opset_version=17,
            dynamo=False,
        )
        return path.read_bytes()


def timed(fn: Any, inner: int, clock: Any) -> float:
    """Median seconds of `inner` back-to-back calls."""
    times = []
    for _ in range(inner):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--bands", type=int, default=16, help="rows bands of the variant")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu = this thread's CPU time (onnxruntime with 1 thread runs in the caller's "
        "thread): use on a machine shared with other jobs",
    )
    args = parser.parse_args(argv)

    from edgetool.zoo import tinylut
    from edgetool.zoo.family import get_family
    from edgetool.zoo.recipe import load_recipe

    lut_recipe = load_recipe("tinylut-s-x4")
    fsr_recipe = load_recipe("fsrcnn-x4")
    family = get_family("tinylut")
    luts = tinylut.load_luts(lut_recipe.dir)
    height, width = lut_recipe.inputs[0].shape[-2:]
    lut_data = tinylut.build_lut_onnx(luts, height, width)
    banded_data = tinylut.build_lut_onnx(luts, height, width, bands=args.bands)
    fsr_data = fsrcnn_onnx(fsr_recipe)
    test = family.samples(lut_recipe, "test", 64)
    feed = {"lr": np.ascontiguousarray(test.inputs["lr"][:1])}

    tmp = tempfile.TemporaryDirectory()
    kernel = c_kernel(luts, Path(tmp.name))
    lut, banded, fsr = session(lut_data), session(banded_data), session(fsr_data)
    for sess in (lut, banded, fsr):
        for _ in range(3):
            sess.run(None, feed)

    # quality (held-out images) and exactness
    outs: dict[str, list[np.ndarray]] = {"lut": [], "fsrcnn": []}
    exact = True
    for i in range(len(test.targets)):
        one = {"lr": np.ascontiguousarray(test.inputs["lr"][i : i + 1])}
        got = lut.run(None, one)[0]
        exact &= bool(np.array_equal(got, tinylut.lut_reference(one["lr"], luts)))
        exact &= bool(np.array_equal(got, banded.run(None, one)[0]))
        if kernel is not None:
            exact &= bool(np.array_equal(got, kernel(one["lr"])))
        outs["lut"].append(got)
        outs["fsrcnn"].append(fsr.run(None, one)[0])
    psnr = {k: family.task_metric(np.concatenate(v), test) for k, v in outs.items()}
    print(
        f"held-out Y-PSNR ({len(test.targets)} images, x4): "
        f"TinyLUT-S {psnr['lut']['psnr']:.2f} dB, FSRCNN {psnr['fsrcnn']['psnr']:.2f} dB, "
        f"bicubic {psnr['lut']['psnr_bicubic']:.2f} dB; LUT ONNX (and C kernel) bit-exact "
        f"to numpy: {exact}"
    )

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    arms = {
        "fsrcnn": lambda i: timed(lambda: fsr.run(None, feed), args.inner, clock),
        "lut": lambda i: timed(lambda: lut.run(None, feed), args.inner, clock),
        "lut_banded": lambda i: timed(lambda: banded.run(None, feed), args.inner, clock),
    }
    if kernel is not None:
        arms["c_kernel"] = lambda i: timed(lambda: kernel(feed["lr"]), args.inner, clock)
    runs = interleave(args.reps, arms, label="latency s", verbose=False)
    ratios = bracketed(runs["fsrcnn"], runs["lut"])
    ratio = median(ratios)
    banded_ratio = median(bracketed(runs["fsrcnn"], runs["lut_banded"]))
    ms = {k: 1000 * median(v) for k, v in runs.items()}
    print(
        f"latency (1 thread, 128x128 -> 512x512): FSRCNN {ms['fsrcnn']:.2f} ms, "
        f"TinyLUT-S LUT graph {ms['lut']:.2f} ms (ratio {ratio:.3f}), "
        f"{args.bands}-band variant {ms['lut_banded']:.2f} ms (ratio {banded_ratio:.3f})"
        f" [{args.clock} clock]"
    )
    kernel_ratio = None
    if kernel is not None:
        kernel_ratio = median(bracketed(runs["fsrcnn"], runs["c_kernel"]))
        print(
            f"C kernel (not an ONNX graph; what a custom op would run): "
            f"{ms['c_kernel']:.2f} ms (ratio {kernel_ratio:.3f})"
        )

    Result(
        name="tinylut_vs_fsrcnn_latency",
        ratio=ratio,
        goal=f"<= {GOAL} with PSNR >= bicubic + 1 dB",
        met=ratio <= GOAL and psnr["lut"]["psnr"] >= psnr["lut"]["psnr_bicubic"] + 1.0,
        details={
            "ms": {k: round(v, 3) for k, v in ms.items()},
            "clock": args.clock,
            "banded_ratio": round(banded_ratio, 4),
            "c_kernel_ratio": None if kernel_ratio is None else round(kernel_ratio, 4),
            "psnr": {k: round(v["psnr"], 3) for k, v in psnr.items()},
            "psnr_bicubic": round(psnr["lut"]["psnr_bicubic"], 3),
            "bit_exact": exact,
        },
    ).emit()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
