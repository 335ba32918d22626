"""A tiny classification family (MLP on seeded Gaussian blobs) for testing the export
machinery in seconds, without the real zoo's training. Recipes name it as
`family = "tests.toy_family:Toy"`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgetool.zoo.family import ProgressFn, Samples
from edgetool.zoo.recipe import Recipe

CLASSES, FEATURES = 4, 16


def blobs(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(0, 2.0, size=(CLASSES, FEATURES))
    labels = rng.integers(0, CLASSES, size=count)
    x = centres[labels] + rng.normal(0, 1.0, size=(count, FEATURES))
    return x.astype(np.float32), labels


def build(hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, CLASSES)
    )


class Toy:
    name = "toy"
    task = "classification"

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        torch.manual_seed(int(recipe.train.get("seed", 0)))
        model = build(int(recipe.arch.get("hidden", 32)))
        x, y = blobs(1, 512)
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        epochs = int(recipe.train.get("epochs", 30))
        for epoch in range(epochs):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                model(torch.from_numpy(x)), torch.from_numpy(y)
            )
            loss.backward()
            optimiser.step()
            progress(epoch + 1, epochs, f"loss {loss.item():.3f}")
        torch.save(model.state_dict(), out_dir / recipe.weights)
        samples = self.samples(recipe, "test", 256)
        with torch.no_grad():
            logits = model(torch.from_numpy(samples.inputs["x"])).numpy()
        metrics = {"test_top1": self.task_metric(logits, samples)["top1"]}
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    def reference(self, recipe: Recipe, weights_dir: Path) -> torch.nn.Module:
        model = build(int(recipe.arch.get("hidden", 32)))
        model.load_state_dict(torch.load(weights_dir / recipe.weights, weights_only=True))
        return model.eval()

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        x, y = blobs(1 if split == "calibration" else 2, count)
        return Samples({"x": x.reshape(count, FEATURES)}, y)

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        return {"top1": float(np.mean(outputs.argmax(axis=-1) == samples.targets))}
