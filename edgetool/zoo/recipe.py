"""Recipes: `models/NAME/recipe.toml`, validated into a frozen Recipe.

A recipe says what to build (family + architecture parameters), what to train it on,
what its input looks like and how it exports by default. Its hash (recipe text +
weights) keys the export cache, so a retrained model never reuses a stale artifact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool import paths
from edgetool.config import TableReader, read_toml
from edgetool.errors import ModelError

FORMATS = ("onnx", "tflite")
QUANTS = ("fp32", "fp16", "int8", "int4", "w4a8")  # int4, w4a8: LLMs only


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    description: str
    dir: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    arch: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    export: Mapping[str, Any] = field(default_factory=dict)
    weights: str = "weights.pt"
    licence: str = ""
    split_cuts: tuple[str, ...] = ()
    """`[split] cut`: submodules whose output tensor the ONNX export names after them,
    so `edgetool split --points NAME` finds the cut the model was designed for."""

    @property
    def weights_path(self) -> Path:
        return self.dir / self.weights

    @property
    def default_format(self) -> str:
        return str(self.export.get("format", "onnx"))

    @property
    def default_quant(self) -> str:
        return str(self.export.get("quant", "fp32"))

    @property
    def opset(self) -> int:
        return int(self.export.get("opset", 17))

    def content_hash(self) -> str:
        """Recipe text + every weights file: what an exported artifact depends on."""
        digest = hashlib.sha256((self.dir / "recipe.toml").read_bytes())
        for entry in sorted(self.dir.glob("weights*")):
            # a weights directory (an LLM's Hugging Face layout) counts file by file
            files = [entry]
            if entry.is_dir():
                files = sorted(p for p in entry.rglob("*") if p.is_file())
            for path in files:
                digest.update(path.relative_to(self.dir).as_posix().encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> Recipe:
        """A copy with `train`/`arch`/`data` keys replaced (tests train tiny configs)."""
        from dataclasses import replace

        def merged(section: str) -> dict[str, Any]:
            return {**getattr(self, section), **overrides.get(section, {})}

        return replace(
            self,
            arch=merged("arch"),
            data=merged("data"),
            train=merged("train"),
            export=merged("export"),
        )


EXPORT_KEYS = (
    "format",
    "quant",
    "opset",
    "quants",
    "int8_ops",
    "stepped",
    "tolerances",
    "block_size",
    "builder",
)
"""`[export]` keys some part of edgetool reads (each checks the value where it uses it)."""


def _table(reader: TableReader, key: str) -> dict[str, Any]:
    """A free-form table whose keys its family validates ([arch], [data], [train])."""
    value = reader.value(key, {})
    if not isinstance(value, dict):
        reader.problem(f"'{key}' must be a table")
        return {}
    return value


def _positive_ints(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value
    )


def _inputs(reader: TableReader) -> list[TensorSpec]:
    raw_inputs = reader.value("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        reader.problem("'inputs' must be a list of {name, shape, dtype} tables")
        return []
    inputs = []
    for i, item in enumerate(raw_inputs):
        entry = reader.child(item if isinstance(item, dict) else {}, f"inputs[{i}].")
        shape = entry.value("shape")
        if not _positive_ints(shape):
            reader.problem(f"inputs[{i}].shape must be a list of positive integers")
            continue
        name = entry.text("name", f"input{i}")
        dtype = entry.text("dtype", "float32")
        entry.finish()
        inputs.append(TensorSpec(name, tuple(shape), dtype))
    return inputs


def _split_cuts(reader: TableReader) -> tuple[str, ...]:
    """`[split] cut = "name"` or a list of names (module names, so no dots or slashes)."""
    split = reader.table("split", {})
    cut = split.value("cut", [])
    names = [cut] if isinstance(cut, str) else cut
    if not isinstance(names, list) or not all(
        isinstance(n, str) and n and n.isidentifier() for n in names
    ):
        split.problem("split.cut must be a module name or a list of module names")
        names = []
    split.finish()
    return tuple(names)


def parse_recipe(path: Path) -> Recipe:
    """Validate a recipe file; every problem of the file is reported in one ConfigError."""
    reader = TableReader(path, read_toml(path, "recipe"))
    family = reader.value("family")
    if not isinstance(family, str):
        reader.problem("missing key 'family' (a string naming the model family)")
    inputs = _inputs(reader)
    outputs = reader.value("outputs", ["output"])
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        reader.problem("'outputs' must be a list of names")
    export_reader = reader.table("export", {})
    export = dict(export_reader.raw)
    if export.get("format", "onnx") not in FORMATS:
        export_reader.problem(f"export.format must be one of {', '.join(FORMATS)}")
    if export.get("quant", "fp32") not in QUANTS:
        export_reader.problem(f"export.quant must be one of {', '.join(QUANTS)}")
    for key in EXPORT_KEYS:
        export_reader.value(key)
    export_reader.finish()
    split_cuts = _split_cuts(reader)
    recipe = Recipe(
        name=reader.text("name", path.parent.name),
        family=str(family),
        description=reader.text("description", ""),
        dir=path.parent,
        inputs=tuple(inputs),
        outputs=tuple(outputs) if isinstance(outputs, list) else (),
        arch=_table(reader, "arch"),
        data=_table(reader, "data"),
        train=_table(reader, "train"),
        export=export,
        weights=reader.text("weights", "weights.pt"),
        licence=reader.text("licence", ""),
        split_cuts=split_cuts,
    )
    reader.finish()
    return recipe


def recipe_names() -> list[str]:
    root = paths.models_dir()
    return sorted(p.parent.name for p in root.glob("*/recipe.toml")) if root.is_dir() else []


def load_recipe(name: str) -> Recipe:
    path = paths.models_dir() / name / "recipe.toml"
    if not path.is_file():
        raise ModelError(f"unknown model '{name}' (zoo: {', '.join(recipe_names()) or 'empty'}).")
    return parse_recipe(path)


def recipe_of(manifest: Mapping[str, Any]) -> Recipe:
    """The recipe an artifact was exported from: the zoo model of that name, else the
    recipe directory its manifest records (an LLM exported from a user's HF directory)."""
    name = str(manifest.get("model", ""))
    if name and (paths.models_dir() / name / "recipe.toml").is_file():
        return load_recipe(name)
    recipe_dir = manifest.get("recipe_dir")
    if recipe_dir and (Path(str(recipe_dir)) / "recipe.toml").is_file():
        return parse_recipe(Path(str(recipe_dir)) / "recipe.toml")
    return load_recipe(name)
