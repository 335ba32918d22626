"""`edgetool verify`: does an artifact compute what its PyTorch reference computes?

Runs the artifact in its runtime (onnxruntime, LiteRT) on held-out inputs, the reference
on the same inputs, and compares outputs (max abs error, RMSE, cosine similarity) and
the task metric (top-1 agreement, PSNR). Tolerances depend on the quantization and can
be tightened per recipe (`[export.tolerances.int8] max_abs = 0` for bit-exact LUTs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetool.errors import ModelError
from edgetool.export.artifact import Artifact
from edgetool.export.inspect import op_support
from edgetool.export.stepped import StepLayout, run_window
from edgetool.zoo.family import Samples, get_family
from edgetool.zoo.recipe import Recipe, recipe_of

DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    # max_rel: max abs error / max |reference|; agreement: top-1 share or PSNR drop (dB)
    "fp32": {"max_rel": 1e-4, "cosine": 0.99999, "top1_agreement": 0.99, "psnr_drop": 0.05},
    "fp16": {"max_rel": 1e-2, "cosine": 0.9995, "top1_agreement": 0.98, "psnr_drop": 0.2},
    "int8": {"max_rel": math.inf, "cosine": 0.98, "top1_agreement": 0.95, "psnr_drop": 1.0},
    # LLM weight quantizations: next-token agreement with the fp32 model is the measure
    "int4": {"max_rel": math.inf, "cosine": 0.95, "top1_agreement": 0.9, "psnr_drop": 1.0},
    "w4a8": {"max_rel": math.inf, "cosine": 0.95, "top1_agreement": 0.9, "psnr_drop": 1.0},
}


@dataclass
class VerifyReport:
    artifact: str
    model: str
    format: str
    quant: str
    reference: str
    samples: int
    max_abs: float
    rmse: float
    cosine: float
    metric_artifact: dict[str, float]
    metric_reference: dict[str, float]
    agreement: dict[str, float]
    tolerances: dict[str, float]
    failures: list[str] = field(default_factory=list)
    ops: dict[str, dict[str, bool | None]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def tolerances_for(recipe: Recipe, quant: str) -> dict[str, float]:
    merged = dict(DEFAULT_TOLERANCES[quant])
    overrides = recipe.export.get("tolerances", {})
    if isinstance(overrides, Mapping):
        merged.update({k: float(v) for k, v in dict(overrides.get(quant, {})).items()})
    return merged


class ArtifactRunner:
    """Batch-1 inference of an artifact, float in and float out whatever its I/O types."""

    def __init__(self, artifact: Artifact) -> None:
        self.format = artifact.format
        if artifact.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(
                str(artifact.path), options, providers=["CPUExecutionProvider"]
            )
            self.input_names = [i.name for i in self.session.get_inputs()]
        else:
            from ai_edge_litert.interpreter import Interpreter

            self.interp = Interpreter(model_path=str(artifact.path))
            self.interp.allocate_tensors()
            self.in_details = self.interp.get_input_details()
            self.out_details = self.interp.get_output_details()

    def outputs(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """Every output in the model's order, as the runtime returns it (dtype kept):
        a split model's head hands its tensor to the tail unchanged."""
        if self.format == "onnx":
            out = self.session.run(None, dict(zip(self.input_names, feeds, strict=True)))
            return [np.asarray(value) for value in out]
        for detail, value in zip(self.in_details, feeds, strict=True):
            self.interp.set_tensor(detail["index"], _quantize(value, detail))
        self.interp.invoke()
        return [np.asarray(self.interp.get_tensor(d["index"])) for d in self.out_details]

    def __call__(self, feeds: list[np.ndarray]) -> np.ndarray:
        if self.format == "onnx":
            out = self.session.run(None, dict(zip(self.input_names, feeds, strict=True)))
            return np.asarray(out[0], dtype=np.float64)
        for detail, value in zip(self.in_details, feeds, strict=True):
            self.interp.set_tensor(detail["index"], _quantize(value, detail))
        self.interp.invoke()
        detail = self.out_details[0]
        return _dequantize(self.interp.get_tensor(detail["index"]), detail)


def host_runner(artifact: Artifact) -> Callable[[list[np.ndarray]], np.ndarray]:
    """An ArtifactRunner; for a stepped artifact (edgetool.export.stepped) one that steps
    a whole window through it, so it compares with the unrolled reference."""
    runner = ArtifactRunner(artifact)
    layout = StepLayout.of(artifact.manifest)
    if layout is None:
        return runner

    def run(feeds: list[np.ndarray]) -> np.ndarray:
        counts = run_window(lambda packed: runner([packed]), layout, feeds[0])
        return counts.reshape(1, -1).astype(np.float64)

    return run


def _quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        q = np.round(value / scale) + zero
        return np.asarray(np.clip(q, info.min, info.max), dtype=dtype)
    return value.astype(dtype)


def _dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return np.asarray((value.astype(np.float64) - zero) * scale)
    return np.asarray(value, dtype=np.float64)


def reference_function(
    recipe: Recipe, quant: str
) -> tuple[str, Callable[[dict[str, np.ndarray]], np.ndarray]]:
    family = get_family(recipe.family)
    hook = getattr(family, "reference_fn", None)
    if hook is not None:
        custom = hook(recipe, recipe.dir, quant)
        if custom is not None:
            label = getattr(family, "reference_label", f"{family.name} reference for {quant}")
            return str(label), custom
    import torch

    module = family.reference(recipe, recipe.dir).eval()

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = [torch.from_numpy(inputs[spec.name]) for spec in recipe.inputs]
        with torch.no_grad():
            out = module(*tensors)
        first = out[0] if isinstance(out, tuple | list) else out
        return np.asarray(first.detach().numpy(), dtype=np.float64)

    return "PyTorch reference (fp32)", run


def verify(artifact: Artifact, count: int = 64) -> VerifyReport:
    manifest = artifact.manifest
    if not manifest.get("model"):
        raise ModelError(
            f"{artifact.path.name} has no edgetool manifest: verify needs an artifact made by "
            "`edgetool export` (or name a zoo model: `edgetool verify cbnet:onnx:int8`)."
        )
    from edgetool.export.build import with_input_shape

    override = manifest.get("input_shape_override")
    recipe = with_input_shape(recipe_of(manifest), tuple(override) if override else None)
    if manifest.get("recipe_hash") != recipe.content_hash():
        raise ModelError(
            f"{artifact.path.name} was exported from a different version of {recipe.name} "
            "(recipe or weights changed since).",
            hint=f"Export it again: `edgetool export {recipe.name} --format {artifact.format}`.",
        )
    quant = str(manifest.get("quant", "fp32"))
    family = get_family(recipe.family)
    samples = family.samples(recipe, "test", count)
    names = [spec.name for spec in recipe.inputs]
    total = len(samples.inputs[names[0]])
    custom_runner = getattr(family, "artifact_runner", None)
    runner = custom_runner(artifact) if custom_runner else host_runner(artifact)
    outputs = np.concatenate(
        [runner([samples.inputs[n][i : i + 1] for n in names]) for i in range(total)]
    )
    label, reference = reference_function(recipe, quant)
    expected = np.concatenate(
        [reference({n: samples.inputs[n][i : i + 1] for n in names}) for i in range(total)]
    )
    if outputs.shape != expected.shape:
        raise ModelError(
            f"{artifact.path.name}: output shape {outputs.shape} != reference {expected.shape}"
        )
    return _compare(artifact, recipe, quant, label, samples, outputs, expected, family.task)


def _compare(
    artifact: Artifact,
    recipe: Recipe,
    quant: str,
    label: str,
    samples: Samples,
    outputs: np.ndarray,
    expected: np.ndarray,
    task: str,
) -> VerifyReport:
    family = get_family(recipe.family)
    diff = outputs - expected
    max_abs = float(np.max(np.abs(diff)))
    rmse = float(np.sqrt(np.mean(diff**2)))
    a, b = outputs.ravel(), expected.ravel()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / denominator) if denominator else (1.0 if max_abs == 0 else 0.0)
    metric_art = family.task_metric(outputs, samples)
    metric_ref = family.task_metric(expected, samples)
    tol = tolerances_for(recipe, quant)
    agreement: dict[str, float] = {}
    failures: list[str] = []
    if task in ("classification", "language_modeling"):
        # language models: next-token agreement at every position of every window
        agreement["top1_agreement"] = float(
            np.mean(outputs.argmax(axis=-1) == expected.argmax(axis=-1))
        )
        if agreement["top1_agreement"] < tol["top1_agreement"]:
            failures.append(
                f"top-1 agreement {agreement['top1_agreement']:.3f} < {tol['top1_agreement']}"
            )
    if task == "language_modeling":
        agreement["perplexity_increase"] = float(
            metric_art["perplexity"] / metric_ref["perplexity"] - 1.0
        )
    elif task != "classification":
        agreement["psnr_drop"] = float(metric_ref["psnr"] - metric_art["psnr"])
        if agreement["psnr_drop"] > tol["psnr_drop"]:
            failures.append(f"PSNR drop {agreement['psnr_drop']:.3f} dB > {tol['psnr_drop']} dB")
    extra = getattr(family, "agreement", None)
    if extra is not None:
        agreement.update(extra(outputs, expected))
    scale = float(np.max(np.abs(expected))) or 1.0
    if "max_abs" in tol and max_abs > tol["max_abs"]:
        failures.append(f"max abs error {max_abs:.3g} > {tol['max_abs']:.3g}")
    if max_abs / scale > tol["max_rel"]:
        failures.append(
            f"max abs error {max_abs:.3g} is {max_abs / scale:.2g} of the output range "
            f"(> {tol['max_rel']:.2g})"
        )
    if cosine < tol["cosine"]:
        failures.append(f"cosine similarity {cosine:.6f} < {tol['cosine']}")
    return VerifyReport(
        artifact=str(artifact.path),
        model=recipe.name,
        format=artifact.format,
        quant=quant,
        reference=label,
        samples=len(outputs),
        max_abs=max_abs,
        rmse=rmse,
        cosine=cosine,
        metric_artifact=metric_art,
        metric_reference=metric_ref,
        agreement=agreement,
        tolerances=tol,
        failures=failures,
        ops=op_support(Path(artifact.path)),
    )
