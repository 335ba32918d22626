"""An artifact is a model file identified by its sha256, with a manifest beside it.

`--model` specs resolve to one: a path to an .onnx/.tflite file, or a zoo model
`NAME[:FORMAT[:QUANT]]` that is exported (and cached) on demand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool import paths
from edgetool.errors import ModelError
from edgetool.files import file_sha256

MODEL_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".c": "c"}
EXTENSIONS = {fmt: ext for ext, fmt in MODEL_FORMATS.items()}


def manifest_path(model: Path) -> Path:
    return model.with_name(model.name + ".manifest.json")


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size: int
    format: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: Path) -> Artifact:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        fmt = MODEL_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ModelError(
                f"{path.name}: unknown model format '{path.suffix}' (expected .onnx, .tflite or .c)"
            )
        size = path.stat().st_size
        if size == 0:
            raise ModelError(f"{path}: model file is empty")
        sha = file_sha256(path)
        manifest: dict[str, Any] = {}
        side = manifest_path(path)
        if side.is_file():
            try:
                loaded = json.loads(side.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ModelError(f"{side}: unreadable manifest ({exc})") from exc
            # A manifest describes exactly one file: ignore one left beside a different file.
            if isinstance(loaded, dict) and loaded.get("sha256") == sha:
                manifest = loaded
        return cls(path, sha, size, fmt, manifest)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": str(self.path),
            "name": self.path.name,
            "sha256": self.sha256,
            "size": self.size,
            "format": self.format,
        }
        for key in ("model", "quant", "recipe_hash", "params", "macs", "opset", "source_onnx"):
            if key in self.manifest:
                data[key] = self.manifest[key]
        return data


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
        from edgetool.export.build import export

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
