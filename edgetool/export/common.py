"""Pieces both exporters share: example inputs, parameter counts, calibration data."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetool.zoo.family import Family
from edgetool.zoo.recipe import Recipe

if TYPE_CHECKING:
    import torch

CALIBRATION_SAMPLES = 64
"""Training samples int8 quantizers calibrate on (ONNX QDQ and ai-edge-quantizer)."""


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence C++ libraries (litert-torch, MLIR, TFLite Micro) that write to fds 1 and 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def example_inputs(recipe: Recipe) -> tuple[torch.Tensor, ...]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return tuple(
        torch.rand(spec.shape, generator=generator, dtype=getattr(torch, spec.dtype))
        for spec in recipe.inputs
    )


def param_count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def calibration_batches(family: Family, recipe: Recipe, count: int) -> list[dict[str, np.ndarray]]:
    """One feed dict per sample (batch 1), from the recipe's training data."""
    samples = family.samples(recipe, "calibration", count)
    names = [spec.name for spec in recipe.inputs]
    total = len(next(iter(samples.inputs.values())))
    return [
        {name: np.ascontiguousarray(samples.inputs[name][i : i + 1]) for name in names}
        for i in range(total)
    ]


def export_module(family: Family, recipe: Recipe, weights_dir: Path, quant: str) -> Any:
    hook = getattr(family, "export_module", None)
    if hook is not None:
        return hook(recipe, weights_dir, quant)
    return family.reference(recipe, weights_dir)
