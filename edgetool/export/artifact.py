"""An artifact is a model file identified by its sha256, with a manifest beside it.

`--model` specs resolve to one in edgetool.export.build (`resolve_model`): a path to an
.onnx/.tflite file, or a zoo model `NAME[:FORMAT[:QUANT]]` exported (and cached) on demand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
