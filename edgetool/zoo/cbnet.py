"""CBNet (Mahmud et al., 2024): a "converting" autoencoder turns hard digits into easy
ones so that a tiny classifier — the first exit of BranchyNet's B-LeNet — suffices.

One family, three recipes (``arch.variant``), so the paper's comparison is reproducible:

* ``cbnet``: autoencoder MLP 784→512→256→latent→784 (sigmoid) → B-LeNet's first exit.
* ``lenet``: the "full LeNet" baseline = B-LeNet's main branch alone (3 conv + 2 FC,
  exactly BranchyNet's layer sizes), trained on its own. Not a handicapped stand-in.
* ``branchynet``: B-LeNet with both exits. An exported graph must be static, so the
  module computes *both* exits and selects per sample with ``torch.where`` (first exit's
  logits where its entropy < threshold, else the last exit's). Its latency therefore
  measures the worst case (every input takes the long path); metrics.json reports the
  early-exit share, from which the dynamic runtime's average can be estimated.

Every module has one input ``image`` [N,1,28,28] and one output ``logits`` [N,10] and no
data-dependent Python control flow, so torch.onnx and litert-torch export it as is.

Hard/easy (as in the paper): an image is *easy* when it leaves B-LeNet's first exit
(softmax entropy < ``arch.entropy_threshold``, natural log). The autoencoder learns to
map easy images to themselves and hard ones to a fixed easy exemplar of their class (the
training image of that class with the lowest first-exit entropy), with BCE loss. Two
choices of ours: (1) for the autoencoder's *targets* a confident but wrong first-exit
answer counts as hard too (reproducing such an image would teach it to keep the error);
(2) training images are randomly shifted (±``train.ae_shift`` px) and judged easy/hard
as they are drawn, which yields more hard examples than the ~150 of 1.3 k digits.

cbnet's training trains its own B-LeNet first (same code, seed and settings as the
branchynet recipe, so the same weights; ~1 min), rather than reading
models/branchynet/weights.pt, so ``edgetool train cbnet`` never depends on another
model's files being current. The classifier is that B-LeNet's first exit, unchanged.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgetool.errors import ConfigError, ModelError
from edgetool.zoo.datasets import Split, Splits, load_splits
from edgetool.zoo.family import (
    ProgressFn,
    Samples,
    labelled_samples,
    load_trained,
    register,
    top1,
)
from edgetool.zoo.recipe import Recipe

VARIANTS = ("cbnet", "lenet", "branchynet", "classifier")
NUM_CLASSES = 10
SIDE = 28
DEFAULT_THRESHOLD = 0.05
DEFAULT_LATENT = 64
DEFAULT_AE_HIDDEN = (512, 256)


# --- modules --------------------------------------------------------------------------
# Layer sizes follow BranchyNet's B-LeNet (Chainer): max pooling there covers the whole
# input (cover_all), i.e. ceil_mode=True here, which is what makes 640 and 720 fit.


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, 2, ceil_mode=True)


def _stem() -> nn.Conv2d:
    """Shared first layer of both B-LeNet branches: 28×28 → 5×30×30."""
    return nn.Conv2d(1, 5, 5, padding=3)


def _exit1() -> nn.Sequential:
    """B-LeNet's early branch after the stem (~6.9 k params): → 10×8×8 → 10 logits."""
    return nn.Sequential(
        _pool(),
        nn.ReLU(),
        nn.Conv2d(5, 10, 3, padding=1),
        _pool(),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(640, NUM_CLASSES),
    )


def _trunk() -> nn.Sequential:
    """B-LeNet's main branch after the stem, up to the 84-wide feature."""
    return nn.Sequential(
        _pool(),
        nn.ReLU(),
        nn.Conv2d(5, 10, 5, padding=3),
        _pool(),
        nn.ReLU(),
        nn.Conv2d(10, 20, 5, padding=3),
        _pool(),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(720, 84),
    )


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy per row (nats), shape [N, 1]: BranchyNet's exit criterion."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1, keepdim=True)


class FirstExit(nn.Module):
    """The lightweight classifier: stem + early branch of B-LeNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _stem()
        self.exit1 = _exit1()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.exit1(self.stem(image))
        return out


class LeNet(nn.Module):
    """The "full LeNet" baseline: B-LeNet's main path (same parameter names)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _stem()
        self.trunk = _trunk()
        self.exit2 = nn.Linear(84, NUM_CLASSES)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.exit2(self.trunk(self.stem(image)))
        return out


class BLeNet(nn.Module):
    """BranchyNet's B-LeNet; forward = static early exit (both exits always computed)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        super().__init__()
        self.stem = _stem()
        self.exit1 = _exit1()
        self.trunk = _trunk()
        self.exit2 = nn.Linear(84, NUM_CLASSES)
        self.threshold = float(threshold)  # a constant in the graph, not a weight

    def exits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stem(image)
        return self.exit1(h), self.exit2(self.trunk(h))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        first, last = self.exits(image)
        return torch.where(entropy(first) < self.threshold, first, last)

    def first_exit(self) -> FirstExit:
        """A FirstExit sharing this network's stem and early branch weights (copied)."""
        head = FirstExit()
        head.stem.load_state_dict(self.stem.state_dict())
        head.exit1.load_state_dict(self.exit1.state_dict())
        return head


class ConvertingAE(nn.Module):
    """MLP autoencoder 784→hidden…→latent→784 with sigmoid output, image in, image out."""

    def __init__(
        self,
        latent: int = DEFAULT_LATENT,
        hidden: Sequence[int] = DEFAULT_AE_HIDDEN,
        decoder_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__()
        enc: list[nn.Module] = [nn.Flatten()]
        width = SIDE * SIDE
        for h in (*hidden, latent):
            enc += [nn.Linear(width, h), nn.ReLU()]
            width = h
        dec: list[nn.Module] = []
        for h in decoder_hidden:
            dec += [nn.Linear(width, h), nn.ReLU()]
            width = h
        dec += [nn.Linear(width, SIDE * SIDE)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output [N, 784] (BCE-with-logits is the stable way to train)."""
        out: torch.Tensor = self.decoder(self.encoder(image))
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.sigmoid(self.logits(image)).unflatten(1, (1, SIDE, SIDE))
        return out


class CBNet(nn.Module):
    """Converting autoencoder → lightweight classifier, exported as one graph."""

    def __init__(self, ae: ConvertingAE, classifier: FirstExit) -> None:
        super().__init__()
        self.ae = ae
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.ae(image))
        return out


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, shape: tuple[int, ...] = (1, 1, SIDE, SIDE)) -> int:
    """Multiply-accumulates of Conv2d + Linear layers for one forward pass."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            per_out = mod.in_channels // mod.groups * math.prod(mod.kernel_size)
            total += out.numel() * per_out
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            module(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
    return total


# --- recipe helpers -------------------------------------------------------------------


def _variant(recipe: Recipe) -> str:
    variant = str(recipe.arch.get("variant", "cbnet"))
    if variant not in VARIANTS:
        raise ConfigError(f"{recipe.name}: arch.variant must be one of {', '.join(VARIANTS)}")
    return variant


def _threshold(recipe: Recipe) -> float:
    return float(recipe.arch.get("entropy_threshold", DEFAULT_THRESHOLD))


def _ints(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, int) and v > 0 for v in value):
        raise ConfigError(f"arch.{key} must be a list of positive integers")
    return tuple(value)


def build(recipe: Recipe) -> nn.Module:
    """The untrained module for the recipe's variant."""
    variant = _variant(recipe)
    if variant == "lenet":
        return LeNet()
    if variant == "branchynet":
        return BLeNet(_threshold(recipe))
    if variant == "classifier":  # CBNet's classifier alone (microcontroller-sized)
        return FirstExit()
    ae = ConvertingAE(
        int(recipe.arch.get("latent", DEFAULT_LATENT)),
        _ints(recipe.arch.get("ae_hidden", list(DEFAULT_AE_HIDDEN)), "ae_hidden"),
        _ints(recipe.arch.get("decoder_hidden", []), "decoder_hidden"),
    )
    return CBNet(ae, FirstExit())


def _splits(recipe: Recipe) -> Splits:
    return load_splits(recipe.data, recipe.dir)


# --- training -------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch + numpy, force deterministic kernels on one thread; restore after."""
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    # One thread: the same float reductions on any machine (weights reproduce across core
    # counts), and on 2 shared cores it is ~3-20x faster than 2 contending threads.
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)


def _tensor(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(split.x), torch.from_numpy(split.y)


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to max_shift pixels (digits sit in a 4-px empty border,
    so a roll of ≤ 4 is an exact shift): cheap augmentation for 1.3 k training images."""
    if max_shift <= 0:
        return x
    offsets = torch.randint(-max_shift, max_shift + 1, (x.shape[0], 2), generator=gen)
    return torch.stack(
        [
            torch.roll(img, (int(dy), int(dx)), dims=(1, 2))
            for img, (dy, dx) in zip(x, offsets, strict=True)
        ]
    )


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


@torch.no_grad()
def _predict(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in x.split(512)])


def _top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if y.numel() else 0.0


class _Progress:
    """Counts epochs across training phases for one ProgressFn."""

    def __init__(self, fn: ProgressFn, total: int) -> None:
        self.fn, self.total, self.step = fn, total, 0

    def __call__(self, message: str) -> None:
        self.step += 1
        self.fn(self.step, self.total, message)


def _train_classifier(
    model: nn.Module,
    exits: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    weights: Sequence[float],
    data: Splits,
    train: Mapping[str, Any],
    gen: torch.Generator,
    progress: _Progress,
    label: str,
) -> None:
    """Cross-entropy on every exit, weighted (BranchyNet's joint training; 1 exit = plain)."""
    x, y = _tensor(data.train)
    epochs = int(train.get("epochs", 30))
    opt = torch.optim.Adam(model.parameters(), lr=float(train.get("lr", 1e-3)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    shift = int(train.get("shift", 2))
    for epoch in range(1, epochs + 1):
        model.train()
        total, correct, seen = 0.0, 0, 0
        for idx in _batches(len(x), int(train.get("batch_size", 64)), gen):
            xb, yb = _shift(x[idx], shift, gen), y[idx]
            outs = exits(xb)
            loss = sum(
                (w * F.cross_entropy(o, yb) for w, o in zip(weights, outs, strict=True)),
                start=torch.zeros(()),
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((outs[-1].argmax(1) == yb).sum())
            seen += len(idx)
        sched.step()
        progress(f"{label} epoch {epoch} loss {total / seen:.3f} acc {correct / seen:.3f}")
    model.eval()


def _exemplars(
    x: torch.Tensor, y: torch.Tensor, first: torch.Tensor, ent: torch.Tensor
) -> torch.Tensor:
    """Per class, the correctly classified training image with the lowest entropy."""
    out = torch.zeros((NUM_CLASSES, *x.shape[1:]))
    correct = first.argmax(1) == y
    for cls in range(NUM_CLASSES):
        pool = torch.nonzero((y == cls) & correct).flatten()
        if pool.numel() == 0:
            pool = torch.nonzero(y == cls).flatten()
        if pool.numel() == 0:
            raise ModelError(f"class {cls} has no training images: cannot pick an exemplar")
        out[cls] = x[pool[ent[pool].argmin()]]
    return out


def _train_ae(
    ae: ConvertingAE,
    data: Split,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train: Mapping[str, Any],
    gen: torch.Generator,
    progress: _Progress,
) -> None:
    """BCE between the AE's output and `targets(input, label)`, on shifted copies.

    Easy/hard is decided per (augmented) image as it is drawn, so shifting adds hard
    examples too instead of only more easy ones.
    """
    x, y = _tensor(data)
    epochs = int(train.get("ae_epochs", 40))
    shift = int(train.get("ae_shift", train.get("shift", 2)))
    opt = torch.optim.Adam(ae.parameters(), lr=float(train.get("ae_lr", 1e-3)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    for epoch in range(1, epochs + 1):
        ae.train()
        total = 0.0
        for idx in _batches(len(x), int(train.get("batch_size", 64)), gen):
            xb = _shift(x[idx], shift, gen)
            target = targets(xb, y[idx]).flatten(1)
            loss = F.binary_cross_entropy_with_logits(ae.logits(xb), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        progress(f"autoencoder epoch {epoch} bce {total / len(x):.4f}")
    ae.eval()


def _blenet_report(net: BLeNet, split: Split, prefix: str) -> dict[str, float]:
    x, y = _tensor(split)
    first, last = (torch.cat(t) for t in zip(*(net.exits(c) for c in x.split(512)), strict=True))
    early = entropy(first).flatten() < net.threshold
    chosen = torch.where(early[:, None], first, last)
    return {
        f"{prefix}_top1": _top1(chosen, y),
        f"{prefix}_exit1_top1": _top1(first, y),
        f"{prefix}_exit2_top1": _top1(last, y),
        f"{prefix}_early_exit_share": float(early.float().mean()),
    }


def _train_blenet(
    recipe: Recipe, data: Splits, gen: torch.Generator, progress: _Progress
) -> BLeNet:
    net = BLeNet(_threshold(recipe))
    weights = [float(w) for w in recipe.train.get("exit_weights", [1.0, 1.0])]
    _train_classifier(net, net.exits, weights, data, recipe.train, gen, progress, "b-lenet")
    return net


def _write(out_dir: Path, module: nn.Module, metrics: dict[str, Any], weights: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), out_dir / weights)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def train_variant(recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
    variant = _variant(recipe)
    seed = int(recipe.train.get("seed", 0))
    data = _splits(recipe)
    epochs = int(recipe.train.get("epochs", 30))
    total = epochs + (int(recipe.train.get("ae_epochs", 40)) if variant == "cbnet" else 0)
    steps = _Progress(progress, total)
    started = time.perf_counter()
    metrics: dict[str, Any] = {
        "model": recipe.name,
        "variant": variant,
        "seed": seed,
        "data": data.source,
        "sizes": {"train": len(data.train.y), "val": len(data.val.y), "test": len(data.test.y)},
    }
    with _deterministic(seed):
        gen = torch.Generator().manual_seed(seed)
        module: nn.Module
        if variant == "lenet":
            module = LeNet()
            _train_classifier(
                module, lambda t: (module(t),), [1.0], data, recipe.train, gen, steps, "lenet"
            )
        else:
            blenet = _train_blenet(recipe, data, gen, steps)
            metrics["entropy_threshold"] = blenet.threshold
            with torch.no_grad():
                for name, split in (("val", data.val), ("test", data.test)):
                    metrics.update(_blenet_report(blenet, split, f"branchynet_{name}"))
            module = blenet
            if variant == "cbnet":
                module = _train_cbnet(recipe, blenet, data, gen, steps, metrics)
            elif variant == "classifier":
                module = blenet.first_exit()
        module.eval()
        for name, split in (("val", data.val), ("test", data.test)):
            x, y = _tensor(split)
            metrics[f"{name}_top1"] = _top1(_predict(module, x), y)
    metrics["params"] = num_params(module)
    metrics["macs"] = count_macs(module)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    _write(out_dir, module, metrics, recipe.weights)
    return metrics


def _train_cbnet(
    recipe: Recipe,
    blenet: BLeNet,
    data: Splits,
    gen: torch.Generator,
    steps: _Progress,
    metrics: dict[str, Any],
) -> CBNet:
    threshold = blenet.threshold
    head = blenet.first_exit().eval()
    x, y = _tensor(data.train)
    with torch.no_grad():
        first = _predict(head, x)
    ent = entropy(first).flatten()
    leaves = ent < threshold
    exemplars = _exemplars(x, y, first, ent)

    @torch.no_grad()
    def targets(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = head(xb)
        easy = (entropy(logits).flatten() < threshold) & (logits.argmax(1) == yb)
        return torch.where(easy[:, None, None, None], xb, exemplars[yb])

    model = build(recipe)
    assert isinstance(model, CBNet)
    model.classifier = head
    _train_ae(model.ae, data.train, targets, recipe.train, gen, steps)
    metrics["hard_share_train"] = float((~leaves).float().mean())
    metrics["ae_params"] = num_params(model.ae)
    metrics["classifier_params"] = num_params(model.classifier)
    metrics["ae_macs"] = count_macs(model.ae)
    metrics["classifier_macs"] = count_macs(model.classifier)
    with torch.no_grad():
        for name, split in (("val", data.val), ("test", data.test)):
            xs, ys = _tensor(split)
            first_logits = _predict(head, xs)
            hard = entropy(first_logits).flatten() >= threshold
            full = _predict(model, xs)
            metrics[f"{name}_hard_share"] = float(hard.float().mean())
            metrics[f"{name}_first_exit_top1"] = _top1(first_logits, ys)
            metrics[f"{name}_top1_easy"] = _top1(full[~hard], ys[~hard])
            metrics[f"{name}_top1_hard"] = _top1(full[hard], ys[hard])
            metrics[f"{name}_first_exit_top1_hard"] = _top1(first_logits[hard], ys[hard])
    return model


# --- the family -----------------------------------------------------------------------


@register
class CBNetFamily:
    """CBNet and the baselines it is compared against (LeNet, BranchyNet)."""

    name = "cbnet"
    task = "classification"

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        """Seeded, deterministic CPU training; writes weights + metrics.json to out_dir."""
        return train_variant(recipe, out_dir, progress)

    def reference(self, recipe: Recipe, weights_dir: Path) -> nn.Module:
        def whole_cbnet_too(state: dict[str, Any]) -> dict[str, Any]:
            """A whole CBNet's weights work for the classifier variant: take that part."""
            if _variant(recipe) == "classifier" and any(k.startswith("classifier.") for k in state):
                return {k[11:]: v for k, v in state.items() if k.startswith("classifier.")}
            return state

        label = f"{recipe.name} ({_variant(recipe)})"
        return load_trained(build(recipe), recipe, weights_dir, label, whole_cbnet_too)

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        """The first `count` examples of the split (all of them when count <= 0)."""
        data = _splits(recipe)
        return labelled_samples(recipe, data.train, data.test, split, count)

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        return top1(outputs, samples)
