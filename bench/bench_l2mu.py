#!/usr/bin/env python3
"""L2MU latency per 2 s window, int8 against fp32, for both shipped recipes.

Each recipe (models/l2mu: Raspberry Pi-sized, models/l2mu-mcu: microcontroller-sized) is
exported the way `edgetool export` does (cached) to ONNX fp32/int8 and TFLite fp32/int8.
ONNX runs in onnxruntime, TFLite in LiteRT, both on 1 thread, batch 1, on one held-out
window. Per runtime, repetitions alternate fp32, int8, fp32, ... fp32 (each the median
of `--inner` calls); the int8/fp32 ratio is the median of the bracketed ratios (see
bench/README.md "Method"). Accuracy is each artifact's top-1 over the whole test split.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _common import Result, arm_ratios, interleave, median, median_call_us, ort_session

MODELS = ("l2mu", "l2mu-mcu")


def litert(path: Any) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    return interp


def runner(fmt: str, path: Any) -> Any:
    """A batch-1 call on float windows, returning spike counts (quantized I/O handled)."""
    if fmt == "onnx":
        sess = ort_session(path)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    from edgetool.export.verify import _dequantize, _quantize

    interp = litert(path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def call(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], _quantize(x, inp))
        interp.invoke()
        return _dequantize(interp.get_tensor(out["index"]), out)

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=11, help="ABAB repetitions (default 11)")
    parser.add_argument("--inner", type=int, default=100, help="inferences per repetition")
    args = parser.parse_args(argv)

    from edgetool.export.build import export
    from edgetool.zoo.family import get_family
    from edgetool.zoo.recipe import load_recipe

    family = get_family("l2mu")
    results: dict[str, Any] = {}
    for model in MODELS:
        recipe = load_recipe(model)
        test = family.samples(recipe, "test", 0)
        windows, labels = test.inputs["window"], test.targets
        window = np.ascontiguousarray(windows[:1])
        print(f"{model}: {len(labels)} held-out windows ({recipe.data.get('source')})")
        for fmt in ("onnx", "tflite"):
            calls, sizes, top1 = {}, {}, {}
            for quant in ("fp32", "int8"):
                artifact = export(model, fmt, quant)
                calls[quant] = runner(fmt, artifact.path)
                sizes[quant] = artifact.size
                preds = [int(np.argmax(calls[quant](w[None]))) for w in windows]
                top1[quant] = float(np.mean(np.asarray(preds) == labels))
                for _ in range(50):
                    calls[quant](window)
            arms = {q: median_call_us(lambda c=calls[q], w=window: c(w), args.inner) for q in calls}
            runs = interleave(args.reps, arms, label=f"{model} {fmt}", verbose=False)
            ratio = arm_ratios(runs, "fp32")["int8"]
            params = artifact.manifest.get("params")
            results[f"{model}/{fmt}"] = {
                "params": params,
                "bytes": sizes,
                "top1": top1,
                "latency_us": {q: median(v) for q, v in runs.items()},
                "int8_over_fp32": ratio,
            }
            print(
                f"  {fmt:<6} fp32 {median(runs['fp32']):8.1f} us  int8 "
                f"{median(runs['int8']):8.1f} us  int8/fp32 {ratio:.3f}   bytes "
                f"{sizes['fp32']:,} / {sizes['int8']:,}   top1 {top1['fp32'] * 100:.2f}% / "
                f"{top1['int8'] * 100:.2f}%   params {params}"
            )
    worst = max(r["int8_over_fp32"] for r in results.values())
    Result("l2mu int8/fp32 latency", worst, "reported (no goal)", True, results).emit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
