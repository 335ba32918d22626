#!/usr/bin/env python3
"""CBNet latency vs the full LeNet, in onnxruntime on one thread, at equal accuracy.

Both shipped models (models/cbnet, models/lenet; `edgetool train NAME` makes them) are
exported with torch.onnx (opset 17, the exporter edgetool itself uses) into a temp dir
and run in onnxruntime with 1 intra-op thread on the same test image. Repetitions
alternate lenet, cbnet, lenet, ... lenet; each repetition is the median of `--inner`
back-to-back inferences; ratio = median over the 2 x reps bracketed cbnet/lenet ratios
(see bench/README.md "Method"). B-LeNet's first exit alone and BranchyNet's static graph
(both exits always computed = its worst case) are timed in the same loop for context.

Goal (issue): cbnet/lenet latency <= 0.33 with cbnet's test top-1 within 1 point of
LeNet's. Accuracies are measured here on the ONNX files over the whole test split.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import Result, bracketed, interleave, median, median_call_us, ort_session

GOAL_RATIO = 0.33
GOAL_POINTS = 1.0
ARMS = ("lenet", "cbnet", "first_exit", "branchynet")  # lenet first: the baseline


def load_modules() -> tuple[dict[str, Any], Any, Any]:
    """The reference torch modules (shipped weights), the family and a recipe for data."""
    from edgetool.zoo.cbnet import CBNet
    from edgetool.zoo.family import get_family
    from edgetool.zoo.recipe import load_recipe

    family = get_family("cbnet")
    modules: dict[str, Any] = {}
    for name in ("lenet", "cbnet", "branchynet"):
        recipe = load_recipe(name)
        if not recipe.weights_path.is_file():
            raise SystemExit(f"{recipe.weights_path} missing: run `edgetool train {name}`")
        modules[name] = family.reference(recipe, recipe.dir)
    cb = modules["cbnet"]
    assert isinstance(cb, CBNet)
    modules["first_exit"] = cb.classifier
    return modules, family, load_recipe("cbnet")


def export(module: Any, path: Path) -> None:
    import torch

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter, as edgetool
        torch.onnx.export(
            module,
            (torch.zeros(1, 1, 28, 28),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )


def onnx_top1(sess: Any, images: np.ndarray, labels: np.ndarray) -> float:
    preds = [int(sess.run(None, {"image": img[None]})[0].argmax()) for img in images]
    return float(np.mean(np.asarray(preds) == labels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="ABAB repetitions (default 15)")
    parser.add_argument("--inner", type=int, default=300, help="inferences per repetition")
    parser.add_argument("--warmup", type=int, default=200, help="untimed runs per model first")
    args = parser.parse_args(argv)

    from edgetool.zoo.cbnet import count_macs, num_params

    modules, family, recipe = load_modules()
    test = family.samples(recipe, "test", 0)
    images, labels = test.inputs["image"], test.targets
    feed = {"image": images[:1]}
    with tempfile.TemporaryDirectory(prefix="bench-cbnet-") as tmp:
        sessions = {}
        for name in ARMS:
            path = Path(tmp) / f"{name}.onnx"
            export(modules[name], path)
            sessions[name] = ort_session(path)
            for _ in range(args.warmup):
                sessions[name].run(None, feed)
        top1 = {name: onnx_top1(sessions[name], images, labels) for name in ARMS}
        print(f"test split: {len(labels)} images ({recipe.data.get('source', 'digits')})")
        print(f"{'model':<11} {'params':>8} {'MACs':>10} {'top1 (onnx)':>12}")
        for name in ARMS:
            print(
                f"{name:<11} {num_params(modules[name]):>8} "
                f"{count_macs(modules[name]):>10} {top1[name] * 100:>11.2f}%"
            )
        arms = {
            name: median_call_us(lambda s=sessions[name]: s.run(None, feed), args.inner)
            for name in ARMS
        }
        runs = interleave(args.reps, arms, label="latency", verbose=False)

    ratios = {name: median(bracketed(runs["lenet"], runs[name])) for name in ARMS[1:]}
    print(f"\nlatency, median of {args.reps} reps x {args.inner} inferences (1 thread):")
    for name in ARMS:
        extra = f"  ratio vs lenet {ratios[name]:.3f}" if name in ratios else "  (baseline)"
        print(f"  {name:<11} {median(runs[name]):8.1f} us{extra}")
    ratio = ratios["cbnet"]
    points = (top1["cbnet"] - top1["lenet"]) * 100
    met = ratio <= GOAL_RATIO and abs(points) <= GOAL_POINTS
    print(
        f"\ncbnet/lenet latency ratio {ratio:.3f} (goal <= {GOAL_RATIO}); "
        f"top1 cbnet {top1['cbnet'] * 100:.2f}% vs lenet {top1['lenet'] * 100:.2f}% "
        f"({points:+.2f} points, goal within {GOAL_POINTS:.0f}) -> {'MET' if met else 'MISSED'}"
    )
    if ratio > GOAL_RATIO:
        ae = modules["cbnet"].ae
        ae_us = median(runs["cbnet"]) - median(runs["first_exit"])
        print(
            f"why: B-LeNet's first exit alone already takes {ratios['first_exit']:.2f}x "
            f"LeNet's time, and the autoencoder adds ~{ae_us:.0f} us ({count_macs(ae)} MACs, "
            f"{num_params(ae) * 4 / 1e6:.1f} MB of fp32 weights streamed per batch-1 "
            f"inference) against LeNet's whole {median(runs['lenet']):.0f} us "
            f"({count_macs(modules['lenet'])} MACs, "
            f"{num_params(modules['lenet']) * 4 / 1e6:.2f} MB)."
        )
    Result(
        "cbnet_latency",
        ratio,
        f"<= {GOAL_RATIO} at |dtop1| <= {GOAL_POINTS:.0f} pt",
        met,
        {
            "top1": top1,
            "latency_us": {name: median(runs[name]) for name in ARMS},
            "ratios_vs_lenet": ratios,
        },
    ).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
