"""A model's inputs checked on this host before anything is sent to a device.

The runner on the device is the authority (it feeds the model and records what it fed),
and this module uses the runner's own rules (`device_runner.resolve_shapes`,
`check_provided`), so the host and the device cannot disagree. Checking here first turns a
symbolic dim without a value, a wrong dtype or a stray array in `--input` into one line
before connecting, pushing and loading. Where this host cannot read the model (no `onnx`
or LiteRT installed) the check is left to the runner.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from edgetool.errors import ModelError
from edgetool.export.artifact import Artifact
from edgetool.flows.base import RunSettings
from edgetool.runner import device_runner
from edgetool.targets import Target

Shapes = Mapping[str, tuple[int, ...]]


def declared_inputs(artifact: Artifact) -> list[dict[str, Any]] | None:
    """The model's inputs as the runner describes them (name, shape with symbolic dims
    as names or -1, dtype, quantization); None when this host has no reader for it or
    cannot read it (a corrupt model is the runner's to report, as a failed run)."""
    suffix = artifact.path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_inputs(artifact)
    if suffix == ".tflite":
        return _tflite_inputs(artifact)
    return None


def _onnx_inputs(artifact: Artifact) -> list[dict[str, Any]] | None:
    try:
        import onnx
        from onnx import helper
    except ImportError:
        return None
    try:
        graph = onnx.load(str(artifact.path), load_external_data=False).graph
    except Exception:  # protobuf's DecodeError and others: the device's runtime says why
        return None
    initializers = {i.name for i in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        dims: list[Any] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim
        ]
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        specs.append({"name": value.name, "shape": dims, "dtype": str(dtype)})
    return specs


def _tflite_inputs(artifact: Artifact) -> list[dict[str, Any]] | None:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    try:
        details = Interpreter(model_path=str(artifact.path)).get_input_details()
    except Exception:  # a corrupt file fails on the device too, and is recorded there
        return None
    specs = []
    for detail in details:
        signature = detail.get("shape_signature")
        shape = detail["shape"] if signature is None or not len(signature) else signature
        spec: dict[str, Any] = {
            "name": detail["name"],
            "shape": [int(d) for d in shape],
            "dtype": str(detail["dtype"].__name__),
        }
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if scale:
            spec["quantization"] = [float(scale), int(zero_point)]
        specs.append(spec)
    return specs


def target_shapes(target: Target, artifact: Artifact) -> dict[str, tuple[int, ...]]:
    """The target's [input_shapes] for this model: every entry whose name or glob matches
    the model's name, file name or stem, later entries over earlier ones."""
    names = {artifact.path.name, artifact.path.stem, str(artifact.manifest.get("model") or "")}
    shapes: dict[str, tuple[int, ...]] = {}
    for pattern, per_input in target.input_shapes.items():
        if any(name and fnmatch.fnmatchcase(name, pattern) for name in names):
            shapes.update(per_input)
    return shapes


def _named(specs: list[dict[str, Any]] | None, shapes: Shapes) -> dict[str, tuple[int, ...]]:
    """'' (the only input) replaced by that input's name when the model is known."""
    if specs is None or "" not in shapes or len(specs) != 1:
        return dict(shapes)
    named = {k: v for k, v in shapes.items() if k}
    named[specs[0]["name"]] = shapes[""]
    return named


def concrete_shapes(
    artifact: Artifact, shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """Every input's shape as the runner would feed it, from the model's declaration and
    `shapes` ('' naming the only input): a symbolic leading dim of rank >= 2 is 1, any
    other unknown dim is the same ModelError a deploy gives. Host-side tools that need
    concrete shapes (shape inference for split points) use this, so they agree with it."""
    specs = declared_inputs(artifact)
    if specs is None:
        raise ModelError(f"{artifact.path.name}: this host cannot read the model's inputs")
    named = _named(specs, {name: tuple(dims) for name, dims in shapes.items()})
    given = {name: list(dims) for name, dims in named.items()}
    try:
        resolved = device_runner.resolve_shapes(specs, given)
    except device_runner.RunnerError as exc:
        raise ModelError(f"{artifact.path.name}: {exc.message}", hint=exc.hint) from exc
    return {name: tuple(shape) for name, (shape, _defaulted) in resolved.items()}


def prepare_inputs(
    target: Target, artifact: Artifact, settings: RunSettings, note: Callable[[str], None]
) -> RunSettings:
    """Settings whose `input_shapes` are what the runner gets (the target's [input_shapes]
    under --input-shape); ModelError when the model's inputs cannot be fed as asked."""
    if settings.new_tokens:  # an LLM's inputs are built by the generation loop
        return settings
    specs = declared_inputs(artifact)
    shapes = {
        **_named(specs, target_shapes(target, artifact)),
        **_named(specs, settings.input_shapes),
    }
    settings = replace(settings, input_shapes=shapes)
    if specs is None:
        return settings
    import numpy as np

    try:
        provided: dict[str, Any] = {}
        if settings.input is not None:
            provided = _load(np, specs, str(settings.input))
            device_runner.check_provided(np, specs, provided, settings.input.name)
        given = {name: list(dims) for name, dims in shapes.items()}
        resolved = device_runner.resolve_shapes(specs, given, tuple(provided))
    except device_runner.RunnerError as exc:
        raise ModelError(f"{artifact.path.name}: {exc.message}", hint=exc.hint) from exc
    for name, (shape, defaulted) in resolved.items():
        if defaulted:
            dims = "x".join(str(d) for d in shape)
            note(
                f"input {name!r}: {', '.join(defaulted)} (batch) set to 1 → {dims}; "
                f"--input-shape {name}=… to change it"
            )
    return settings


def _load(np: Any, specs: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """The --input file's arrays, read here as the runner reads them there."""
    model = device_runner.Model()
    model.inputs = specs
    return device_runner.load_provided(np, model, path)
