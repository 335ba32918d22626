"""Digit datasets that need no download: scikit-learn's bundled digits, and MNIST-format
IDX files the user already has on disk.

Both come out as float32 images [N, 1, 28, 28] in [0, 1] with int64 labels, split into
train / val / test with a fixed seed, so every family sees the same data for a recipe.

Recipe `[data]` table (read by :func:`load_splits`):

* ``source = "digits"`` (default): sklearn digits (1797 images, 8×8, 0..16), upscaled.
* ``source = "idx"``: ``images`` / ``labels`` (training IDX files, ``.gz`` or not) and
  optionally ``test_images`` / ``test_labels`` (used as the test split; without them the
  test split is carved out of the training files). Relative paths resolve against
  ``$EDGETOOL_MNIST_DIR`` when it is set, else against the recipe directory.
* ``split_seed`` (default 0), ``val_fraction`` (0.1), ``test_fraction`` (0.2).
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetool.errors import ConfigError, ModelError

MNIST_DIR_ENV = "EDGETOOL_MNIST_DIR"
IMAGE_SIDE = 28
DIGIT_BOX = 20  # MNIST centres each digit in a 20×20 box inside the 28×28 frame

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/ format)
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


@dataclass(frozen=True)
class Split:
    x: FloatArray  # [N, 1, 28, 28] float32 in [0, 1]
    y: IntArray  # [N] int64 class labels


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    source: str  # human-readable provenance for metrics.json


# --- scikit-learn digits --------------------------------------------------------------


def _bilinear_matrix(n_in: int, n_out: int) -> npt.NDArray[np.float64]:
    """[n_out, n_in] half-pixel-centred bilinear weights (align_corners=False, edge clamp)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


def upscale_digits(images8: npt.ArrayLike) -> FloatArray:
    """8×8 digits (0..16) -> [N, 1, 28, 28] in [0, 1], digit in the central 20×20 box.

    Mirrors MNIST's layout (20×20 digit, 4-pixel border) so a LeNet sized for MNIST sees
    the proportions it was designed for.
    """
    imgs = np.asarray(images8, dtype=np.float64).reshape(-1, 8, 8) / 16.0
    r = _bilinear_matrix(8, DIGIT_BOX)
    up = np.einsum("ij,njk,lk->nil", r, imgs, r)
    pad = (IMAGE_SIDE - DIGIT_BOX) // 2
    out = np.zeros((imgs.shape[0], 1, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    out[:, 0, pad : pad + DIGIT_BOX, pad : pad + DIGIT_BOX] = np.clip(up, 0.0, 1.0)
    return out


def split_indices(
    labels: IntArray, seed: int, val_fraction: float, test_fraction: float
) -> tuple[IntArray, IntArray, IntArray]:
    """Stratified, seeded: every class is split in the same proportions."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(idx.size)]
        n_test = round(idx.size * test_fraction)
        n_val = round(idx.size * val_fraction)
        parts[2].extend(idx[:n_test].tolist())
        parts[1].extend(idx[n_test : n_test + n_val].tolist())
        parts[0].extend(idx[n_test + n_val :].tolist())
    train, val, test = (np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
    return train, val, test


@functools.lru_cache(maxsize=4)
def _digits_cached(seed: int, val_fraction: float, test_fraction: float) -> Splits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = upscale_digits(bunch.images)
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va, te = split_indices(y, seed, val_fraction, test_fraction)
    return Splits(
        Split(x[tr], y[tr]),
        Split(x[va], y[va]),
        Split(x[te], y[te]),
        source="sklearn digits (UCI optdigits, BSD-3) 8x8 -> 28x28",
    )


def load_digits_28(seed: int, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """scikit-learn's bundled digits as 28×28 MNIST-like images, split with `seed`."""
    return _digits_cached(seed, val_fraction, test_fraction)


# --- MNIST-format IDX files -----------------------------------------------------------


def read_idx(path: Path | str) -> npt.NDArray[Any]:
    """Read one IDX file (gzip-compressed or not) into a numpy array of its dims.

    Raises ModelError for a missing, truncated or malformed file: the user gave us the
    path, so the message names it and what is wrong.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"IDX file not found: {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read IDX file {path}: {exc.strerror}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ModelError(f"{path}: corrupt gzip stream ({exc})") from exc
    if len(raw) < 4:
        raise ModelError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ModelError(f"{path}: not an IDX file (magic {raw[:4].hex()}, expected 0000TTDD)")
    type_code, ndim = raw[2], raw[3]
    dtype = _IDX_DTYPES.get(type_code)
    if dtype is None:
        raise ModelError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0:
        raise ModelError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ModelError(f"{path}: truncated IDX header ({len(raw)} < {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    itemsize = np.dtype(dtype).itemsize
    expected = header + int(np.prod(dims, dtype=np.int64)) * itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise ModelError(
            f"{path}: {what}: dims {list(dims)} need {expected} bytes, file has {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(data.dtype.newbyteorder("="))


def load_mnist_idx(images_path: Path | str, labels_path: Path | str) -> Split:
    """An MNIST-format image/label pair (magic 0x803 / 0x801) as float32 [N,1,28,28], int64."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ModelError(f"{images_path}: expected images [N, 28, 28], got {list(images.shape)}")
    if labels.ndim != 1:
        raise ModelError(f"{labels_path}: expected labels [N], got {list(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ModelError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ModelError(
            f"{labels_path}: labels must be 0..9, found {labels.min()}..{labels.max()}"
        )
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    x = (images.astype(np.float32) / np.float32(scale))[:, None, :, :]
    return Split(np.ascontiguousarray(x), labels.astype(np.int64))


def _resolve(value: Any, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"data.{key} must be a path to an IDX file (data.source = 'idx')")
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return path
    env = os.environ.get(MNIST_DIR_ENV)
    return (Path(env) if env else base) / path


def load_splits(data: Mapping[str, Any], base: Path) -> Splits:
    """The train/val/test splits a recipe's `[data]` table asks for (see module doc)."""
    seed = int(data.get("split_seed", 0))
    val_fraction = float(data.get("val_fraction", 0.1))
    test_fraction = float(data.get("test_fraction", 0.2))
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError("data.val_fraction and data.test_fraction must be in (0, 1), sum < 1")
    source = str(data.get("source", "digits"))
    if source == "digits":
        return load_digits_28(seed, val_fraction, test_fraction)
    if source != "idx":
        raise ConfigError(f"data.source must be 'digits' or 'idx', not '{source}'")
    images = _resolve(data.get("images"), "images", base)
    labels = _resolve(data.get("labels"), "labels", base)
    full = load_mnist_idx(images, labels)
    has_test = "test_images" in data or "test_labels" in data
    tr, va, te = split_indices(full.y, seed, val_fraction, 0.0 if has_test else test_fraction)
    if has_test:
        test = load_mnist_idx(
            _resolve(data.get("test_images"), "test_images", base),
            _resolve(data.get("test_labels"), "test_labels", base),
        )
    else:
        test = Split(full.x[te], full.y[te])
    if min(tr.size, va.size, test.y.size) == 0:
        raise ModelError(f"{images}: too few images to split into train/val/test")
    return Splits(
        Split(full.x[tr], full.y[tr]), Split(full.x[va], full.y[va]), test, f"IDX {images}"
    )
