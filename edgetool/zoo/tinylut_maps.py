"""TinyLUT's index maps, shared by the numpy reference, the ONNX LUT graph (tinylut.py) and
the C kernel's tables (tinylut_c.py): which tap reads each neighbour under a rotation,
which sub-pixel lands where, which clip level each int8 activation hits.

numpy only, so the C text is written without importing torch; both sides import this one
definition instead of each other.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

TAPS = 9
CENTER = 4


def tap_of_offset(rot: int) -> list[int]:
    """For rotation `rot`: which tap (rotated frame) reads each neighbour offset.

    Offsets and taps are row-major indices into the 3x3 neighbourhood. Derived by
    rotating an index grid the way np.rot90 / torch.rot90 rotate the image.
    """
    grid = np.rot90(np.arange(TAPS).reshape(3, 3), rot).ravel()
    taps = [0] * TAPS
    for tap, offset in enumerate(grid):
        taps[int(offset)] = tap
    return taps


def subpixel_of_rotation(rot: int, scale: int) -> list[int]:
    """For rotation `rot`: the rotated-frame sub-pixel landing on each original one."""
    block = np.arange(scale * scale).reshape(scale, scale)
    return [int(v) for v in np.rot90(block, -rot).ravel()]


def clip_map(scales: npt.NDArray[np.float32], q: int) -> npt.NDArray[np.int64]:
    """[2, C, 256]: index v = clip(round(h * scale_c), -Q, Q) + Q for h = -128..127."""
    h = np.arange(-128, 128, dtype=np.float32)
    v = np.round(h[None, None, :] * scales[:, :, None].astype(np.float32))
    return (np.clip(v, -q, q) + q).astype(np.int64)
