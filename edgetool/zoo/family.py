"""Model families: the code behind recipes. Built-ins register by decorator, third
parties through the `edgetool.models` entry point group.

A family module imports torch at module level; this registry imports a family only
when a recipe asks for it, so `edgetool --help` and `models list` stay instant.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgetool.errors import ModelError

if TYPE_CHECKING:
    import torch

    from edgetool.zoo.recipe import Recipe

ProgressFn = Callable[[int, int, str], None]
"""(step, total steps, short status such as 'epoch 3 loss 0.21')"""


@dataclass(frozen=True)
class Samples:
    """Held-out or calibration data as the exported model sees it."""

    inputs: dict[str, np.ndarray]  # input name -> batch of inputs, float32, leading batch dim
    targets: np.ndarray  # labels (classification) or ground-truth images (restoration)


class LabelledSplit(Protocol):
    """A split of a labelled dataset (cbnet's digits, L2MU's windows)."""

    @property
    def x(self) -> np.ndarray: ...

    @property
    def y(self) -> np.ndarray: ...


def labelled_samples(
    recipe: Recipe, train: LabelledSplit, test: LabelledSplit, split: str, count: int
) -> Samples:
    """The first `count` examples (all when count <= 0) of the training data
    ("calibration") or the held-out data ("test"), under the recipe's input name."""
    from edgetool.errors import ConfigError

    if split not in ("calibration", "test"):
        raise ConfigError(f"unknown split '{split}' (expected calibration or test)")
    part = train if split == "calibration" else test
    n = len(part.y) if count <= 0 else min(count, len(part.y))
    name = recipe.inputs[0].name if recipe.inputs else "input"
    return Samples({name: np.ascontiguousarray(part.x[:n])}, np.asarray(part.y[:n]).copy())


def top1(outputs: np.ndarray, samples: Samples) -> dict[str, float]:
    """Share of examples whose largest output is the label (logits or spike counts)."""
    scores = np.asarray(outputs).reshape(len(samples.targets), -1)
    return {"top1": float((scores.argmax(axis=1) == samples.targets).mean())}


def load_trained(
    module: torch.nn.Module,
    recipe: Recipe,
    weights_dir: Path,
    label: str,
    adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> torch.nn.Module:
    """`module` with the recipe's trained state_dict, in eval mode; a missing, corrupt or
    mismatched weights file is one clear ModelError (`label` names the architecture)."""
    import pickle

    import torch

    path = Path(weights_dir) / recipe.weights
    if not path.is_file():
        raise ModelError(f"{path} not found", hint=f"train it first: edgetool train {recipe.name}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a torch state_dict ({type(exc).__name__})") from exc
    if adapt is not None:
        state = adapt(state)
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(f"{path}: weights do not fit {label}: {first}") from exc
    return module.eval()


class Family(Protocol):
    """What edgetool needs from a model family; see edgetool/zoo/cbnet.py for one."""

    name: str
    task: str  # "classification" | "super_resolution"

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        """Train from the recipe (seeded), write weights into out_dir, return metrics."""
        ...

    def reference(self, recipe: Recipe, weights_dir: Path) -> torch.nn.Module:
        """The trained PyTorch module in eval mode: what artifacts are verified against."""
        ...

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        """`split` is "calibration" (from the training data) or "test" (held out)."""
        ...

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        """The paper's metric for these outputs: {"top1": ...} or {"psnr": ...}."""
        ...


# Optional hooks a family may define (looked up with getattr by edgetool.export):
#
#   build_onnx(recipe, weights_dir, quant, opset) -> bytes | None
#       Build the ONNX graph itself instead of torch.onnx (TinyLUT's LUT graph).
#       Return None to fall back to the generic torch.onnx path for that quant.
#   export_module(recipe, weights_dir, quant) -> torch.nn.Module
#       The module litert-torch converts to TFLite, when it differs from reference().
#   build_c(recipe, quant, described, out) -> dict | None
#       Write the C export itself (TinyLUT's int8 LUT kernel) and return manifest details;
#       None falls back to emx-onnx-cgen on the ONNX graph. `described` is that graph's
#       inputs/outputs, which the C must take: the file defines `edgetool_model(inputs...,
#       outputs...)`, and the export appends the bench glue that calls it.
#   native_quants: frozenset[str]
#       Quantizations the family's own graph/module already implements (TinyLUT's int8
#       LUTs): exported as they are, never passed through a quantizer again.
#   reference_fn(recipe, weights_dir, quant) -> Callable[[dict[str, np.ndarray]], np.ndarray]
#       What `verify` compares an artifact of this quant against, when that is not
#       reference() (e.g. the bit-exact numpy LUT implementation).


_BUILTIN: dict[str, str] = {
    # family name -> module that defines and registers it
    "cbnet": "edgetool.zoo.cbnet",
    "entropic_student": "edgetool.zoo.entropic_student",
    "tinylut": "edgetool.zoo.tinylut",
    "fsrcnn": "edgetool.zoo.tinylut",
    "l2mu": "edgetool.zoo.l2mu",
    "llm": "edgetool.zoo.llm",
}
_REGISTRY: dict[str, Family] = {}


def register(cls: type[Any]) -> type[Any]:
    """Class decorator: `@register class CBNet: name = "cbnet" ...`."""
    _REGISTRY[cls.name] = cls()
    return cls


def get_family(name: str) -> Family:
    """By registered name, or `package.module:Class` for a family outside edgetool."""
    if name not in _REGISTRY and ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelError(f"cannot load model family '{name}': {exc}") from exc
        _REGISTRY[name] = cls()
    if name not in _REGISTRY:
        module = _BUILTIN.get(name)
        if module is None:
            for ep in entry_points(group="edgetool.models"):
                if ep.name == name:
                    module = ep.value.split(":")[0]
        if module is None:
            raise ModelError(f"unknown model family '{name}'")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ModelError(
                f"model family '{name}' needs {exc.name or 'a package'} "
                f"(pip install 'edgetool[train]')"
            ) from exc
    if name not in _REGISTRY:
        raise ModelError(f"module for family '{name}' did not register it")
    return _REGISTRY[name]
