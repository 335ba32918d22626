"""Supervised compression in the Entropic Student spirit (Matsubara et al., 2022): a
small device-side encoder ends in a narrow, quantised bottleneck, and a server-side
tail recovers a teacher's accuracy from it, so a split sends few bytes.

The module is encoder → ``bottleneck`` → tail, one input ``image`` [N,1,28,28], one
output ``logits`` [N,10]:

* encoder: conv 1→``hidden`` stride 2 (14×14), conv →``channels`` stride 2 (7×7).
* bottleneck: while training, additive uniform noise U(-0.5, 0.5) on the latent (the
  stochastic bottleneck, a differentiable stand-in for rounding); at inference
  ``round`` then ``clamp`` to ±``arch.clamp``, so int8 holds every value exactly. It
  exports as ONNX Round + Clip; the recipe's ``[split] cut = "bottleneck"`` makes the
  export name that module's output tensor ``bottleneck``.
* rate: a factorised prior, one logistic per channel with learned location and scale;
  the rate of a value is −log2 of the prior's probability mass on [v−½, v+½] (the
  outermost levels take the tails). Simpler than Ballé's non-parametric density, but
  the same kind of bound an entropy coder meets.
* tail: conv, conv stride 2 (4×4), FC, FC → 10 logits.

Loss: T²·KL(teacher ∥ student at temperature T)·``distill_weight`` + cross-entropy
·``ce_weight`` + ``rate_weight``·(bits per image). The teacher is the zoo's trained model
named by ``train.teacher`` (lenet), loaded through its own family and never retrained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgetool.errors import ConfigError
from edgetool.zoo.cbnet import (
    _batches,
    _deterministic,
    _predict,
    _Progress,
    _shift,
    _tensor,
    _top1,
    count_macs,
    num_params,
)
from edgetool.zoo.datasets import Splits, load_splits
from edgetool.zoo.family import (
    ProgressFn,
    Samples,
    get_family,
    labelled_samples,
    load_trained,
    register,
    top1,
)
from edgetool.zoo.recipe import Recipe, load_recipe

NUM_CLASSES = 10
SIDE = 28
GRID = 7  # 28 / 2 / 2


class Bottleneck(nn.Module):
    """Noise while training, round + clamp at inference; owns the factorised prior."""

    def __init__(self, channels: int, clamp: int) -> None:
        super().__init__()
        self.clamp = int(clamp)  # a constant in the graph, not a weight
        self.prior_loc = nn.Parameter(torch.zeros(channels))
        self.prior_log_scale = nn.Parameter(torch.zeros(channels))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.training:
            return latent + torch.empty_like(latent).uniform_(-0.5, 0.5)
        return torch.clamp(torch.round(latent), -self.clamp, self.clamp)

    def bits(self, values: torch.Tensor) -> torch.Tensor:
        """−log2 of the prior's mass around each value, summed per image: [N]."""
        loc = self.prior_loc.view(1, -1, 1, 1)
        scale = self.prior_log_scale.exp().view(1, -1, 1, 1)
        upper = (values + 0.5 - loc) / scale
        lower = (values - 0.5 - loc) / scale
        # Above the location, 1 - F is the accurate side (sigmoid(-x) = 1 - sigmoid(x)).
        flip = torch.where(values > loc, -1.0, 1.0)
        mass = (torch.sigmoid(flip * upper) - torch.sigmoid(flip * lower)).abs()
        if not self.training:  # the outermost levels hold everything clamped onto them
            top = 1.0 - torch.sigmoid(lower)
            bottom = torch.sigmoid(upper)
            mass = torch.where(values >= self.clamp, top, mass)
            mass = torch.where(values <= -self.clamp, bottom, mass)
        return -torch.log2(mass.clamp_min(1e-9)).flatten(1).sum(1)


class EntropicStudent(nn.Module):
    """Encoder (device) → quantised bottleneck (crosses the link) → tail (server)."""

    def __init__(self, channels: int, hidden: int, clamp: int, tail_width: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, hidden, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 5, stride=2, padding=2),
        )
        self.bottleneck = Bottleneck(channels, clamp)
        self.tail = nn.Sequential(
            nn.Conv2d(channels, tail_width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(tail_width, tail_width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(tail_width * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, NUM_CLASSES),
        )

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """The bottleneck tensor: noisy while training, integers at inference."""
        out: torch.Tensor = self.bottleneck(self.encoder(image))
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.tail(self.encode(image))
        return out


# --- recipe helpers -------------------------------------------------------------------


def _positive_int(recipe: Recipe, key: str, default: int) -> int:
    value = recipe.arch.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{recipe.name}: arch.{key} must be a positive integer")
    return value


def build(recipe: Recipe) -> EntropicStudent:
    """The untrained student for the recipe's [arch]."""
    clamp = _positive_int(recipe, "clamp", 15)
    if clamp > 127:
        raise ConfigError(f"{recipe.name}: arch.clamp must be at most 127 (int8 holds it)")
    return EntropicStudent(
        _positive_int(recipe, "channels", 8),
        _positive_int(recipe, "hidden", 16),
        clamp,
        _positive_int(recipe, "tail_width", 32),
    )


def _splits(recipe: Recipe) -> Splits:
    return load_splits(recipe.data, recipe.dir)


def _teacher(recipe: Recipe) -> tuple[Recipe, nn.Module]:
    """The zoo's trained teacher (`train.teacher`), loaded by its own family."""
    teacher = load_recipe(str(recipe.train.get("teacher", "lenet")))
    module = get_family(teacher.family).reference(teacher, teacher.dir)
    for param in module.parameters():
        param.requires_grad_(False)
    return teacher, module


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss: T²·KL(teacher ∥ student) on temperature-T softmaxes."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


# --- training -------------------------------------------------------------------------


def _rate_report(model: EntropicStudent, x: torch.Tensor) -> dict[str, float]:
    """Bits per inference of the rounded bottleneck: under the learned prior (what an
    entropy coder using it would send) and the empirical per-channel entropy (its floor
    for a static coder that knew the test set's histogram)."""
    with torch.no_grad():
        q = _predict(model.encode, x)
        prior_bits = float(model.bottleneck.bits(q).mean())
    levels = q.numpy().astype(np.int64)
    empirical = 0.0
    for channel in range(levels.shape[1]):
        _, counts = np.unique(levels[:, channel], return_counts=True)
        p = counts / counts.sum()
        empirical += float(-(p * np.log2(p)).sum()) * GRID * GRID
    return {
        "entropy_bits_per_inference": round(prior_bits, 1),
        "empirical_entropy_bits_per_inference": round(empirical, 1),
        "clamped_share": float((q.abs() >= model.bottleneck.clamp).float().mean()),
        "zero_share": float((q == 0).float().mean()),
    }


def train_student(recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
    """Distil the teacher into the student; writes weights + metrics.json to out_dir."""
    train = recipe.train
    seed = int(train.get("seed", 0))
    epochs = int(train.get("epochs", 100))
    temperature = float(train.get("temperature", 4.0))
    distill_weight = float(train.get("distill_weight", 1.0))
    ce_weight = float(train.get("ce_weight", 1.0))
    rate_weight = float(train.get("rate_weight", 0.0))
    if temperature <= 0 or min(distill_weight, ce_weight, rate_weight) < 0:
        raise ConfigError(f"{recipe.name}: train.temperature must be > 0 and the loss weights >= 0")
    data = _splits(recipe)
    teacher_recipe, teacher = _teacher(recipe)
    steps = _Progress(progress, epochs)
    started = time.perf_counter()
    with _deterministic(seed):
        gen = torch.Generator().manual_seed(seed)
        model = build(recipe)
        x, y = _tensor(data.train)
        opt = torch.optim.Adam(model.parameters(), lr=float(train.get("lr", 3e-3)))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
        shift = int(train.get("shift", 2))
        for epoch in range(1, epochs + 1):
            model.train()
            sums = {"loss": 0.0, "bits": 0.0}
            correct = 0
            for idx in _batches(len(x), int(train.get("batch_size", 64)), gen):
                xb, yb = _shift(x[idx], shift, gen), y[idx]
                with torch.no_grad():
                    soft = teacher(xb)
                q = model.encode(xb)
                logits = model.tail(q)
                bits = model.bottleneck.bits(q).mean()
                loss = (
                    distill_weight * distillation(logits, soft, temperature)
                    + ce_weight * F.cross_entropy(logits, yb)
                    + rate_weight * bits
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sums["loss"] += float(loss.detach()) * len(idx)
                sums["bits"] += float(bits.detach()) * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
            sched.step()
            n = len(x)
            steps(
                f"epoch {epoch} loss {sums['loss'] / n:.3f} bits {sums['bits'] / n:.0f} "
                f"acc {correct / n:.3f}"
            )
        model.eval()
        metrics: dict[str, Any] = {
            "model": recipe.name,
            "seed": seed,
            "data": data.source,
            "sizes": {"train": len(data.train.y), "val": len(data.val.y), "test": len(data.test.y)},
            "teacher": teacher_recipe.name,
        }
        for name, split in (("val", data.val), ("test", data.test)):
            xs, ys = _tensor(split)
            metrics[f"{name}_top1"] = _top1(_predict(model, xs), ys)
            metrics[f"teacher_{name}_top1"] = _top1(_predict(teacher, xs), ys)
        channels = model.bottleneck.prior_loc.numel()
        metrics["bottleneck_shape"] = [1, channels, GRID, GRID]
        metrics["bottleneck_range"] = [-model.bottleneck.clamp, model.bottleneck.clamp]
        metrics["bytes_per_inference_int8"] = channels * GRID * GRID
        metrics.update(_rate_report(model, _tensor(data.test)[0]))
    metrics["params"] = num_params(model)
    metrics["encoder_params"] = num_params(model.encoder)
    metrics["macs"] = count_macs(model)
    metrics["encoder_macs"] = count_macs(model.encoder)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / recipe.weights)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


# --- the family -----------------------------------------------------------------------


@register
class EntropicStudentFamily:
    """A distilled student with a quantised bottleneck, for split computing."""

    name = "entropic_student"
    task = "classification"

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        """Seeded, deterministic CPU training; writes weights + metrics.json to out_dir."""
        return train_student(recipe, out_dir, progress)

    def reference(self, recipe: Recipe, weights_dir: Path) -> nn.Module:
        return load_trained(build(recipe), recipe, weights_dir, f"{recipe.name} (student)")

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        """The first `count` examples of the split (all of them when count <= 0)."""
        data = _splits(recipe)
        return labelled_samples(recipe, data.train, data.test, split, count)

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        return top1(outputs, samples)
