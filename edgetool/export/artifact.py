"""An artifact is a model file identified by its sha256; `--model` specs resolve to one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetool import paths
from edgetool.errors import ModelError
from edgetool.transport.base import file_sha256

MODEL_FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size: int
    format: str

    @classmethod
    def from_path(cls, path: Path) -> Artifact:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        fmt = MODEL_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ModelError(
                f"{path.name}: unknown model format '{path.suffix}' (expected .onnx or .tflite)"
            )
        size = path.stat().st_size
        if size == 0:
            raise ModelError(f"{path}: model file is empty")
        return cls(path, file_sha256(path), size, fmt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.path.name,
            "sha256": self.sha256,
            "size": self.size,
            "format": self.format,
        }


def models_dir() -> Path:
    return paths.REPO_ROOT / "models"


def resolve_model(spec: str) -> Artifact:
    """A path to an .onnx/.tflite file, or NAME[:FORMAT] of a model shipped in models/."""
    path = Path(spec)
    if path.suffix.lower() in MODEL_FORMATS or path.exists():
        return Artifact.from_path(path)
    name, _, fmt = spec.partition(":")
    fmt = fmt or "onnx"
    if fmt not in MODEL_FORMATS.values():
        raise ModelError(f"unknown format '{fmt}' in '{spec}' (expected onnx or tflite)")
    shipped = models_dir() / name / f"{name}.{fmt}"
    if shipped.is_file():
        return Artifact.from_path(shipped)
    known = (
        sorted(d.name for d in models_dir().iterdir() if d.is_dir() and any(d.glob(f"{d.name}.*")))
        if models_dir().is_dir()
        else []
    )
    raise ModelError(
        f"model '{spec}' is neither a file nor a shipped model "
        f"(shipped: {', '.join(known) or 'none'})."
    )
