"""L2MU: a Legendre Memory Unit whose every part is a population of spiking neurons.

Raw smartwatch IMU windows [B, 40, 6] go in, spike counts of 7 output neurons come out
(class = the neuron that spiked most). Equations (REFERENCES.md, L2MU):

* input:  each sensor channel -> Linear(1 -> population) -> LIF ("encoding-free")
* u:      I_u = e_x·x_t + e_h·h_{t-1} + e_m·m_{t-1},   s_u = LIF(I_u)
* memory: I_m = m_{t-1}·Āᵀ + s_u·B̄ᵀ (per memory row),  m_t = LIF(I_m)
* hidden: I_h = W_x·x_t + W_h·h_{t-1} + W_m·m_t,       h_t = LIF(I_h)
* output: Linear(h_t) -> LIF, counted over the window.

Ā, B̄ are the LMU's Legendre state space (order, θ) discretised by zero-order hold and
frozen as buffers. Training runs snntorch's neurons (``Leaky`` or current-based
``Synaptic``) with surrogate gradients; export runs the same equations written out with
``Greater -> Cast`` spikes and the 40 steps unrolled, so the graph needs no Loop/Scan and
no MatrixExp. Tests compare the two step by step.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate
from torch import nn

from edgetool.errors import ConfigError
from edgetool.zoo.family import (
    ProgressFn,
    Samples,
    labelled_samples,
    load_trained,
    register,
    top1,
)
from edgetool.zoo.recipe import Recipe
from edgetool.zoo.wisdm import ACTIVITIES, CHANNELS, STEPS, WindowSplits, load_windows

NEURONS = ("leaky", "synaptic")
State = tuple[torch.Tensor, ...]


def lmu_matrices(order: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ā [order, order], B̄ [order]): the Legendre delay system, ZOH with dt = 1.

    A_ij = (2i+1)·(-1 if i < j else (-1)^(i-j+1)), B_i = (2i+1)(-1)^i, both / θ. The
    exponential of the augmented matrix [[A, B], [0, 0]] yields Ā and B̄ in one step.
    """
    i = torch.arange(order, dtype=torch.float64)[:, None]
    j = torch.arange(order, dtype=torch.float64)[None, :]
    sign = torch.where(i < j, -torch.ones(()), (-1.0) ** (i - j + 1))
    a = (2 * i + 1) * sign / theta
    b = (2 * i[:, 0] + 1) * (-1.0) ** i[:, 0] / theta
    aug = torch.zeros((order + 1, order + 1), dtype=torch.float64)
    aug[:order, :order] = a
    aug[:order, order] = b
    expo = torch.linalg.matrix_exp(aug)
    return expo[:order, :order].float(), expo[:order, order].float()


class Population(nn.Module):
    """One population of LIF neurons, stepped by snntorch or by the written-out equations.

    snntorch (reset by subtraction, reset delayed one step):
      leaky:     U_t = β·U_{t-1} + I_t − S_{t-1}·θ
      synaptic:  J_t = α·J_{t-1} + I_t;  U_t = β·U_{t-1} + J_t − S_{t-1}·θ
      S_t = U_t > θ
    where S_{t-1} = U_{t-1} > θ is snntorch's reset signal. The explicit form keeps the
    same operation order, so in PyTorch the two agree bit for bit.
    """

    def __init__(self, kind: str, beta: float, alpha: float, threshold: float, slope: float):
        super().__init__()
        self.kind, self.beta, self.alpha, self.threshold = kind, beta, alpha, threshold
        grad = surrogate.fast_sigmoid(slope=slope)
        self.lif: nn.Module
        if kind == "leaky":
            self.lif = snn.Leaky(beta=beta, threshold=threshold, spike_grad=grad)
        else:
            self.lif = snn.Synaptic(alpha=alpha, beta=beta, threshold=threshold, spike_grad=grad)

    def init_state(self, like: torch.Tensor) -> State:
        zero = torch.zeros_like(like)
        # (spikes, membrane[, synaptic current])
        return (zero, zero, zero) if self.kind == "synaptic" else (zero, zero)

    def step(self, current: torch.Tensor, state: State, exact: bool) -> State:
        if not exact:
            if self.kind == "synaptic":
                spk, syn, mem = self.lif(current, state[2], state[1])
                return spk, mem, syn
            spk, mem = self.lif(current, state[1])
            return spk, mem
        spk_prev, mem_prev = state[0], state[1]
        if self.kind == "synaptic":
            syn = self.alpha * state[2] + current
            mem = self.beta * mem_prev + syn - spk_prev * self.threshold
            return (mem > self.threshold).to(mem.dtype), mem, syn
        mem = self.beta * mem_prev + current - spk_prev * self.threshold
        return (mem > self.threshold).to(mem.dtype), mem


class L2MU(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor
    a_bar_t: torch.Tensor
    b_bar: torch.Tensor

    def __init__(
        self,
        channels: int = CHANNELS,
        population: int = 8,
        memory: int = 16,
        order: int = 8,
        theta: float = float(STEPS),
        hidden: int = 64,
        classes: int = len(ACTIVITIES),
        neuron: str = "leaky",
        beta: float = 0.9,
        alpha: float = 0.8,
        threshold: float = 1.0,
        slope: float = 25.0,
        trace: bool = False,
    ) -> None:
        super().__init__()
        if neuron not in NEURONS:
            raise ConfigError(f"arch.neuron must be one of {', '.join(NEURONS)}, not '{neuron}'")
        self.memory, self.order, self.trace = memory, order, trace
        self.exact = False  # True: written-out equations (export); False: snntorch (training)
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        a_bar, b_bar = lmu_matrices(order, theta)
        self.register_buffer("a_bar_t", a_bar.T.contiguous())
        self.register_buffer("b_bar", b_bar)
        gen = torch.Generator().manual_seed(0)
        self.enc_w = nn.Parameter(torch.randn(channels, population, generator=gen))
        self.enc_b = nn.Parameter(torch.zeros(channels, population))
        spikes_in = channels * population
        self.e_x = nn.Linear(spikes_in, memory)
        self.e_h = nn.Linear(hidden, memory, bias=False)
        self.e_m = nn.Linear(memory * order, memory, bias=False)
        self.w_x = nn.Linear(spikes_in, hidden)
        self.w_h = nn.Linear(hidden, hidden, bias=False)
        self.w_m = nn.Linear(memory * order, hidden, bias=False)
        self.readout = nn.Linear(hidden, classes)
        self.pops = nn.ModuleDict(
            {
                name: Population(neuron, beta, alpha, threshold, slope)
                for name in ("x", "u", "m", "h", "out")
            }
        )

    def pop(self, name: str) -> Population:
        population = self.pops[name]
        assert isinstance(population, Population)
        return population

    def run(self, window: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Every population's spikes at every step (what the step-by-step tests compare)."""
        batch = window.shape[0]
        norm = (window - self.mean) / self.std  # [B, T, C]
        drive = (norm.unsqueeze(-1) * self.enc_w + self.enc_b).flatten(2)  # [B, T, C·P]
        zeros = {
            "x": drive[:, 0],
            "u": torch.zeros(batch, self.memory),
            "m": torch.zeros(batch, self.memory, self.order),
            "h": torch.zeros(batch, self.w_h.in_features),
            "out": torch.zeros(batch, self.readout.out_features),
        }
        state = {name: self.pop(name).init_state(like) for name, like in zeros.items()}
        record: dict[str, list[torch.Tensor]] = {name: [] for name in zeros}
        for t in range(window.shape[1]):
            state["x"] = self.pop("x").step(drive[:, t], state["x"], self.exact)
            s_x, h_prev = state["x"][0], state["h"][0]
            m_prev = state["m"][0].flatten(1)
            i_u = self.e_x(s_x) + self.e_h(h_prev) + self.e_m(m_prev)
            state["u"] = self.pop("u").step(i_u, state["u"], self.exact)
            i_m = state["m"][0] @ self.a_bar_t + state["u"][0].unsqueeze(-1) * self.b_bar
            state["m"] = self.pop("m").step(i_m, state["m"], self.exact)
            i_h = self.w_x(s_x) + self.w_h(h_prev) + self.w_m(state["m"][0].flatten(1))
            state["h"] = self.pop("h").step(i_h, state["h"], self.exact)
            state["out"] = self.pop("out").step(
                self.readout(state["h"][0]), state["out"], self.exact
            )
            for name in record:
                record[name].append(state[name][0])
        return record

    def forward(
        self, window: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        record = self.run(window)
        out_spikes = torch.stack(record["out"], dim=1)  # [B, T, classes]
        counts = out_spikes.sum(dim=1)
        if self.trace:
            return counts, torch.stack(record["h"], dim=1), out_spikes
        return counts


class L2MUStep(nn.Module):
    """One time step of an L2MU: [x_t | state] -> next state (edgetool.export.stepped).

    The state is every population's membrane (and synaptic current) plus the running
    output spike counts, flattened in the order x, u, m, h, out, counts; previous spikes
    are recomputed as membrane > threshold, exactly what the reset signal is. Stepping
    this module 40 times from a zero state gives the unrolled model's counts.
    """

    POPULATIONS = ("x", "u", "m", "h", "out")

    def __init__(self, model: L2MU) -> None:
        super().__init__()
        self.model = model
        self.channels = int(model.mean.shape[0])
        population = int(model.enc_w.shape[1])
        self.widths = {
            "x": self.channels * population,
            "u": model.memory,
            "m": model.memory * model.order,
            "h": model.w_h.in_features,
            "out": model.readout.out_features,
        }
        self.per_population = 3 if model.pop("x").kind == "synaptic" else 2  # spikes + 1 or 2
        self.classes = model.readout.out_features

    @property
    def state_size(self) -> int:
        return sum(self.widths.values()) * (self.per_population - 1) + self.classes

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        model, batch = self.model, packed.shape[0]
        x_t, offset = packed[:, : self.channels], self.channels
        state: dict[str, State] = {}
        for name in self.POPULATIONS:
            width = self.widths[name]
            parts = []
            for _ in range(self.per_population - 1):
                parts.append(packed[:, offset : offset + width])
                offset += width
            threshold = model.pop(name).threshold
            spikes = (parts[0] > threshold).to(packed.dtype)
            state[name] = (spikes, *parts)
        counts = packed[:, offset : offset + self.classes]
        m_shape = (batch, model.memory, model.order)
        state["m"] = tuple(part.reshape(m_shape) for part in state["m"])
        drive = ((x_t - model.mean) / model.std).unsqueeze(-1) * model.enc_w + model.enc_b
        state["x"] = model.pop("x").step(drive.flatten(1), state["x"], True)
        s_x, h_prev = state["x"][0], state["h"][0]
        i_u = model.e_x(s_x) + model.e_h(h_prev) + model.e_m(state["m"][0].flatten(1))
        state["u"] = model.pop("u").step(i_u, state["u"], True)
        i_m = state["m"][0] @ model.a_bar_t + state["u"][0].unsqueeze(-1) * model.b_bar
        state["m"] = model.pop("m").step(i_m, state["m"], True)
        i_h = model.w_x(s_x) + model.w_h(h_prev) + model.w_m(state["m"][0].flatten(1))
        state["h"] = model.pop("h").step(i_h, state["h"], True)
        state["out"] = model.pop("out").step(model.readout(state["h"][0]), state["out"], True)
        flat = [part.flatten(1) for name in self.POPULATIONS for part in state[name][1:]]
        return torch.cat([*flat, counts + state["out"][0]], dim=1)


def step_layout(recipe: Recipe) -> dict[str, int] | None:
    """The manifest's `stepped` entry for a recipe with `[export] stepped = true`; its
    keys are the layout edgetool.export.stepped reads back (verify and Bangle.js step
    through it)."""
    if not recipe.export.get("stepped"):
        return None
    step = L2MUStep(build(recipe))
    return {
        "steps": STEPS,
        "channels": step.channels,
        "state": step.state_size,
        "result": step.classes,
    }


def build(recipe: Recipe) -> L2MU:
    arch = dict(recipe.arch)
    known = {
        "population", "memory", "order", "theta", "hidden", "neuron",
        "beta", "alpha", "threshold", "slope", "trace",
    }  # fmt: skip
    unknown = sorted(set(arch) - known)
    if unknown:
        raise ConfigError(f"{recipe.name}: unknown arch key '{unknown[0]}'")
    try:
        return L2MU(**arch)
    except TypeError as exc:
        raise ConfigError(f"{recipe.name}: bad [arch] value: {exc}") from exc


def num_params(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded, one-thread training: the same recipe gives the same weights file."""
    threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _splits(recipe: Recipe) -> WindowSplits:
    return load_windows(recipe.data, recipe.dir)


def _counts(model: L2MU, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = [model(chunk) for chunk in x.split(256)]
    return torch.cat([o[0] if isinstance(o, tuple) else o for o in out])


def _accuracy(model: L2MU, x: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    counts = _counts(model, torch.from_numpy(x))
    return float((counts.argmax(1).numpy() == y).mean())


def train_l2mu(recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
    """Surrogate-gradient BPTT over the 40 steps; cross-entropy on output spike counts."""
    cfg = recipe.train
    seed, epochs = int(cfg.get("seed", 0)), int(cfg.get("epochs", 40))
    batch_size = int(cfg.get("batch_size", 64))
    data = _splits(recipe)
    started = time.perf_counter()
    with _deterministic(seed):
        model = build(recipe)
        x = torch.from_numpy(data.train.x)
        y = torch.from_numpy(data.train.y)
        model.mean.copy_(x.mean(dim=(0, 1)))
        model.std.copy_(x.std(dim=(0, 1)).clamp_min(1e-3))
        opt = torch.optim.Adam(model.parameters(), lr=float(cfg.get("lr", 2e-3)))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(1, epochs + 1):
            model.train()
            total, correct = 0.0, 0
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                counts = model(x[idx])
                assert isinstance(counts, torch.Tensor)
                loss = F.cross_entropy(counts, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                correct += int((counts.argmax(1) == y[idx]).sum())
            sched.step()
            progress(
                epoch, epochs, f"epoch {epoch} loss {total / len(x):.3f} acc {correct / len(x):.3f}"
            )
        model.eval()
        metrics: dict[str, Any] = {
            "model": recipe.name,
            "seed": seed,
            "data": data.source,
            "sizes": {"train": len(data.train.y), "val": len(data.val.y), "test": len(data.test.y)},
            "neuron": model.pop("h").kind,
            "params": num_params(model),
        }
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
            metrics[f"{name}_top1"] = _accuracy(model, split.x, split.y)
        with torch.no_grad():
            rates = {k: float(torch.stack(v).mean()) for k, v in model.run(x[:256]).items()}
        metrics["spike_rates"] = rates  # share of neurons spiking per step, per population
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / recipe.weights)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _load(recipe: Recipe, weights_dir: Path) -> L2MU:
    model = load_trained(build(recipe), recipe, weights_dir, recipe.name)
    assert isinstance(model, L2MU)
    return model


@register
class L2MUFamily:
    """Spiking LMU for 2 s smartwatch IMU windows; outputs spike counts per activity."""

    name = "l2mu"
    task = "classification"

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        return train_l2mu(recipe, out_dir, progress)

    def reference(self, recipe: Recipe, weights_dir: Path) -> nn.Module:
        """snntorch's neurons: what `verify` holds every artifact to."""
        return _load(recipe, weights_dir)

    def export_module(self, recipe: Recipe, weights_dir: Path, quant: str) -> nn.Module:
        """The same weights stepping the written-out equations (Greater -> Cast spikes)."""
        model = copy.deepcopy(_load(recipe, weights_dir))
        model.exact = True
        if not recipe.export.get("stepped"):
            return model
        step = L2MUStep(model)
        want = [1, step.channels + step.state_size]
        if [list(spec.shape) for spec in recipe.inputs] != [want]:
            raise ConfigError(
                f"{recipe.name}: a stepped L2MU with this [arch] takes one input of shape "
                f"{want} (x_t + state), not {[list(s.shape) for s in recipe.inputs]}"
            )
        return step

    def manifest_extras(self, recipe: Recipe) -> dict[str, Any]:
        layout = step_layout(recipe)
        return {"stepped": layout} if layout else {}

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        """The first `count` examples of the split (all of them when count <= 0)."""
        data = _splits(recipe)
        return labelled_samples(recipe, data.train, data.test, split, count)

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        return top1(outputs, samples)

    def agreement(self, outputs: np.ndarray, expected: np.ndarray) -> dict[str, float]:
        """Spike counts are integers: the share of (window, neuron) counts that match
        exactly, and the mean absolute count difference."""
        diff = np.abs(np.rint(outputs) - np.rint(expected))
        return {
            "spike_count_agreement": float(np.mean(diff == 0)),
            "spike_count_mad": float(np.mean(diff)),
        }
