"""What each feature codec costs on the host, before any device is involved: bytes per
inference and the accuracy or fidelity lost against the unsplit model.

The codecs are the runner's own (edgetool/runner/split_runner.py), so the bytes measured
here are the bytes a device sends. Everything runs in onnxruntime on the CPU, one sample
per inference (the exported models have batch 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetool.errors import ModelError
from edgetool.runner import split_runner


@dataclass(frozen=True)
class CodecQuality:
    """One codec at one cut, over the test samples."""

    codec: str
    bytes_per_inference: float
    """Mean payload length over the test features (zstd varies per sample)."""
    ratio_vs_fp32: float | None
    """fp32 bytes / this codec's bytes: 8.0 means 8x less traffic; None for `none`."""
    max_abs_diff: float
    """Largest |output - unsplit model's output| over all outputs and samples."""
    top1: float | None
    """Accuracy against the labels, when the labels are class ids."""
    top1_agreement: float | None
    """Share of samples whose argmax matches the unsplit model's (classifiers only)."""
    psnr_db: float | None
    """Mean PSNR against the labels, when outputs and labels are images."""


@dataclass(frozen=True)
class SplitSamples:
    """A recipe's data for codec quality: calibration inputs (from the training data),
    held-out test inputs, and their labels (class ids or ground-truth images)."""

    calibration: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    labels: np.ndarray


class _Model:
    """An onnxruntime CPU session fed one sample at a time."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {path.name}: {exc}") from exc
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(out) for out in self.session.run(None, dict(feeds))]


def _samples(inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Per-sample feeds (batch 1) from arrays batched on axis 0."""
    counts = {len(array) for array in inputs.values()}
    if len(counts) != 1:
        raise ModelError("sample arrays hold different numbers of samples")
    return [
        {name: np.ascontiguousarray(array[k : k + 1]) for name, array in inputs.items()}
        for k in range(counts.pop())
    ]


def _head_features(head: _Model, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    outputs = [head.run(feed) for feed in _samples(inputs)]
    if outputs and len(outputs[0]) != 1:
        raise ModelError(
            f"a head must have one output (the crossing tensor), not {len(outputs[0])}"
        )
    return [out[0] for out in outputs]


def _is_class_ids(labels: np.ndarray | None, count: int) -> bool:
    return (
        labels is not None
        and labels.ndim == 1
        and labels.dtype.kind in "iu"
        and len(labels) == count
    )


def _is_images(first: np.ndarray, labels: np.ndarray | None) -> bool:
    return (
        labels is not None
        and first.ndim == 4
        and labels.ndim == 4
        and labels.shape == first.shape
        and labels.dtype.kind == "f"
    )


def psnr_db(outputs: np.ndarray, images: np.ndarray) -> float:
    """Mean per-image PSNR, the peak taken from the labels' range (255 or 1.0), outputs
    clipped to [0, peak] as a display would."""
    peak = 255.0 if float(images.max()) > 1.5 else 1.0
    out = np.clip(outputs.astype(np.float64), 0.0, peak)
    mse = ((out - images.astype(np.float64)) ** 2).reshape(len(out), -1).mean(axis=1)
    return float(np.mean(10.0 * np.log10(peak**2 / np.maximum(mse, 1e-12))))


def _score(
    codec: str,
    sizes: list[int],
    fp32_bytes: int,
    outputs: list[list[np.ndarray]],
    reference: list[list[np.ndarray]],
    labels: np.ndarray | None,
) -> CodecQuality:
    mean_bytes = float(np.mean(sizes)) if sizes else 0.0
    diff = max(
        (
            float(np.max(np.abs(o.astype(np.float64) - r))) if o.size else 0.0
            for out, ref in zip(outputs, reference, strict=True)
            for o, r in zip(out, ref, strict=True)
        ),
        default=0.0,
    )
    first = np.concatenate([out[0] for out in outputs])
    first_ref = np.concatenate([ref[0] for ref in reference])
    classifier = first.ndim == 2 and first.shape[1] > 1
    top1 = agreement = psnr = None
    if classifier:
        agreement = float((first.argmax(axis=1) == first_ref.argmax(axis=1)).mean())
        if labels is not None and _is_class_ids(labels, len(first)):
            top1 = float((first.argmax(axis=1) == labels).mean())
    if labels is not None and _is_images(first, labels):
        psnr = psnr_db(first, labels)
    return CodecQuality(
        codec=codec,
        bytes_per_inference=mean_bytes,
        ratio_vs_fp32=fp32_bytes / mean_bytes if mean_bytes > 0 else None,
        max_abs_diff=diff,
        top1=top1,
        top1_agreement=agreement,
        psnr_db=psnr,
    )


def codec_quality(
    full: Path,
    head: Path,
    tail: Path,
    codecs: Sequence[str],
    calibration: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
) -> dict[str, CodecQuality]:
    """Each codec's bytes and cost at the cut `head`/`tail` of `full`: calibrated on the
    head's features of the calibration inputs, scored on the test inputs against the
    unsplit model (and the labels, when they are class ids or images). `none` is the
    unsplit model itself (0 bytes)."""
    for name in codecs:
        split_runner.get_codec(name)  # unknown names fail before any model runs
    full_model, head_model, tail_model = _Model(full), _Model(head), _Model(tail)
    if len(tail_model.inputs) != 1:
        raise ModelError(f"a tail must have one input (the crossing tensor), not {tail.name}'s")
    tail_input = tail_model.inputs[0]
    reference = [full_model.run(feed) for feed in _samples(test)]
    features = _head_features(head_model, test)
    if not features:
        raise ModelError("codec quality needs at least one test sample")
    calibration_features = np.concatenate(_head_features(head_model, calibration) or features)
    fp32_bytes = int(features[0].size) * 4
    results: dict[str, CodecQuality] = {}
    for name in codecs:
        if name == "none":
            results[name] = _score(name, [], fp32_bytes, reference, reference, labels)
            continue
        params = split_runner.calibrate(name, calibration_features)
        sizes: list[int] = []
        outputs: list[list[np.ndarray]] = []
        for feature in features:
            payload = split_runner.encode(name, feature, params)
            sizes.append(len(payload))
            decoded = split_runner.decode(name, payload, params, feature.shape, "float32")
            outputs.append(tail_model.run({tail_input: decoded.astype(feature.dtype)}))
        results[name] = _score(name, sizes, fp32_bytes, outputs, reference, labels)
    return results


def recipe_samples(model: str, calibration: int = 64, test: int = 200) -> SplitSamples | None:
    """The zoo recipe's calibration and test samples for `model` (a zoo name), via its
    family's `samples` (what `verify` and int8 export use); None when `model` is no zoo
    recipe or its family ships no data."""
    from edgetool.zoo.family import get_family
    from edgetool.zoo.recipe import load_recipe, recipe_names

    if model not in recipe_names():
        return None
    recipe = load_recipe(model)
    family: Any = get_family(recipe.family)
    if not callable(getattr(family, "samples", None)):
        return None
    calib = family.samples(recipe, "calibration", calibration)
    held = family.samples(recipe, "test", test)
    return SplitSamples(
        calibration=dict(calib.inputs), test=dict(held.inputs), labels=np.asarray(held.targets)
    )


def quality_rows(results: Mapping[str, CodecQuality]) -> list[dict[str, Any]]:
    """JSON-able rows (NaN-free) for results files and --json."""
    rows = []
    for quality in results.values():
        row = dict(quality.__dict__)
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
        rows.append(row)
    return rows


def head_features(head: Path, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The head's crossing tensor for each input, batched on axis 0: what a codec is
    calibrated on (the same features `codec_quality` calibrates with)."""
    features = _head_features(_Model(head), inputs)
    if not features:
        raise ModelError("calibration needs at least one sample")
    return np.concatenate(features)
