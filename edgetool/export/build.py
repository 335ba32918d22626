"""`edgetool export`: recipe + weights -> artifact (file + manifest), cached by content;
and `--model` specs (a file, or a zoo `NAME[:FORMAT[:QUANT]]`) resolved to an artifact.

The cache key is the recipe's content hash (recipe text + weights), the format, the
quantization, the opset and this exporter's version: change any and a new artifact is
built; change none and the cached one is returned without importing torch.

The format picks the exporter from `EXPORTERS` (built-ins: onnx, tflite, c; third parties
through the `edgetool.exporters` entry point group). An exporter only writes the file:
this module checks the request, keys the cache, writes the manifest and publishes both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetool import __version__, paths
from edgetool.errors import ModelError
from edgetool.export.artifact import EXTENSIONS, MODEL_FORMATS, Artifact, manifest_path
from edgetool.registry import Registry
from edgetool.zoo.recipe import QUANTS, Recipe, load_recipe

if TYPE_CHECKING:
    from edgetool.zoo.family import Family

EXPORTER_VERSION = "2"  # 2: TinyLUT int8 C is the LUT kernel

Say = Callable[[str], None]


InputShape = tuple[int, ...]


@dataclass(frozen=True)
class ExportJob:
    """One artifact to write: everything an exporter is given."""

    family: Family
    recipe: Recipe
    """With any --input-shape already applied."""
    quant: str
    out: Path
    """Write the artifact here (a staging directory the pipeline publishes afterwards)."""
    say: Say
    input_shape: InputShape | None = None

    def source(self, fmt: str) -> Artifact:
        """The same model in another format, through the same cache (C is made from ONNX)."""
        return export(
            self.recipe.name,
            fmt,
            self.quant,
            progress=self.say,
            recipe=self.recipe,
            input_shape=self.input_shape,
        )


Exporter = Callable[[ExportJob], dict[str, Any]]
"""Writes `job.out` and returns manifest details. It imports its heavy libraries when
called, never at module level: a cache hit must not pay for them. A format the artifact
inspector cannot read returns its own description under "described"."""


def onnx_exporter(job: ExportJob) -> dict[str, Any]:
    from edgetool.export import onnx_export

    return onnx_export.export_onnx(
        job.family, job.recipe, job.recipe.dir, job.quant, job.out, job.say
    )


def tflite_exporter(job: ExportJob) -> dict[str, Any]:
    from edgetool.export import tflite_export

    return tflite_export.export_tflite(
        job.family, job.recipe, job.recipe.dir, job.quant, job.out, job.say
    )


def c_exporter(job: ExportJob) -> dict[str, Any]:
    """C source generated from the ONNX export (or by the family's own `build_c`)."""
    from edgetool.export import c_export
    from edgetool.export.inspect import describe

    onnx = job.source("onnx")
    described = describe(onnx.path)
    own_c = getattr(job.family, "build_c", None)
    details = own_c(job.recipe, job.quant, described, job.out) if own_c is not None else None
    if details is None:
        job.say(f"generating C with emx-onnx-cgen from {onnx.path.name}")
        details = c_export.export_c(onnx.path, described, job.recipe.name, job.out)
    else:
        c_export.append_glue(job.out, job.recipe.name, described)
        details = {"c_entry": c_export.ENTRY, **details}
    return {
        **details,
        "described": described,
        "params": onnx.manifest.get("params"),
        "source_onnx": {"path": str(onnx.path), "sha256": onnx.sha256},
    }


EXPORTERS: Registry[Exporter] = Registry(
    "export format",
    "edgetool.exporters",
    {
        "onnx": "edgetool.export.build:onnx_exporter",
        "tflite": "edgetool.export.build:tflite_exporter",
        "c": "edgetool.export.build:c_exporter",
    },
)


def cache_key(recipe: Recipe, fmt: str, quant: str, input_shape: InputShape | None = None) -> str:
    text = f"{recipe.content_hash()}|{fmt}|{quant}|{recipe.opset}|{EXPORTER_VERSION}"
    if input_shape is not None:  # absent from the key otherwise: existing caches stay valid
        text += f"|input={'x'.join(map(str, input_shape))}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_path(
    recipe: Recipe, fmt: str, quant: str, input_shape: InputShape | None = None
) -> Path:
    key = cache_key(recipe, fmt, quant, input_shape)
    return (
        paths.cache_dir()
        / "exports"
        / recipe.name
        / f"{fmt}-{quant}-{key}"
        / f"{recipe.name}-{quant}{EXTENSIONS[fmt]}"
    )


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`NAME[:FORMAT[:QUANT]]` -> (name, format or None, quant or None)."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ModelError(f"bad model spec '{spec}' (expected NAME[:FORMAT[:QUANT]])")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1] or None, parts[2] or None


def resolve_model(spec: str, progress: Any = None) -> Artifact:
    """A file path, a model shipped as files in models/NAME/, or a zoo recipe to export."""
    path = Path(spec)
    if path.suffix.lower() in MODEL_FORMATS or path.exists():
        return Artifact.from_path(path)
    name, fmt, quant = parse_spec(spec)
    if fmt is not None and fmt not in EXTENSIONS:
        raise ModelError(f"unknown format '{fmt}' in '{spec}' (expected onnx, tflite or c)")
    folder = paths.models_dir() / name
    if (folder / "recipe.toml").is_file():
        return export(name, fmt, quant, progress=progress)
    shipped = folder / f"{name}{EXTENSIONS[fmt or 'onnx']}"
    if shipped.is_file() and quant in (None, "fp32"):
        return Artifact.from_path(shipped)
    known = (
        sorted(d.name for d in paths.models_dir().iterdir() if d.is_dir())
        if paths.models_dir().is_dir()
        else []
    )
    raise ModelError(
        f"model '{spec}' is neither a file nor a zoo model (zoo: {', '.join(known) or 'none'})."
    )


def export(
    name: str,
    fmt: str | None = None,
    quant: str | None = None,
    *,
    force: bool = False,
    progress: Say | None = None,
    recipe: Recipe | None = None,
    input_shape: InputShape | None = None,
) -> Artifact:
    """`recipe` overrides the zoo lookup of `name` (an LLM from a user's HF directory);
    `input_shape` replaces the shape of the recipe's single input (e.g. a small image for
    a microcontroller) and is part of the cache key."""
    recipe = recipe or load_recipe(name)
    fmt = fmt or recipe.default_format
    quant = quant or recipe.default_quant
    if fmt not in EXPORTERS:
        raise ModelError(f"unknown format '{fmt}' (expected {', '.join(EXPORTERS.names())})")
    if fmt not in EXTENSIONS:
        raise ModelError(
            f"format '{fmt}' has an exporter but no model file type edgetool can load "
            f"(known: {', '.join(EXTENSIONS)})"
        )
    if fmt == "c" and quant != "fp32" and quant not in _native_quants(recipe):
        raise ModelError(
            f"{quant} C export is not supported yet: the C exporter takes fp32 graphs "
            "(and a family's native integer graph, such as TinyLUT's int8 LUTs).",
            hint="Use --quant fp32 (the default) with --format c.",
        )
    allowed = recipe.export.get("quants")
    if allowed is not None and quant not in allowed:
        raise ModelError(
            f"{recipe.name} exports only as {', '.join(allowed)}, not {quant} "
            f"([export].quants in {recipe.dir / 'recipe.toml'})"
        )
    if quant not in QUANTS:
        raise ModelError(f"unknown quantization '{quant}' (expected {', '.join(QUANTS)})")
    if fmt == "tflite" and quant == "fp16":
        raise ModelError(
            "fp16 TFLite is not supported: litert-torch and LiteRT's quantizer offer no "
            "float16 recipe. Use --format onnx --quant fp16, or --quant int8."
        )
    if not recipe.weights_path.exists():  # a file, or an LLM's model directory
        raise ModelError(
            f"{recipe.name} has no trained weights ({recipe.weights_path} missing).",
            hint=f"Run `edgetool train {recipe.name}` first.",
        )
    recipe = with_input_shape(recipe, input_shape)
    target = cached_path(recipe, fmt, quant, input_shape)
    if target.is_file() and manifest_path(target).is_file() and not force:
        return Artifact.from_path(target)
    say = progress or (lambda _msg: None)
    say(f"exporting {recipe.name} to {fmt} {quant} (recipe {recipe.content_hash()[:12]})")
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=_ensure(target.parent.parent)))
    try:
        staged = staging / target.name
        details = _build(recipe, fmt, quant, staged, say, input_shape)
        from edgetool.export.inspect import describe

        # A C file describes itself through the ONNX graph it was generated from.
        described = details.pop("described") if "described" in details else describe(staged)
        manifest = {
            "model": recipe.name,
            "family": recipe.family,
            "format": fmt,
            "quant": quant,
            "sha256": Artifact.from_path(staged).sha256,
            "size": staged.stat().st_size,
            "recipe_hash": recipe.content_hash(),
            "recipe_dir": str(recipe.dir),
            "opset": recipe.opset if fmt == "onnx" else None,
            "exporter": f"edgetool {__version__} (exporter v{EXPORTER_VERSION})",
            "export_seconds": round(time.perf_counter() - started, 3),
            **described,
            **details,
        }
        from edgetool.zoo.family import get_family

        extras = getattr(get_family(recipe.family), "manifest_extras", None)
        if extras is not None:
            manifest.update(extras(recipe))
        if input_shape is not None:
            manifest["input_shape_override"] = list(input_shape)
        manifest_path(staged).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        # Publish the whole directory at once: a reader never sees a file without manifest.
        if target.parent.exists():
            shutil.rmtree(target.parent)
        os.replace(staging, target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Artifact.from_path(target)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _native_quants(recipe: Recipe) -> frozenset[str]:
    """Quantizations a family builds itself (no QDQ pass): TinyLUT's int8 LUT graph."""
    from edgetool.zoo.family import get_family

    return frozenset(getattr(get_family(recipe.family), "native_quants", frozenset()))


def with_input_shape(recipe: Recipe, shape: InputShape | None) -> Recipe:
    """The recipe with its single input resized (`edgetool export --input-shape`)."""
    if shape is None:
        return recipe
    if len(recipe.inputs) != 1:
        raise ModelError(f"{recipe.name} has {len(recipe.inputs)} inputs; --input-shape needs one")
    spec = recipe.inputs[0]
    if len(shape) != len(spec.shape) or not all(d > 0 for d in shape):
        raise ModelError(
            f"{recipe.name}: input {spec.name} is {list(spec.shape)}; --input-shape "
            f"{'x'.join(map(str, shape))} must have {len(spec.shape)} positive dimensions"
        )
    return replace(recipe, inputs=(replace(spec, shape=tuple(shape)),))


def _build(
    recipe: Recipe,
    fmt: str,
    quant: str,
    out: Path,
    say: Say,
    input_shape: InputShape | None = None,
) -> dict[str, Any]:
    from edgetool.zoo.family import get_family

    family = get_family(recipe.family)
    formats = getattr(family, "formats", ("onnx", "tflite", "c"))
    quants = getattr(family, "quants", ("fp32", "fp16", "int8"))
    if fmt not in formats or quant not in quants:
        raise ModelError(
            f"{recipe.name} ({family.name} family) exports as {', '.join(formats)} in "
            f"{', '.join(quants)}, not {fmt} {quant}"
        )
    return EXPORTERS.get(fmt)(ExportJob(family, recipe, quant, out, say, input_shape))
