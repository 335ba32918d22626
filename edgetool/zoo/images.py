"""Super-resolution data from the images that ship inside scikit-image (no download).

Every image used here is public domain or CC0 according to its `skimage.data` docstring.
Y channel (ITU-R BT.601, [16, 235] for RGB; grey images are used as they are), 8-bit
integer values in float32. Low-res inputs come from torch bicubic + antialias downscaling,
rounded to integers because the LUT network indexes tables with them; the bicubic
baseline upscales with torch bicubic (no antialias). Train and test use the same code.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

FloatArray = npt.NDArray[np.float32]

# name -> licence wording from skimage.data (checked against scikit-image 0.26 docstrings)
TRAIN_IMAGES: dict[str, str] = {
    "coffee": "CC0 (Rachel Michetti)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (DeviantArt linolafett)",
    "gravel": "CC0 (CC0Textures)",
    "clock": "public domain (Stefan van der Walt)",
    "text": "public domain",
    "hubble_deep_field": "public domain (NASA)",
    "retina": "CC0 1.0 (Häggström)",
    "cell": "CC0 (Stefan van der Walt)",
    "microaneurysms": "CC0 (Andreas Maier)",
}
"""Every bundled, non-synthetic image whose docstring says CC0 / public domain, except
`horse` (a binary silhouette, 0/1 values: nothing to learn about 8-bit texture). Left
out for want of an explicit licence: coins, immunohistochemistry ("no known copyright
restrictions"), moon, page, logo, colorwheel, stereo_motorcycle (Middlebury)."""
TEST_IMAGES: dict[str, str] = {
    "camera": "CC0 (Lav Varshney)",
    "astronaut": "public domain (NASA)",
}
"""Held out: never cropped for training or calibration. Both are 512x512."""


@functools.cache
def load_y(name: str) -> FloatArray:
    """The Y channel of one skimage.data image, integer-valued float32 in [0, 255]."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    if image.ndim == 3:
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        image = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return np.clip(np.round(image), 0, 255).astype(np.float32)


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """[N,1,rH,rW] -> [N,1,H,W]: bicubic with antialias, rounded to 8-bit values."""
    lr = F.interpolate(
        hr, scale_factor=1.0 / scale, mode="bicubic", antialias=True, align_corners=False
    )
    return lr.round().clamp(0, 255)


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The baseline every SR model here must beat, rounded to 8-bit values."""
    up = F.interpolate(lr, scale_factor=float(scale), mode="bicubic", align_corners=False)
    return up.round().clamp(0, 255)


def psnr_y(sr: npt.ArrayLike, hr: npt.ArrayLike, shave: int) -> float:
    """Mean per-image PSNR in dB on [N,1,H,W] Y images, `shave` border pixels ignored."""
    a = np.asarray(sr, dtype=np.float64)
    b = np.asarray(hr, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    if shave:
        a = a[..., shave:-shave, shave:-shave]
        b = b[..., shave:-shave, shave:-shave]
    mse = ((np.clip(np.round(a), 0, 255) - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def tiles(names: list[str], size: int) -> FloatArray:
    """Non-overlapping size x size HR tiles, row-major, from each image in turn."""
    out: list[FloatArray] = []
    for name in names:
        y = load_y(name)
        for top in range(0, y.shape[0] - size + 1, size):
            for left in range(0, y.shape[1] - size + 1, size):
                out.append(y[top : top + size, left : left + size])
    return np.stack(out)[:, None]


class PatchSampler:
    """Seeded random HR crops (+ flips / 90° rotations) from the training images.

    Images are drawn with probability ∝ pixels ** `size_power` (1: every pixel alike,
    which lets the 1411² retina supply 41 % of the crops; 0.5 evens that out). With
    `min_std` > 0 a crop whose HR standard deviation is below it is redrawn (up to
    `tries` draws, then the last one is kept): flat fundus, sky and background carry
    no SR signal and would otherwise dilute the batches.
    """

    def __init__(
        self,
        scale: int,
        lr_size: int,
        seed: int,
        names: list[str] | None = None,
        min_std: float = 0.0,
        tries: int = 8,
        size_power: float = 1.0,
    ):
        self.scale = scale
        self.min_std = float(min_std)
        self.tries = max(1, int(tries))
        self.hr_size = lr_size * scale
        loaded = [load_y(n) for n in (names or list(TRAIN_IMAGES))]
        self.images = [img for img in loaded if min(img.shape) >= self.hr_size]
        if not self.images:
            raise ValueError(f"no training image is {self.hr_size} pixels wide and high")
        weights = np.array([img.size for img in self.images], dtype=np.float64) ** size_power
        self.weights = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr [N,1,h,w], hr [N,1,rh,rw]) float32 tensors in [0, 255]."""
        crops: list[FloatArray] = []
        s = self.hr_size
        for _ in range(count):
            crop = self._crop(s)
            crop = np.rot90(crop, int(self.rng.integers(0, 4)))
            if self.rng.integers(0, 2):
                crop = crop[:, ::-1]
            crops.append(np.ascontiguousarray(crop))
        hr = torch.from_numpy(np.stack(crops)[:, None])
        return downscale(hr, self.scale), hr

    def _crop(self, s: int) -> FloatArray:
        """One s x s crop, redrawn while flatter than `min_std` (see the class doc)."""
        for _ in range(self.tries):
            img = self.images[int(self.rng.choice(len(self.images), p=self.weights))]
            top = int(self.rng.integers(0, img.shape[0] - s + 1))
            left = int(self.rng.integers(0, img.shape[1] - s + 1))
            crop = img[top : top + s, left : left + s]
            if self.min_std <= 0 or float(crop.std()) >= self.min_std:
                break
        return crop
