"""Pieces both exporters share: example inputs, parameter counts, calibration data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetool.zoo.family import Family
from edgetool.zoo.recipe import Recipe

if TYPE_CHECKING:
    import torch


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
